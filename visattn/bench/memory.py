"""Memory probes of ``visattn bench``: profiler-based peak tensor memory and peak resident set size.

Part of :mod:`visattn.bench` (its docstring defines the figures).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence file descriptors 1 and 2 (the profiler's native library prints status lines there)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def peak_tensor_memory(fn: Callable[[], Any], quiet: bool = True) -> tuple[Any, int]:
    """Run ``fn()`` and return ``(result, peak_bytes)``.

    ``peak_bytes`` is the maximum, over the call, of the CPU tensor memory allocated since the call
    began minus what of it was freed again (PyTorch's profiler with ``profile_memory=True`` reports
    every allocation and free of the CPU allocator). Independent of the malloc setting; tensors that
    existed before the call count neither when they are freed nor before.
    """
    from torch.profiler import ProfilerActivity, profile

    ctx = quiet_native_output() if quiet else contextlib.nullcontext()
    with ctx, profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        fields = node.extra_fields
        if type(fields).__name__ == "_ExtraFields_Allocation" and fields.device.type == "cpu":
            events.append((node.start_time_ns, int(fields.alloc_size)))
        stack.extend(node.children)
    # The allocator's running total carries over between profiler sessions: sum the deltas instead.
    # Frees of blocks allocated before the call are not reported, so they never lower the figure.
    peak = live = 0
    for _, delta in sorted(events):
        live += delta
        peak = max(peak, live)
    return result, peak


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak resident set size over a ``with`` block (Linux).

    ``peak_bytes``: the process's peak RSS during the block (``VmHWM``, reset at entry through
    ``/proc/self/clear_refs`` when allowed, else the peak since process start: ``reset`` tells which);
    ``increase_bytes``: that peak minus the RSS at entry. Under a malloc that keeps freed memory
    (``allocator=tuned``), RSS does not fall when tensors are freed: compare increases only between
    fresh processes.
    """

    def __enter__(self) -> PeakRSS:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.start_bytes = (_status_kb("VmRSS") or 0) * 1024
        return self

    def __exit__(self, *exc) -> None:
        hwm = _status_kb("VmHWM")
        self.peak_bytes = None if hwm is None else hwm * 1024
        self.increase_bytes = None if hwm is None else max(0, hwm * 1024 - self.start_bytes)
