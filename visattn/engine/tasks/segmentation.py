"""The ``segmentation`` task: per-pixel cross-entropy training, mIoU / per-class IoU / pixel accuracy.

Batches are ``(image (B, C, H, W), mask (B, H, W) int64)`` with 255 = ignore (the datasets ``voc2012_seg``,
``cityscapes``, ``glyph_seg``; the joint transform is :func:`visattn.data.joint_transforms.build_segmentation_transform`).
Models return logits at the input resolution (:mod:`visattn.models.segmentation`).

Recipe options (``task_kwargs``; every key optional):

=====================  ======================================================================================
``crop_size``          training crop ``[h, w]`` (or an int); padded with 0 / ignore when the image is smaller
``scale_range``        training random scale ``[lo, hi]`` (e.g. ``[0.5, 2.0]``)
``base_size``          the scale's reference size ``[h, w]`` (Cityscapes ``[1024, 2048]``, VOC ``[512, 2048]``)
``hflip``              flip probability (default 0.5; 0 for the digit canvases)
``color_jitter``       brightness/contrast/saturation jitter strength (default 0)
``ignore_index``       default 255
``class_weights``      per-class cross-entropy weights
``ohem_thresh``        OHEM cross-entropy (HRNet): keep pixels whose true-class probability is below this
                       (at least ``ohem_min_kept`` = 131072 pixels per batch); default off
``inference``          ``whole`` (default) or ``slide`` (``window`` ``[h, w]``, ``stride`` ``[h, w]``)
``flip_eval``          average with the mirrored image's logits (default false)
``eval_scale``         evaluate on the image resized by this factor (logits resized back to the mask)
``eval_pad_to``        pad evaluation images and masks (ignored) to ``[h, w]`` so sizes batch (VOC)
=====================  ======================================================================================

``eval.metric``: ``mIoU`` (also ``aAcc``, ``mAcc``, ``IoU.<class>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visattn.data.joint_transforms import build_segmentation_transform
from visattn.metrics.segmentation import SegmentationMetrics
from visattn.models.segmentation import segment

from .base import TaskSpec, check_metric_name, class_names_of, input_channels, register_task, task_options

__all__ = ["SegmentationTask", "ohem_cross_entropy"]

KNOWN_KWARGS = (
    "crop_size", "scale_range", "base_size", "hflip", "color_jitter", "ignore_index", "class_weights",
    "ohem_thresh", "ohem_min_kept", "inference", "window", "stride", "flip_eval", "eval_scale", "eval_pad_to",
)  # fmt: skip


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.7,
    min_kept: int = 131072,
    ignore_index: int = 255,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Online hard example mining CE (HRNet's ``OhemCrossEntropy``): the mean loss of the labelled pixels whose
    true-class probability is below ``max(thresh, the min_kept-th smallest probability)``."""
    losses = F.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction="none"
    ).reshape(-1)
    valid = target.reshape(-1) != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    prob = logits.softmax(1).gather(1, target.clamp(0, logits.shape[1] - 1).unsqueeze(1)).reshape(-1)
    prob, losses = prob[valid], losses[valid]
    sorted_prob, order = prob.detach().sort()
    limit = sorted_prob[min(int(min_kept), sorted_prob.numel() - 1)]
    threshold = max(float(limit), float(thresh))
    kept = losses[order][sorted_prob < threshold]
    return kept.mean() if kept.numel() else losses.mean()


class SegmentationTask:
    """Semantic segmentation training and evaluation (see the module docstring for the options)."""

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 131072,
        inference: str = "whole",
        window: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        flip_eval: bool = False,
    ) -> None:
        if inference not in ("whole", "slide"):
            raise ValueError(f"task_kwargs.inference must be 'whole' or 'slide', got {inference!r}")
        if inference == "slide" and window is None:
            raise ValueError("task_kwargs.inference='slide' needs task_kwargs.window [h, w]")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(
                f"task_kwargs.class_weights has {len(class_weights)} values for {num_classes} classes"
            )
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            self.class_names = None
        self.ignore_index = ignore_index
        self.class_weights = (
            torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        )
        self.ohem_thresh, self.ohem_min_kept = ohem_thresh, ohem_min_kept
        self.inference, self.window, self.stride, self.flip_eval = inference, window, stride, flip_eval

    def train_module(self, model: nn.Module) -> nn.Module:
        return model

    def training_loss(self, model: nn.Module, batch, epoch: int) -> torch.Tensor:
        images, masks = batch[0], batch[1]
        logits = model(images)
        if logits.shape[-2:] != masks.shape[-2:]:
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits.float()
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        if self.ohem_thresh is not None:
            return ohem_cross_entropy(
                logits, masks, self.ohem_thresh, self.ohem_min_kept, self.ignore_index, weight
            )
        return F.cross_entropy(logits, masks, weight=weight, ignore_index=self.ignore_index)

    @torch.no_grad()
    def predict(
        self, model: nn.Module, images: torch.Tensor, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Logits ``(B, C, h, w)`` with the configured inference, resized to ``size`` if given."""
        logits = segment(model, images, self.inference, self.window, self.stride, self.flip_eval)
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def evaluate_batch(self, model: nn.Module, batch, metric: SegmentationMetrics) -> None:
        images, masks = batch[0], batch[1]
        logits = self.predict(model, images, masks.shape[-2:])
        metric.update(logits.argmax(1), masks)

    def metric_factory(self, dataset=None) -> SegmentationMetrics:
        return SegmentationMetrics(self.num_classes, self.ignore_index, self.class_names)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def _options(config: Mapping[str, Any]) -> dict[str, Any]:
    return task_options(config, "segmentation", KNOWN_KWARGS)


def segmentation_transform(config: Mapping[str, Any], train: bool):
    """The recipe's joint transform (``data.mean``/``data.std`` + the ``task_kwargs`` above)."""
    tk, d = _options(config), config["data"]
    return build_segmentation_transform(
        train,
        d["mean"],
        d["std"],
        crop_size=tk.get("crop_size"),
        scale_range=tk.get("scale_range"),
        base_size=tk.get("base_size"),
        hflip=tk.get("hflip", 0.5),
        color_jitter=tk.get("color_jitter", 0.0),
        ignore_index=tk.get("ignore_index", 255),
        pad_to=tk.get("eval_pad_to"),
        eval_scale=tk.get("eval_scale", 1.0),
        channels=input_channels(config),
    )


def build_segmentation_task(config: Mapping[str, Any], model: nn.Module, train_set) -> SegmentationTask:
    tk = _options(config)
    check_metric_name(config, ("mIoU", "aAcc", "mAcc"), patterns=("IoU.*",))
    names = class_names_of(train_set)
    num_classes = getattr(model, "num_classes", None) or len(names or ())
    return SegmentationTask(
        num_classes,
        names,
        ignore_index=tk.get("ignore_index", 255),
        class_weights=tk.get("class_weights"),
        ohem_thresh=tk.get("ohem_thresh"),
        ohem_min_kept=tk.get("ohem_min_kept", 131072),
        inference=tk.get("inference", "whole"),
        window=tk.get("window"),
        stride=tk.get("stride"),
        flip_eval=tk.get("flip_eval", False),
    )


def segmentation_input(config: Mapping[str, Any]):
    """``f(uint8 image) -> (model input, valid)``: the evaluation joint transform; ``valid`` (bool ``(h, w)``)
    is False where it padded the image (``eval_pad_to``), so predictions can be cropped back."""
    from torchvision import tv_tensors

    transform = segmentation_transform(config, False)
    ignore = _options(config).get("ignore_index", 255)

    def model_input(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = torch.full(tuple(image.shape[-2:]), 0 if ignore else 1, dtype=torch.uint8)
        x, mask = transform(tv_tensors.Image(image), tv_tensors.Mask(inside))
        return x, mask != ignore

    return model_input


def segmentation_image_input(config: Mapping[str, Any]):
    """``f(uint8 image) -> model input`` (:func:`segmentation_input` without the valid region)."""
    model_input = segmentation_input(config)
    return lambda image: model_input(image)[0]


register_task(
    "segmentation", TaskSpec(build_segmentation_task, segmentation_transform, segmentation_image_input)
)
