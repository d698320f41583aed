"""Prediction on image files with a trained recipe: per-class scores and predicted labels.

Used by ``visattn predict RECIPE IMAGES... --checkpoint W``. Class names come from ``class_names.json``
in the run directory of the checkpoint (the trainer writes it), else from the recipe's validation split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["predict_images", "load_image"]


def load_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Float ``(channels, H, W)`` tensor in [0, 1]; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            array = np.asarray(img, dtype=np.uint8)
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    tensor = torch.from_numpy(array.copy()).float().div_(255.0)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def _class_names(config: dict[str, Any], checkpoint: Path) -> list[str]:
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        candidate = folder / "class_names.json"
        if candidate.is_file():
            return json.loads(candidate.read_text())
    from visattn.engine.build import build_datasets

    dataset = build_datasets(config, ("val",))["val"]
    names = getattr(dataset, "class_names", None)
    if names is None:
        raise ValueError(
            f"cannot find class names: no class_names.json next to {checkpoint} and the dataset has none"
        )
    return list(names)


@torch.no_grad()
def predict_images(
    recipe: str | Path,
    images: Sequence[str | Path],
    checkpoint: str | Path,
    overrides: Sequence[str] = (),
    topk: int = 5,
    threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Scores of ``images`` under the recipe's model with ``checkpoint`` weights (multi-label: sigmoid)."""
    from visattn.config import load_config
    from visattn.engine.build import build_model, image_transform

    config = load_config(recipe, list(overrides))
    checkpoint = Path(checkpoint)
    names = _class_names(config, checkpoint)
    config["model"]["checkpoint_path"] = str(checkpoint)
    model = build_model(config, len(names)).eval()
    channels = int(config["model"]["kwargs"].get("in_chans", 3))
    transform = image_transform(config, train=False)
    multilabel = config["task"] in ("multilabel", "attribute")
    results = []
    for path in images:
        x = transform(load_image(path, channels)).unsqueeze(0)
        logits = model(x)[0].float()
        scores = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=0)
        order = torch.argsort(scores, descending=True)[: max(1, topk)]
        if multilabel:
            labels = [names[i] for i in range(len(names)) if scores[i] >= threshold]
        else:
            labels = [names[int(order[0])]]
        results.append(
            {
                "image": str(path),
                "labels": labels,
                "scores": {n: float(s) for n, s in zip(names, scores, strict=True)},
                "top": [(names[int(i)], float(scores[i])) for i in order],
            }
        )
    return results
