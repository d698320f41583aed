"""Where each model family stands as a fraction of the machine's matmul peak (``visattn bench`` rows).

    python benchmarks/model_mfu.py [--mode infer|train] [--precision fp32|bf16] [--channels-last]
        [--threads N] [--iters 3] [--csv OUT]

Runs :func:`visattn.bench.benchmark_model` for one model per family at its standard input size (batch
sizes chosen so that a step takes seconds, not minutes, on two cores) under the CLI's allocator
setting, and prints samples/s, step time, GMACs, peak tensor memory and model-FLOP utilisation against
the measured fp32 (or bf16) matmul throughput. Same numbers as, e.g.,
``visattn bench san10_pairwise --batch-size 2 --img-size 224 --iters 3``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import print_table  # noqa: E402

# (model, batch size, image size, extra model kwargs)
MODELS = (
    ("glyphnet", 32, 64, {}),
    ("resattnet92_cifar", 16, 32, {}),
    ("resattnet56", 2, 224, {}),
    ("san10_pairwise", 2, 224, {}),
    ("san10_patchwise", 2, 224, {}),
    ("psa_resnet50", 2, 224, {}),
    ("psa_hrnet_w18_small", 2, 224, {}),
    ("csra_mobilenetv2", 4, 224, {}),
    ("csra_resnet101", 1, 448, {}),
    ("vaa_resnet50", 2, 224, {}),
)


def main() -> None:
    from visattn.bench import PRECISIONS, benchmark_model, matmul_peak_gflops, write_csv
    from visattn.utils.allocator import apply_allocator_setting

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["infer", "train"], default="infer")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--allocator", choices=["tuned", "system"], default=None)
    parser.add_argument("--models", nargs="+", default=None, help="subset of the model names above")
    parser.add_argument("--csv")
    args = parser.parse_args()
    allocator = apply_allocator_setting(args.allocator)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops(PRECISIONS[args.precision] or torch.float32, refresh=True)
    print(
        f"allocator {allocator}; {torch.get_num_threads()} threads; matmul peak {peak:.1f} GFLOP/s; "
        f"load average {[round(v, 2) for v in os.getloadavg()]}; "
        f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', '(default)')}",
        file=sys.stderr,
    )
    rows, table = [], []
    for name, batch, img, kwargs in MODELS:
        if args.models and name not in args.models:
            continue
        row = benchmark_model(
            name,
            mode=args.mode,
            batch_size=batch,
            img_size=img,
            precision=args.precision,
            channels_last=args.channels_last,
            warmup=args.warmup,
            iters=args.iters,
            model_kwargs=kwargs,
            peak_gflops=peak,
            allocator=allocator,
        )
        rows.append(row)
        p = args.mode
        san = row.get(f"{p}_gmacs_san")
        table.append(
            [
                name,
                batch,
                img,
                f"{row[f'{p}_samples_per_sec']:.2f}",
                f"{row[f'{p}_step_time']:.0f}",
                f"{row[f'{p}_gmacs']:.2f}" + (f" ({san:.2f} san)" if san is not None else ""),
                f"{row['param_count']:.1f}",
                f"{row[f'{p}_peak_mem_mb']:.0f}",
                f"{100 * row[f'{p}_mfu']:.1f} %",
            ]
        )
        print(f"done {name}", file=sys.stderr, flush=True)
    print_table(
        ["model", "batch", "px", "samples/s", "ms/step", "GMACs/img", "params M", "peak tensor MiB", "MFU"],
        table,
    )
    if args.csv:
        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
