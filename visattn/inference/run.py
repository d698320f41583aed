"""The one run loader: a recipe or run directory + checkpoint → model, eval transform, class names.

``visattn eval``, ``predict``, ``visualize``, ``export`` and the Python API all load a trained model through
:func:`load_trained_model`, so they share

* the **weights**: :func:`visattn.engine.checkpoint.load_model_weights` (strict; a run trained with
  ``train.ema`` gives its EMA weights unless ``ema=False``, the CLI's ``--no-ema``);
* the **input pipeline**: the recipe's task decides how a decoded image file becomes the model input
  (:func:`visattn.engine.tasks.model_input_fn`: e.g. ``Resize(256) + CenterCrop(224)`` for an ImageNet
  recipe, the joint transform of a segmentation recipe), exactly as the evaluation split's items are made;
* the **class names**: the run's ``class_names.json``, else the recipe's validation split.

A model name without a recipe (``model_name=``) gets the model's ``pretrained_cfg`` input settings.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visattn.config import load_config
from visattn.data import load_image, to_float
from visattn.data.transforms import match_channels
from visattn.engine.checkpoint import (
    BEST_FILE,
    CHECKPOINT_DIR,
    CLASS_NAMES_FILE,
    CONFIG_FILE,
    LOG_FILE,
    latest_checkpoint,
    load_model_weights,
)

__all__ = [
    "MULTILABEL_TASKS",
    "RunDir",
    "TrainedModel",
    "evaluate",
    "example_input",
    "load_trained_model",
    "read_run_config",
]

#: Tasks whose scores are per-class sigmoids (the rest of the classification tasks use a softmax).
MULTILABEL_TASKS = ("multilabel", "attribute")


@dataclass(frozen=True)
class RunDir:
    """A training run's output folder (layout: :mod:`visattn.engine.checkpoint`)."""

    path: Path

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir | None:
        """The run a weights file belongs to: the folder holding ``config.json`` next to it or one up."""
        checkpoint = Path(checkpoint)
        for folder in (checkpoint.parent, checkpoint.parent.parent):
            if (folder / CONFIG_FILE).is_file():
                return cls(folder)
        return None

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def best(self) -> Path:
        return self.path / BEST_FILE

    def latest(self) -> Path | None:
        """The newest complete epoch checkpoint."""
        return latest_checkpoint(self.path / CHECKPOINT_DIR)

    def checkpoint(self, which: str | Path) -> Path:
        """``"best"``, ``"last"`` or a path → an existing weights file (errors name what is missing)."""
        if str(which) == "best":
            path = self.best
        elif str(which) == "last":
            found = self.latest()
            if found is None:
                raise FileNotFoundError(f"{self.path}: no complete checkpoint in {CHECKPOINT_DIR}/")
            path = found
        else:
            path = Path(which)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        return path

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    def recipe(self) -> dict[str, Any] | None:
        """The run's ``config.json`` as written (not validated; :func:`read_run_config` validates)."""
        return json.loads(self.config_file.read_text()) if self.config_file.is_file() else None

    def class_names(self) -> list[str] | None:
        path = self.path / CLASS_NAMES_FILE
        return [str(n) for n in json.loads(path.read_text())] if path.is_file() else None


def read_run_config(path: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A recipe (YAML), a run's ``config.json`` or an already loaded recipe dict, validated, with
    ``key=value`` overrides applied (:func:`visattn.config.load_config`)."""
    if isinstance(path, Mapping):
        return load_config(None, list(overrides), base=dict(path))
    return load_config(path, list(overrides))


@dataclass
class TrainedModel:
    """A model ready for inference plus what is needed to feed it and name its outputs.

    Attributes:
        model: the network in eval mode, on the CPU.
        class_names: one name per output (classes; keypoint names for pose models).
        input_size: ``(channels, height, width)`` the model expects.
        mean, std: the normalisation its inputs get (per channel).
        image_input: decoded uint8 ``(C, H, W)`` image → model input ``(C, h, w)`` (see the module docstring).
        task: the recipe's task (``multilabel``, ``attribute``, ``classification``, ``segmentation``,
            ``keypoints``); models without a recipe are taken as ``multilabel`` (CSRA, VAA) or
            ``classification``.
        config: the recipe (``None`` when built from a model name).
        name: the registered model name.
        checkpoint: the weights file (``None``: initial weights).
        weights: which weights were loaded: ``"ema"``, ``"model"`` or ``"initial"``.
    """

    model: nn.Module
    class_names: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_input: Callable[[torch.Tensor], torch.Tensor]
    task: str
    config: dict[str, Any] | None = None
    name: str = ""
    checkpoint: Path | None = None
    weights: str = "initial"

    @property
    def multilabel(self) -> bool:
        """Scores are per-class sigmoids rather than a softmax."""
        return self.task in MULTILABEL_TASKS

    def read(self, path: str | Path) -> torch.Tensor:
        """Decoded uint8 RGB ``(3, H, W)`` image file, as datasets decode it (errors name the file)."""
        return load_image(path)

    def input_of(self, path: str | Path) -> torch.Tensor:
        """The model input ``(C, h, w)`` of an image file: decoded and transformed as at evaluation."""
        return self.image_input(self.read(path))

    def transform(self, image: torch.Tensor) -> torch.Tensor:
        """The model input of an image tensor (uint8, or float in [0, 1])."""
        if image.dtype.is_floating_point:
            image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.image_input(image)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities of ``logits (B, C)``: sigmoid (multi-label) or softmax."""
        logits = logits.float()
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def dataset(self, role: str = "val") -> Any:
        """The recipe's ``val`` (selection) or ``test`` data with its evaluation transform (items as
        ``visattn eval`` sees them)."""
        from visattn.engine.build import build_datasets

        if self.config is None:
            raise ValueError("the recipe's data needs a recipe (--config, or a checkpoint of a run)")
        return build_datasets(self.config, (role,), class_names=self.class_names)[role]

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The displayable ``[0, 1]`` image of a model input ``x (C, H, W)``."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def _recipe_class_names(config: Mapping[str, Any]) -> list[str] | None:
    from visattn.engine.build import build_datasets
    from visattn.engine.tasks import class_names_of

    try:
        dataset = build_datasets(config, ("val",), transform=False)["val"]
    except (OSError, ValueError, KeyError, ImportError) as err:
        warnings.warn(f"cannot read class names from the recipe's validation data ({err})", stacklevel=3)
        return None
    return class_names_of(dataset)


def _from_recipe(
    cfg: dict[str, Any], class_names: Sequence[str] | None, has_checkpoint: bool
) -> tuple[nn.Module, list[str], Callable, tuple[int, int, int], str]:
    from visattn.engine.build import build_model
    from visattn.engine.tasks import model_input_fn

    if has_checkpoint:  # the checkpoint holds every weight; otherwise the recipe's own weight files count
        cfg["model"]["checkpoint_path"] = None
        cfg["model"]["pretrained_file"] = None
    names = list(class_names) if class_names is not None else _recipe_class_names(cfg)
    model = build_model(cfg, len(names) if names else None)
    if names is None:
        names = [str(i) for i in range(int(getattr(model, "num_classes", 0) or 0))]
    image_input = model_input_fn(cfg)
    probe = image_input(torch.zeros(3, 8, 8, dtype=torch.uint8))  # the model input's channels and size
    size = (int(probe.shape[-3]), int(probe.shape[-2]), int(probe.shape[-1]))
    return model, names, image_input, size, cfg["task"]


def _from_name(
    model_name: str, kwargs: dict[str, Any], class_names: Sequence[str] | None, img_size: int | None
) -> tuple[nn.Module, list[str], Callable, tuple[int, int, int], str, tuple, tuple]:
    from visattn.data import build_transform
    from visattn.models import create_model, input_config

    if class_names is not None:
        kwargs.setdefault("num_classes", len(class_names))
    model = create_model(model_name, **kwargs)
    cfg = input_config(model, img_size)
    channels, side, _ = cfg["input_size"]
    mean, std = cfg["mean"], cfg["std"]
    transform = build_transform(False, side, mean, std, kind="none", channels=channels)
    names = list(class_names) if class_names is not None else None
    if names is None:
        names = [str(i) for i in range(int(getattr(model, "num_classes", 0) or 0))]
    task = "multilabel" if model_name.startswith(("csra", "vaa")) else "classification"
    return (
        model,
        names,
        lambda image: transform(to_float(image)),
        (channels, side, side),
        task,
        mean,
        std,
    )


def load_trained_model(
    checkpoint: str | Path | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    img_size: int | None = None,
    class_names: Sequence[str] | None = None,
    ema: bool | None = None,
    allow_nonfinite: bool = False,
) -> TrainedModel:
    """Rebuild a model for inference from a checkpoint and its recipe, or from a registered name.

    Args:
        checkpoint: weights (``best.safetensors``, ``checkpoints/epoch_NNNN.safetensors``, a ``.pth``).
            Without ``config`` and ``model_name`` the run's ``config.json`` next to it (or one folder up) is
            the recipe. ``None``: the model keeps its initial weights.
        config: recipe file (YAML, or a run's ``config.json``) or an already loaded recipe dict.
        model_name: registered model name, used when there is no recipe (``model_kwargs`` are passed on).
        overrides: ``key=value`` recipe overrides.
        img_size: input side (a recipe's ``data.img_size`` override, or the model's ``input_size``).
        class_names: output names (default: ``class_names.json`` of the run, the recipe's data, or
            ``"0", "1", ...``).
        ema: ``None`` (default): the EMA weights when the checkpoint holds them; ``True``: require them;
            ``False``: the raw model weights.
        allow_nonfinite: accept weights holding NaN/infinity (refused by default).
    """
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist")
    run = RunDir.of_checkpoint(checkpoint) if checkpoint is not None else None
    if config is None and model_name is None:
        if run is None:
            raise ValueError(
                "need a recipe (--config) or a model name (--model): no config.json next to the checkpoint"
            )
        config = run.config_file
    if class_names is None and run is not None:
        class_names = run.class_names()
    if config is not None:
        overrides = list(overrides) + ([f"data.img_size={int(img_size)}"] if img_size else [])
        cfg: dict[str, Any] | None = read_run_config(config, overrides)
        if class_names is None and run is None:
            class_names = RunDir(Path(cfg["output"])).class_names()
        model, names, image_input, size, task = _from_recipe(cfg, class_names, checkpoint is not None)
        channels = size[0]
        mean = tuple(match_channels(cfg["data"]["mean"], channels))
        std = tuple(match_channels(cfg["data"]["std"], channels))
        name = cfg["model"]["name"]
    else:
        cfg = None
        model, names, image_input, size, task, mean, std = _from_name(
            str(model_name), dict(model_kwargs or {}), class_names, img_size
        )
        name = str(model_name)
    used = "initial"
    if checkpoint is not None:
        used = load_model_weights(model, checkpoint, ema, allow_nonfinite=allow_nonfinite)
    return TrainedModel(
        model=model.eval().cpu(),
        class_names=[str(n) for n in names],
        input_size=size,
        mean=mean,
        std=std,
        image_input=image_input,
        task=task,
        config=cfg,
        name=name,
        checkpoint=checkpoint,
        weights=used,
    )


def example_input(loaded: TrainedModel, image: str | Path | None = None) -> tuple[torch.Tensor, str]:
    """A real model input ``(1, C, H, W)`` and where it came from.

    ``image``: an image file (through :meth:`TrainedModel.input_of`, as at evaluation); otherwise the first
    item of the recipe's validation split (e.g. a glyph canvas); otherwise (no recipe) a fixed
    pseudo-random image.
    """
    if image is not None:
        return loaded.input_of(image).unsqueeze(0), f"image {image}"
    if loaded.config is not None:
        try:
            dataset = loaded.dataset("val")
            return dataset[0][0].unsqueeze(0), f"validation item 0 of {loaded.config['data']['name']}"
        except (OSError, ValueError, KeyError, ImportError) as err:
            warnings.warn(
                f"cannot read the recipe's validation data ({err}); using a random input", stacklevel=2
            )
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, loaded.input_size, generator=generator, dtype=torch.uint8)
    return loaded.image_input(x).unsqueeze(0), "a pseudo-random image (seed 0)"


def evaluate(loaded: TrainedModel, split: str = "val", model: nn.Module | None = None) -> dict[str, Any]:
    """Metrics of a loaded model (or ``model``, e.g. a wrapper of it) on its recipe's ``val`` (selection) or
    ``test`` data (what ``visattn eval`` prints)."""
    from visattn.engine.build import build_trainer

    if loaded.config is None:
        raise ValueError("evaluation needs the recipe the model was trained with")
    model = model if model is not None else loaded.model
    trainer = build_trainer(
        loaded.config, train=False, model=model, split=split, class_names=loaded.class_names
    )
    return trainer.evaluate()
