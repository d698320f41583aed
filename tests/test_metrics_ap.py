"""Average precision (spec ``multilabel_metrics.md`` §2, §3, §7, §8): worked fixtures F, G, M, T, a literal
reference implementation, scikit-learn agreement, properties and input validation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from visattn.metrics import UndefinedMetricWarning, average_precision, mean_average_precision

MODES = ("noninterp", "voc07", "allpoint", "sklearn")
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
G_LABELS = torch.tensor([[1, 0, 1, 1], [0, 1, -1, -1], [1, -1, 1, -1], [-1, -1, -1, 0], [-1, 1, -1, 1]])
M_SCORES = torch.tensor(
    [[0.9, 0.8, 0.3, 0.2], [0.1, 0.2, 0.2, 0.1], [0.7, 0.5, 0.9, 0.3], [0.8, 0.1, 0.1, 0.2]]
)
M_LABELS = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
T_SCORES = torch.tensor([[0.9], [0.5], [0.5], [0.1]])


def percent(ap: torch.Tensor) -> list[float]:
    return (ap * 100).tolist()


def reference_ap(scores: list[float], labels: list[int], mode: str, pessimistic: bool = False) -> float:
    """The spec's formulas, literally, with exact fractions (one class, ignored entries already removed)."""
    key = (lambda i: (-scores[i], labels[i])) if pessimistic else (lambda i: -scores[i])
    rel = [labels[i] for i in sorted(range(len(scores)), key=key)]  # Python's sort is stable
    P = sum(rel)
    tp = [sum(rel[: i + 1]) for i in range(len(rel))]
    prec = [Fraction(t, i + 1) for i, t in enumerate(tp)]
    rec = [Fraction(t, P) for t in tp]
    if mode == "noninterp":
        return float(sum(p for p, r in zip(prec, rel, strict=True) if r) / P)
    if mode == "allpoint":
        prev = [Fraction(0)] + rec[:-1]
        return float(sum((r - q) * max(prec[i:]) for i, (r, q) in enumerate(zip(rec, prev, strict=True))))
    if mode == "voc07":
        pts = [
            max((p for p, r in zip(prec, rec, strict=True) if r >= Fraction(k, 10)), default=0)
            for k in range(11)
        ]
        return float(sum(pts) / 11)
    total, last_r = Fraction(0), Fraction(0)  # sklearn: one operating point per distinct score
    for v in sorted(set(scores), reverse=True):
        tp_v = sum(label for s, label in zip(scores, labels, strict=True) if s >= v)
        n_v = sum(1 for s in scores if s >= v)
        total += (Fraction(tp_v, P) - last_r) * Fraction(tp_v, n_v)
        last_r = Fraction(tp_v, P)
    return float(total)


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("noninterp", [83.3333, 100, 100, 91.6667]),
        ("allpoint", [83.3333, 100, 100, 91.6667]),
        ("sklearn", [83.3333, 100, 100, 91.6667]),
        ("voc07", [84.8485, 100, 100, 90.9091]),
    ],
)
def test_fixture_f(mode, expected):
    ap = average_precision(F_SCORES, F_LABELS, ap_mode=mode)
    assert percent(ap) == pytest.approx(expected, abs=1e-4)
    mean = {"voc07": 0.939394}.get(mode, 0.9375)
    assert mean_average_precision(F_SCORES, F_LABELS, ap_mode=mode) == pytest.approx(mean, abs=1e-6)


def test_fixture_g_ternary_and_mask_forms_agree():
    ap = average_precision(F_SCORES, G_LABELS, ternary=True)
    assert percent(ap) == pytest.approx([100, 100, 100, 83.3333], abs=1e-4)
    assert mean_average_precision(F_SCORES, G_LABELS, ternary=True) == pytest.approx(0.958333, abs=1e-6)
    targets, mask = (G_LABELS == 1).long(), G_LABELS != 0
    torch.testing.assert_close(average_precision(F_SCORES, targets, mask), ap)
    voc07 = average_precision(F_SCORES, G_LABELS, ternary=True, ap_mode="voc07")
    assert percent(voc07) == pytest.approx([100, 100, 100, 84.8485], abs=1e-4)
    assert float(voc07.mean()) == pytest.approx(0.962121, abs=1e-6)


def test_fixture_g_ignored_as_negative_or_positive():
    wrong = average_precision(F_SCORES, G_LABELS, ternary=True, ignore_as="negative")
    assert percent(wrong) == pytest.approx([83.3333, 100, 100, 75.0], abs=1e-4)
    assert float(wrong.mean()) == pytest.approx(0.895833, abs=1e-6)
    as_pos = average_precision(F_SCORES, G_LABELS, ternary=True, ignore_as="positive")
    torch.testing.assert_close(as_pos, average_precision(F_SCORES, (G_LABELS >= 0).long()))


def test_fixture_m_empty_class_options():
    with pytest.warns(UndefinedMetricWarning, match=r"classes \[3\]"):
        ap = average_precision(M_SCORES, M_LABELS)
    assert percent(ap[:3]) == pytest.approx([100, 83.3333, 100], abs=1e-4) and math.isnan(ap[3])
    with pytest.warns(UndefinedMetricWarning):
        assert mean_average_precision(M_SCORES, M_LABELS) == pytest.approx(0.944444, abs=1e-6)
    assert average_precision(M_SCORES, M_LABELS, empty_class="zero")[3] == 0
    assert mean_average_precision(M_SCORES, M_LABELS, empty_class="zero") == pytest.approx(0.708333, abs=1e-6)
    with pytest.raises(ValueError, match=r"undefined for classes \[3\]"):
        average_precision(M_SCORES, M_LABELS, empty_class="error")


@pytest.mark.parametrize(
    "labels,expected",
    [([1, 1, 0, 0], [1.0, 1.0, 1.0, 0.833333]), ([1, 0, 1, 0], [0.833333, 0.833333, 0.848485, 0.833333])],
)
def test_fixture_t_ties(labels, expected):
    targets = torch.tensor(labels).view(-1, 1)
    got = [float(average_precision(T_SCORES, targets, ap_mode=m)[0]) for m in MODES]
    by_mode = dict(zip(("noninterp", "allpoint", "voc07", "sklearn"), expected, strict=True))
    assert got == pytest.approx([by_mode[m] for m in MODES], abs=1e-6)
    pessimistic = average_precision(T_SCORES, targets, tie_break="pessimistic")
    assert float(pessimistic[0]) == pytest.approx(0.833333, abs=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pessimistic", [False, True])
def test_vectorised_matches_literal_reference_with_ties_and_mask(mode, pessimistic):
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=(40, 6)) / 5  # many ties
    labels = (rng.random((40, 6)) < 0.4).astype(int)
    mask = rng.random((40, 6)) < 0.8
    labels[0, :] = 1  # every class has an evaluated positive
    mask[0, :] = True
    tie_break = "pessimistic" if pessimistic else "stable"
    ours = average_precision(scores, labels, mask, ap_mode=mode, tie_break=tie_break).numpy()
    ref = [
        reference_ap(scores[mask[:, c], c].tolist(), labels[mask[:, c], c].tolist(), mode, pessimistic)
        for c in range(6)
    ]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_noninterp_equals_sklearn_without_ties():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.random((2000, 20))
    labels = (rng.random((2000, 20)) < 0.3).astype(int)
    ours = average_precision(torch.from_numpy(scores), torch.from_numpy(labels)).numpy()
    theirs = [sk.average_precision_score(labels[:, c], scores[:, c]) for c in range(20)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    f = [sk.average_precision_score(F_LABELS[:, c], F_SCORES[:, c]) for c in range(4)]
    np.testing.assert_allclose(average_precision(F_SCORES, F_LABELS).numpy(), f, rtol=1e-6)


def test_sklearn_mode_matches_sklearn_with_ties_and_dropped_entries():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    scores = np.round(rng.random((300, 8)), 1)
    labels = (rng.random((300, 8)) < 0.3).astype(int)
    mask = rng.random((300, 8)) < 0.7
    ours = average_precision(scores, labels, mask, ap_mode="sklearn").numpy()
    theirs = [sk.average_precision_score(labels[mask[:, c], c], scores[mask[:, c], c]) for c in range(8)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


score_matrix = hnp.arrays(
    np.int64, st.tuples(st.integers(2, 25), st.integers(1, 4)), elements=st.integers(-20, 20)
)


@settings(max_examples=60, deadline=None)
@given(scores=score_matrix, data=st.data())
def test_property_monotone_transform_invariance_and_tie_order(scores, data):
    labels = data.draw(hnp.arrays(np.int64, scores.shape, elements=st.integers(0, 1)))
    labels[0] = 1
    transformed = scores.astype(np.float64) ** 3 + 7 * scores + 0.5  # strictly increasing, exact
    for mode in MODES:
        a = average_precision(scores, labels, ap_mode=mode)
        torch.testing.assert_close(
            a, average_precision(transformed, labels, ap_mode=mode), rtol=0, atol=1e-12
        )
        assert ((a >= 0) & (a <= 1 + 1e-12)).all()
    worst = average_precision(scores, labels, tie_break="pessimistic")
    assert (worst <= average_precision(scores, labels) + 1e-12).all()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), seed=st.integers(0, 2**31 - 1))
def test_property_noninterp_equals_sklearn_without_ties(n, seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    scores = rng.permutation(n).astype(np.float64).reshape(n, 1)  # distinct
    labels = (rng.random((n, 1)) < 0.5).astype(int)
    labels[rng.integers(n)] = 1
    expected = sk.average_precision_score(labels[:, 0], scores[:, 0])
    for mode in ("noninterp", "sklearn"):
        assert float(average_precision(scores, labels, ap_mode=mode)[0]) == pytest.approx(expected, abs=1e-12)
    # the all-point envelope never lowers precision
    assert float(average_precision(scores, labels, ap_mode="allpoint")[0]) >= expected - 1e-12


def test_masked_entries_never_matter():
    rng = np.random.default_rng(3)
    scores = rng.random((60, 5))
    labels = (rng.random((60, 5)) < 0.4).astype(int)
    mask = rng.random((60, 5)) < 0.6
    shuffled = scores.copy()
    shuffled[~mask] = rng.random(int((~mask).sum())) * 10 - 5
    junk = np.where(mask, labels, 7)  # label values are checked only where evaluated
    for mode in MODES:
        a = average_precision(scores, labels, mask, ap_mode=mode)
        torch.testing.assert_close(a, average_precision(shuffled, junk, mask, ap_mode=mode))


def test_logits_and_probabilities_rank_alike():
    rng = np.random.default_rng(4)
    logits = torch.from_numpy(rng.normal(size=(50, 3)) * 5)
    labels = torch.from_numpy((rng.random((50, 3)) < 0.5).astype(int))
    torch.testing.assert_close(average_precision(logits, labels), average_precision(logits.sigmoid(), labels))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        average_precision(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        average_precision(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(torch.tensor([[0.1], [float("nan")]]), torch.tensor([[1], [0]]))
    with pytest.raises(ValueError, match=r"\{0, 1\}.*ternary=True"):
        average_precision(torch.rand(3, 1), torch.tensor([[1], [-1], [0]]))
    with pytest.raises(ValueError, match=r"\{1, -1, 0\}"):
        average_precision(torch.rand(3, 1), torch.tensor([[1], [2], [0]]), ternary=True)
    with pytest.raises(ValueError, match="mask must have the shape"):
        average_precision(torch.rand(3, 2), torch.ones(3, 2), torch.ones(3, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="ap_mode must be one of"):
        average_precision(F_SCORES, F_LABELS, ap_mode="11point")
    with pytest.raises(ValueError, match="tie_break must be one of"):
        average_precision(F_SCORES, F_LABELS, tie_break="random")
    with pytest.raises(ValueError, match="empty_class must be one of"):
        average_precision(F_SCORES, F_LABELS, empty_class="skip")
    with pytest.raises(ValueError, match="undefined"), pytest.warns(UndefinedMetricWarning):
        mean_average_precision(torch.rand(3, 2), torch.zeros(3, 2))
