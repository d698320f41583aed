"""From a recipe to a ready :class:`~visattn.engine.trainer.Trainer`: model, data, loss, metric, task.

Data flows one way: dataset → transforms → model → loss → metrics → logs. Everything a recipe names is
built here, so ``visattn train``, ``visattn eval``, inference and the Python API share one path. Tasks are
registered in :mod:`visattn.engine.tasks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from visattn.utils.distributed import DistInfo, init_distributed, seed_everything

from .checkpoint import load_model_weights
from .tasks import get_task_spec, image_transform, list_tasks, num_classes_of, register_task
from .trainer import Trainer

__all__ = [
    "build_datasets",
    "build_model",
    "build_task",
    "build_trainer",
    "image_transform",
    "list_tasks",
    "num_classes_of",
    "register_task",
]


def build_datasets(
    config: Mapping[str, Any], splits: tuple[str, ...] = ("train", "val"), transform: bool = True
) -> dict[str, Dataset]:
    """Datasets of the recipe for the requested roles (``train`` / ``val``) with their transforms
    (``transform=False``: raw items, e.g. for a keypoint task's ground truth)."""
    from visattn.data import create_dataset

    d = config["data"]
    make_transform = get_task_spec(config).transform or image_transform
    out = {}
    for role in splits:
        train = role == "train"
        split = d["train_split"] if train else d["val_split"]
        out[role] = create_dataset(
            d["name"],
            split=split,
            transform=make_transform(config, train) if transform else None,
            **d["kwargs"],
        )
    return out


def build_model(config: Mapping[str, Any], num_classes: int | None = None) -> nn.Module:
    """The recipe's model; ``num_classes`` (from the data) unless the recipe sets it.

    ``model.pretrained_file`` initialises the backbone (the model family's own loader);
    ``model.checkpoint_path`` then loads a whole-model file (e.g. a visattn run's checkpoint: its EMA
    weights when it holds them) through :func:`~visattn.engine.checkpoint.load_model_weights`.
    """
    from visattn.models import create_model

    m = config["model"]
    kwargs = dict(m["kwargs"])
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    if m["pretrained_file"]:
        kwargs.update(pretrained=True, pretrained_file=m["pretrained_file"])
    model = create_model(m["name"], **kwargs)
    if m["checkpoint_path"]:
        load_model_weights(model, m["checkpoint_path"])
    return model


def build_task(config: Mapping[str, Any], model: nn.Module, train_set: Dataset | None) -> Any:
    """The recipe's task object (loss + metric) for ``model``."""
    return get_task_spec(config).build(config, model, train_set)


def build_trainer(
    config: Mapping[str, Any],
    dist: DistInfo | None = None,
    train: bool = True,
    model: nn.Module | None = None,
) -> Trainer:
    """Model, datasets, task and trainer of a recipe (``train=False``: evaluation only).

    ``model``: use this model (e.g. one :func:`visattn.inference.load_trained_model` loaded) instead of
    building the recipe's.
    """
    dist = dist or init_distributed()
    # Same seed on every rank before anything random is built: identical initial weights everywhere and
    # in every run of the recipe (per-rank seeds for augmentation are set by the trainer per epoch).
    seed_everything(config["train"]["seed"])
    data = build_datasets(config, ("train", "val") if train else ("val",))
    reference = data.get("train", data["val"])
    if model is None:
        model = build_model(config, num_classes_of(reference))
    task = build_task(config, model, data.get("train"))
    return Trainer(config, model, task, data.get("train"), data["val"], dist=dist)
