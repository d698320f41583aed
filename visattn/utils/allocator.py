"""The process-wide memory-allocator setting of the command line (never applied on import).

glibc's malloc serves large blocks (above a dynamic threshold of at most 32 MiB) with a fresh ``mmap`` and
returns them with ``munmap``, and gives memory at the top of the heap back to the kernel beyond 128 KiB.
PyTorch's CPU tensors are plain ``malloc`` blocks, so every large temporary of every step is mapped,
page-faulted (zeroed by the kernel) and unmapped again: on these machines about half the CPU time of
the unfold-based SAN operators goes to the kernel. Keeping freed memory in the heap removes that cost:

* ``"tuned"``: ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`` through ``ctypes``,
  the runtime equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000`` (glibc reads
  those variables at start-up into the same parameters; ``benchmarks/allocator.py`` measures both the
  same). The variables are also exported, so that processes started from this one inherit the setting.
  The cost: the process keeps its peak heap size until it exits.
* ``"system"``: glibc's defaults, nothing changed.

Precedence: an allocator setting already in the environment (any ``MALLOC_*_`` tunable, ``GLIBC_TUNABLES``
with ``glibc.malloc``, or a preloaded jemalloc / tcmalloc / mimalloc) is respected and reported as
``"environment"``; otherwise the ``mode`` argument (the CLI's ``--allocator``), then the
``VISATTN_ALLOCATOR`` environment variable, then ``"tuned"``. Only the CLI's ``train``, ``eval`` and
``bench`` commands call :func:`apply_allocator_setting` (the first call in a process decides);
``import visattn`` changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MODES", "TUNED_ENV", "apply_allocator_setting", "allocator_setting", "describe_environment"]

MODES = ("tuned", "system")
TUNED_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "1000000000000"}
ENV_VAR = "VISATTN_ALLOCATOR"

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB (the environment variable allows more)
_MALLOC_ENV = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")

# What the last apply_allocator_setting() call did (None: never called in this process).
_applied: str | None = None


def describe_environment(environ: dict[str, str] | None = None) -> str | None:
    """The allocator setting the environment already makes, or ``None`` when it makes none."""
    env = os.environ if environ is None else environ
    preload = env.get("LD_PRELOAD", "")
    for lib in _PRELOADED:
        if lib in preload:
            return f"environment (LD_PRELOAD={preload})"
    found = [f"{k}={env[k]}" for k in _MALLOC_ENV if k in env]
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        found.append(f"GLIBC_TUNABLES={env['GLIBC_TUNABLES']}")
    return f"environment ({' '.join(found)})" if found else None


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # not glibc (e.g. musl): mallopt parameters differ or do not exist
    return libc


def allocator_setting() -> str:
    """Description of the allocator setting of this process (for benchmark reports)."""
    if _applied is not None:
        return _applied
    return describe_environment() or "system (glibc defaults; apply_allocator_setting not called)"


def apply_allocator_setting(mode: str | None = None) -> str:
    """Apply the CLI's allocator setting to this process and return its description.

    Args:
        mode: ``"tuned"`` or ``"system"``; ``None`` reads ``VISATTN_ALLOCATOR`` (default ``"tuned"``).
            An allocator setting already present in the environment wins over both.
    """
    global _applied
    if _applied is not None:
        return _applied  # once per process: the first call (at CLI start-up) decides
    env_setting = describe_environment()
    if env_setting is not None:
        _applied = env_setting
        return _applied
    if mode is None:
        mode = os.environ.get(ENV_VAR, "").strip().lower() or "tuned"
    if mode not in MODES:
        raise ValueError(
            f"allocator mode must be one of {MODES}, got {mode!r} (from --allocator or {ENV_VAR})"
        )
    if mode == "system":
        _applied = "system (glibc defaults)"
        return _applied
    libc = _libc()
    if libc is None:
        _applied = "system (tuned needs glibc's mallopt, not available here)"
        return _applied
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    if not ok:
        _applied = "system (mallopt refused the tuned parameters)"
        return _applied
    os.environ.update(TUNED_ENV)  # child processes (spawned workers, torchrun) start with the same setting
    _applied = f"tuned (mallopt M_MMAP_MAX=0 M_TRIM_THRESHOLD={_TRIM_THRESHOLD})"
    return _applied
