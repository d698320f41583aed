"""SAN operators at the SAN10 stage-1 shape: memory-lean ``fast_cpu`` vs the unfold ``reference``.

    python benchmarks/ops_san.py [--allocators tuned system] [--threads 2] [--rounds 7] [--json OUT]

Cases (batch 8, 56×56, 7×7, reflect padding, float32, forward + backward):

* ``aggregation``: ``x`` (8, 64, 56, 56), weights (8, 8, 49, 3136) — target: ≥ 3× faster, ≤ 1/8 of the
  reference's peak memory;
* ``aggregation (forward only)``: the same without gradients;
* ``subtraction2``: the pairwise relation, φ and ψ (8, 4, 56, 56) -> (8, 4, 49, 3136) (the output is
  K²-sized by definition: the saving is in the backward pass and in what is stored).

Peak memory: ``peak tensor`` is the largest tensor memory allocated during one forward+backward above
what existed before it (inputs not counted), from PyTorch's profiler (``visattn.bench.peak_tensor_memory``;
independent of the malloc setting); ``peak RSS +`` is the increase of the peak resident set size over the
step in a fresh process (``/proc/self/status`` VmHWM), which depends on the malloc setting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import fmt, measure_interleaved, print_table, run_worker, setup_worker  # noqa: E402

IMPLS = ("fast_cpu", "reference")
CASES = ("aggregation", "aggregation_forward", "subtraction2")


def _case(name: str, impl: str, dtype: torch.dtype = torch.float32):
    """``step()`` running one forward(+backward) of the case with ``impl``."""
    from visattn.ops import local_aggregation, local_subtraction2

    g = torch.Generator().manual_seed(0)
    B, H, W, K = 8, 56, 56, 7
    if name.startswith("aggregation"):
        x = torch.randn(B, 64, H, W, generator=g).to(dtype).requires_grad_()
        w = torch.randn(B, 8, K * K, H * W, generator=g).softmax(2).to(dtype).requires_grad_()
        grad = torch.randn(B, 64, H, W, generator=g).to(dtype)
        if name == "aggregation_forward":

            def step():
                with torch.no_grad():
                    return local_aggregation(x, w, K, impl=impl)

            return step

        def step():
            x.grad = w.grad = None
            local_aggregation(x, w, K, impl=impl).backward(grad)

        return step
    x1 = torch.randn(B, 4, H, W, generator=g).to(dtype).requires_grad_()
    x2 = torch.randn(B, 4, H, W, generator=g).to(dtype).requires_grad_()
    grad = torch.randn(B, 4, K * K, H * W, generator=g).to(dtype)

    def step():
        x1.grad = x2.grad = None
        local_subtraction2(x1, x2, K, impl=impl).backward(grad)

    return step


def worker_timing(args) -> dict:
    from visattn.bench import peak_tensor_memory

    info = setup_worker(args.allocator, args.threads)
    results = {}
    for case in CASES:
        steps = {impl: _case(case, impl) for impl in IMPLS}
        timing = measure_interleaved(steps, rounds=args.rounds)
        for impl in IMPLS:
            _, peak = peak_tensor_memory(steps[impl])
            timing[impl]["peak_tensor_mib"] = peak / 2**20
        results[case] = timing
    return {**info, "results": results}


def worker_rss(args) -> dict:
    from visattn.bench import PeakRSS

    info = setup_worker(args.allocator, args.threads)
    step = _case(args.case, args.impl)
    with PeakRSS() as rss:
        step()
    return {**info, "rss_increase_mib": rss.increase_bytes / 2**20, "reset": rss.reset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allocators", nargs="+", default=["tuned", "system"], choices=["tuned", "system"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--worker", choices=["timing", "rss"], help=argparse.SUPPRESS)
    parser.add_argument("--allocator", default="tuned", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "timing":
        print(json.dumps(worker_timing(args)))
        return
    if args.worker == "rss":
        print(json.dumps(worker_rss(args)))
        return

    common = ["--rounds", str(args.rounds)] + (["--threads", str(args.threads)] if args.threads else [])
    out = {}
    for alloc in args.allocators:
        res = run_worker(__file__, ["--worker", "timing", "--allocator", alloc, *common])
        for case in CASES:
            for impl in IMPLS:
                rss = run_worker(
                    __file__,
                    ["--worker", "rss", "--allocator", alloc, "--case", case, "--impl", impl, *common],
                )
                res["results"][case][impl]["rss_increase_mib"] = rss["rss_increase_mib"]
        out[alloc] = res
        print(
            f"allocator {res['allocator']}; {res['threads']} threads; load average at start "
            f"{res['loadavg_at_start']}; OMP_WAIT_POLICY {res['omp_wait_policy']}; torch {res['torch']}",
            file=sys.stderr,
        )
    rows = []
    for alloc, res in out.items():
        for case in CASES:
            r = res["results"][case]
            fast, ref = r["fast_cpu"], r["reference"]
            for impl in IMPLS:
                m = r[impl]
                rows.append(
                    [
                        case,
                        alloc,
                        impl,
                        fmt(m["wall_min_ms"]),
                        fmt(m["wall_median_ms"]),
                        fmt(m["cpu_median_ms"]),
                        fmt(m["peak_tensor_mib"]),
                        fmt(m["rss_increase_mib"]),
                        ""
                        if impl == "reference"
                        else f"{ref['wall_median_ms'] / fast['wall_median_ms']:.2f}×",
                        ""
                        if impl == "reference"
                        else f"1/{ref['peak_tensor_mib'] / max(fast['peak_tensor_mib'], 1e-9):.1f}",
                    ]
                )
    print_table(
        [
            "case",
            "allocator",
            "impl",
            "wall min ms",
            "wall median ms",
            "CPU median ms",
            "peak tensor MiB",
            "peak RSS + MiB",
            "speed-up (median)",
            "memory vs ref",
        ],
        rows,
        json_path=args.json,
        raw=out,
    )


if __name__ == "__main__":
    main()
