"""Options several commands share, each parsed in one place: ``--set``, ``--allocator``, the run loader's.

``add_run_options`` + :func:`load_run` give ``eval``, ``predict``, ``visualize`` and ``export`` the same way of
naming a trained model (checkpoint, recipe or model name, overrides, ``--no-ema``), all resolved by
:func:`visattn.inference.load_trained_model`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from visattn.config import parse_overrides
from visattn.inference import RunDir, TrainedModel, load_trained_model
from visattn.utils.allocator import MODES, apply_allocator_setting

__all__ = [
    "add_allocator",
    "add_run_options",
    "add_set",
    "add_threads",
    "apply_allocator",
    "apply_allocator_setting",
    "apply_threads",
    "load_run",
    "resolve_checkpoint",
]

_LOG = logging.getLogger("visattn.cli")


def add_set(p: argparse.ArgumentParser, help: str = "recipe override, e.g. train.epochs=2") -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's; 1 is often faster per sample on a loaded machine)",
    )


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads N`` of any command: ``torch.set_num_threads(N)``."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def add_allocator(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allocator",
        choices=MODES,
        default=None,
        help="malloc setting (default: $VISATTN_ALLOCATOR or tuned; MALLOC_* variables already set win); "
        "see visattn/utils/allocator.py",
    )


def apply_allocator(args: argparse.Namespace) -> str:
    setting = apply_allocator_setting(args.allocator)
    _LOG.info("visattn %s: allocator %s", args.command, setting)
    return setting


def add_run_options(p: argparse.ArgumentParser, recipe_flag: bool = True, model_flag: bool = True) -> None:
    """``--checkpoint`` (a file, or ``best`` / ``last`` of the recipe's run), ``--no-ema``, ``--img-size``,
    ``--set``; with ``recipe_flag`` also ``--config``; with ``model_flag`` ``--model`` / ``--model-arg``."""
    if recipe_flag:
        p.add_argument("--config", help="recipe or run config.json (default: the checkpoint's run)")
    if model_flag:
        p.add_argument("--model", help="registered model name, when there is no recipe")
        p.add_argument(
            "--model-arg",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="model keyword argument (with --model)",
        )
    add_set(p)
    add_threads(p)
    p.add_argument("--img-size", type=int, default=None, help="square input side (default: the recipe's)")
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="load weights holding NaN/infinity (refused by default: they come from a diverged run)",
    )
    p.add_argument(
        "--no-ema",
        dest="ema",
        action="store_const",
        const=False,
        default=None,
        help="use the raw weights of a train.ema checkpoint (default: its EMA weights)",
    )


def resolve_checkpoint(checkpoint: str | None, recipe: str | None, overrides: list[str]) -> Path | None:
    """``best`` / ``last`` name files of the recipe's run (its ``output:``); anything else is a path."""
    if checkpoint in ("best", "last"):
        if recipe is None:
            raise ValueError(f"--checkpoint {checkpoint} needs the recipe (its output folder holds the run)")
        from visattn.config import load_config

        return RunDir(Path(load_config(recipe, overrides)["output"])).checkpoint(checkpoint)
    return Path(checkpoint) if checkpoint else None


def load_run(
    args: argparse.Namespace, checkpoint: str | None = None, recipe: str | None = None
) -> TrainedModel:
    """The trained model the command's options name (see :func:`add_run_options`)."""
    recipe = recipe if recipe is not None else getattr(args, "config", None)
    path = resolve_checkpoint(checkpoint, recipe, args.set)
    loaded = load_trained_model(
        path,
        config=recipe,
        model_name=getattr(args, "model", None),
        model_kwargs=parse_overrides(getattr(args, "model_arg", [])),
        overrides=args.set,
        img_size=args.img_size,
        ema=args.ema,
        allow_nonfinite=args.allow_nonfinite,
    )
    if path is not None:
        _LOG.info("loaded %s weights from %s", loaded.weights, path)
    return loaded
