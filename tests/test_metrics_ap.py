"""Average precision: the spec's worked fixtures and agreement with scikit-learn where definitions match."""

import math

import numpy as np
import pytest
import torch

from visattn.metrics import average_precision, mean_average_precision

F_SCORES = torch.tensor(
    [
        [0.90, 0.60, 0.70, 0.80],
        [0.65, 0.70, 0.10, 0.30],
        [0.60, 0.40, 0.90, 0.50],
        [0.30, 0.20, 0.60, 0.70],
        [0.10, 0.90, 0.30, 0.40],
    ]
)
F_LABELS = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 1]])


def test_fixture_f():
    ap = average_precision(F_SCORES, F_LABELS)
    torch.testing.assert_close(
        ap * 100, torch.tensor([83.3333, 100, 100, 91.6667], dtype=torch.float64), atol=1e-4, rtol=0
    )
    assert mean_average_precision(F_SCORES, F_LABELS) == pytest.approx(0.9375)


def test_fixture_g_ignored_entries_are_dropped():
    ternary = torch.tensor([[1, 0, 1, 1], [0, 1, -1, -1], [1, -1, 1, -1], [-1, -1, -1, 0], [-1, 1, -1, 1]])
    targets, mask = (ternary == 1).long(), ternary != 0
    # "0" in the ternary model means ignored; the binary view's zeros elsewhere are negatives.
    ap = average_precision(F_SCORES, targets, mask)
    torch.testing.assert_close(
        ap * 100, torch.tensor([100, 100, 100, 83.3333], dtype=torch.float64), atol=1e-4, rtol=0
    )
    assert mean_average_precision(F_SCORES, targets, mask) == pytest.approx(0.958333, abs=1e-6)


def test_fixture_m_class_without_positives_is_excluded():
    scores = torch.tensor(
        [[0.9, 0.8, 0.3, 0.2], [0.1, 0.2, 0.2, 0.1], [0.7, 0.5, 0.9, 0.3], [0.8, 0.1, 0.1, 0.2]]
    )
    labels = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    ap = average_precision(scores, labels)
    assert math.isnan(ap[3])
    assert mean_average_precision(scores, labels) == pytest.approx(0.944444, abs=1e-6)


@pytest.mark.parametrize("labels,expected", [([1, 1, 0, 0], 1.0), ([1, 0, 1, 0], 0.833333)])
def test_fixture_t_ties_use_a_stable_sort(labels, expected):
    scores = torch.tensor([[0.9], [0.5], [0.5], [0.1]])
    assert average_precision(scores, torch.tensor(labels).view(-1, 1))[0].item() == pytest.approx(
        expected, abs=1e-6
    )


def test_matches_sklearn_without_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.random((200, 7))
    labels = (rng.random((200, 7)) < 0.3).astype(int)
    ours = average_precision(torch.from_numpy(scores), torch.from_numpy(labels)).numpy()
    theirs = [sklearn_metrics.average_precision_score(labels[:, c], scores[:, c]) for c in range(7)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_bad_shapes_and_no_positives():
    with pytest.raises(ValueError, match="must both be"):
        average_precision(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="undefined"):
        mean_average_precision(torch.rand(3, 2), torch.zeros(3, 2))
