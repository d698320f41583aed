"""``visattn export``: a trained model to ONNX (dynamic batch) with an onnxruntime parity check.

The model and the parity input come from the run loader (:mod:`visattn.inference`): the same weights and the
same evaluation pipeline as ``visattn eval`` (``--image FILE`` is transformed exactly as an evaluation item).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from visattn.export import export_onnx
from visattn.inference import example_input

from .options import add_run_options, load_run

__all__ = ["add_parsers"]


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format != "onnx":
        raise ValueError(f"unsupported format {args.format!r} (available: onnx)")
    loaded = load_run(args, checkpoint=args.checkpoint)
    example, source = example_input(loaded, args.image)
    out = Path(args.out or Path(args.checkpoint or loaded.name).with_suffix(".onnx").name)
    report = export_onnx(
        loaded.model, out, example=example, opset=args.opset, exporter=args.exporter, check=not args.no_check
    )
    print(report.summary())
    if report.max_abs_diff is not None:
        print(f"parity input: {source}, shape {tuple(example.shape[1:])}")
    if (
        args.tolerance is not None
        and report.max_rel_diff is not None
        and report.max_rel_diff > args.tolerance
    ):
        print(f"parity check FAILED: {report.max_rel_diff:.3g} > --tolerance {args.tolerance}")
        return 1
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export a trained model to ONNX (dynamic batch) with an onnxruntime parity check"
    )
    p.add_argument("checkpoint", nargs="?", default=None, help="weights; omit to export initial weights")
    add_run_options(p)
    p.add_argument("--format", default="onnx", choices=("onnx",))
    p.add_argument("--out", help="output file (default: <checkpoint stem>.onnx in the current folder)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "legacy"))
    p.add_argument("--image", help="image file for the parity check (default: a validation item)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument(
        "--tolerance", type=float, default=1e-4, help="fail (exit 1) above this relative difference"
    )
    p.set_defaults(func=_cmd_export)
