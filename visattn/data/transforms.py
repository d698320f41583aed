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
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["TRAIN_TRANSFORMS", "ToChannels", "build_transform", "convert_channels", "match_channels"]

TRAIN_TRANSFORMS = ("flip_rrc", "flip", "none", "imagenet", "pad_crop")
IMAGENET_CROP_PCT = 0.875
# ITU-R 601-2 luma, the weights of PIL's "L" conversion; they sum to 1, so a grey RGB image stays exact.
_LUMA = (0.299, 0.587, 0.114)


def match_channels(values: Sequence[float], channels: int) -> list[float]:
    """Per-channel normalisation values for ``channels`` channels: as given when the counts agree, else their
    mean repeated (a one-value grey mean on RGB input, an ImageNet mean on a grey model)."""
    values = [float(v) for v in values]
    if len(values) == channels:
        return values
    return [sum(values) / len(values)] * channels


def convert_channels(image: torch.Tensor, channels: int | None) -> torch.Tensor:
    """An image ``(..., C, H, W)`` (uint8 or float) with ``channels`` channels: grey is repeated to RGB, RGB
    becomes grey by ITU-R 601-2 luma (uint8 rounded); ``None`` or the same count: unchanged."""
    have = image.shape[-3]
    if channels is None or have == channels:
        return image
    if have == 1 and channels == 3:
        return image.expand(*image.shape[:-3], 3, *image.shape[-2:]).clone()
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=torch.float32).view(3, 1, 1)
        grey = (image.float() * weights).sum(-3, keepdim=True)
        return (
            grey.round().clamp(0, 255).to(image.dtype)
            if not image.dtype.is_floating_point
            else grey.to(image.dtype)
        )
    raise ValueError(f"cannot convert a {have}-channel image to {channels} channels (1 or 3 are supported)")


class ToChannels(torch.nn.Module):
    """Transform step: :func:`convert_channels` to ``channels`` (the recipe's ``data.channels``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = int(channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = convert_channels(image, self.channels)
        if out is image or type(image) is torch.Tensor:
            return out
        return tv_tensors.wrap(out.as_subclass(torch.Tensor), like=image)  # keep the tv_tensors type

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def build_transform(
    train: bool,
    img_size: int,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    kind: str = "flip_rrc",
    rrc_scale: Sequence[float] = (0.7, 1.0),
    rrc_ratio: Sequence[float] = (3 / 4, 4 / 3),
    resize_before: int | None = None,
    channels: int | None = None,
) -> v2.Compose:
    """Training or evaluation transform for square inputs of ``img_size``; ``channels``: convert images to
    this many channels first (:func:`convert_channels`; ``None``: keep them)."""
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
    if channels is not None:
        steps.append(ToChannels(channels))
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
