"""``visattn bench``: throughput, step time, peak memory, size, GMACs and model-FLOP utilisation.

``visattn bench NAME... --mode infer|train --batch-size N --img-size S --precision fp32|bf16|fp16
--channels-last --compile --allocator tuned|system --csv OUT`` prints one result per model and writes the
CSV columns of timm's ``benchmark.py`` (``model, infer_samples_per_sec, infer_step_time,
infer_batch_size, infer_img_size, infer_gmacs, param_count`` and their ``train_`` counterparts) plus
memory, model-FLOP utilisation and the run's settings.

Definitions (every figure names its method):

* **step**: inference = one forward pass without gradients; training = ``zero_grad`` → forward →
  cross-entropy on random labels → backward → SGD step (``lr=1e-4``), as timm's benchmark.
  ``--warmup`` untimed steps, then ``--iters`` timed steps; ``step_time`` is their mean (ms) and
  ``samples_per_sec = batch · iters / total``.
* **precision**: ``fp32``; ``bf16`` / ``fp16`` are autocast (mixed precision) on the run's device.
* **GMACs**: :func:`visattn.models.count_macs` per image, convention ``"macs"`` (convolutions and
  linear layers); SAN models also get ``*_gmacs_san`` (SAN's convention, see
  :mod:`visattn.models.complexity`).
* **model-FLOP utilisation** (``*_mfu``): ``2 · MACs · samples/s`` (×3 for training: backward ≈ 2×
  forward) divided by the machine's measured matmul throughput (:func:`matmul_peak_gflops`: the best
  of several large ``torch.mm`` in the run's compute dtype with the run's thread count, or one core's
  best times the cores in use if higher; cached in ``~/.cache/visattn/matmul_peak.json``).
* **peak memory** (``*_peak_mem_mb``): the largest amount of tensor memory allocated during one step
  above what was allocated before it (parameters and input are not counted), from PyTorch's profiler
  (:func:`peak_tensor_memory`; on CUDA ``torch.cuda.max_memory_allocated``). ``*_peak_rss_mb`` is the
  process's peak resident set size (Linux ``VmHWM``), the Python runtime included.
* **allocator**: the CLI applies :func:`visattn.utils.allocator.apply_allocator_setting` first; every row
  records the setting.

Layout: this package measures and holds the public API; the memory probes live in :mod:`visattn.bench.memory`
and the subcommand's parser and printing in :mod:`visattn.cli.bench`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from visattn.models import count_macs, count_parameters, create_model, default_flop_convention, input_config
from visattn.utils.allocator import allocator_setting
from visattn.utils.tables import write_csv

from .memory import PeakRSS, peak_tensor_memory, quiet_native_output

__all__ = [
    "PRECISIONS",
    "PeakRSS",
    "benchmark_model",
    "matmul_peak_gflops",
    "peak_tensor_memory",
    "quiet_native_output",
    "time_steps",
    "write_csv",
]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_CACHE_ENV = "VISATTN_CACHE_DIR"


def time_steps(
    step: Callable[[], Any], warmup: int, iters: int, sync: Callable[[], None] | None = None
) -> list[float]:
    """Seconds of each of ``iters`` calls of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    if sync:
        sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    root = os.environ.get(_CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "visattn"
    )
    return Path(root) / "matmul_peak.json"


def matmul_peak_gflops(
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    size: int = 2048,
    repeats: int = 10,
    refresh: bool = False,
    cache: bool = True,
) -> float:
    """Measured matmul throughput (GFLOP/s): the best of ``repeats`` ``size×size`` products with the
    current thread count, or, on CPU, the best single-threaded product times the cores in use if that
    is higher (robust to other processes on a shared machine).

    Cached per (device, CPU model, dtype, thread count, PyTorch version) in
    ``~/.cache/visattn/matmul_peak.json`` (``$VISATTN_CACHE_DIR`` overrides the folder). A peak is a
    maximum and a busy machine only lowers a measurement, so ``refresh=True`` measures again and keeps
    the larger of the new and the cached value.
    """
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else _cpu_name()
    key = f"{device}|{name}|{str(dtype).replace('torch.', '')}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    path = _cache_file()
    table: dict[str, Any] = {}
    if cache and path.exists():
        with contextlib.suppress(OSError, ValueError):
            table = json.loads(path.read_text())
    if cache and not refresh and key in table:
        return float(table[key]["gflops"])
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    with torch.no_grad():
        times = time_steps(lambda: torch.mm(a, b), warmup=2, iters=repeats, sync=sync)
        gflops = 2 * size**3 / min(times) / 1e9
        threads = torch.get_num_threads()
        if device == "cpu" and threads > 1:
            # Other processes steal cores from a multi-threaded product far more than from a
            # single-threaded one: also scale the one-core figure by the cores in use.
            torch.set_num_threads(1)
            try:
                one = time_steps(lambda: torch.mm(a, b), warmup=1, iters=repeats)
            finally:
                torch.set_num_threads(threads)
            cores = min(threads, os.cpu_count() or threads)
            gflops = max(gflops, cores * 2 * size**3 / min(one) / 1e9)
    if key in table:
        gflops = max(gflops, float(table[key]["gflops"]))
    if cache:
        table[key] = {"gflops": round(gflops, 1), "size": size, "measured": time.strftime("%Y-%m-%d %H:%M")}
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(table, indent=1, sort_keys=True))
    return gflops


# ------------------------------------------------------------------------------------------ one model


def benchmark_model(
    name: str,
    *,
    mode: str = "infer",
    batch_size: int = 8,
    img_size: int | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    compile_backend: str = "inductor",
    warmup: int = 3,
    iters: int = 10,
    device: str = "cpu",
    model_kwargs: dict[str, Any] | None = None,
    peak_gflops: float | None = None,
    measure_memory: bool = True,
    allocator: str | None = None,
) -> dict[str, Any]:
    """Benchmark one registered model; returns one CSV row (see the module docstring for columns)."""
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    torch.manual_seed(0)
    model = create_model(name, **(model_kwargs or {}))
    input_size = input_config(model, img_size)["input_size"]
    params = count_parameters(model)
    macs = count_macs(model, input_size, convention="macs")
    macs_san = (
        count_macs(model, input_size, convention="san")
        if default_flop_convention(name, model) == "san"
        else None
    )

    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(dev, memory_format=fmt)
    x = torch.randn(batch_size, *input_size, device=dev).contiguous(memory_format=fmt)
    amp_dtype = PRECISIONS[precision]
    autocast = (
        (lambda: torch.autocast(dev.type, dtype=amp_dtype))
        if amp_dtype is not None
        else contextlib.nullcontext
    )
    run = torch.compile(model, backend=compile_backend) if compile else model
    sync = torch.cuda.synchronize if dev.type == "cuda" else None

    if mode == "infer":
        model.eval()

        def step() -> None:
            with torch.no_grad(), autocast():
                run(x)

    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        num_classes = int(getattr(model, "num_classes", 1000) or 1000)
        target = torch.randint(0, num_classes, (batch_size,), device=dev)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = run(x)
            loss_fn(out.float(), target).backward()
            optimizer.step()

    with PeakRSS() as rss:
        times = time_steps(step, warmup, iters, sync)
        peak_mem = None
        if measure_memory:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                before = torch.cuda.memory_allocated(dev)
                step()
                sync()
                peak_mem = torch.cuda.max_memory_allocated(dev) - before
            else:
                _, peak_mem = peak_tensor_memory(step)

    total = sum(times)
    samples_per_sec = batch_size * iters / total
    if peak_gflops is None:
        peak_gflops = matmul_peak_gflops(amp_dtype or torch.float32, device)
    flops_per_sample = 2 * macs * (3 if mode == "train" else 1)
    p = mode
    row: dict[str, Any] = {
        "model": name,
        f"{p}_samples_per_sec": round(samples_per_sec, 2),
        f"{p}_step_time": round(1000 * total / iters, 3),
        f"{p}_step_time_median": round(1000 * statistics.median(times), 3),
        f"{p}_batch_size": batch_size,
        f"{p}_img_size": input_size[-1],
        f"{p}_gmacs": round(macs / 1e9, 3),
        f"{p}_gmacs_san": None if macs_san is None else round(macs_san / 1e9, 3),
        "param_count": round(params / 1e6, 2),
        f"{p}_peak_mem_mb": None if peak_mem is None else round(peak_mem / 2**20, 1),
        f"{p}_peak_rss_mb": None if rss.peak_bytes is None else round(rss.peak_bytes / 2**20, 1),
        f"{p}_mfu": round(flops_per_sample * samples_per_sec / (peak_gflops * 1e9), 4),
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile_backend if compile else "",
        "device": device,
        "threads": torch.get_num_threads(),
        "peak_gflops": round(peak_gflops, 1),
        "peak_dtype": str(amp_dtype or torch.float32).replace("torch.", ""),
        "allocator": allocator or allocator_setting(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "warmup": warmup,
        "iters": iters,
    }
    return row
