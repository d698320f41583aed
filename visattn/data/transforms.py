"""Image transforms (torchvision transforms v2) for the recipes.

Inputs are float ``(C, H, W)`` tensors in [0, 1] or uint8 tensors; outputs are normalised float tensors.
``flip_rrc`` is CSRA's official training pipeline (horizontal flip, RandomResizedCrop with scale
(0.7, 1.0), resize to the square input size); ``resize`` its test pipeline (square resize, aspect ratio not
kept). Normalisation defaults to none (mean 0, std 1: CSRA feeds [0, 1] images).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["build_transform", "TRAIN_TRANSFORMS"]

TRAIN_TRANSFORMS = ("flip_rrc", "flip", "none")


def build_transform(
    train: bool,
    img_size: int,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    kind: str = "flip_rrc",
    rrc_scale: Sequence[float] = (0.7, 1.0),
) -> v2.Compose:
    """Training or evaluation transform for square inputs of ``img_size``."""
    if kind not in TRAIN_TRANSFORMS:
        raise ValueError(f"train transform must be one of {TRAIN_TRANSFORMS}, got {kind!r}")
    steps: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if train and kind in ("flip_rrc", "flip"):
        steps.append(v2.RandomHorizontalFlip())
    if train and kind == "flip_rrc":
        steps.append(v2.RandomResizedCrop(img_size, scale=tuple(rrc_scale), antialias=True))
    steps.append(v2.Resize((img_size, img_size), antialias=True))
    if list(mean) != [0.0] * len(mean) or list(std) != [1.0] * len(std):
        steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)
