"""The ``visattn`` command line: one module per command group, nothing imports this package.

=============  ===========================================================================================
module         commands
=============  ===========================================================================================
``train``      ``train`` (YAML recipe, ``--set key=value``; ``torchrun`` for DDP), ``eval``
``predict``    ``predict`` (scores/labels, segmentation class maps, keypoints of image files)
``models``     ``models`` (registered names), ``info`` (params, ops, feature info), ``convert``
``viz``        ``visualize`` (attention contact sheets), ``report`` (training report PNGs)
``export``     ``export`` (ONNX + onnxruntime parity)
``bench``      ``bench`` (throughput, memory, MFU)
=============  ===========================================================================================

Every ``--set`` / ``--model-arg`` value is parsed by :func:`visattn.config.parse_value` (YAML: ``1e-3``,
``true``, ``null``, ``[1, 2]``); every command that loads a trained model does so through
:func:`visattn.inference.load_trained_model` (:mod:`visattn.cli.options`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from visattn.engine.trainer import TrainingDivergedError
from visattn.utils.logs import log_to_stderr

from . import bench, export, models, predict, train, viz
from .options import apply_threads

__all__ = ["COMMAND_GROUPS", "build_parser", "main"]

COMMAND_GROUPS = (train, predict, models, viz, export, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visattn", description="Visual attention for image recognition.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_to_stderr()
    try:
        apply_threads(args)
        return args.func(args)
    except TrainingDivergedError as err:
        print(f"visattn {args.command}: {err}", file=sys.stderr)
        return 3
    except (ValueError, KeyError, FileNotFoundError, ImportError) as err:
        print(f"visattn {args.command}: error: {err}", file=sys.stderr)
        return 2
