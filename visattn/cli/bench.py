"""``visattn bench``: argument parser, model-name patterns, one summary line per result.

The measurements themselves live in :mod:`visattn.bench`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import torch

from visattn import bench
from visattn.bench import PRECISIONS, benchmark_model, matmul_peak_gflops, write_csv
from visattn.config import parse_overrides
from visattn.models import is_model, list_models

from .options import add_allocator, add_threads, apply_allocator_setting

__all__ = ["add_parsers"]


def _names(patterns: Sequence[str]) -> list[str]:
    names: list[str] = []
    for pattern in patterns:
        found = [pattern] if is_model(pattern) else list_models(pattern)
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
    allocator = apply_allocator_setting(args.allocator)
    names = _names(args.names)
    model_kwargs = parse_overrides(args.set)
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bench``; its description is the first paragraph of :mod:`visattn.bench`."""
    p = sub.add_parser(
        "bench",
        help="samples/s, step time, peak memory, params, GMACs and MFU of models",
        description=bench.__doc__.split("\n\n")[0] if bench.__doc__ else None,
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="registered model names or patterns ('san10*')")
    p.add_argument("--mode", choices=("infer", "train", "both"), default="infer")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=None, help="square input size (default: the model's)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help="bf16/fp16: autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--compile-backend", default="inductor")
    add_allocator(p)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--iters", type=int, default=10, help="timed steps")
    add_threads(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model keyword argument")
    p.add_argument("--csv", metavar="OUT", help="write the results as CSV (timm benchmark columns)")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    p.add_argument("--no-memory", action="store_true", help="skip the profiled peak-memory step")
    p.add_argument("--peak-gflops", type=float, default=None, help="matmul peak to use instead of measuring")
    p.add_argument("--remeasure-peak", action="store_true", help="ignore the cached matmul peak")
    p.set_defaults(func=_cmd_bench)
