"""Single-label classification (``task: classification``): cross-entropy training, top-k evaluation.

Batch contract: datasets yield ``(image, label)`` (spec ``datasets.md`` §9: ImageFolder, CIFAR, IDX,
:class:`~visattn.data.label_noise.NoisyLabels`), collated to ``(images (B, C, H, W), labels (B,) int64)``.
A third element, if present, is taken as the samples' dataset indices (``(image, label, index)``) and is
used only to de-duplicate distributed evaluation (:class:`~visattn.metrics.ClassificationMetrics`).

Recipe options (``task_kwargs``):

``label_smoothing`` (float, default 0)
    ε of label-smoothed cross-entropy.
``smoothing`` (``"uniform"`` default, or ``"others"``)
    ``"uniform"``: target ``1 − ε + ε/K`` on the true class and ``ε/K`` elsewhere (``torch``'s
    ``CrossEntropyLoss(label_smoothing=ε)``, timm's ``LabelSmoothingCrossEntropy``, the Inception recipe);
    ``"others"``: ``1 − ε`` on the true class and ``ε/(K − 1)`` on each other class (SAN's official
    ``smooth_loss``).
``mixup`` (mapping, default off)
    keyword arguments of :class:`timm.data.Mixup` (``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``,
    ``prob``, ``switch_prob``, ``mode``); the loss becomes timm's ``SoftTargetCrossEntropy`` on the mixed
    soft targets, which carry the label smoothing (timm's uniform form). timm mixes a batch with its
    reverse and needs an even batch: an odd batch (the last one of an epoch) drops its last sample.
``topk`` (list, default ``[1, 5]``)
    the ``top{k}`` accuracies reported (``eval.metric: top1`` selects the best checkpoint).

Evaluation reports ``top1``, ``top5``, ``mca`` (mean class accuracy), ``nll`` (validation cross-entropy), and
in ``compute()`` (not logged) ``per_class_accuracy``, ``support``, ``confusion_matrix`` and ``class_names``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from visattn.metrics.classification import ClassificationMetrics

from .base import TaskSpec, check_metric_name, class_names_of, num_classes_of, register_task, task_options

__all__ = ["SingleLabelTask", "SmoothedCrossEntropy", "TASK_OPTIONS"]

TASK_OPTIONS = ("label_smoothing", "smoothing", "mixup", "topk")
SCALAR_METRICS = ("mca", "nll")


class SmoothedCrossEntropy(nn.Module):
    """Cross-entropy with label smoothing ``ε``: ``mode="uniform"`` (torch/timm) or ``"others"`` (SAN)."""

    def __init__(self, smoothing: float = 0.0, mode: str = "uniform") -> None:
        super().__init__()
        if not 0.0 <= float(smoothing) < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {smoothing!r}")
        if mode not in ("uniform", "others"):
            raise ValueError(f"smoothing must be 'uniform' or 'others', got {mode!r}")
        self.smoothing, self.mode = float(smoothing), mode

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.mode == "uniform" or self.smoothing == 0.0:
            return F.cross_entropy(logits, labels, label_smoothing=self.smoothing)
        k = logits.shape[1]
        if k < 2:
            raise ValueError("smoothing='others' needs at least 2 classes")
        logp = torch.log_softmax(logits, dim=1)
        true = logp.gather(1, labels.view(-1, 1)).squeeze(1)
        others = logp.sum(1) - true
        eps = self.smoothing
        return -((1.0 - eps) * true + eps / (k - 1) * others).mean()

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, mode={self.mode!r}"


class SingleLabelTask:
    """Single-label training and evaluation for the shared trainer.

    Args:
        num_classes: number of classes (the model's output width).
        label_smoothing, smoothing: see :class:`SmoothedCrossEntropy`.
        mixup: keyword arguments of :class:`timm.data.Mixup` (``None``: off).
        topk: reported ``top{k}`` accuracies.
        class_names: passed to the metric (``compute()["class_names"]``).
    """

    def __init__(
        self,
        num_classes: int,
        label_smoothing: float = 0.0,
        smoothing: str = "uniform",
        mixup: Mapping[str, Any] | None = None,
        topk: Sequence[int] = (1, 5),
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.num_classes = int(num_classes)
        self.criterion = SmoothedCrossEntropy(label_smoothing, smoothing)
        self.topk = tuple(topk)
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            self.class_names = None  # e.g. a model with more outputs than the dataset's classes
        self.mixup = None
        if mixup:
            from timm.data import Mixup

            options = dict(mixup)
            if smoothing != "uniform" and label_smoothing:
                raise ValueError("mixup carries timm's uniform label smoothing; use smoothing: uniform")
            self.mixup = Mixup(**options, label_smoothing=label_smoothing, num_classes=self.num_classes)
        ClassificationMetrics(self.num_classes, self.topk)  # validate topk now, not after an epoch

    # ------------------------------------------------------------------ trainer protocol
    def train_module(self, model: nn.Module) -> nn.Module:
        return model

    def metric_factory(self, dataset: Dataset | None = None) -> ClassificationMetrics:
        return ClassificationMetrics(self.num_classes, self.topk, class_names=self.class_names)

    @staticmethod
    def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if len(batch) not in (2, 3):
            raise ValueError(
                f"task classification expects batches (image, label) or (image, label, index), got "
                f"{len(batch)} elements (is data.name a single-label dataset?)"
            )
        images, labels = batch[0], batch[1]
        if not torch.is_tensor(labels) or labels.dim() != 1 or labels.dtype.is_floating_point:
            shape = tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__
            raise ValueError(f"task classification expects (B,) integer labels, got {shape}")
        return images, labels, (batch[2] if len(batch) == 3 else None)

    def training_loss(self, model: nn.Module, batch, epoch: int) -> torch.Tensor:
        images, labels, _ = self._unpack(batch)
        if self.mixup is None:
            return self.criterion(model(images), labels)
        if images.shape[0] % 2:
            if images.shape[0] == 1:
                return self.criterion(model(images), labels)
            images, labels = images[:-1], labels[:-1]
        images, soft = self.mixup(images, labels)
        logits = model(images).float()
        return torch.sum(-soft * torch.log_softmax(logits, dim=1), dim=1).mean()

    @torch.no_grad()
    def evaluate_batch(self, model: nn.Module, batch, metric: ClassificationMetrics) -> None:
        images, labels, index = self._unpack(batch)
        metric.update(model(images).float(), labels, indices=index)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def build_classification_task(
    config: Mapping[str, Any], model: nn.Module, train_set: Dataset | None
) -> SingleLabelTask:
    """``TaskSpec.build`` of ``task: classification`` (options from ``task_kwargs``)."""
    options = task_options(config, "classification", TASK_OPTIONS)
    topk = tuple(options.get("topk", (1, 5)))
    check_metric_name(config, [f"top{k}" for k in topk] + list(SCALAR_METRICS))
    num_classes = getattr(model, "num_classes", None)
    if not num_classes:
        num_classes = num_classes_of(train_set) if train_set is not None else None
    if not num_classes:
        raise ValueError("task classification: cannot tell the number of classes (model.num_classes)")
    names = class_names_of(train_set)
    return SingleLabelTask(
        num_classes,
        label_smoothing=options.get("label_smoothing", 0.0),
        smoothing=options.get("smoothing", "uniform"),
        mixup=options.get("mixup"),
        topk=topk,
        class_names=names,
    )


register_task("classification", TaskSpec(build_classification_task))
