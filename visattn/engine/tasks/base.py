"""The task registry: what a recipe's ``task:`` builds, and the image pipeline each task feeds its model.

A task object has ``train_module(model)``, ``training_loss(model, batch, epoch) -> loss``,
``evaluate_batch(model, batch, metric)``, ``metric_factory(dataset=None)`` (a fresh metric for evaluating
``dataset``: keypoint metrics score against that dataset's ground truth) and
``state_dict()/load_state_dict()``.
Each task module registers a :class:`TaskSpec`; :mod:`visattn.engine.tasks` imports them all, so every
task name is known as soon as the package is imported.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = [
    "ROLES",
    "TaskSpec",
    "build_split",
    "check_metric_name",
    "class_names_of",
    "describe_split",
    "input_channels",
    "get_task_spec",
    "image_transform",
    "list_tasks",
    "model_input_fn",
    "num_classes_of",
    "register_task",
    "task_options",
]


@dataclass(frozen=True)
class TaskSpec:
    """How a recipe's ``task:`` is built and how its images reach the model.

    Attributes:
        build: ``build(config, model, train_set) -> task``.
        transform: ``transform(config, train) -> callable`` given to the datasets; default
            :func:`image_transform` (the ``data`` section's image transforms, applied to float images).
        image_input: ``image_input(config) -> f`` where ``f(image)`` maps a decoded uint8 ``(C, H, W)`` image
            file to the model input ``(C, h, w)`` exactly as the evaluation split's items are made; default:
            float conversion then the evaluation ``transform``. Inference (``predict``, ``visualize``,
            ``export``) feeds files through it, so every command sees what ``eval`` sees.
    """

    build: Callable[[Mapping[str, Any], nn.Module, Dataset | None], Any]
    transform: Callable[[Mapping[str, Any], bool], Callable] | None = None
    image_input: Callable[[Mapping[str, Any]], Callable[[torch.Tensor], torch.Tensor]] | None = None


_TASKS: dict[str, TaskSpec] = {}
#: The roles of a recipe's data: ``train``, ``val`` (selection: per-epoch evaluation) and ``test`` (once).
ROLES = ("train", "val", "test")


def register_task(name: str, spec: TaskSpec) -> None:
    """Make ``task: name`` available to recipes."""
    _TASKS[name] = spec


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task_spec(config: Mapping[str, Any]) -> TaskSpec:
    """The :class:`TaskSpec` of the recipe's ``task``; an unknown name is one error listing the known ones."""
    name = config["task"]
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r} (key 'task'); available: {list_tasks()}")
    return _TASKS[name]


def task_options(config: Mapping[str, Any], task: str, known: Sequence[str]) -> dict[str, Any]:
    """The recipe's ``task_kwargs``; an unknown key is one error naming it and the known ones."""
    options = dict(config.get("task_kwargs") or {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"task {task}: unknown task_kwargs {unknown} (first: 'task_kwargs.{unknown[0]}'; "
            f"known: {', '.join(known)})"
        )
    return options


def check_metric_name(config: Mapping[str, Any], names: Iterable[str], patterns: Sequence[str] = ()) -> None:
    """``eval.metric`` must be one of the task's scalar metrics (``ema_`` + one with ``train.ema``); checked
    when the task is built, so a typo stops the run before its first step, with the closest names."""
    metric = config["eval"]["metric"]
    known = sorted(set(names))
    if config["train"]["ema"]:
        known += [f"ema_{n}" for n in known]
    if metric in known or any(fnmatch.fnmatch(metric.removeprefix("ema_"), p) for p in patterns):
        return
    close = difflib.get_close_matches(metric, known, n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(
        f"key 'eval.metric': {metric!r} is not a metric of task {config['task']!r}{hint}; "
        f"its metrics: {', '.join(known + list(patterns))}"
    )


def input_channels(config: Mapping[str, Any]) -> int | None:
    """Channels the model takes: ``data.channels``, else ``model.kwargs.in_chans``, else ``None`` (keep)."""
    channels = config["data"]["channels"] or config["model"]["kwargs"].get("in_chans")
    return int(channels) if channels is not None else None


def describe_split(config: Mapping[str, Any], role: str) -> str:
    """Which data a role reads, in words (logs, ``--output`` JSON)."""
    d = config["data"]
    if role == "test":
        return f"split {d['test_split']!r}" if d["test_split"] else "none"
    if role == "val" and d["val_split"] is None:
        return (
            f"{d['val_fraction']:g} of split {d['train_split']!r} held out "
            f"(data.val_fraction, seed train.seed={config['train']['seed']})"
        )
    if role == "train" and d["val_split"] is None:
        return f"split {d['train_split']!r} without its held-out {d['val_fraction']:g}"
    return f"split {d['train_split'] if role == 'train' else d['val_split']!r}"


def build_split(
    config: Mapping[str, Any], role: str, transform: Callable | None, classes: Sequence[str] | None = None
) -> Dataset:
    """The dataset of one role (``train``, ``val``, ``test``) of a recipe, with ``transform``.

    Without ``data.val_split`` the training split is divided by :func:`visattn.data.holdout_indices`
    (``data.val_fraction``, seed ``train.seed``): ``train`` is the kept part, ``val`` the held-out part.
    ``classes``: the training vocabulary; formats that name classes per split (CSV/JSON headers, folders)
    are built with it, so columns are matched by name (a missing or unknown name is an error), and any
    dataset whose class names still differ from it is refused.
    """
    from visattn.data.factory import takes_vocabulary

    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    d = dict(config["data"])
    if classes is not None and takes_vocabulary(d["name"]) and "classes" not in d["kwargs"]:
        d["kwargs"] = {**d["kwargs"], "classes": list(classes)}
    dataset = _create_split(config, d, role, transform)
    names = class_names_of(dataset)
    if classes is not None and names is not None and names != [str(c) for c in classes]:
        raise ValueError(
            f"the {role} data ({describe_split(config, role)}) has classes {list(names)}, the model was trained "
            f"on {list(classes)}: class names must match the training vocabulary, in its order"
        )
    return dataset


def _create_split(
    config: Mapping[str, Any], d: Mapping[str, Any], role: str, transform: Callable | None
) -> Dataset:
    from visattn.data import HeldOut, create_dataset, holdout_indices

    if role == "test" and not d["test_split"]:
        raise ValueError("the recipe has no test split (data.test_split)")
    split = {"train": d["train_split"], "val": d["val_split"], "test": d["test_split"]}[role]
    if role in ("train", "val") and d["val_split"] is None:  # kept / held-out parts of the training split
        if config["task"] == "keypoints":
            raise ValueError(
                "task keypoints needs data.val_split: its ground truth (COCO) is per split, so a held-out "
                "part of the training split cannot be scored"
            )
        dataset = create_dataset(d["name"], split=d["train_split"], transform=transform, **d["kwargs"])
        kept, held_out = holdout_indices(len(dataset), d["val_fraction"], config["train"]["seed"])
        return HeldOut(dataset, kept if role == "train" else held_out, describe_split(config, role))
    return create_dataset(d["name"], split=split, transform=transform, **d["kwargs"])


def image_transform(config: Mapping[str, Any], train: bool) -> Callable:
    """The ``data`` section's image transform (classification-style tasks)."""
    from visattn.data import build_transform

    d = config["data"]
    return build_transform(
        train,
        d["img_size"],
        d["mean"],
        d["std"],
        kind=d["train_transform"],
        rrc_scale=d["rrc_scale"],
        rrc_ratio=d["rrc_ratio"],
        resize_before=d["resize_before"],
        channels=input_channels(config),
    )


def _float_then_transform(config: Mapping[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    from visattn.data import to_float

    spec = get_task_spec(config)
    transform = (spec.transform or image_transform)(config, False)
    return lambda image: transform(to_float(image))


def model_input_fn(config: Mapping[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(uint8 image (C, H, W)) -> model input (C, h, w)``: the evaluation pipeline of the recipe's task."""
    spec = get_task_spec(config)
    return (spec.image_input or _float_then_transform)(config)


def class_names_of(dataset: Dataset | None) -> list[str] | None:
    """The class names a dataset declares (``class_names``, else ``classes``), as strings; ``None`` if none."""
    names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    return [str(n) for n in names] if names is not None else None


def num_classes_of(dataset: Dataset) -> int | None:
    """Class count a dataset declares (``class_names`` or a 2-D ``targets`` matrix), if any."""
    names = class_names_of(dataset)
    if names is not None:
        return len(names)
    targets = getattr(dataset, "targets", None)
    return int(targets.shape[1]) if torch.is_tensor(targets) and targets.dim() == 2 else None
