"""Single-label classification metrics: top-k accuracy, per-class accuracy, confusion matrix, NLL.

All accuracies are fractions in [0, 1] (multiply by 100 for the papers' percentages). Conventions:

* **Scores** ``(N, C)`` are logits (or any scores ranked the same way; ``nll`` needs logits or log-probabilities
  to mean anything). **Labels** ``(N,)`` are class indices in ``0..C-1``.
* **Prediction** = ``argmax`` (ties to the lower class index, as ``torch.argmax``).
* **Rank** of the true class = number of classes that beat it: a strictly higher score, or an equal score and a
  lower index. ``top-k`` correct ⇔ rank < k, so ``top1 == mean(pred == label)`` exactly, and ties never count
  in the model's favour beyond ``argmax``'s own rule. ``k`` larger than ``C`` is clipped to ``C`` (``top5`` of
  a 3-class problem is 1.0).
* ``per_class_accuracy[c]`` = recall of class ``c`` (correct / samples of ``c``; NaN for a class without
  samples); ``mca`` (mean class accuracy) = the mean over classes with samples.
* ``confusion_matrix[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (rows: truth).
* ``nll`` = mean cross-entropy ``-log softmax(scores)[label]`` (float64), the validation loss.

:class:`ClassificationMetrics` accumulates one small row per sample (index, label, prediction, rank, NLL —
never the ``C`` scores, so ImageNet's 50k × 1000 logits are not kept) and gathers the rows of all processes
in ``compute()`` with :func:`visattn.utils.distributed.all_gather_variable`. With sample ``indices``
duplicates (``DistributedSampler`` pads the last shard) are dropped and rows are put in dataset order, so the
result equals single-process evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from visattn.utils.distributed import all_gather_variable

__all__ = ["ClassificationMetrics", "classification_metrics", "topk_ranks"]

Array = Any


def topk_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rank of each true class among the row's scores (0 = best; ties broken towards the lower index)."""
    s = scores.detach()
    true = s.gather(1, labels.view(-1, 1))
    classes = torch.arange(s.shape[1], device=s.device).view(1, -1)
    beats = (s > true) | ((s == true) & (classes < labels.view(-1, 1)))
    return beats.sum(1)


def _validate(scores: Array, labels: Array, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.as_tensor(scores).detach()
    y = torch.as_tensor(labels).detach()
    if s.dim() != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(s.shape)}")
    if y.dim() != 1 or y.shape[0] != s.shape[0]:
        raise ValueError(f"labels must be (N,) = ({s.shape[0]},) class indices, got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if num_classes is not None and s.shape[1] != num_classes:
        raise ValueError(f"expected {num_classes} classes, got scores of shape {tuple(s.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= s.shape[1]):
        raise ValueError(f"labels must lie in 0..{s.shape[1] - 1}, got {int(y.min())}..{int(y.max())}")
    s = s.float() if s.dtype in (torch.float16, torch.bfloat16) else s
    if torch.isnan(s).any():
        raise ValueError("scores contain NaN (has the model diverged?)")
    return s, y.long()


def _rows(scores: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
    """Per-sample rows ``[index, label, pred, rank, nll]`` as float64 (exact for integers < 2**53)."""
    s = scores.to(torch.float64)
    nll = -torch.log_softmax(s, dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
    idx = indices if indices is not None else torch.full_like(labels, -1)
    cols = (idx.to(s.device), labels, s.argmax(1), topk_ranks(s, labels))
    return torch.stack([c.to(torch.float64) for c in cols] + [nll], dim=1).cpu()


def _summarise(rows: torch.Tensor, num_classes: int, topk: Sequence[int]) -> dict[str, Any]:
    n = rows.shape[0]
    if n == 0:
        raise ValueError("no samples were accumulated: call update() before compute()")
    labels, pred, rank = rows[:, 1].long(), rows[:, 2].long(), rows[:, 3].long()
    out: dict[str, Any] = {}
    for k in topk:
        out[f"top{k}"] = float((rank < min(k, num_classes)).double().mean())
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes**2)
    confusion = confusion.view(num_classes, num_classes)
    support = confusion.sum(1)
    per_class = confusion.diagonal().double() / support.double()  # NaN where a class has no sample
    present = support > 0
    out.update(
        mca=float(per_class[present].mean()),
        nll=float(rows[:, 4].mean()),
        per_class_accuracy=per_class,
        support=support,
        confusion_matrix=confusion,
        num_samples=n,
    )
    return out


def classification_metrics(
    scores: Array, labels: Array, topk: Sequence[int] = (1, 5), indices: Array | None = None
) -> dict[str, Any]:
    """``top{k}`` for each ``k`` in ``topk``, ``mca``, ``nll`` (floats), ``per_class_accuracy`` (float64 ``(C,)``),
    ``support`` and ``confusion_matrix`` (int64 ``(C,)`` / ``(C, C)``) and ``num_samples``, in one call."""
    s, y = _validate(scores, labels, None)
    idx = None if indices is None else torch.as_tensor(indices).long().reshape(-1)
    return _summarise(_dedup(_rows(s, y, idx)), s.shape[1], _check_topk(topk))


def _check_topk(topk: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(topk)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"topk must be positive ints, got {topk!r}")
    return ks


def _dedup(rows: torch.Tensor) -> torch.Tensor:
    """Rows with indices: dataset order, first copy of each index kept. Without indices: unchanged."""
    if rows.shape[0] == 0 or rows[0, 0] < 0:
        return rows
    index = rows[:, 0].long()
    order = torch.sort(index, stable=True).indices
    ranked = index[order]
    first = torch.ones_like(ranked, dtype=torch.bool)
    first[1:] = ranked[1:] != ranked[:-1]
    return rows[order[first]]


class ClassificationMetrics:
    """Accumulating single-label metric (``update`` / ``compute`` / ``reset``).

    Args:
        num_classes: expected score width (checked; ``None``: taken from the first batch).
        topk: the ``k`` of the reported ``top{k}`` accuracies (default ``(1, 5)``).
        class_names: optional names, returned as ``class_names`` by ``compute()`` (for reports).

    Distributed evaluation: when ``torch.distributed`` is initialised, ``compute()`` is a collective that
    every rank must call; all ranks return the same result. Give ``indices`` (dataset indices) to every
    ``update`` to drop the samples ``DistributedSampler`` repeats; without them the (at most
    ``world_size - 1``) repeated samples are counted, as in SAN's official evaluation.

    Example::

        metric = ClassificationMetrics(num_classes=10)
        for images, labels in loader:
            metric.update(model(images), labels)
        metric.compute()  # {"top1": ..., "top5": ..., "mca": ..., "nll": ..., "confusion_matrix": ...}
    """

    def __init__(
        self,
        num_classes: int | None = None,
        topk: Sequence[int] = (1, 5),
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.topk = _check_topk(topk)
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and num_classes is not None and len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.reset()

    def reset(self) -> None:
        self._rows: list[torch.Tensor] = []
        self._with_indices: bool | None = None

    def update(self, scores: Array, labels: Array, indices: Array | None = None) -> None:
        """Add a batch: ``scores (B, C)`` (logits), ``labels (B,)``, optional dataset ``indices (B,)``."""
        s, y = _validate(scores, labels, self.num_classes)
        self.num_classes = s.shape[1]
        if self._with_indices is not None and self._with_indices != (indices is not None):
            raise ValueError("give indices to every update() or to none")
        self._with_indices = indices is not None
        idx = None
        if indices is not None:
            idx = torch.as_tensor(indices).detach().long().reshape(-1)
            if idx.shape[0] != s.shape[0] or (idx.numel() and int(idx.min()) < 0):
                raise ValueError(f"indices must be ({s.shape[0]},) non-negative ints, got {tuple(idx.shape)}")
        self._rows.append(_rows(s, y, idx))

    def _gathered(self) -> tuple[torch.Tensor, int]:
        local = torch.cat(self._rows) if self._rows else torch.zeros(0, 5, dtype=torch.float64)
        classes = self.num_classes or 0
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return local, classes
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        flag = -1 if self._with_indices is None else int(self._with_indices)
        meta = all_gather_variable(torch.tensor([[local.shape[0], classes, flag]], device=device)).cpu()
        seen = meta[meta[:, 0] > 0]
        if len(seen) and (len(set(seen[:, 1].tolist())) > 1 or len(set(seen[:, 2].tolist())) > 1):
            raise ValueError("processes disagree on the number of classes or on giving indices")
        rows = all_gather_variable(local.to(device)).cpu()
        return rows, int(seen[0, 1]) if len(seen) else classes

    def compute(self) -> dict[str, Any]:
        """Metrics on the accumulated (and gathered) samples; see :func:`classification_metrics`."""
        rows, classes = self._gathered()
        out = _summarise(_dedup(rows), classes, self.topk)
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        return out
