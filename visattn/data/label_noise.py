"""Training-label corruption for the Residual Attention Network's noisy-label experiment (spec
``residual_attention.md`` §6).

The paper corrupts CIFAR-10 training labels with a confusion matrix ``Q`` parameterised by the clean-label
ratio ``r``; the natural (inferred) reading is symmetric noise, ``Q_ii = r`` and ``Q_ij = (1 − r)/(K − 1)``
for ``j ≠ i`` (:func:`symmetric_confusion`). Noise levels 10/30/50/70 % are ``r`` = 0.9/0.7/0.5/0.3.

**Exact-count scheme.** Rather than drawing every label independently (whose flip count fluctuates), each
class ``c`` with ``n_c`` samples gets exactly ``f_c = round((1 − Q_cc) · n_c)`` flipped labels (halves round
up), and those ``f_c`` are split over the other classes ``j`` in proportion to ``Q_cj`` by largest remainders
(ties between equal remainders broken at random). Which samples of class ``c`` receive which label is a
uniformly random assignment. So the corrupted fraction is the requested one up to rounding (at most half a
sample per class), the flips follow ``Q``'s rows up to one sample per cell, and everything depends only on
``(labels, Q, seed)``: labels are fixed per sample for the whole run.

:class:`NoisyLabels` wraps a single-label dataset (``(image, label)`` items and a ``targets`` attribute) and
serves the corrupted labels; ``clean_targets`` and ``noisy_mask`` keep the truth. Recipes enable it with
``data.kwargs.label_noise: {clean_ratio: 0.7, seed: 0}`` (or ``{confusion: [[...], ...]}``), applied to the
``train`` split only (``splits:`` changes that); see :func:`apply_label_noise`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "NoisyLabels",
    "apply_label_noise",
    "corrupt_labels",
    "symmetric_confusion",
    "symmetric_label_noise",
]


def symmetric_confusion(num_classes: int, clean_ratio: float) -> np.ndarray:
    """``K × K`` matrix with ``clean_ratio`` on the diagonal and ``(1 − r)/(K − 1)`` elsewhere."""
    k = int(num_classes)
    if k < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    r = float(clean_ratio)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"clean_ratio must lie in [0, 1], got {clean_ratio}")
    q = np.full((k, k), (1.0 - r) / (k - 1))
    np.fill_diagonal(q, r)
    return q


def _as_labels(labels: Any, num_classes: int) -> np.ndarray:
    y = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {y.shape} dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    return y


def _largest_remainder(total: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total`` (ties broken at random)."""
    if total == 0 or weights.sum() == 0:
        return np.zeros(len(weights), dtype=np.int64)
    quota = total * weights / weights.sum()
    base = np.floor(quota + 1e-9).astype(np.int64)
    rest = total - int(base.sum())
    if rest > 0:
        remainder = np.where(weights > 0, quota - base, -np.inf)
        tie = rng.random(len(weights))
        order = np.lexsort((tie, -np.round(remainder, 9)))  # largest remainder first, random among equals
        base[order[:rest]] += 1
    return base


def corrupt_labels(labels: Any, confusion: Any, seed: int = 0) -> np.ndarray:
    """Noisy copy of ``labels`` following the row-stochastic ``confusion`` ``(K, K)`` (exact counts; see the
    module docstring). Returns int64 labels; the input is not modified."""
    q = np.asarray(confusion, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] < 2:
        raise ValueError(f"confusion must be a square K x K matrix (K >= 2), got shape {q.shape}")
    if (q < 0).any() or not np.allclose(q.sum(1), 1.0, atol=1e-6):
        raise ValueError("confusion rows must be non-negative and sum to 1 (row i: P(noisy label | true i))")
    k = q.shape[0]
    y = _as_labels(labels, k)
    rng = np.random.default_rng(seed)
    out = y.copy()
    for c in range(k):
        members = np.flatnonzero(y == c)
        n = len(members)
        flips = int(np.floor((1.0 - q[c, c]) * n + 0.5 + 1e-9))
        others = q[c].copy()
        others[c] = 0.0
        if flips and others.sum() == 0:
            raise ValueError(f"confusion row {c} moves mass off the diagonal but to no class")
        counts = _largest_remainder(flips, others, rng)
        new = np.full(n, c, dtype=np.int64)
        new[:flips] = np.repeat(np.arange(k), counts)
        out[members] = new[rng.permutation(n)]
    return out


def symmetric_label_noise(labels: Any, clean_ratio: float, num_classes: int, seed: int = 0) -> np.ndarray:
    """Symmetric noise: a fraction ``1 − clean_ratio`` of each class flipped uniformly to the other classes."""
    return corrupt_labels(labels, symmetric_confusion(num_classes, clean_ratio), seed)


class NoisyLabels(Dataset):
    """A single-label dataset with corrupted labels, fixed per sample.

    Args:
        dataset: yields ``(image, label, ...)`` and has ``targets`` (class indices, e.g. CIFAR, ImageFolder,
            IDX datasets).
        clean_ratio: symmetric noise with this clean-label ratio ``r`` (exclusive with ``confusion``).
        confusion: a ``(K, K)`` row-stochastic confusion matrix.
        seed: the corruption seed (independent of the training seed).
        num_classes: default: ``len(dataset.class_names)``.

    Attributes: ``targets`` (noisy, int64 tensor), ``clean_targets``, ``noisy_mask`` (label changed),
    ``class_names``, ``confusion``.
    """

    def __init__(
        self,
        dataset: Dataset,
        clean_ratio: float | None = None,
        confusion: Sequence[Sequence[float]] | np.ndarray | None = None,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        if (clean_ratio is None) == (confusion is None):
            raise ValueError("label noise needs exactly one of clean_ratio or confusion")
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise ValueError(
                f"label noise needs a dataset with a 'targets' attribute, got {type(dataset).__name__}"
            )
        names = getattr(dataset, "class_names", None)
        if num_classes is None:
            if names is None and confusion is None:
                raise ValueError("label noise: the dataset has no class_names; pass num_classes")
            num_classes = len(names) if names is not None else len(np.asarray(confusion))
        q = (
            symmetric_confusion(num_classes, clean_ratio)
            if confusion is None
            else np.asarray(confusion, float)
        )
        clean = _as_labels(targets, q.shape[0])
        noisy = corrupt_labels(clean, q, seed)
        self.dataset = dataset
        self.confusion = q
        self.clean_targets = torch.from_numpy(clean)
        self.targets = torch.from_numpy(noisy)
        self.noisy_mask = self.targets != self.clean_targets
        self.class_names = names
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        index = range(len(self))[int(index)]
        return (item[0], int(self.targets[index]), *item[2:])

    @property
    def noise_rate(self) -> float:
        """Fraction of samples whose label was changed."""
        return float(self.noisy_mask.float().mean()) if len(self) else 0.0

    def __repr__(self) -> str:
        return f"NoisyLabels({self.dataset!r}, noise_rate={self.noise_rate:.4f}, seed={self.seed})"


def apply_label_noise(dataset: Dataset, split: str, label_noise: Mapping[str, Any] | None) -> Dataset:
    """The recipe option ``data.kwargs.label_noise``: wrap ``dataset`` in :class:`NoisyLabels` when ``split``
    is one of ``label_noise['splits']`` (default ``['train']``; evaluation labels stay clean)."""
    if not label_noise:
        return dataset
    options = dict(label_noise)
    splits = options.pop("splits", ["train"])
    unknown = sorted(set(options) - {"clean_ratio", "confusion", "seed", "num_classes"})
    if unknown:
        raise ValueError(
            f"data.kwargs.label_noise: unknown keys {unknown} (known: clean_ratio, confusion, seed, splits)"
        )
    if split not in splits:
        return dataset
    return NoisyLabels(dataset, **options)
