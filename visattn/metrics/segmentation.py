"""Semantic-segmentation metrics from an accumulated confusion matrix: mIoU, per-class IoU, accuracies.

Conventions (those of mmsegmentation's ``IoUMetric`` and of the Cityscapes / VOC evaluation scripts):

* pixels whose target is ``ignore_index`` (default 255: VOC boundaries, Cityscapes void classes) are not
  counted at all, whatever the prediction;
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` over the whole evaluation set (not averaged per image);
* a class that appears neither in the targets nor in the predictions has an undefined IoU (NaN) and is left
  out of ``mIoU`` (a NaN-mean); a class that is predicted but never present has IoU 0 and counts;
* ``aAcc`` (pixel accuracy) = correctly labelled pixels / labelled pixels; ``mAcc`` = NaN-mean over classes
  of the per-class recall ``TP_c / (TP_c + FN_c)`` (undefined when the class is absent from the targets).

All values are fractions in [0, 1]. The matrix ``confusion[t, p]`` counts pixels of true class ``t``
predicted as ``p`` (int64); :meth:`SegmentationMetrics.compute` sums it over processes with
``all_reduce`` under ``torch.distributed``. Same definitions as torchmetrics'
``MulticlassJaccardIndex(average=None, ignore_index=255)`` for the per-class IoU, except that torchmetrics
reports 0 instead of NaN for a class absent from both targets and predictions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["SegmentationMetrics", "confusion_matrix", "segmentation_scores"]


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """``(C, C)`` int64 matrix ``[true, predicted]`` of integer label maps of equal shape.

    Targets equal to ``ignore_index`` are skipped; any other target outside ``0..C-1`` raises
    ``ValueError`` (a label map that does not belong to this class set). Predictions must lie in
    ``0..C-1``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"target label {lo if lo < 0 else hi} outside 0..{num_classes - 1}"
                + (f" and not the ignore index {ignore_index}" if ignore_index is not None else "")
            )
        plo, phi = int(pred.min()), int(pred.max())
        if plo < 0 or phi >= num_classes:
            raise ValueError(f"predicted label {plo if plo < 0 else phi} outside 0..{num_classes - 1}")
    index = target * num_classes + pred
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """mIoU, aAcc, mAcc, per-class IoU / accuracy (lists, NaN = undefined) and ``IoU.<name>`` floats."""
    cm = confusion.double()
    tp = cm.diag()
    gt = cm.sum(1)
    pr = cm.sum(0)
    union = gt + pr - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
    total = float(gt.sum())
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    out: dict[str, Any] = {
        "mIoU": _nanmean(iou),
        "aAcc": float(tp.sum()) / total if total > 0 else math.nan,
        "mAcc": _nanmean(acc),
        "per_class_IoU": iou.tolist(),
        "per_class_Acc": acc.tolist(),
        "class_names": names,
        "pixels": int(total),
    }
    for name, value in zip(names, iou.tolist(), strict=True):
        out[f"IoU.{name}"] = value
    return out


def _nanmean(x: torch.Tensor) -> float:
    valid = ~torch.isnan(x)
    return float(x[valid].mean()) if valid.any() else math.nan


class SegmentationMetrics:
    """Accumulating segmentation metric (``update(pred, target)``, ``compute() -> dict``, ``reset()``).

    Args:
        num_classes: number of classes ``C`` (labels ``0..C-1``).
        ignore_index: target value that is never counted (``None``: none).
        class_names: names for the ``IoU.<name>`` keys (default ``"0"..``).

    ``update`` takes integer label maps ``(B, H, W)`` or logits ``(B, C, H, W)`` (argmax over ``C``).
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = 255, class_names: Sequence[str] | None = None
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.dim() == target.dim() + 1 and pred.is_floating_point():
            pred = pred.argmax(1)
        cm = confusion_matrix(pred.cpu(), target.cpu(), self.num_classes, self.ignore_index)
        self.confusion += cm

    def compute(self) -> dict[str, Any]:
        cm = self.confusion
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else cm.device
            summed = cm.to(device)
            dist.all_reduce(summed)
            cm = summed.cpu()
        return segmentation_scores(cm, self.class_names)
