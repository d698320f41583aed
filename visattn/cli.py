"""The ``visattn`` command line.

Subcommands: ``models`` (list registered models), ``info`` (parameters, operation count, feature info and
input configuration of a model), ``convert`` (official checkpoint → visattn safetensors).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


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


def _cmd_convert(args: argparse.Namespace) -> int:
    from visattn.models.convert import convert_file

    converted = convert_file(args.source, args.input, args.output, **_parse_sets(args.set))
    kwargs = ", ".join(f"{k}={v!r}" for k, v in converted.model_kwargs.items())
    print(f"wrote {args.output}: visattn.create_model({converted.model_name!r}, {kwargs}) loads it strictly")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from visattn.models.convert import list_converters

    parser = argparse.ArgumentParser(prog="visattn", description="Visual attention for image recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"visattn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
