"""``visattn visualize`` and ``visattn report`` (the :mod:`visattn.cli` plugin protocol).

Importing this module needs nothing beyond the core dependencies; matplotlib (``visattn[viz]``) is imported
when a command runs, and a missing install is reported as an error naming the extra.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_subparsers"]


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError("visualisation needs matplotlib: pip install 'visattn[viz]'") from err


def _cmd_visualize(args: argparse.Namespace) -> int:
    _need_matplotlib()
    from visattn.cli import _parse_sets

    from .overlay import visualize_run

    if not args.images and not args.samples:
        raise ValueError("give image files and/or --samples N (items of the recipe's validation split)")
    gradcam: bool | str = False
    if args.gradcam is not None:
        gradcam = args.gradcam or True
    written = visualize_run(
        args.out,
        args.images,
        checkpoint=args.checkpoint,
        config=args.config,
        model_name=args.model,
        model_kwargs=_parse_sets(args.model_arg),
        overrides=args.set,
        samples=args.samples,
        topk=args.topk,
        pixels=args.pixels,
        layers=args.layers,
        img_size=args.img_size,
        gradcam=gradcam,
        ncols=args.ncols,
    )
    for path in written:
        print(path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    _need_matplotlib()
    from .report import write_training_report

    written = write_training_report(args.run_dir, evaluate=args.evaluate)
    for path in written:
        print(path)
    return 0


def add_subparsers(subparsers: Any) -> None:
    """Add ``visualize`` and ``report``."""
    p = subparsers.add_parser(
        "visualize",
        help="contact sheets of every attention map (CSRA, VAA, RAN, PSA, SAN) per image",
        description=(
            "One labelled PNG per image with the model's own attention maps: CSRA class score maps of the "
            "top-k classes, VAA masks per scale, RAN soft masks per stage, PSA spatial masks and channel "
            "weights, SAN aggregation weights at chosen pixels."
        ),
    )
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument(
        "--checkpoint", help="weights, e.g. runs/demo/csra/best.safetensors (its run's config.json is used)"
    )
    p.add_argument("--config", help="recipe or config.json (default: the checkpoint's run)")
    p.add_argument("--model", help="registered model name, when there is no recipe")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model keyword (with --model)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--topk", type=int, default=3, help="classes shown per CSRA head / VAA scale")
    p.add_argument(
        "--samples", type=int, default=0, help="also draw the first N items of the validation split"
    )
    p.add_argument(
        "--pixels", nargs="+", metavar="Y,X", help="image pixels for SAN weights (default: the centre)"
    )
    p.add_argument("--layers", nargs="+", metavar="PATTERN", help="module-name patterns to keep")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--ncols", type=int, default=4, help="panels per row")
    p.add_argument(
        "--gradcam",
        nargs="?",
        const="",
        default=None,
        metavar="LAYER",
        help="add Grad-CAM panels (pytorch-grad-cam; optional target layer name)",
    )
    p.set_defaults(func=_cmd_visualize)

    p = subparsers.add_parser(
        "report", help="training report PNGs (curves, per-class values, confusion matrix) of a run"
    )
    p.add_argument("run_dir")
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="evaluate best.safetensors on the validation split for the per-class chart / confusion matrix",
    )
    p.set_defaults(func=_cmd_report)
