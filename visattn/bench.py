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
* **allocator**: the CLI applies :func:`visattn._allocator.apply_allocator_setting` first; every row
  records the setting.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "PRECISIONS",
    "PeakRSS",
    "add_subparsers",
    "benchmark_model",
    "matmul_peak_gflops",
    "peak_tensor_memory",
    "quiet_native_output",
    "time_steps",
    "write_csv",
]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_CACHE_ENV = "VISATTN_CACHE_DIR"


# --------------------------------------------------------------------------------------- measurements


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


def _input_size(model: torch.nn.Module, img_size: int | None) -> tuple[int, int, int]:
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    c, h, w = tuple(cfg.get("input_size", (3, 224, 224)))
    if img_size is not None:
        h = w = img_size
    return int(c), int(h), int(w)


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
    import visattn
    from visattn._allocator import allocator_setting
    from visattn.cli import default_flop_convention
    from visattn.models import count_macs, count_parameters

    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    torch.manual_seed(0)
    model = visattn.create_model(name, **(model_kwargs or {}))
    input_size = _input_size(model, img_size)
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


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Rows (possibly with different columns) to one CSV; columns in first-seen order."""
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})


# ------------------------------------------------------------------------------------------------ CLI


def _names(patterns: Sequence[str]) -> list[str]:
    import visattn

    names: list[str] = []
    for pattern in patterns:
        found = [pattern] if visattn.models.is_model(pattern) else visattn.list_models(pattern)
        if not found:
            raise ValueError(f"no visattn model matches {pattern!r} (see `visattn models`)")
        names.extend(n for n in found if n not in names)
    return names


def _summary(row: dict[str, Any], mode: str) -> str:
    if "error" in row:
        return f"{row['model']:<28} error: {row['error']}"
    p = mode
    mem = row.get(f"{p}_peak_mem_mb")
    san = row.get(f"{p}_gmacs_san")
    return (
        f"{row['model']:<28} {row[f'{p}_samples_per_sec']:>9.2f} samples/s  {row[f'{p}_step_time']:>9.1f} ms/step  "
        f"{row['param_count']:>7.2f} M params  {row[f'{p}_gmacs']:>7.3f} GMACs"
        + (f" ({san:.3f} san)" if san is not None else "")
        + f"  MFU {100 * row[f'{p}_mfu']:5.1f} %"
        + ("" if mem is None else f"  peak {mem:.1f} MiB")
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from visattn._allocator import apply_allocator_setting
    from visattn.cli import _parse_sets

    allocator = apply_allocator_setting(args.allocator)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = _names(args.names)
    model_kwargs = _parse_sets(args.set)
    amp_dtype = PRECISIONS[args.precision] or torch.float32
    peak = args.peak_gflops or matmul_peak_gflops(amp_dtype, args.device, refresh=args.remeasure_peak)
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    print(
        f"visattn bench: device {args.device}, {torch.get_num_threads()} threads, precision {args.precision}"
        f"{', channels_last' if args.channels_last else ''}{', compile ' + args.compile_backend if args.compile else ''}; "
        f"allocator {allocator}; matmul peak {peak:.1f} GFLOP/s ({str(amp_dtype).replace('torch.', '')}); "
        f"{args.warmup} warm-up + {args.iters} timed steps",
        flush=True,
    )
    rows = []
    for name in names:
        for mode in modes:
            try:
                row = benchmark_model(
                    name,
                    mode=mode,
                    batch_size=args.batch_size,
                    img_size=args.img_size,
                    precision=args.precision,
                    channels_last=args.channels_last,
                    compile=args.compile,
                    compile_backend=args.compile_backend,
                    warmup=args.warmup,
                    iters=args.iters,
                    device=args.device,
                    model_kwargs=model_kwargs,
                    peak_gflops=peak,
                    measure_memory=not args.no_memory,
                    allocator=allocator,
                )
            except (RuntimeError, ValueError, TypeError) as err:
                row = {"model": name, "mode": mode, "error": f"{type(err).__name__}: {err}".splitlines()[0]}
            rows.append(row)
            print(f"[{mode}] " + _summary(row, mode), flush=True)
    if args.csv:
        write_csv(args.csv, rows)
        print(f"wrote {args.csv}")
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    return 1 if any("error" in r for r in rows) else 0


def add_subparsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand (plugin protocol of :mod:`visattn.cli`)."""
    p = subparsers.add_parser(
        "bench",
        help="samples/s, step time, peak memory, params, GMACs and MFU of models",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="registered model names or patterns ('san10*')")
    p.add_argument("--mode", choices=("infer", "train", "both"), default="infer")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=None, help="square input size (default: the model's)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help="bf16/fp16: autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument(
        "--allocator",
        choices=("tuned", "system"),
        default=None,
        help="malloc setting (default: $VISATTN_ALLOCATOR or tuned; MALLOC_* variables already set win)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--iters", type=int, default=10, help="timed steps")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model keyword argument")
    p.add_argument("--csv", metavar="OUT", help="write the results as CSV (timm benchmark columns)")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    p.add_argument("--no-memory", action="store_true", help="skip the profiled peak-memory step")
    p.add_argument("--peak-gflops", type=float, default=None, help="matmul peak to use instead of measuring")
    p.add_argument("--remeasure-peak", action="store_true", help="ignore the cached matmul peak")
    p.set_defaults(func=_cmd_bench)
