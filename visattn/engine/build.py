"""From a recipe to a ready :class:`~visattn.engine.trainer.Trainer`: model, data, loss, metric, task.

Data flows one way: dataset → transforms → model → loss → metrics → logs. Everything a recipe names is
built here, so ``visattn train``, ``visattn eval``, inference and the Python API share one path. Tasks are
registered in :mod:`visattn.engine.tasks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from visattn.utils.distributed import DistInfo, init_distributed, seed_everything

from .checkpoint import load_model_weights
from .tasks import (
    build_split,
    class_names_of,
    get_task_spec,
    image_transform,
    input_channels,
    list_tasks,
    num_classes_of,
    register_task,
)
from .trainer import Trainer

__all__ = [
    "build_datasets",
    "build_model",
    "build_task",
    "build_trainer",
    "check_input_channels",
    "image_transform",
    "list_tasks",
    "num_classes_of",
    "register_task",
]


def build_datasets(
    config: Mapping[str, Any],
    splits: tuple[str, ...] = ("train", "val"),
    transform: bool = True,
    class_names: Sequence[str] | None = None,
) -> dict[str, Dataset]:
    """Datasets of the recipe for the requested roles (``train``, ``val``, ``test``; see
    :func:`~visattn.engine.tasks.build_split`) with their transforms (``transform=False``: raw items).

    The class vocabulary is the training split's (or ``class_names``, e.g. a run's ``class_names.json``):
    every other split is matched to it by name.
    """
    make_transform = get_task_spec(config).transform or image_transform
    out: dict[str, Dataset] = {}
    vocabulary = list(class_names) if class_names is not None else None
    for role in sorted(splits, key=lambda r: r != "train"):  # the training split fixes the vocabulary
        t = make_transform(config, role == "train") if transform else None
        out[role] = build_split(config, role, t, classes=vocabulary)
        if vocabulary is None and role == "train":
            vocabulary = class_names_of(out[role])
    return {role: out[role] for role in splits}


def check_input_channels(config: Mapping[str, Any], model: nn.Module) -> None:
    """One clear error when the model's first convolution does not take the channels the data gives."""
    from visattn.models import model_in_chans

    wanted, takes = input_channels(config), model_in_chans(model)
    if wanted is None or takes is None or takes == wanted:
        return
    source = "data.channels" if config["data"]["channels"] else "model.kwargs.in_chans"
    raise ValueError(
        f"the data gives {wanted}-channel images ({source}) but model {config['model']['name']!r} takes "
        f"{takes} channels; set data.channels and model.kwargs.in_chans to the same value"
    )


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
    check_input_channels(config, model)
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
    split: str = "val",
    class_names: Sequence[str] | None = None,
) -> Trainer:
    """Model, datasets, task and trainer of a recipe.

    ``train=True``: the training, selection (``val``) and, when the recipe has one, ``test`` datasets.
    ``train=False``: evaluation only, on the role ``split`` (``"val"`` or ``"test"``). ``model``: use this
    model (e.g. one :func:`visattn.inference.load_trained_model` loaded) instead of building the recipe's;
    ``class_names``: the vocabulary the model was trained on (the data is matched to it by name).
    """
    dist = dist or init_distributed()
    # Same seed on every rank before anything random is built: identical initial weights everywhere and
    # in every run of the recipe (per-rank seeds for augmentation are set by the trainer per epoch).
    seed_everything(config["train"]["seed"])
    if train:
        roles = ("train", "val", "test") if config["data"]["test_split"] else ("train", "val")
    else:
        roles = (split,)
    data = build_datasets(config, roles, class_names=class_names)
    evaluated = data["val"] if train else data[split]
    reference = data.get("train", evaluated)
    if model is None:
        model = build_model(config, num_classes_of(reference))
    else:
        check_input_channels(config, model)
    task = build_task(config, model, data.get("train"))
    return Trainer(config, model, task, data.get("train"), evaluated, dist=dist, test_set=data.get("test"))
