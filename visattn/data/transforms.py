"""Image transforms (torchvision transforms v2) for the recipes.

Inputs are float ``(C, H, W)`` tensors in [0, 1] or uint8 tensors; outputs are normalised float tensors.
``flip_rrc`` is CSRA's official training pipeline (horizontal flip, RandomResizedCrop with scale
(0.7, 1.0), resize to the square input size); ``resize`` its test pipeline (square resize, aspect ratio not
kept). Normalisation defaults to none (mean 0, std 1: CSRA feeds [0, 1] images).

Single-label kinds (spec ``san.md`` §5, ``residual_attention.md`` §5):

* ``imagenet``: training RandomResizedCrop(``img_size``, scale ``rrc_scale``, ratio ``rrc_ratio``) + horizontal flip
  (torchvision/SAN; use ``rrc_scale: [0.08, 1.0]`` for the standard recipe); evaluation resizes the shorter
  side to ``round(img_size / 0.875)`` and centre-crops ``img_size`` (Resize(256) + CenterCrop(224)).
* ``pad_crop``: the CIFAR recipe — resize to ``img_size`` if needed, pad by ``img_size // 8`` (4 px at 32)
  with zeros, random ``img_size`` crop, horizontal flip; evaluation resizes to ``img_size`` (a no-op at 32).
* ``<kind>+<timm RandAugment string>``, e.g. ``imagenet+rand-m9-mstd0.5-inc1``: the same with timm's
  ``rand_augment_transform`` applied after the geometric steps of training (on PIL images, fill = the mean).

Mixup/CutMix act on batches and live in the classification task (``task_kwargs.mixup``), not here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["build_transform", "TRAIN_TRANSFORMS"]

TRAIN_TRANSFORMS = ("flip_rrc", "flip", "none", "imagenet", "pad_crop")
IMAGENET_CROP_PCT = 0.875


def build_transform(
    train: bool,
    img_size: int,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    kind: str = "flip_rrc",
    rrc_scale: Sequence[float] = (0.7, 1.0),
    rrc_ratio: Sequence[float] = (3 / 4, 4 / 3),
    resize_before: int | None = None,
) -> v2.Compose:
    """Training or evaluation transform for square inputs of ``img_size``."""
    kind, _, randaug = kind.partition("+")
    if kind not in TRAIN_TRANSFORMS:
        raise ValueError(
            f"train transform must be one of {TRAIN_TRANSFORMS} (optionally +<RandAugment string>), got {kind!r}"
        )
    if randaug and not randaug.startswith("rand"):
        raise ValueError(
            f"after '+' a timm RandAugment string is expected (e.g. rand-m9-mstd0.5), got {randaug!r}"
        )
    steps: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if resize_before:  # e.g. VAA: every crop squashed to 256x256 first; test = centre crop of it
        steps.append(v2.Resize((resize_before, resize_before), antialias=True))
        if not train:
            steps.append(v2.CenterCrop(img_size))
    if kind in ("imagenet", "pad_crop"):
        steps += _single_label_steps(train, img_size, kind, rrc_scale, rrc_ratio)
        if train and randaug:
            steps += _randaugment(randaug, img_size, mean)
        if list(mean) != [0.0] * len(mean) or list(std) != [1.0] * len(std):
            steps.append(v2.Normalize(list(mean), list(std)))
        return v2.Compose(steps)
    if train and kind in ("flip_rrc", "flip"):
        steps.append(v2.RandomHorizontalFlip())
    if train and kind == "flip_rrc":
        steps.append(
            v2.RandomResizedCrop(img_size, scale=tuple(rrc_scale), ratio=tuple(rrc_ratio), antialias=True)
        )
    steps.append(v2.Resize((img_size, img_size), antialias=True))
    if list(mean) != [0.0] * len(mean) or list(std) != [1.0] * len(std):
        steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


def _single_label_steps(
    train: bool, img_size: int, kind: str, rrc_scale: Sequence[float], rrc_ratio: Sequence[float]
) -> list:
    if kind == "imagenet":
        if train:
            return [
                v2.RandomResizedCrop(
                    img_size, scale=tuple(rrc_scale), ratio=tuple(rrc_ratio), antialias=True
                ),
                v2.RandomHorizontalFlip(),
            ]
        return [
            v2.Resize(int(round(img_size / IMAGENET_CROP_PCT)), antialias=True),
            v2.CenterCrop(img_size),
        ]
    steps: list = [v2.Resize((img_size, img_size), antialias=True)]
    if train:
        steps += [v2.RandomCrop(img_size, padding=max(1, img_size // 8)), v2.RandomHorizontalFlip()]
    return steps


def _randaugment(config: str, img_size: int, mean: Sequence[float]) -> list:
    from timm.data import rand_augment_transform

    fill = tuple(min(255, max(0, round(255 * m))) for m in mean)
    hparams = {"translate_const": int(img_size * 0.45), "img_mean": fill if len(fill) > 1 else fill[0]}
    return [
        v2.ToPILImage(),
        rand_augment_transform(config, hparams),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ]
