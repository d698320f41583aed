"""``visattn visualize`` and ``visattn report``.

Importing this module needs nothing beyond the core dependencies; matplotlib (``visattn[viz]``) is imported
when a command runs, and a missing install is reported as an error naming the extra. The model comes from
the run loader (:func:`visattn.cli.options.load_run`), as for ``eval``, ``predict`` and ``export``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .options import add_run_options, add_threads, load_run

__all__ = ["add_parsers"]


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError("visualisation needs matplotlib: pip install 'visattn[viz]'") from err


def _cmd_visualize(args: argparse.Namespace) -> int:
    _need_matplotlib()
    from visattn.viz.overlay import visualize_run

    if not args.images and not args.samples:
        raise ValueError(
            "give image files and/or --samples N (items of the recipe's test, else selection, split)"
        )
    gradcam: bool | str = False
    if args.gradcam is not None:
        gradcam = args.gradcam or True
    written = visualize_run(
        load_run(args, checkpoint=args.checkpoint),
        args.out,
        args.images,
        samples=args.samples,
        topk=args.topk,
        pixels=args.pixels,
        layers=args.layers,
        gradcam=gradcam,
        scale=args.scale,
        ncols=args.ncols,
    )
    for path in written:
        print(path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    _need_matplotlib()
    from visattn.viz.report import write_training_report

    written = write_training_report(args.run_dir, evaluate=args.evaluate)
    for path in written:
        print(path)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
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
    add_run_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--topk", type=int, default=3, help="classes shown per CSRA head / VAA scale")
    p.add_argument(
        "--samples",
        type=int,
        default=0,
        help="also draw the first N items of the test split (else the selection split)",
    )
    p.add_argument(
        "--pixels", nargs="+", metavar="Y,X", help="image pixels for SAN weights (default: the centre)"
    )
    p.add_argument("--layers", nargs="+", metavar="PATTERN", help="module-name patterns to keep")
    p.add_argument("--ncols", type=int, default=4, help="panels per row")
    p.add_argument(
        "--scale",
        choices=("fixed", "per-map"),
        default="fixed",
        help="fixed: each map kind on its own fixed range, e.g. CSRA sigmoid(S) on 0-1 (default); "
        "per-map: every map stretched to its own min-max",
    )
    p.add_argument(
        "--gradcam",
        nargs="?",
        const="",
        default=None,
        metavar="LAYER",
        help="add Grad-CAM panels (pytorch-grad-cam; optional target layer name)",
    )
    p.set_defaults(func=_cmd_visualize)

    p = sub.add_parser(
        "report", help="training report PNGs (curves, per-class values, confusion matrix) of a run"
    )
    p.add_argument("run_dir")
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="evaluate best.safetensors on the test (else selection) split for the per-class chart / confusion matrix",
    )
    add_threads(p)
    p.set_defaults(func=_cmd_report)
