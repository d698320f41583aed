"""``visattn train`` and ``visattn eval``: a YAML recipe (``--set key=value`` overrides; ``torchrun`` for DDP)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from visattn.config import load_config
from visattn.engine.build import build_trainer
from visattn.inference import evaluate
from visattn.utils.distributed import is_main_process

from .options import add_allocator, add_run_options, add_set, apply_allocator, load_run

__all__ = ["add_parsers", "write_report_at_end"]

_LOG = logging.getLogger("visattn.cli")


def write_report_at_end(trainer: Any) -> None:
    """End-of-fit callback: the training report PNGs next to ``log.csv`` (when matplotlib is installed)."""
    try:
        from visattn.viz.report import write_training_report
    except ImportError:
        _LOG.info("training report skipped: matplotlib is not installed (pip install 'visattn[viz]')")
        return
    write_training_report(trainer.out, metrics=trainer.last_metrics, metrics_source="last epoch")


def _cmd_train(args: argparse.Namespace) -> int:
    apply_allocator(args)
    config = load_config(args.config, args.set)
    trainer = build_trainer(config)
    trainer.callbacks.append(write_report_at_end)
    result = trainer.fit(resume=args.resume)
    if trainer.dist.is_main:
        best = result.get("best", {})
        print(
            f"done: {config['output']} (best {best.get('metric')} {best.get('value')} at epoch {best.get('epoch')})"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    apply_allocator(args)
    if args.checkpoint:
        metrics = evaluate(load_run(args, checkpoint=args.checkpoint, recipe=args.config))
    else:  # the recipe's own weights (model.checkpoint_path / pretrained_file, else initial ones)
        metrics = build_trainer(load_config(args.config, args.set), train=False).evaluate()
    if is_main_process():
        printable = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        print(json.dumps(printable, indent=2))
        if args.output:
            Path(args.output).write_text(json.dumps(printable, indent=2))
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("train", help="train a YAML recipe (configs/); torchrun for DDP")
    p.add_argument("config", help="recipe file, e.g. configs/glyph_canvas_csra.yaml")
    add_set(p)
    p.add_argument(
        "--resume", nargs="?", const="auto", default=None, help="resume: a checkpoint, or the run's latest"
    )
    add_allocator(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a recipe's model on its validation split")
    p.add_argument("config", help="the recipe the checkpoint was trained with")
    p.add_argument("--checkpoint", help="weights (.safetensors / .pth), or best / last of the recipe's run")
    add_run_options(p, recipe_flag=False, model_flag=False)
    p.add_argument("--output", help="also write the metrics as JSON here")
    add_allocator(p)
    p.set_defaults(func=_cmd_eval)
