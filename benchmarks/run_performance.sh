#!/usr/bin/env bash
# Reproduces every figure of docs/benchmarks.md (issue 8's targets). Outputs (markdown tables on stdout,
# raw JSON/CSV) go to benchmarks/results/. About an hour on an idle 2-core machine.
#
#   bash benchmarks/run_performance.sh            # everything
#   bash benchmarks/run_performance.sh ops san    # a subset of: ops ops1 san san1 san224 san224_1 sanfold csra psa psa1 allocator
#                                                 # mfu mfubf16 (…1: one thread)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# Shared machine: spin-waiting OpenMP threads would steal the cores (docs/benchmarks.md). Override with
# OMP_WAIT_POLICY=ACTIVE bash benchmarks/run_performance.sh.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
OUT=benchmarks/results
mkdir -p "$OUT"
want() { [ $# -eq 0 ] || [ -z "${SELECTED:-}" ] || [[ " $SELECTED " == *" $1 "* ]]; }
SELECTED="$*"

run() {  # name command...: tee the table into $OUT/name.md, with the command and date on top
  local name=$1
  shift
  {
    echo "<!-- $(date -u '+%Y-%m-%d %H:%M UTC'); $(uname -m); $(nproc) CPUs; OMP_WAIT_POLICY=$OMP_WAIT_POLICY; command: $* -->"
    "$@"
  } 2>&1 | tee "$OUT/$name.md"
}

if want ops; then
  run ops_san "$PY" benchmarks/ops_san.py --rounds 7 --json "$OUT/ops_san.json"
fi
if want ops1; then
  run ops_san_1thread "$PY" benchmarks/ops_san.py --rounds 7 --threads 1 --json "$OUT/ops_san_1thread.json"
fi
if want san; then
  run san_train_step "$PY" benchmarks/san_train_step.py --rounds 5 --json "$OUT/san_train_step.json"
fi
if want san1; then
  run san_train_step_1thread "$PY" benchmarks/san_train_step.py --rounds 5 --threads 1 \
    --json "$OUT/san_train_step_1thread.json"
fi
if want san224; then
  run san_train_step_224 "$PY" benchmarks/san_train_step.py --rounds 5 --batch-size 8 --img-size 224 \
    --allocators tuned --json "$OUT/san_train_step_224.json"
fi
if want san224_1; then
  run san_train_step_224_1thread "$PY" benchmarks/san_train_step.py --rounds 5 --batch-size 8 --img-size 224 \
    --allocators tuned --threads 1 --json "$OUT/san_train_step_224_1thread.json"
fi
if want sanfold; then
  run san_train_step_224_fold "$PY" benchmarks/san_train_step.py --rounds 5 --batch-size 8 --img-size 224 \
    --allocators tuned --threads 1 --literal-gamma --json "$OUT/san_train_step_224_fold.json"
fi
if want csra; then
  run csra_head "$PY" benchmarks/csra_head.py --rounds 5 --json "$OUT/csra_head.json"
fi
if want psa; then
  run psa_layers "$PY" benchmarks/psa_layers.py --rounds 9 --json "$OUT/psa_layers.json"
fi
if want psa1; then
  run psa_layers_1thread "$PY" benchmarks/psa_layers.py --rounds 9 --threads 1 --json "$OUT/psa_layers_1thread.json"
fi
if want allocator; then
  run allocator "$PY" benchmarks/allocator.py --rounds 5 --json "$OUT/allocator.json"
fi
if want mfu; then
  run model_mfu "$PY" benchmarks/model_mfu.py --csv "$OUT/model_mfu.csv"
fi
if want mfubf16; then
  run model_mfu_bf16_cl "$PY" benchmarks/model_mfu.py --precision bf16 --channels-last \
    --csv "$OUT/model_mfu_bf16_cl.csv"
fi
