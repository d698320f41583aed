"""``visattn train`` and ``visattn eval``: a YAML recipe (``--set key=value`` overrides; ``torchrun`` for DDP).

``eval`` scores a checkpoint on the recipe's test split when it has one (else its selection split; ``--split``
chooses), refuses to score initial weights unless ``--random-init`` says so, applies the training-free
residual-attention trick (``--residual-attention λ`` / ``--sweep-lambda``) to GAP + linear models, and
writes every figure, per-class values and class names included, with ``--output`` (JSON or CSV).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from visattn.config import load_config, parse_overrides
from visattn.engine.build import build_trainer
from visattn.engine.quickstart import quick_recipe
from visattn.engine.tasks import class_names_of, describe_split
from visattn.inference import evaluate
from visattn.models import residual_attention
from visattn.utils.distributed import is_main_process
from visattn.utils.tables import write_csv

from .options import add_allocator, add_run_options, add_set, add_threads, apply_allocator, load_run

__all__ = ["add_parsers", "metrics_record", "write_metrics", "write_report_at_end"]

_LOG = logging.getLogger("visattn.cli")


def write_report_at_end(trainer: Any) -> None:
    """End-of-fit callback: the training report PNGs next to ``log.csv`` (when matplotlib is installed)."""
    try:
        from visattn.viz.report import write_training_report
    except ImportError:
        _LOG.info("training report skipped: matplotlib is not installed (pip install 'visattn[viz]')")
        return
    metrics = trainer.test_metrics or trainer.last_metrics
    source = "test split, best weights" if trainer.test_metrics else "last epoch"
    write_training_report(trainer.out, metrics=metrics, metrics_source=source)


def _train_config(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe file, or (``--model`` / ``--data``) a recipe built from the model's defaults and the data."""
    if args.config and args.model:
        raise ValueError("give a recipe or --model/--data, not both (override recipe keys with --set)")
    if args.config:
        return load_config(args.config, args.set)
    if not (args.model and args.data):
        raise ValueError("visattn train needs a recipe file, or --model NAME --data PATH (see --help)")
    recipe = quick_recipe(
        args.model,
        args.data,
        num_classes=args.num_classes,
        pretrained=args.pretrained,
        model_kwargs=parse_overrides(args.model_arg),
        epochs=args.epochs or 10,
        output=args.output,
    )
    return load_config(None, args.set, base=recipe)


def _cmd_train(args: argparse.Namespace) -> int:
    apply_allocator(args)
    config = _train_config(args)
    trainer = build_trainer(config)
    trainer.callbacks.append(write_report_at_end)
    result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if trainer.dist.is_main:
        best = result.get("best", {})
        text = f"done: {config['output']} (best {best.get('metric')} {best.get('value')} at epoch {best.get('epoch')}"
        test = result.get("test")
        if test is not None:
            metric = config["eval"]["metric"]
            text += f"; test {metric} {test.get(metric)} ({test['split']})"
        print(text + ")")
    return 0


def _plain(value: Any) -> Any:
    """JSON-ready: tensors and arrays become (nested) lists, NaN stays a float."""
    if torch.is_tensor(value):
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def metrics_record(metrics: Mapping[str, Any], split: str, class_names: Sequence[str]) -> dict[str, Any]:
    """Every figure of a metric ``compute()`` dict, per-class values as lists, plus the split and class names."""
    record = {"split": split, "class_names": list(class_names)}
    record.update({k: _plain(v) for k, v in metrics.items() if k != "class_names"})
    return record


def _per_class_columns(record: Mapping[str, Any]) -> dict[str, list]:
    n = len(record["class_names"])
    return {
        k: v
        for k, v in record.items()
        if k != "class_names"
        and isinstance(v, list)
        and len(v) == n
        and not any(isinstance(x, list) for x in v)
    }


def write_metrics(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``.json``: the record(s) as they are; ``.csv``: one row per (record, class) with the per-class values
    and the record's scalars (``lambda``, ``split``, mAP, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".csv":
        path.write_text(json.dumps(records[0] if len(records) == 1 else list(records), indent=2))
        return path
    rows = []
    for record in records:
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float, str)) and k != "class_names"}
        columns = _per_class_columns(record)
        for i, name in enumerate(record["class_names"]):
            rows.append({**scalars, "class": name, **{k: v[i] for k, v in columns.items()}})
        if not record["class_names"]:
            rows.append(scalars)
    write_csv(path, rows)
    return path


def _lambdas(args: argparse.Namespace) -> list[float | None]:
    if args.sweep_lambda:
        try:
            return [float(v) for v in args.sweep_lambda.split(",") if v.strip()]
        except ValueError as err:
            raise ValueError(
                f"--sweep-lambda expects comma-separated numbers, got {args.sweep_lambda!r}"
            ) from err
    return [args.residual_attention]


def _cmd_eval(args: argparse.Namespace) -> int:
    apply_allocator(args)
    config = load_config(args.config, args.set)
    split = args.split or ("test" if config["data"]["test_split"] else "val")
    where = describe_split(config, split)
    lambdas = _lambdas(args)
    records = []
    if args.checkpoint:
        loaded = load_run(args, checkpoint=args.checkpoint, recipe=args.config)
        for lam in lambdas:
            model = residual_attention(loaded.model, lam) if lam is not None else None
            record = metrics_record(evaluate(loaded, split, model=model), where, loaded.class_names)
            records.append({"lambda": lam, **record} if lam is not None else record)
    else:
        if not (args.random_init or config["model"]["checkpoint_path"]):
            raise ValueError(
                "eval needs weights: --checkpoint FILE (or best / last of the recipe's run), a recipe with "
                "model.checkpoint_path, or --random-init to score the initial weights on purpose"
            )
        if lambdas != [None]:
            raise ValueError("--residual-attention / --sweep-lambda need --checkpoint (a trained model)")
        trainer = build_trainer(config, train=False, split=split)
        names = class_names_of(trainer.val_set) or []
        records.append(metrics_record(trainer.evaluate(), where, names))
    if not is_main_process():
        return 0
    scalars = [{k: v for k, v in r.items() if isinstance(v, (int, float, str))} for r in records]
    if len(records) == 1:
        print(json.dumps(scalars[0], indent=2))
    else:
        print(_sweep_table(scalars, config["eval"]["metric"]))
    if args.output:
        _LOG.info("wrote %s", write_metrics(records, args.output))
    return 0


def _sweep_table(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    keys = [k for k in (metric, "mAP", "CF1", "OF1", "top1", "mA") if k in rows[0]]
    keys = list(dict.fromkeys(keys))
    header = "| λ | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for row in rows:
        cells = " | ".join(f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys)
        lines.append(f"| {row['lambda']:g} | {cells} |")
    return f"training-free residual attention on {rows[0]['split']}\n" + "\n".join(lines)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a YAML recipe (configs/), or --model NAME --data PATH without one; torchrun for DDP",
    )
    p.add_argument("config", nargs="?", help="recipe file, e.g. configs/glyph_canvas_csra.yaml")
    q = p.add_argument_group("without a recipe (visattn.engine.quickstart)")
    q.add_argument("--model", help="registered model name, e.g. csra or resattnet56")
    q.add_argument(
        "--data", help="folder with train/<class>/ (single-label) or train.csv (multi-label), or a CSV"
    )
    q.add_argument("--num-classes", type=int, help="default: the number of classes in the data")
    q.add_argument("--pretrained", metavar="FILE", help="whole-model weights file (model.pretrained_file)")
    q.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model keyword argument"
    )
    q.add_argument("--epochs", type=int, help="default 10")
    q.add_argument("--output", help="run folder (default runs/<model>-<data name>)")
    add_set(p)
    p.add_argument(
        "--resume", nargs="?", const="auto", default=None, help="resume: a checkpoint, or the run's latest"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run in the output folder (default: refuse)",
    )
    add_allocator(p)
    add_threads(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on the recipe's test (or selection) split")
    p.add_argument("config", help="the recipe the checkpoint was trained with")
    p.add_argument("--checkpoint", help="weights (.safetensors / .pth), or best / last of the recipe's run")
    add_run_options(p, recipe_flag=False, model_flag=False)
    p.add_argument(
        "--split",
        choices=("val", "test"),
        default=None,
        help="test (default when the recipe has data.test_split) or val (the selection split)",
    )
    p.add_argument(
        "--random-init",
        action="store_true",
        help="without --checkpoint: score the initial weights on purpose",
    )
    p.add_argument(
        "--residual-attention",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="apply the training-free residual-attention trick (CSRA) to a GAP + linear model first",
    )
    p.add_argument(
        "--sweep-lambda",
        metavar="L1,L2,...",
        help="the trick at each λ (e.g. 0,0.1,0.2,0.5): one table row each",
    )
    p.add_argument("--output", help="write every figure (per-class values, class names) here: .json or .csv")
    add_allocator(p)
    p.set_defaults(func=_cmd_eval)
