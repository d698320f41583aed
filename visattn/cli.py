"""The ``visattn`` command line.

Subcommands: ``train`` / ``eval`` (YAML recipes, ``--set key=value`` overrides; ``torchrun`` for DDP),
``predict`` (per-class scores and labels of images), ``models`` (registered models), ``info``
(parameters, operation count, feature info and input configuration), ``convert`` (official checkpoint →
visattn safetensors); further commands (``visualize``, ``export``, ``bench``) come from the modules in
:data:`PLUGINS`, each exposing ``add_subparsers(subparsers)``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "PLUGINS"]

# Modules adding subcommands; a module that is not part of this installation is skipped.
PLUGINS = ("visattn.viz.commands", "visattn.export", "visattn.bench")


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # plain strings need no quotes: --set relation=dot


def _parse_sets(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _cmd_models(args: argparse.Namespace) -> int:
    import visattn

    names = visattn.list_models(args.pattern)
    if not names:
        print(f"no visattn model matches {args.pattern!r}", file=sys.stderr)
        return 1
    print("\n".join(names))
    return 0


def default_flop_convention(name: str, model: Any) -> str:
    """The convention the model's paper uses for its published operation counts."""
    return getattr(model, "flop_convention", "san" if name.startswith("san") else "macs")


def model_info(
    name: str, img_size: int | None = None, convention: str = "auto", **kwargs: Any
) -> dict[str, Any]:
    """Parameters, operation count, feature info and input configuration of a registered model."""
    import visattn
    from visattn.models import count_macs, count_parameters

    model = visattn.create_model(name, **kwargs)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    input_size = tuple(cfg.get("input_size", (3, 224, 224)))
    if img_size is not None:
        input_size = (input_size[0], img_size, img_size)
    if convention == "auto":
        convention = default_flop_convention(name, model)
    info = {
        "model": name,
        "params": count_parameters(model),
        "input_size": list(input_size),
        "ops": count_macs(model, input_size, convention=convention),
        "ops_convention": convention,
        "feature_info": [
            {k: v for k, v in d.items() if k in ("num_chs", "reduction", "module")}
            for d in getattr(model, "feature_info", [])
        ],
        "input_config": {
            k: cfg[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct") if k in cfg
        },
    }
    return info


def _cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.name, args.img_size, args.convention, **_parse_sets(args.set))
    if args.json:
        print(json.dumps(info, indent=2, default=list))
        return 0
    h, w = info["input_size"][1:]
    print(f"model        {info['model']}")
    print(f"parameters   {info['params']:,} ({info['params'] / 1e6:.2f} M)")
    print(f"operations   {info['ops'] / 1e9:.3f} G at {h}x{w}, convention '{info['ops_convention']}'")
    for key, value in info["input_config"].items():
        print(f"{key:<12} {value}")
    for d in info["feature_info"]:
        print(f"feature      {d['module']:<24} channels {d['num_chs']:<6} reduction {d['reduction']}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from visattn.config import load_config
    from visattn.engine.build import build_trainer

    config = load_config(args.config, args.set)
    trainer = build_trainer(config)
    result = trainer.fit(resume=args.resume)
    if trainer.dist.is_main:
        best = result.get("best", {})
        print(
            f"done: {config['output']} (best {best.get('metric')} {best.get('value')} at epoch {best.get('epoch')})"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from visattn.config import load_config
    from visattn.engine.build import build_trainer

    overrides = list(args.set)
    if args.checkpoint:
        overrides.append(f"model.checkpoint_path={args.checkpoint}")
    config = load_config(args.config, overrides)
    trainer = build_trainer(config, train=False)
    metrics = trainer.evaluate()
    if trainer.dist.is_main:
        printable = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        print(json.dumps(printable, indent=2))
        if args.output:
            Path(args.output).write_text(json.dumps(printable, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from visattn.predict import predict_images

    results = predict_images(
        args.config,
        args.images,
        checkpoint=args.checkpoint,
        overrides=args.set,
        topk=args.topk,
        threshold=args.threshold,
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        labels = ", ".join(r["labels"]) or "(none above threshold)"
        top = ", ".join(f"{name} {score:.3f}" for name, score in r["top"])
        print(f"{r['image']}: {labels}  [top: {top}]")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from visattn.models.convert import convert_file

    converted = convert_file(args.source, args.input, args.output, **_parse_sets(args.set))
    kwargs = ", ".join(f"{k}={v!r}" for k, v in converted.model_kwargs.items())
    print(f"wrote {args.output}: visattn.create_model({converted.model_name!r}, {kwargs}) loads it strictly")
    return 0


def _add_allocator_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allocator",
        choices=("tuned", "system"),
        default=None,
        help="malloc setting (default: $VISATTN_ALLOCATOR or tuned; MALLOC_* variables already set win); "
        "see visattn/_allocator.py",
    )


def build_parser() -> argparse.ArgumentParser:
    from visattn.models.convert import list_converters

    parser = argparse.ArgumentParser(prog="visattn", description="Visual attention for image recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a YAML recipe (configs/); torchrun for DDP")
    p.add_argument("config", help="recipe file, e.g. configs/glyph_canvas_csra.yaml")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=2"
    )
    p.add_argument(
        "--resume", nargs="?", const="auto", default=None, help="resume: a checkpoint, or the run's latest"
    )
    _add_allocator_option(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a recipe's model on its validation split")
    p.add_argument("config")
    p.add_argument("--checkpoint", help="weights (.safetensors / .pth) to evaluate")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--output", help="also write the metrics as JSON here")
    _add_allocator_option(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="per-class scores and predicted labels of image files")
    p.add_argument("config", help="the recipe the checkpoint was trained with")
    p.add_argument("images", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'san*'")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("info", help="parameters, operations, feature info and input config of a model")
    p.add_argument("name")
    p.add_argument("--img-size", type=int, default=None, help="square input size (default: the model's)")
    p.add_argument(
        "--convention",
        choices=("auto", "macs", "san"),
        default="auto",
        help="operation-count convention; auto = the one the model's paper uses",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model keyword argument")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert an official checkpoint to visattn safetensors")
    p.add_argument("--from", dest="source", required=True, choices=list_converters() or None)
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="converter option, e.g. lam=0.1"
    )
    p.set_defaults(func=_cmd_convert)

    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue  # this plugin is not part of this installation
            raise
        module.add_subparsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "eval"):  # `bench` applies it itself (and records it per row)
        from visattn._allocator import apply_allocator_setting

        print(f"visattn {args.command}: allocator {apply_allocator_setting(args.allocator)}", file=sys.stderr)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as err:
        print(f"visattn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
