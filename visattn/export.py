"""Model export: ONNX with a dynamic batch dimension and an onnxruntime parity check.

``visattn export CKPT --config RECIPE --format onnx --out model.onnx`` (or ``--model NAME``), or in Python::

    from visattn.export import export_onnx, load_trained_model

    loaded = load_trained_model("runs/demo/csra/best.safetensors")  # finds the run's config.json
    report = export_onnx(loaded.model, "csra.onnx", input_size=loaded.input_size, example=image)
    print(report.max_abs_diff)

Both ONNX exporters of ``torch.onnx.export`` are supported: ``exporter="dynamo"`` (torch.export based, the
default of torch >= 2.9, needs ``onnxscript``) and ``exporter="legacy"`` (TorchScript based, deprecated by
torch but much faster to run). ``"auto"`` (default) uses dynamo when ``onnxscript`` is installed and falls
back to the legacy exporter if that fails. Every registered model family exports with both (see
``docs/visualization.md``), including SAN's pure-PyTorch local operators with reflect padding.

The optional dependencies (``pip install 'visattn[export]'``: onnx, onnxruntime, onnxscript) are imported
only when used. :func:`load_trained_model` (a recipe or run directory + checkpoint → model, class names and
input transform) is shared with ``visattn.viz``; it needs none of them.

Layout: this module holds the ``visattn export`` subcommand and re-exports the API; model loading lives in
``visattn/_export_loading.py`` and the ONNX export and parity check in ``visattn/_export_onnx.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from visattn._export_loading import TrainedModel, load_trained_model, read_run_config

# ``x as x``: re-exports of public names outside ``__all__`` (importable from here before the split).
from visattn._export_loading import example_input as example_input
from visattn._export_onnx import ExportReport, export_onnx, onnx_parity

__all__ = [
    "ExportReport",
    "TrainedModel",
    "add_subparsers",
    "export_onnx",
    "load_trained_model",
    "onnx_parity",
    "read_run_config",
]

#: Model families whose ONNX export and onnxruntime parity are tested (``tests/test_export.py``).
TESTED_FAMILIES = (
    "glyphnet",
    "csra (backbone glyphnet / resnet18)",
    "san10_pairwise / san10_patchwise (small layers and kernels)",
    "resattnet92_cifar",
    "psa_resnet18",
    "vaa (backbone resnet18)",
)


# ---------------------------------------------------------------------------------------------- CLI
def _cmd_export(args: argparse.Namespace) -> int:
    from visattn.cli import _parse_sets

    if args.format != "onnx":
        raise ValueError(f"unsupported format {args.format!r} (available: onnx)")
    loaded = load_trained_model(
        args.checkpoint,
        config=args.config,
        model_name=args.model,
        model_kwargs=_parse_sets(args.model_arg),
        overrides=args.set,
        img_size=args.img_size,
        ema=args.ema,
    )
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


def add_subparsers(subparsers: Any) -> None:
    """Add ``visattn export`` (the :mod:`visattn.cli` plugin protocol)."""
    p = subparsers.add_parser(
        "export", help="export a trained model to ONNX (dynamic batch) with an onnxruntime parity check"
    )
    p.add_argument("checkpoint", nargs="?", default=None, help="weights; omit to export initial weights")
    p.add_argument("--config", help="recipe or run config.json (default: config.json next to the checkpoint)")
    p.add_argument("--model", help="registered model name, when there is no recipe")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model keyword (with --model)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--format", default="onnx", choices=("onnx",))
    p.add_argument("--out", help="output file (default: <checkpoint stem>.onnx in the current folder)")
    p.add_argument("--img-size", type=int, default=None, help="square input side (default: the recipe's)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "legacy"))
    p.add_argument("--image", help="image file for the parity check (default: a validation item)")
    p.add_argument("--ema", action="store_true", help="export the checkpoint's EMA weights")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument(
        "--tolerance", type=float, default=1e-4, help="fail (exit 1) above this relative difference"
    )
    p.set_defaults(func=_cmd_export)
