"""Does ``mallopt`` at run time (what ``visattn``'s CLI does) match the ``MALLOC_*`` environment variables?

    python benchmarks/allocator.py [--rounds 5] [--threads N] [--json OUT]

Three fresh processes per workload: glibc defaults (``system``), ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1000000000000`` in the environment (``env``), and
``visattn.utils.allocator.apply_allocator_setting("tuned")`` after start-up (``mallopt``). Workloads: the
reference (unfold) and fast SAN aggregation, forward+backward at the SAN10 stage-1 shape, and a SAN10
pairwise training step (batch 2, 128 px) on the reference operators. Reported per step: median wall
time, median process CPU time, kernel (system) CPU time and minor page faults.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import fmt, only_implementation, print_table, run_worker, setup_worker  # noqa: E402

MODES = {
    "system": ("system", {}),
    "env": ("tuned", {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "1000000000000"}),
    "mallopt": ("tuned", {}),
}
WORKLOADS = ("aggregation reference", "aggregation fast_cpu", "san10_pairwise step (reference ops)")


def _workload(name: str):
    if name.startswith("aggregation"):
        from ops_san import _case

        return _case("aggregation", name.split()[1])
    import visattn

    torch.manual_seed(0)
    model = visattn.create_model("san10_pairwise", num_classes=10).train()
    x = torch.randn(2, 3, 128, 128)
    target = torch.randint(0, 10, (2,))

    def step():
        with only_implementation("reference"):
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), target).backward()

    return step


def worker(args) -> dict:
    info = setup_worker(args.allocator, args.threads)
    out = {}
    for name in WORKLOADS:
        step = _workload(name)
        step()
        wall, cpu = [], []
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(args.rounds):
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out[name] = {
            "wall_median_ms": 1000 * statistics.median(wall),
            "wall_min_ms": 1000 * min(wall),
            "cpu_median_ms": 1000 * statistics.median(cpu),
            "sys_ms_per_step": 1000 * (r1.ru_stime - r0.ru_stime) / args.rounds,
            "minflt_per_step": (r1.ru_minflt - r0.ru_minflt) / args.rounds,
        }
    return {**info, "results": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--allocator", default="tuned", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    common = ["--rounds", str(args.rounds)] + (["--threads", str(args.threads)] if args.threads else [])
    out, rows = {}, []
    for label, (alloc, env) in MODES.items():
        res = run_worker(__file__, ["--worker", "--allocator", alloc, *common], extra_env=env)
        out[label] = res
        print(
            f"{label}: {res['allocator']}; load average at start {res['loadavg_at_start']}; OMP_WAIT_POLICY {res['omp_wait_policy']}",
            file=sys.stderr,
        )
    for name in WORKLOADS:
        base = out["system"]["results"][name]["wall_median_ms"]
        for label in MODES:
            m = out[label]["results"][name]
            rows.append(
                [
                    name,
                    label,
                    fmt(m["wall_median_ms"], 0),
                    fmt(m["cpu_median_ms"], 0),
                    fmt(m["sys_ms_per_step"], 0),
                    f"{m['minflt_per_step']:.0f}",
                    f"{base / m['wall_median_ms']:.2f}×",
                ]
            )
    print_table(
        [
            "workload",
            "allocator",
            "wall median ms",
            "CPU median ms",
            "kernel CPU ms/step",
            "minor faults/step",
            "vs system (wall)",
        ],
        rows,
        json_path=args.json,
        raw=out,
    )


if __name__ == "__main__":
    main()
