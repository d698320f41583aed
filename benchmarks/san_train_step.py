"""SAN10 pairwise training step on the memory-lean ``fast_cpu`` operators vs the unfold ``reference``.

    python benchmarks/san_train_step.py [--model san10_pairwise] [--batch-size 4] [--img-size 128]
        [--allocators tuned system] [--threads N] [--rounds 5] [--precision fp32|bf16] [--literal-gamma]
        [--json OUT]

One step = ``zero_grad`` → forward → cross-entropy → backward → SGD step (as ``visattn bench --mode
train``), the same model instance and input for both variants, interleaved; ``impl="auto"`` is pointed
at one implementation for the whole network (``only_implementation``). 128 px is the smallest input
that the official reflect padding allows with SAN's default kernels (3, 7, 7, 7, 7). Target: the fast
operators make the step ≥ 1.5× faster. Peak tensor memory of one step from PyTorch's profiler.
``--literal-gamma`` adds the fast operators with γ's first BatchNorm evaluated literally
(``PairwiseSelfAttention(fold_norm=False)``), to show what folding it into the relation saves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import (  # noqa: E402
    fmt,
    measure_interleaved,
    only_implementation,
    print_table,
    run_worker,
    setup_worker,
)

IMPLS = ("fast_cpu", "reference")
# label -> (operator implementation, PairwiseSelfAttention.fold_norm)
VARIANTS = {
    "fast_cpu": ("fast_cpu", True),
    "reference": ("reference", True),
    "fast_cpu γ literal": ("fast_cpu", False),
}


def _labels(args) -> list[str]:
    return [*IMPLS, "fast_cpu γ literal"] if args.literal_gamma else list(IMPLS)


def worker(args) -> dict:
    import visattn
    from visattn.bench import peak_tensor_memory

    info = setup_worker(args.allocator, args.threads)
    torch.manual_seed(0)
    model = visattn.create_model(args.model, num_classes=1000).train()
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    target = torch.randint(0, 1000, (args.batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    amp = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if args.precision == "bf16"
        else contextlib.nullcontext
    )

    from visattn.layers import PairwiseSelfAttention

    pairwise = [m for m in model.modules() if isinstance(m, PairwiseSelfAttention)]

    def make(label):
        impl, fold = VARIANTS[label]

        def step():
            for m in pairwise:  # γ's first BN folded into the relation (default) or evaluated literally
                m.fold_norm = fold
            with only_implementation(impl):
                opt.zero_grad(set_to_none=True)
                with amp():
                    out = model(x)
                torch.nn.functional.cross_entropy(out.float(), target).backward()
                opt.step()

        return step

    labels = _labels(args)
    steps = {label: make(label) for label in labels}
    res = measure_interleaved(steps, rounds=args.rounds)
    for label in labels:
        _, peak = peak_tensor_memory(steps[label])
        res[label]["peak_tensor_mib"] = peak / 2**20
    return {**info, "results": res}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="san10_pairwise")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--allocators", nargs="+", default=["tuned", "system"], choices=["tuned", "system"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--literal-gamma",
        action="store_true",
        help="also time fast_cpu with γ's first BatchNorm evaluated literally (fold_norm=False)",
    )
    parser.add_argument("--json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--allocator", default="tuned", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    common = (
        [
            "--model",
            args.model,
            "--batch-size",
            str(args.batch_size),
            "--img-size",
            str(args.img_size),
            "--precision",
            args.precision,
            "--rounds",
            str(args.rounds),
        ]
        + (["--threads", str(args.threads)] if args.threads else [])
        + (["--literal-gamma"] if args.literal_gamma else [])
    )
    out, rows = {}, []
    for alloc in args.allocators:
        res = run_worker(__file__, ["--worker", "--allocator", alloc, *common])
        out[alloc] = res
        print(
            f"allocator {res['allocator']}; {res['threads']} threads; load average at start "
            f"{res['loadavg_at_start']}; OMP_WAIT_POLICY {res['omp_wait_policy']}",
            file=sys.stderr,
        )
        r = res["results"]
        for impl in _labels(args):
            m = r[impl]
            speed = r["reference"]["wall_median_ms"] / m["wall_median_ms"]
            rows.append(
                [
                    f"{args.model} b{args.batch_size} {args.img_size}px {args.precision}",
                    alloc,
                    impl,
                    fmt(m["wall_min_ms"], 0),
                    fmt(m["wall_median_ms"], 0),
                    fmt(m["cpu_median_ms"], 0),
                    fmt(m["peak_tensor_mib"], 0),
                    "" if impl == "reference" else f"{speed:.2f}×",
                ]
            )
    print_table(
        [
            "step",
            "allocator",
            "ops",
            "wall min ms",
            "wall median ms",
            "CPU median ms",
            "peak tensor MiB",
            "speed-up (median)",
        ],
        rows,
        json_path=args.json,
        raw=out,
    )


if __name__ == "__main__":
    main()
