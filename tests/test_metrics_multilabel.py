"""CP/CR/CF1/OP/OR/OF1, top-k, presets and the accumulating MultiLabelMetrics (spec ``multilabel_metrics.md``
§3, §4, §7, §8), including a real 2-process gloo gather."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from visattn.metrics import (
    AttributeMetrics,
    MultiLabelMetrics,
    UndefinedMetricWarning,
    attribute_metrics,
    multilabel_metrics,
    precision_recall_f1,
)

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
KEYS = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def pct(result: dict, keys=KEYS, suffix: str = "") -> list[float]:
    return [100 * result[k + suffix] for k in keys]


def test_fixture_f_threshold():
    r = precision_recall_f1(F_SCORES, F_LABELS)
    assert pct(r) == pytest.approx([66.6667, 91.6667, 77.1930, 66.6667, 88.8889, 76.1905], abs=1e-4)
    assert r["cf1"] == "harmonic" and r["excluded_classes"] == []
    m = precision_recall_f1(F_SCORES, F_LABELS, cf1="mean_f1")
    assert 100 * m["CF1"] == pytest.approx(76.6667, abs=1e-4)
    assert (100 * m["per_class_f1"]).tolist() == pytest.approx([80, 80, 80, 66.6667], abs=1e-4)


def test_fixture_f_top3():
    r = precision_recall_f1(F_SCORES, F_LABELS, topk=3)
    assert pct(r) == pytest.approx([75.0, 91.6667, 82.5, 72.7273, 88.8889, 80.0], abs=1e-4)
    assert 100 * precision_recall_f1(F_SCORES, F_LABELS, topk=3, cf1="mean_f1")["CF1"] == pytest.approx(
        81.6667, abs=1e-4
    )
    both = multilabel_metrics(F_SCORES, F_LABELS, topk=3)
    assert pct(both, suffix="_top3") == pytest.approx(pct(r), abs=1e-12)
    assert both["mAP"] == pytest.approx(0.9375) and both["CF1"] == pytest.approx(0.771930, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"ignore_for_pr": "drop"}, [79.1667, 87.5, 83.125, 77.7778, 87.5, 82.3529]),
        ({"ignore_for_pr": "negative"}, [58.3333, 87.5, 70.0, 58.3333, 87.5, 70.0]),
        ({"preset": "voc07"}, [79.1667, 87.5, 83.125, 77.7778, 87.5, 82.3529]),
        ({"preset": "wider"}, [58.3333, 87.5, 70.0, 58.3333, 87.5, 70.0]),
        ({"preset": "wider", "ignore_for_pr": "drop"}, [79.1667, 87.5, 83.125, 77.7778, 87.5, 82.3529]),
    ],
)
def test_fixture_g_ignored_labels(kwargs, expected):
    assert pct(precision_recall_f1(F_SCORES, G_LABELS, ternary=True, **kwargs)) == pytest.approx(
        expected, abs=1e-4
    )
    mask = G_LABELS != 0
    assert pct(precision_recall_f1(F_SCORES, (G_LABELS == 1).long(), mask, **kwargs)) == pytest.approx(
        expected, abs=1e-4
    )


def test_presets_set_their_conventions():
    r = multilabel_metrics(F_SCORES, G_LABELS, ternary=True, preset="wider_srn")
    assert r["cf1"] == "mean_f1"
    assert r["mAP"] == pytest.approx(0.958333, abs=1e-6)  # all-point = non-interpolated without ties
    assert multilabel_metrics(F_SCORES, G_LABELS, ternary=True, preset="voc07_devkit")[
        "mAP"
    ] == pytest.approx(0.962121, abs=1e-6)
    with pytest.raises(ValueError, match="preset must be one of"):
        precision_recall_f1(F_SCORES, F_LABELS, preset="imagenet")


def test_threshold_rules_and_logits():
    s = torch.tensor([[0.5, 0.7], [0.2, 0.5]])
    y = torch.tensor([[1, 1], [0, 1]])
    assert precision_recall_f1(s, y)["OR"] == 1.0  # >= 0.5 by default
    assert precision_recall_f1(s, y, strict=True)["OR"] == pytest.approx(1 / 3)
    assert precision_recall_f1(s, y, thr=0.6)["OR"] == pytest.approx(1 / 3)
    logits = torch.logit(F_SCORES.double())
    torch.testing.assert_close(
        precision_recall_f1(logits, F_LABELS, from_logits=True, topk=3)["per_class_f1"],
        precision_recall_f1(F_SCORES.double(), F_LABELS, topk=3)["per_class_f1"],
    )
    with pytest.raises(ValueError, match="from_logits=True"):
        precision_recall_f1(logits, F_LABELS)


def test_topk_ties_go_to_the_lower_class_index_and_pure_topk():
    s = torch.tensor([[0.6, 0.6, 0.6, 0.6]])
    y = torch.tensor([[0, 0, 1, 1]])
    r = precision_recall_f1(s, y, topk=2, empty_class="zero")
    assert r["OP"] == 0.0  # classes 0 and 1 chosen
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(30, 6))
    labels = (rng.random((30, 6)) < 0.4).astype(int)
    labels[0] = 1
    ranks = np.argsort(-scores, axis=1, kind="stable")[:, :2]
    pred = np.zeros_like(labels, dtype=bool)
    np.put_along_axis(pred, ranks, True, axis=1)
    r = precision_recall_f1(scores, labels, topk=2, thr=None)
    assert r["OP"] == pytest.approx((pred & (labels == 1)).sum() / pred.sum())
    with pytest.raises(ValueError, match="thr, a topk"):
        precision_recall_f1(scores, labels, thr=None)


def test_empty_classes_and_zero_predictions():
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    s = torch.tensor([[0.9, 0.1, 0.8], [0.8, 0.2, 0.1], [0.1, 0.3, 0.1]])
    with pytest.warns(UndefinedMetricWarning, match=r"classes \[2\]"):
        r = precision_recall_f1(s, y)
    assert r["excluded_classes"] == [2] and math.isnan(r["per_class_recall"][2])
    assert r["CP"] == pytest.approx(0.5) and r["CR"] == pytest.approx(0.5)  # class 1: Pred = 0 -> P = 0
    assert r["OP"] == pytest.approx(2 / 3)  # class 2's false positive still counts in OP
    z = precision_recall_f1(s, y, empty_class="zero")
    assert z["CP"] == pytest.approx(1 / 3) and z["CR"] == pytest.approx(1 / 3) and z["excluded_classes"] == []
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        precision_recall_f1(s, y, empty_class="error")


def test_agreement_with_sklearn_micro_macro():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(6)
    probs = rng.random((200, 7))
    labels = (rng.random((200, 7)) < 0.3).astype(int)
    labels[0] = 1
    pred = (probs >= 0.5).astype(int)
    r = precision_recall_f1(probs, labels)
    m = precision_recall_f1(probs, labels, cf1="mean_f1")
    kw = {"zero_division": 0}
    assert r["OP"] == pytest.approx(sk.precision_score(labels, pred, average="micro", **kw))
    assert r["OR"] == pytest.approx(sk.recall_score(labels, pred, average="micro", **kw))
    assert r["OF1"] == pytest.approx(sk.f1_score(labels, pred, average="micro", **kw))
    assert r["CP"] == pytest.approx(sk.precision_score(labels, pred, average="macro", **kw))
    assert r["CR"] == pytest.approx(sk.recall_score(labels, pred, average="macro", **kw))
    assert m["CF1"] == pytest.approx(sk.f1_score(labels, pred, average="macro", **kw))


def test_agreement_with_torchmetrics():
    tm = pytest.importorskip(
        "torchmetrics.classification", reason="torchmetrics is optional and not installed"
    )
    rng = np.random.default_rng(7)
    probs = torch.from_numpy(rng.random((100, 5))).float()
    labels = torch.from_numpy((rng.random((100, 5)) < 0.4).astype(int))
    labels[0] = 1
    r = precision_recall_f1(probs, labels, strict=True)
    kw = {"num_labels": 5, "average": "macro", "threshold": 0.5}
    cp = tm.MultilabelPrecision(**kw)(probs, labels).item()
    cr = tm.MultilabelRecall(**kw)(probs, labels).item()
    assert r["CF1"] == pytest.approx(2 * cp * cr / (cp + cr), abs=1e-6)
    f1 = tm.MultilabelF1Score(**kw)(probs, labels).item()
    assert precision_recall_f1(probs, labels, strict=True, cf1="mean_f1")["CF1"] == pytest.approx(
        f1, abs=1e-6
    )


def test_masked_entries_never_influence_threshold_metrics():
    rng = np.random.default_rng(8)
    probs = rng.random((80, 5))
    labels = (rng.random((80, 5)) < 0.4).astype(int)
    mask = rng.random((80, 5)) < 0.7
    labels[0], mask[0] = 1, True
    other = np.where(mask, probs, rng.random((80, 5)))
    a = multilabel_metrics(probs, labels, mask, cf1="mean_f1")
    b = multilabel_metrics(other, np.where(mask, labels, 1 - labels), mask, cf1="mean_f1")
    assert [a[k] for k in ("mAP", *KEYS)] == pytest.approx([b[k] for k in ("mAP", *KEYS)], abs=1e-12)


def test_accumulating_batches_of_one_equals_one_call():
    rng = np.random.default_rng(9)
    logits = torch.from_numpy(rng.random((25, 4)))  # logits that all lie in [0, 1]: nothing is guessed
    labels = torch.from_numpy((rng.random((25, 4)) < 0.5).astype(np.float32))
    labels[0] = 1
    metric = MultiLabelMetrics(from_logits=True, topk=2)
    for i in range(25):
        metric.update(logits[i : i + 1], labels[i : i + 1])
    got = metric.compute()
    want = multilabel_metrics(logits, labels, from_logits=True, topk=2)
    assert got["CP"] == want["CP"] != multilabel_metrics(logits, labels, topk=2)["CP"]
    torch.testing.assert_close(got["AP"], want["AP"])
    assert {k: v for k, v in got.items() if isinstance(v, float)} == {
        k: v for k, v in want.items() if isinstance(v, float)
    }
    metric.reset()
    with pytest.raises(ValueError, match="no samples"):
        metric.compute()


def test_indices_deduplicate_and_restore_dataset_order():
    scores = torch.tensor([[0.5], [0.5], [0.5], [0.9]])  # ties: order matters for stable AP
    labels = torch.tensor([[0], [1], [0], [1]])
    metric = MultiLabelMetrics()
    metric.update(scores[[2, 1]], labels[[2, 1]], indices=torch.tensor([2, 1]))
    metric.update(scores[[0, 3, 1]], labels[[0, 3, 1]], indices=torch.tensor([0, 3, 1]))  # 1 is a duplicate
    r = metric.compute()
    assert r["num_samples"] == 4
    assert r["mAP"] == pytest.approx(multilabel_metrics(scores, labels)["mAP"])


def test_accumulator_rejects_inconsistent_updates():
    metric = MultiLabelMetrics(num_classes=4, ternary=True)
    with pytest.raises(ValueError, match="expected 4 classes"):
        metric.update(torch.rand(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\{1, -1, 0\}"):
        metric.update(torch.rand(2, 4), torch.full((2, 4), 2))
    metric.update(torch.rand(2, 4), torch.ones(2, 4), indices=[0, 1])
    with pytest.raises(ValueError, match="indices to every update"):
        metric.update(torch.rand(2, 4), torch.ones(2, 4))
    with pytest.raises(TypeError, match="unexpected keyword"):
        MultiLabelMetrics(threshold=0.5)
    with pytest.raises(ValueError, match="cf1 must be one of"):
        MultiLabelMetrics(cf1="macro")


# ---------------------------------------------------------------- distributed (2 processes, gloo, CPU)

N_DIST = 11
MP_METHODS = multiprocessing.get_all_start_methods()


def _dist_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (N_DIST, 3), generator=g) / 4  # coarse: many ties
    labels = (torch.rand(N_DIST, 3, generator=g) < 0.5).long()
    labels[0] = 1
    mask = torch.rand(N_DIST, 3, generator=g) < 0.8
    mask[0] = True
    return scores, labels, mask


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    scores, labels, mask = _dist_data()
    # DistributedSampler(shuffle=False) order: padded to 12 with a repeat of sample 0, rank r takes r::2;
    # rank 0 sends its 6 rows in batches of 4 and 2, rank 1 in batches of 5 and 1.
    shard = (list(range(N_DIST)) + [0])[rank::world]
    out = {}
    for name, metric in (("ml", MultiLabelMetrics(topk=2)), ("attr", AttributeMetrics())):
        cut = 4 if rank == 0 else 5
        for part in (shard[:cut], shard[cut:]):
            metric.update(scores[part], labels[part], mask[part], indices=torch.tensor(part))
        out[name] = metric.compute()
    uneven = MultiLabelMetrics()  # no indices: rank order, rank 1 holds nothing
    if rank == 0:
        uneven.update(scores, labels, mask)
    out["uneven"] = uneven.compute()
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize(
    "start_method",
    [
        # fork: children inherit the imported modules (~0.2 s); spawn re-imports torch, timm and visattn
        # in every child (5-20 s depending on load), so it only runs with `pytest -m slow`.
        pytest.param("fork", marks=pytest.mark.skipif("fork" not in MP_METHODS, reason="no fork here")),
        pytest.param("spawn", marks=pytest.mark.slow),
    ],
)
def test_distributed_gather_equals_single_process(tmp_path, start_method):
    args = (2, str(tmp_path / "init"), str(tmp_path))
    mp.start_processes(_dist_worker, args=args, nprocs=2, join=True, start_method=start_method)
    scores, labels, mask = _dist_data()
    want = {
        "ml": multilabel_metrics(scores, labels, mask, topk=2),
        "attr": attribute_metrics(scores, labels, mask),
        "uneven": multilabel_metrics(scores, labels, mask),
    }
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for name in want:
            _same(got[name], want[name])
        assert got["ml"]["num_samples"] == N_DIST
