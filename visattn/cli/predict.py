"""``visattn predict``: results of image files under a trained recipe (:mod:`visattn.inference.predict`)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from visattn.inference import predict, write_predictions
from visattn.inference.predict import expand_images

from .options import add_run_options, load_run

__all__ = ["add_parsers"]

_LOG = logging.getLogger("visattn.cli")


def _cmd_predict(args: argparse.Namespace) -> int:
    images = expand_images(args.images)
    loaded = load_run(args, checkpoint=args.checkpoint, recipe=args.recipe)
    dense = loaded.task in ("segmentation", "keypoints")
    out = args.out or ("predictions" if dense else None)
    _LOG.info("predicting %d image(s) with %s (%s weights)", len(images), loaded.name, loaded.weights)
    results = predict(loaded, images, topk=args.topk, threshold=args.threshold, out_dir=out)
    if out is not None:
        path = write_predictions(results, f"{out}/predictions.json")
        _LOG.info("wrote %s%s", path, " and one PNG per image" if dense else "")
    if args.results_file:
        _LOG.info("wrote %s", write_predictions(results, args.results_file))
    if args.json or dense:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        labels = ", ".join(r["labels"]) or "(none above threshold)"
        top = ", ".join(f"{name} {score:.3f}" for name, score in r["top"])
        print(f"{r['image']}: {labels}  [top: {top}]")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="scores and labels (classification), class maps (segmentation) or keypoints of image files",
    )
    p.add_argument("recipe", help="the recipe the checkpoint was trained with")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--checkpoint", required=True, help="weights file, or best / last of the recipe's run")
    add_run_options(p, recipe_flag=False, model_flag=False)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.5, help="multi-label: labels at or above it")
    p.add_argument(
        "--out",
        help="folder for predictions.json and the PNGs of dense tasks (default for those: predictions/)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--results-file",
        help="also write the results here: .json, or .csv (one row per image, a column per class)",
    )
    p.set_defaults(func=_cmd_predict)
