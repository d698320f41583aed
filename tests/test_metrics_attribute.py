"""Pedestrian-attribute metrics (spec ``multilabel_metrics.md`` §5, fixture P) and AttributeMetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from visattn.metrics import AttributeMetrics, UndefinedMetricWarning, attribute_metrics

P_GT = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
P_PROBS = torch.tensor([[0.9, 0.2, 0.4], [0.3, 0.8, 0.6], [0.7, 0.1, 0.2], [0.1, 0.3, 0.2]])
INSTANCE = ("instance_acc", "instance_prec", "instance_recall", "instance_f1")


@pytest.mark.parametrize(
    "empty,expected", [("zero", [37.5, 62.5, 50.0, 55.5556]), ("one", [62.5, 87.5, 75.0, 80.7692])]
)
def test_fixture_p(empty, expected):
    r = attribute_metrics(P_PROBS, P_GT, empty=empty)
    assert 100 * r["mA"] == pytest.approx(69.4444, abs=1e-4)
    assert (100 * r["label_ma"]).tolist() == pytest.approx([100, 75, 33.3333], abs=1e-4)
    assert [100 * r[k] for k in INSTANCE] == pytest.approx(expected, abs=1e-4)


def test_fixture_p_mean_of_per_sample_f1_and_extras():
    r = attribute_metrics(P_PROBS, P_GT, instance_f1="mean")
    assert 100 * r["instance_f1"] == pytest.approx(50.0, abs=1e-4)
    assert r["label_prec"].tolist() == pytest.approx([1, 1, 0])
    assert r["label_acc"].tolist() == pytest.approx([1, 0.5, 0])
    assert r["label_f1"].tolist() == pytest.approx([1, 2 / 3, 0])
    assert r["num_samples"] == 4


def test_threshold_is_strict_by_default():
    probs = torch.tensor([[0.5, 0.9], [0.1, 0.5]])
    gt = torch.tensor([[1, 1], [0, 0]])
    assert attribute_metrics(probs, gt)["label_pos_recall"].tolist() == [0.0, 1.0]
    assert attribute_metrics(probs, gt, strict=False)["label_pos_recall"].tolist() == [1.0, 1.0]
    logits = torch.logit(probs.double())
    assert attribute_metrics(logits, gt, from_logits=True)["mA"] == attribute_metrics(probs, gt)["mA"]
    with pytest.raises(ValueError, match="from_logits=True"):
        attribute_metrics(logits * 10, gt)


def test_agreement_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(10)
    probs = rng.random((120, 6))
    gt = (rng.random((120, 6)) < 0.4).astype(int)
    gt[0], gt[1] = 1, 0
    pred = (probs > 0.5).astype(int)
    r = attribute_metrics(probs, gt)
    balanced = [sk.balanced_accuracy_score(gt[:, j], pred[:, j]) for j in range(6)]
    np.testing.assert_allclose(r["label_ma"].numpy(), balanced, rtol=1e-12)
    kw = {"average": "samples", "zero_division": 0}
    assert r["instance_acc"] == pytest.approx(sk.jaccard_score(gt, pred, **kw))
    assert r["instance_prec"] == pytest.approx(sk.precision_score(gt, pred, **kw))
    assert r["instance_recall"] == pytest.approx(sk.recall_score(gt, pred, **kw))
    one = attribute_metrics(probs, gt, empty="one")  # both-empty samples: jaccard's zero_division=1 case
    assert one["instance_acc"] == pytest.approx(
        sk.jaccard_score(gt, pred, average="samples", zero_division=1)
    )


@settings(max_examples=40, deadline=None)
@given(gt=hnp.arrays(np.int64, st.tuples(st.integers(2, 12), st.integers(1, 5)), elements=st.integers(0, 1)))
def test_property_perfect_predictions(gt):
    gt[0], gt[1] = 1, 0  # every attribute has a positive and a negative
    r = attribute_metrics(gt * 0.8 + 0.1, gt, empty="one", instance_f1="mean")
    assert r["mA"] == pytest.approx(1.0)
    assert [r[k] for k in INSTANCE] == pytest.approx([1.0] * 4)


def test_rap_uncertain_value_is_masked():
    gt = torch.tensor([[1, 2, 0], [0, 1, 2], [1, 0, 1], [0, 0, 0]])
    probs = torch.tensor([[0.9, 0.9, 0.1], [0.2, 0.7, 0.9], [0.8, 0.3, 0.2], [0.4, 0.1, 0.3]])
    r = attribute_metrics(probs, gt, mask=gt != 2)
    keep = torch.tensor([0, 2, 3])  # attribute 2 without sample 1, attribute 1 without sample 0
    assert r["label_ma"][2] == attribute_metrics(probs[keep][:, 2:], gt[keep][:, 2:])["label_ma"][0]
    assert r["instance_prec"] == pytest.approx((1 + 1 + 1 + 0) / 4)  # sample 1: {1} of evaluated {0, 1}
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        attribute_metrics(probs, gt)


def test_ternary_labels_need_an_explicit_choice():
    labels = torch.tensor([[1, -1], [0, 1], [-1, -1]])
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.2, 0.1]])
    with pytest.raises(ValueError, match="ignore_for_pr"):
        attribute_metrics(probs, labels, ternary=True)
    with pytest.raises(ValueError, match="ignore_for_pr"):
        AttributeMetrics(ternary=True)
    drop = attribute_metrics(probs, labels, ternary=True, ignore_for_pr="drop")
    neg = attribute_metrics(probs, labels, ternary=True, ignore_for_pr="negative")
    assert drop["label_neg_recall"][0] == 1.0 and neg["label_neg_recall"][0] == 0.5


def test_undefined_recall_warns():
    with pytest.warns(UndefinedMetricWarning, match=r"attributes \[1\]"):
        r = attribute_metrics(torch.tensor([[0.9, 0.2], [0.1, 0.7]]), torch.tensor([[1, 0], [0, 0]]))
    assert r["label_ma"].tolist() == [1.0, 0.25]


def test_accumulator_matches_one_call():
    rng = np.random.default_rng(11)
    probs = torch.from_numpy(rng.random((30, 4)))
    gt = torch.from_numpy((rng.random((30, 4)) < 0.5).astype(np.int64))
    gt[0], gt[1] = 1, 0
    metric = AttributeMetrics(num_attributes=4, empty="one")
    for start in range(0, 30, 7):
        metric.update(probs[start : start + 7], gt[start : start + 7])
    got, want = metric.compute(), attribute_metrics(probs, gt, empty="one")
    assert {k: v for k, v in got.items() if not isinstance(v, torch.Tensor)} == {
        k: v for k, v in want.items() if not isinstance(v, torch.Tensor)
    }
    with pytest.raises(TypeError, match="unexpected keyword"):
        AttributeMetrics(empty_class="zero")


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        attribute_metrics(torch.rand(3, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        attribute_metrics(torch.tensor([[float("nan")]]), torch.ones(1, 1))
    with pytest.raises(ValueError, match="empty must be one of"):
        attribute_metrics(P_PROBS, P_GT, empty="nan")
    with pytest.raises(ValueError, match="instance_f1 must be one of"):
        attribute_metrics(P_PROBS, P_GT, instance_f1="micro")
