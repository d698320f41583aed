"""YAML recipes: loading, ``--set key=value`` overrides, and validation with errors that name the key.

A recipe is a nested mapping with the top-level sections ``model``, ``data``, ``loss``, ``optim``,
``sched``, ``train``, ``eval`` and ``output`` (see ``configs/`` and ``docs/recipes.md``). Values are
validated against :data:`DEFAULTS`: an unknown key or a value of the wrong type is reported as
``<file>: key 'optim.lr': expected a number, got 'fast'``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "AT_LEAST",
    "CHOICES",
    "DEFAULTS",
    "FRACTIONS",
    "ConfigError",
    "apply_overrides",
    "load_config",
    "merge",
    "parse_overrides",
    "parse_value",
    "split_override",
]


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


# Every recognised key with its default. ``None`` defaults accept any type; dict-valued keys marked
# with OPEN accept arbitrary sub-keys (model and dataset keyword arguments).
OPEN: dict[str, Any] = {}
DEFAULTS: dict[str, Any] = {
    "task": "multilabel",
    # Options of the task (e.g. label smoothing, mixup, heatmap sigma), read by its builder.
    "task_kwargs": OPEN,
    "model": {"name": None, "kwargs": OPEN, "pretrained_file": None, "checkpoint_path": None},
    "data": {
        "name": None,
        "kwargs": OPEN,
        "train_split": "train",
        # Selection split (per-epoch evaluation, best checkpoint, plateau schedules). None: hold out a seeded
        # val_fraction of the training split. The test split is evaluated once, after training, with the
        # best weights (None: no test evaluation).
        "val_split": None,
        "val_fraction": 0.1,
        "test_split": None,
        "img_size": 224,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "train_transform": "flip_rrc",
        "rrc_scale": [0.7, 1.0],
        "batch_size": 16,
        "eval_batch_size": None,
        "workers": 0,
        # Channels of the model input (1 grey, 3 RGB); images are converted by the transforms. None: the
        # model's model.kwargs.in_chans when given, else the images' own.
        "channels": None,
        "shuffle": True,
        "resize_before": None,
        "rrc_ratio": [0.75, 1.3333333333333333],
    },
    "loss": {"name": "bce", "kwargs": OPEN, "mask_ignored": False},
    "optim": {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "head_lr_mult": 1.0,
        "head_keywords": ["classifier", "head", "fc"],
        "filter_bias_and_bn": False,
        "clip_grad": None,
    },
    "sched": {
        "name": "step",
        "decay_epochs": 30,
        "decay_rate": 0.1,
        "decay_milestones": [30, 60, 90],
        "warmup_epochs": 0,
        "warmup_lr": 1e-6,
        "min_lr": 0.0,
        "step_on_epochs": True,
        "patience_epochs": 10,
        "plateau_threshold": 1e-4,
    },
    "train": {
        "epochs": 1,
        "seed": 0,
        "amp": False,
        "amp_dtype": "bfloat16",
        "ema": False,
        "ema_decay": 0.9998,
        "log_interval": 50,
        "keep_checkpoints": 3,
        "max_steps_per_epoch": None,
        "channels_last": False,
        "sync_bn": False,
    },
    "eval": {"metric": "mAP", "mode": "max", "every": 1, "threshold": 0.5, "preset": None},
    "output": "runs/default",
}


# Ranges checked when a recipe loads (an int key must hold an integer): ``key: (minimum, integer)``.
AT_LEAST: dict[str, tuple[float, bool]] = {
    "data.img_size": (1, True),
    "data.batch_size": (1, True),
    "data.eval_batch_size": (1, True),
    "data.workers": (0, True),
    "data.resize_before": (1, True),
    "train.epochs": (1, True),
    "train.max_steps_per_epoch": (1, True),
    "train.log_interval": (0, True),
    "train.keep_checkpoints": (1, True),
    "train.seed": (0, True),
    "eval.every": (1, True),
    "optim.lr": (0, False),
    "optim.weight_decay": (0, False),
    "optim.head_lr_mult": (0, False),
    "optim.clip_grad": (0, False),
    "sched.warmup_epochs": (0, False),
    "sched.decay_epochs": (0, False),
    "sched.min_lr": (0, False),
    "sched.warmup_lr": (0, False),
}
# Keys whose value lies strictly between 0 and 1 (or in [0, 1] for the threshold).
FRACTIONS = {"data.val_fraction": False, "train.ema_decay": False, "eval.threshold": True}
CHOICES: dict[str, tuple[Any, ...]] = {
    "train.amp_dtype": ("bfloat16", "float16"),
    "eval.mode": ("max", "min"),
    "data.channels": (None, 1, 3),
}


def _check_values(config: Mapping[str, Any], where: str) -> None:
    def value(key: str) -> Any:
        section, name = key.split(".")
        return config[section][name]

    for key, (low, integer) in AT_LEAST.items():
        v = value(key)
        if v is None:
            continue
        if integer and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"{where}: key {key!r}: expected an integer, got {v!r}")
        if v < low:
            raise ConfigError(f"{where}: key {key!r}: expected a value >= {low}, got {v!r}")
    for key, closed in FRACTIONS.items():
        v = value(key)
        if v is not None and not (0 <= v <= 1 if closed else 0 < v < 1):
            span = "[0, 1]" if closed else "(0, 1), both ends excluded"
            raise ConfigError(f"{where}: key {key!r}: expected a value in {span}, got {v!r}")
    for key, allowed in CHOICES.items():
        if value(key) not in allowed:
            raise ConfigError(f"{where}: key {key!r}: expected one of {list(allowed)}, got {value(key)!r}")
    for key in ("data.mean", "data.std"):
        v = value(key)
        if not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ConfigError(f"{where}: key {key!r}: expected a non-empty list of numbers, got {v!r}")
    if any(s <= 0 for s in config["data"]["std"]):
        raise ConfigError(f"{where}: key 'data.std': every value must be > 0, got {config['data']['std']!r}")


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``update`` wins); lists and scalars are replaced, not merged.

    A mapping in ``update`` holding ``_delete_: true`` replaces the base mapping instead of merging into it
    (as in mmengine configs), e.g. to give a derived recipe's model entirely different ``kwargs``.
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and value.get("_delete_"):
            out[key] = copy.deepcopy({k: v for k, v in value.items() if k != "_delete_"})
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` and ``5E4`` are numbers, not strings.

    YAML 1.1 (PyYAML's default) needs a dot in a float (``1.0e-3``), so ``lr: 1e-3`` would be read as the
    string ``'1e-3'``; every recipe, ``config.json`` and ``--set`` value goes through this loader instead.
    """


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """One ``--set`` value as YAML: ``1e-3`` → 0.001, ``5`` → 5, ``true`` → True, ``null`` → None,
    ``[1, 2]`` → a list, ``{a: 1}`` → a dict; anything else (``dot``, ``runs/x``) stays the string."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return text


def split_override(item: str) -> tuple[str, Any]:
    """``"key.sub=value"`` → ``("key.sub", parsed value)``; the one parser of every ``--set``-style option."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    return key.strip(), parse_value(value.strip())


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings → ``{key: value}`` (flat: model keyword arguments, converter options)."""
    return dict(split_override(item) for item in items)


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed by :func:`parse_value`) to a nested recipe."""
    out = copy.deepcopy(dict(config))
    for item in overrides:
        key, value = split_override(item)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def _check(config: Mapping[str, Any], defaults: Mapping[str, Any], where: str, path: str) -> None:
    for key, value in config.items():
        full = f"{path}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"{where}: unknown key {full!r} (known keys here: {known})")
        default = defaults[key]
        if default is OPEN:
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{where}: key {full!r}: expected a mapping of keyword arguments, got {value!r}"
                )
        elif isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: key {full!r}: expected a section (mapping), got {value!r}")
            _check(value, default, where, full + ".")
        elif default is None or value is None:
            continue
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: key {full!r}: expected true/false, got {value!r}")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: key {full!r}: expected a number, got {value!r}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{where}: key {full!r}: expected a string, got {value!r}")
        elif isinstance(default, list) and not isinstance(value, list):
            raise ConfigError(f"{where}: key {full!r}: expected a list, got {value!r}")


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a YAML recipe (optional), apply overrides, fill defaults, validate.

    A recipe may name another with ``_base_: other.yaml`` (relative to its own folder); the child wins.
    """
    where = str(path) if path is not None else "<overrides>"
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        raw = merge(raw, _read_yaml(Path(path)))
    raw = apply_overrides(raw, overrides)
    _check(raw, DEFAULTS, where, "")
    config = merge(_strip_open(DEFAULTS), raw)
    for section, key in (("model", "name"), ("data", "name")):
        if not config[section][key]:
            raise ConfigError(f"{where}: key '{section}.{key}' is required")
    _check_values(config, where)
    return config


def _strip_open(defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: ({} if v is OPEN else _strip_open(v) if isinstance(v, Mapping) else copy.deepcopy(v))
        for k, v in defaults.items()
    }


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe {str(path)!r} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    try:
        text = path.read_text()
        data = (json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_Loader)) or {}  # noqa: S506
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line}: not valid YAML ({getattr(err, 'problem', err)})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping at the top level, got {type(data).__name__}")
    base_name = data.pop("_base_", None)
    if base_name:
        data = merge(_read_yaml(path.parent / base_name, (*seen, path.resolve())), data)
    return data
