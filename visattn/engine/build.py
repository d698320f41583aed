"""From a recipe to a ready :class:`~visattn.engine.trainer.Trainer`: model, data, loss, metric, task.

Data flows one way: dataset → transforms → model → loss → metrics → logs. Everything a recipe names is
built here, so ``visattn train``, ``visattn eval`` and the Python API share one path. Tasks register a
:class:`TaskSpec` (``register_task``); ``multilabel`` and ``attribute`` are built in.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .distributed import DistInfo, init_distributed, seed_everything
from .tasks import MultiLabelTask
from .trainer import Trainer

__all__ = [
    "TaskSpec",
    "build_datasets",
    "build_model",
    "build_task",
    "build_trainer",
    "image_transform",
    "list_tasks",
    "register_task",
]


@dataclass(frozen=True)
class TaskSpec:
    """How a recipe's ``task:`` is built.

    Attributes:
        build: ``build(config, model, train_set) -> task`` (see :mod:`visattn.engine.tasks`).
        transform: ``transform(config, train) -> callable`` given to the datasets; default
            :func:`image_transform` (the ``data`` section's image transforms).
    """

    build: Callable[[Mapping[str, Any], nn.Module, Dataset | None], Any]
    transform: Callable[[Mapping[str, Any], bool], Callable] | None = None


_TASKS: dict[str, TaskSpec] = {}
# Tasks defined in their own modules, imported on first use (each calls register_task on import).
_TASK_MODULES = {
    "classification": "visattn.engine.task_classification",
    "segmentation": "visattn.engine.task_segmentation",
    "keypoints": "visattn.engine.task_keypoints",
}


def register_task(name: str, spec: TaskSpec) -> None:
    _TASKS[name] = spec


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def _task_spec(config: Mapping[str, Any]) -> TaskSpec:
    name = config["task"]
    if name not in _TASKS and name in _TASK_MODULES:
        importlib.import_module(_TASK_MODULES[name])
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
    )


def build_datasets(
    config: Mapping[str, Any], splits: tuple[str, ...] = ("train", "val")
) -> dict[str, Dataset]:
    """Datasets of the recipe for the requested roles (``train`` / ``val``) with their transforms."""
    from visattn.data import create_dataset

    d = config["data"]
    make_transform = _task_spec(config).transform or image_transform
    out = {}
    for role in splits:
        train = role == "train"
        split = d["train_split"] if train else d["val_split"]
        out[role] = create_dataset(
            d["name"], split=split, transform=make_transform(config, train), **d["kwargs"]
        )
    return out


def num_classes_of(dataset: Dataset) -> int | None:
    """Class count a dataset declares (``class_names`` or a 2-D ``targets`` matrix), if any."""
    names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    if names is not None:
        return len(names)
    targets = getattr(dataset, "targets", None)
    return int(targets.shape[1]) if torch.is_tensor(targets) and targets.dim() == 2 else None


def build_model(config: Mapping[str, Any], num_classes: int | None = None) -> nn.Module:
    """The recipe's model; ``num_classes`` (from the data) unless the recipe sets it."""
    import visattn

    m = config["model"]
    kwargs = dict(m["kwargs"])
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    if m["pretrained_file"]:
        kwargs.update(pretrained=True, pretrained_file=m["pretrained_file"])
    if m["checkpoint_path"]:
        kwargs["checkpoint_path"] = m["checkpoint_path"]
    return visattn.create_model(m["name"], **kwargs)


def _build_loss(config: Mapping[str, Any], model: nn.Module, train_set: Dataset | None) -> nn.Module:
    from visattn.losses import create_loss, positive_prior

    name = config["loss"]["name"]
    kwargs = dict(config["loss"]["kwargs"])
    targets = getattr(train_set, "targets", None)
    masks = getattr(train_set, "masks", None)
    key = name.lower().replace("-", "_")
    if key in ("focal", "weighted_focal", "vaa") and kwargs.get("prior") is None and targets is not None:
        kwargs["prior"] = positive_prior(targets, masks)  # attribute frequencies of the training split
    if key in ("vaa", "history_weighted") and train_set is not None:
        kwargs.setdefault("num_samples", len(train_set))
    if key == "history_weighted" and targets is not None:
        kwargs.setdefault("num_classes", int(targets.shape[1]))
    if key == "vaa":
        kwargs.setdefault("num_attention", len(getattr(model, "taps", ())) or None)
    return create_loss(name, **kwargs)


def _multilabel_task(
    config: Mapping[str, Any], model: nn.Module, train_set: Dataset | None
) -> MultiLabelTask:
    from visattn.metrics import AttributeMetrics, MultiLabelMetrics

    e = config["eval"]
    if config["task"] == "multilabel":
        options = {"thr": e["threshold"]}
        if e["preset"]:
            options["preset"] = e["preset"]

        def metric_factory():
            return MultiLabelMetrics(**options)

    else:

        def metric_factory():
            return AttributeMetrics(thr=e["threshold"])

    if train_set is None:  # evaluation only: the loss is never called, and priors need the training split
        from visattn.losses import create_loss

        loss = create_loss("bce")
    else:
        loss = _build_loss(config, model, train_set)
    return MultiLabelTask(loss, metric_factory, mask_ignored=config["loss"]["mask_ignored"])


register_task("multilabel", TaskSpec(_multilabel_task))
register_task("attribute", TaskSpec(_multilabel_task))


def build_task(config: Mapping[str, Any], model: nn.Module, train_set: Dataset | None) -> Any:
    """The recipe's task object (loss + metric) for ``model``."""
    return _task_spec(config).build(config, model, train_set)


def build_trainer(config: Mapping[str, Any], dist: DistInfo | None = None, train: bool = True) -> Trainer:
    """Model, datasets, task and trainer of a recipe (``train=False``: evaluation only)."""
    dist = dist or init_distributed()
    # Same seed on every rank before anything random is built: identical initial weights everywhere and
    # in every run of the recipe (per-rank seeds for augmentation are set by the trainer per epoch).
    seed_everything(config["train"]["seed"])
    data = build_datasets(config, ("train", "val") if train else ("val",))
    reference = data.get("train", data["val"])
    model = build_model(config, num_classes_of(reference))
    task = build_task(config, model, data.get("train"))
    return Trainer(config, model, task, data.get("train"), data["val"], dist=dist)
