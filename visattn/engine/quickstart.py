"""Training without writing YAML: a recipe from a model name and a data folder (``visattn train --model``).

``quick_recipe("resnet18", "data/pets")`` looks at the data and fills a recipe from the model's own defaults
(timm's ``pretrained_cfg``: input size, mean, std), as ``timm``'s ``train.py --model X --data-dir D`` does:

* ``D/train/<class>/...`` (ImageFolder): single-label classification, ImageNet-style transforms, top-1;
  ``D/val`` and ``D/test`` become the selection and test splits when present;
* ``D/train.csv`` (+ ``val.csv``, ``test.csv``), or a CSV file: multi-label (wide layout, ``path`` then one
  0/1 column per class; see :mod:`visattn.data.multilabel_csv`), flip + RandomResizedCrop, mAP.

Without a validation split a held-out 10 % of the training split selects the best epoch (``data.val_fraction``).
The recipe is validated like a file one (:func:`visattn.config.load_config`) and written to the run folder
as ``config.json``, so ``visattn eval/predict/visualize`` use it like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["quick_recipe"]


def _model_defaults(name: str, model_kwargs: Mapping[str, Any]) -> tuple[int, list[float], list[float], int]:
    from visattn.models import create_model, input_config

    cfg = input_config(create_model(name, **model_kwargs))
    channels, size, _ = cfg["input_size"]
    return size, list(cfg["mean"]), list(cfg["std"]), channels


def _data_section(path: Path) -> tuple[str, dict[str, Any], str]:
    """``(task, data section, eval metric)`` of a data folder or CSV file."""
    if path.is_file() and path.suffix.lower() == ".csv":
        files = {"train": str(path)}
    elif path.is_dir() and (path / "train.csv").is_file():
        files = {s: str(path / f"{s}.csv") for s in ("train", "val", "test") if (path / f"{s}.csv").is_file()}
    elif path.is_dir() and (path / "train").is_dir():
        splits = {s: (path / s).is_dir() for s in ("val", "test")}
        data = {
            "name": "imagefolder",
            "kwargs": {"root": str(path)},
            "train_split": "train",
            "val_split": "val" if splits["val"] else None,
            "test_split": "test" if splits["test"] else None,
            "train_transform": "imagenet",
            "rrc_scale": [0.08, 1.0],
        }
        return "classification", data, "top1"
    else:
        raise FileNotFoundError(
            f"--data {str(path)!r}: expected a folder with train/<class>/<images> (single-label), a folder with "
            "train.csv (+ val.csv, test.csv) or a CSV file (multi-label: path,<class>,... with 0/1 cells)"
        )
    data = {
        "name": "multilabel_csv",
        "kwargs": {"files": files, "encoding": "binary"},
        "train_split": "train",
        "val_split": "val" if "val" in files else None,
        "test_split": "test" if "test" in files else None,
        "train_transform": "flip_rrc",
    }
    return "multilabel", data, "mAP"


def quick_recipe(
    model: str,
    data: str | Path,
    num_classes: int | None = None,
    pretrained: str | Path | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    epochs: int = 10,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """A recipe dict for ``model`` on the data at ``data`` (see the module docstring); ``pretrained``: a
    whole-model weights file (``model.pretrained_file``; a classifier of another size is re-initialised)."""
    path = Path(data)
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    task, data_section, metric = _data_section(path)
    size, mean, std, channels = _model_defaults(model, kwargs)
    data_section.update(img_size=size, mean=mean, std=std, channels=channels, batch_size=32)
    return {
        "task": task,
        "model": {
            "name": model,
            "kwargs": kwargs,
            "pretrained_file": str(pretrained) if pretrained else None,
        },
        "data": data_section,
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        "sched": {"name": "cosine", "warmup_epochs": 1, "warmup_lr": 1e-5, "step_on_epochs": False},
        "train": {"epochs": int(epochs)},
        "eval": {"metric": metric, "mode": "max"},
        "output": str(output or Path("runs") / f"{model}-{path.stem}"),
    }
