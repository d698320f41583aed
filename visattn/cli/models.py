"""``visattn models``, ``visattn info`` and ``visattn convert``: the model registry from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from visattn.config import parse_overrides
from visattn.models import list_converters, list_models, model_info

from .options import add_set, add_threads

__all__ = ["add_parsers"]


def _cmd_models(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        print(f"no visattn model matches {args.pattern!r}", file=sys.stderr)
        return 1
    print("\n".join(names))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    info = model_info(args.name, args.img_size, args.convention, **parse_overrides(args.set))
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

    converted = convert_file(args.source, args.input, args.output, **parse_overrides(args.set))
    kwargs = ", ".join(f"{k}={v!r}" for k, v in converted.model_kwargs.items())
    print(f"wrote {args.output}: visattn.create_model({converted.model_name!r}, {kwargs}) loads it strictly")
    return 0


def add_parsers(sub: Any) -> None:
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
    add_set(p, help="model keyword argument, e.g. drop_rate=0.1")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_threads(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert an official checkpoint to visattn safetensors")
    p.add_argument("--from", dest="source", required=True, choices=list_converters() or None)
    p.add_argument("input")
    p.add_argument("output")
    add_set(p, help="converter option, e.g. lam=0.1")
    p.set_defaults(func=_cmd_convert)
