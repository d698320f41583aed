"""Shared helpers of the performance benchmarks (``benchmarks/*.py``; results in ``docs/benchmarks.md``).

Every script runs its measurements in child processes, one per allocator setting, started with the
``MALLOC_*`` variables removed from the environment so that ``visattn.utils.allocator`` alone decides the
setting (``tuned``: mallopt; ``system``: glibc defaults). Timings interleave the variants being compared
(A B B A ...) so that load from other processes hits both alike; the tables give the minimum and the
median wall time of each and the median process CPU time.

``run_performance.sh`` exports ``OMP_WAIT_POLICY=PASSIVE`` (unless set): on a machine shared with other
jobs, libgomp's spin-waiting threads otherwise steal the cores from the working ones and the 2-thread
figures become 3-10x slower and erratic for every variant (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV and k != "VISATTN_ALLOCATOR"}
    env.update(extra or {})
    return env


def run_worker(script: str, args: Sequence[str], extra_env: dict[str, str] | None = None) -> Any:
    """Run ``python script args...`` in a fresh process; its last stdout line is JSON."""
    cmd = [sys.executable, script, *args]
    proc = subprocess.run(cmd, env=child_env(extra_env), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def setup_worker(allocator: str, threads: int | None) -> dict[str, Any]:
    """Apply the allocator setting and thread count in a worker; describe the machine state."""
    from visattn.utils.allocator import apply_allocator_setting

    setting = apply_allocator_setting(allocator)
    if threads:
        torch.set_num_threads(threads)
    return {
        "allocator": setting,
        "threads": torch.get_num_threads(),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(libgomp default: spin, then sleep)"),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def measure_interleaved(
    variants: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of each variant, interleaved over ``rounds`` (order reversed every round)."""
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            c0, t0 = time.process_time(), time.perf_counter()
            variants[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {
        n: {
            "wall_min_ms": 1000 * min(wall[n]),
            "wall_median_ms": 1000 * statistics.median(wall[n]),
            "cpu_median_ms": 1000 * statistics.median(cpu[n]),
            "rounds": rounds,
        }
        for n in names
    }


@contextlib.contextmanager
def only_implementation(name: str) -> Iterator[None]:
    """Make ``impl="auto"`` pick ``name`` for every input (e.g. a whole network on the reference ops)."""
    from visattn.ops import local_attention as la

    saved = dict(la._IMPLEMENTATIONS)
    chosen = la._IMPLEMENTATIONS[name]
    la._IMPLEMENTATIONS.clear()
    la._IMPLEMENTATIONS[name] = chosen
    if name != "reference":
        la._IMPLEMENTATIONS["reference"] = saved["reference"]
    try:
        yield
    finally:
        la._IMPLEMENTATIONS.clear()
        la._IMPLEMENTATIONS.update(saved)


def fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], json_path: str | None = None, raw: Any = None
) -> None:
    """Print a markdown table; with ``json_path``, also write the raw results ``raw`` there."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(raw, f, indent=1)
