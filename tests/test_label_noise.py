"""Label corruption for the RAN noisy-label experiment (spec ``residual_attention.md`` §6, test 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from visattn.data.label_noise import (
    NoisyLabels,
    apply_label_noise,
    corrupt_labels,
    symmetric_confusion,
    symmetric_label_noise,
)


def _labels(counts) -> np.ndarray:
    rng = np.random.default_rng(123)
    return rng.permutation(np.repeat(np.arange(len(counts)), counts))


@pytest.mark.parametrize("r", [0.9, 0.7, 0.5, 0.3, 0.0, 1.0])
def test_exact_flip_count_per_class(r):
    counts = [5000, 4999, 37, 1, 0, 250, 333, 1000, 10, 2]
    y = _labels(counts)
    noisy = symmetric_label_noise(y, r, 10, seed=3)
    assert noisy.dtype == np.int64 and noisy.shape == y.shape
    for c, n in enumerate(counts):
        flipped = int((noisy[y == c] != c).sum())
        assert flipped == math.floor((1 - r) * n + 0.5), (c, n, flipped)  # round half up, per class
        moved = np.bincount(noisy[(y == c) & (noisy != c)], minlength=10)
        others = np.delete(moved, c)
        assert others.max() - others.min() <= 1  # exactly uniform over the other classes up to one sample


def test_flips_are_uniform_over_other_classes_chi_square():
    """Large sample: the pooled off-diagonal counts of every class pass a chi-square test against uniform, and
    the *identity* of the flipped samples is random (flip rate flat over sample positions)."""
    y = np.repeat(np.arange(10), 6000)  # sorted on purpose: position must not matter
    noisy = symmetric_label_noise(y, 0.3, 10, seed=0)
    for c in range(10):
        moved = np.delete(np.bincount(noisy[(y == c) & (noisy != c)], minlength=10), c)
        expected = moved.sum() / 9
        chi2 = float(((moved - expected) ** 2 / expected).sum())
        assert chi2 < 21.67  # chi-square(8) at p = 0.01; exact allocation gives ~0
    flips = (noisy != y).reshape(60, 1000).mean(1)  # 60 consecutive chunks of 1000 samples
    assert abs(flips.mean() - 0.7) < 1e-12
    z = (flips - 0.7) / math.sqrt(0.7 * 0.3 / 1000)
    chi2 = float((z**2).sum())
    assert chi2 < 88.38  # chi-square(59) at p = 0.01 (sampling without replacement is even tighter)


def test_general_confusion_structure():
    # class 0 -> mostly 1; class 1 -> 0 or 2 at 1:3; class 2 clean
    q = [[0.2, 0.8, 0.0], [0.1, 0.6, 0.3], [0.0, 0.0, 1.0]]
    y = np.repeat([0, 1, 2], [1000, 1000, 50])
    noisy = corrupt_labels(y, q, seed=5)
    cm = np.zeros((3, 3), int)
    np.add.at(cm, (y, noisy), 1)
    assert cm.tolist() == [[200, 800, 0], [100, 600, 300], [0, 0, 50]]
    assert corrupt_labels(torch.tensor(y), q, seed=5).tolist() == noisy.tolist()  # tensors too
    assert not np.array_equal(corrupt_labels(y, q, seed=6), noisy)
    assert np.array_equal(symmetric_confusion(3, 0.4), [[0.4, 0.3, 0.3], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]])


def test_deterministic_and_validated():
    y = _labels([300] * 10)
    a = symmetric_label_noise(y, 0.5, 10, seed=11)
    assert np.array_equal(a, symmetric_label_noise(y.copy(), 0.5, 10, seed=11))
    assert not np.array_equal(a, symmetric_label_noise(y, 0.5, 10, seed=12))
    assert np.array_equal(symmetric_label_noise(y, 1.0, 10, seed=1), y)
    with pytest.raises(ValueError, match="sum to 1"):
        corrupt_labels(y, np.eye(10) * 0.5)
    with pytest.raises(ValueError, match="square"):
        corrupt_labels(y, np.ones((10, 9)) / 9)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        symmetric_label_noise(np.array([0, 10]), 0.5, 10)
    with pytest.raises(ValueError, match="clean_ratio must lie in"):
        symmetric_label_noise(y, 1.5, 10)


class _Toy(Dataset):
    def __init__(self, n=120, k=4):
        self.targets = torch.arange(n) % k
        self.class_names = [f"c{i}" for i in range(k)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.full((1,), float(i)), int(self.targets[i])


def test_wrapper_dataset_and_recipe_option():
    base = _Toy()
    noisy = NoisyLabels(base, clean_ratio=0.7, seed=2)
    assert noisy.noise_rate == pytest.approx(0.3) and noisy.class_names == base.class_names
    assert noisy.clean_targets.tolist() == base.targets.tolist()
    items = [noisy[i] for i in range(len(noisy))]
    assert [int(x.item()) for x, _ in items] == list(range(120))  # images untouched
    assert (
        [y for _, y in items] == noisy.targets.tolist() == [noisy[i][1] for i in range(120)]
    )  # fixed per sample
    assert noisy[-1][1] == int(noisy.targets[119])  # 30 per class: exactly 9 flipped each
    assert apply_label_noise(base, "test", {"clean_ratio": 0.7}) is base  # evaluation labels stay clean
    assert isinstance(apply_label_noise(base, "train", {"clean_ratio": 0.7}), NoisyLabels)
    assert isinstance(apply_label_noise(base, "val", {"clean_ratio": 0.7, "splits": ["val"]}), NoisyLabels)
    q = np.eye(4)[[1, 2, 3, 0]]  # a permutation: every label moves
    assert NoisyLabels(base, confusion=q).noise_rate == 1.0
    with pytest.raises(ValueError, match="exactly one of clean_ratio or confusion"):
        NoisyLabels(base)
    with pytest.raises(ValueError, match="unknown keys"):
        apply_label_noise(base, "train", {"ratio": 0.7})
