"""Rebuilding a trained model for inference: :class:`TrainedModel`, :func:`load_trained_model`.

A recipe or run directory + checkpoint (or a registered model name) → model in eval mode, class names,
input size and transform; plus :func:`example_input`, a real input for parity checks. Private part of
:mod:`visattn.export` (import from there); shared with :mod:`visattn.viz` and needs no optional package.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class TrainedModel:
    """A model ready for inference plus what is needed to feed it and name its outputs.

    Attributes:
        model: the network in eval mode, on the CPU.
        class_names: one name per output.
        input_size: ``(channels, height, width)`` the model expects.
        mean, std: the normalisation its inputs get (per channel).
        transform: callable mapping a float ``(channels, H, W)`` image in [0, 1] to the model input.
        multilabel: scores are sigmoids (multi-label / attribute) rather than a softmax.
        config: the recipe (``None`` when built from a model name).
        name: the registered model name.
    """

    model: nn.Module
    class_names: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    transform: Callable[[torch.Tensor], torch.Tensor]
    multilabel: bool
    config: dict[str, Any] | None = None
    name: str = ""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities of ``logits (B, C)``: sigmoid (multi-label) or softmax."""
        logits = logits.float()
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The displayable ``[0, 1]`` image of a model input ``x (C, H, W)``."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def read_run_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A recipe (YAML) or a run's ``config.json``, validated, with ``key=value`` overrides applied.

    ``config.json`` is read as JSON (YAML would take ``1e-05`` for a string) and validated by
    :func:`visattn.config.load_config`.
    """
    from visattn.config import load_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {str(path)!r} does not exist")
    if path.suffix == ".json":
        raw = json.loads(path.read_text())
        return load_config(None, list(overrides), base=raw)
    return load_config(path, list(overrides))


def _find_run_config(checkpoint: Path) -> Path | None:
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.json").is_file():
            return folder / "config.json"
    return None


def _load_weights(model: nn.Module, checkpoint: Path, ema: bool) -> None:
    from visattn.models import read_state_dict

    state = read_state_dict(checkpoint)
    ema_state = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    if ema and not ema_state:
        raise ValueError(f"{checkpoint}: no EMA weights ('ema.*' keys) in this checkpoint")
    weights = ema_state if ema else {k: v for k, v in state.items() if not k.startswith("ema.")}
    model.load_state_dict(weights, strict=True)


def _guess_multilabel(name: str) -> bool:
    return name.startswith(("csra", "vaa"))


def load_trained_model(
    checkpoint: str | Path | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    img_size: int | None = None,
    class_names: Sequence[str] | None = None,
    ema: bool = False,
) -> TrainedModel:
    """Rebuild a model for inference from a checkpoint and its recipe, or from a registered name.

    Args:
        checkpoint: weights (``best.safetensors``, ``checkpoints/epoch_NNNN.safetensors``, a ``.pth``).
            Without ``config`` and ``model_name`` the run's ``config.json`` next to it (or one folder up) is
            the recipe. ``None``: the model keeps its initial weights.
        config: recipe file (YAML, or a run's ``config.json``) or an already loaded recipe dict.
        model_name: registered model name, used when there is no recipe (``model_kwargs`` are passed on).
        overrides: ``key=value`` recipe overrides.
        img_size: input side (default: the recipe's ``data.img_size`` or the model's ``input_size``).
        class_names: output names (default: ``class_names.json`` of the run, the recipe's data, or
            ``"0", "1", ...``).
        ema: load the checkpoint's ``ema.*`` weights instead of the model's.
    """
    from visattn.data import build_transform

    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist")
    if config is None and model_name is None:
        found = _find_run_config(checkpoint) if checkpoint is not None else None
        if found is None:
            raise ValueError(
                "need a recipe (--config) or a model name (--model): no config.json next to the checkpoint"
            )
        config = found
    if config is not None:
        from visattn.engine.build import build_model
        from visattn.predict import _class_names

        if isinstance(config, Mapping):
            from visattn.config import load_config

            cfg = load_config(None, list(overrides), base=dict(config))
        else:
            cfg = read_run_config(config, overrides)
        cfg["model"]["checkpoint_path"] = None
        cfg["model"]["pretrained_file"] = None  # the checkpoint holds every weight
        if class_names is None:
            anchor = checkpoint if checkpoint is not None else Path(cfg["output"]) / "best.safetensors"
            class_names = _class_names(cfg, anchor)
        model = build_model(cfg, len(class_names))
        name = cfg["model"]["name"]
        channels = int(cfg["model"]["kwargs"].get("in_chans", 3))
        size = int(img_size or cfg["data"]["img_size"])
        mean, std = tuple(cfg["data"]["mean"]), tuple(cfg["data"]["std"])
        multilabel = cfg["task"] in ("multilabel", "attribute")
    else:
        import visattn

        cfg = None
        kwargs = dict(model_kwargs or {})
        if class_names is None and checkpoint is not None:
            for folder in (checkpoint.parent, checkpoint.parent.parent):
                if (folder / "class_names.json").is_file():
                    class_names = json.loads((folder / "class_names.json").read_text())
                    break
        if class_names is not None:
            kwargs.setdefault("num_classes", len(class_names))
        model = visattn.create_model(model_name, **kwargs)
        pcfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        c, h, _ = pcfg.get("input_size", (3, 224, 224))
        channels = int(kwargs.get("in_chans", c))
        size = int(img_size or h)
        mean = tuple(pcfg.get("mean", (0.0,) * channels))
        std = tuple(pcfg.get("std", (1.0,) * channels))
        if len(mean) != channels:  # e.g. an ImageNet cfg on a 1-channel model
            mean, std = (float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels
        if class_names is None:
            class_names = [str(i) for i in range(int(getattr(model, "num_classes", 0) or 0))]
        multilabel = _guess_multilabel(model_name)
        name = model_name
    if checkpoint is not None:
        _load_weights(model, checkpoint, ema)
    model = model.eval().cpu()
    mean = tuple(float(v) for v in mean) if len(mean) == channels else (float(mean[0]),) * channels
    std = tuple(float(v) for v in std) if len(std) == channels else (float(std[0]),) * channels
    transform = build_transform(False, size, mean, std)
    return TrainedModel(
        model=model,
        class_names=[str(n) for n in class_names],
        input_size=(channels, size, size),
        mean=mean,
        std=std,
        transform=transform,
        multilabel=multilabel,
        config=cfg,
        name=name,
    )


def example_input(loaded: TrainedModel, image: str | Path | None = None) -> tuple[torch.Tensor, str]:
    """A real model input ``(1, C, H, W)`` and where it came from.

    ``image``: an image file (transformed as the recipe says); otherwise the first item of the recipe's
    validation split (e.g. a glyph canvas); otherwise (no recipe) a fixed pseudo-random image.
    """
    from visattn.predict import load_image

    if image is not None:
        x = loaded.transform(load_image(image, loaded.input_size[0]))
        return x.unsqueeze(0), f"image {image}"
    if loaded.config is not None:
        from visattn.engine.build import build_datasets

        try:
            dataset = build_datasets(loaded.config, ("val",))["val"]
            return dataset[0][0].unsqueeze(0), f"validation item 0 of {loaded.config['data']['name']}"
        except (OSError, ValueError, KeyError, ImportError) as err:
            warnings.warn(
                f"cannot read the recipe's validation data ({err}); using a random input", stacklevel=2
            )
    generator = torch.Generator().manual_seed(0)
    x = loaded.transform(torch.rand(loaded.input_size, generator=generator))
    return x.unsqueeze(0), "a pseudo-random image (seed 0)"
