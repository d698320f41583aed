"""mIoU / per-class IoU / pixel accuracy on hand-computed cases."""

import math

import pytest
import torch

from visattn.metrics.segmentation import SegmentationMetrics, confusion_matrix, segmentation_scores

TARGET = torch.tensor([[0, 0, 1], [1, 2, 255]])
PRED = torch.tensor([[0, 1, 1], [1, 1, 0]])


def test_hand_computed_case():
    # counted pixels (true, pred): (0,0) (0,1) (1,1) (1,1) (2,1); the 255 pixel is skipped whatever its prediction
    m = SegmentationMetrics(4, class_names=["bg", "a", "b", "c"])
    m.update(PRED[None], TARGET[None])
    r = m.compute()
    assert r["per_class_IoU"][:3] == pytest.approx([1 / 2, 2 / 4, 0.0])
    assert math.isnan(r["per_class_IoU"][3])  # class 3: neither present nor predicted -> undefined, left out
    assert r["mIoU"] == pytest.approx(1 / 3)
    assert r["aAcc"] == pytest.approx(3 / 5)
    assert r["mAcc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert r["IoU.a"] == pytest.approx(0.5) and r["pixels"] == 5


def test_logits_are_argmaxed_and_updates_accumulate():
    logits = torch.nn.functional.one_hot(PRED, 4).permute(2, 0, 1).float()[None]
    one = SegmentationMetrics(4)
    one.update(logits, TARGET[None])
    two = SegmentationMetrics(4)
    two.update(PRED[None, :1], TARGET[None, :1])
    two.update(PRED[None, 1:], TARGET[None, 1:])
    assert torch.equal(one.confusion, two.confusion)
    assert one.compute()["mIoU"] == pytest.approx(1 / 3)
    one.reset()
    assert one.confusion.sum() == 0


def test_predicted_but_absent_class_counts_as_zero():
    cm = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2)
    r = segmentation_scores(cm)
    assert r["per_class_IoU"] == pytest.approx([0.5, 0.0]) and r["mIoU"] == pytest.approx(0.25)


def test_perfect_prediction():
    t = torch.randint(0, 5, (2, 7, 9))
    m = SegmentationMetrics(5)
    m.update(t, t)
    r = m.compute()
    assert r["mIoU"] == 1.0 and r["aAcc"] == 1.0


def test_labels_outside_the_class_set_are_errors():
    with pytest.raises(ValueError, match="target label 7"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 4)
    with pytest.raises(ValueError, match="predicted label 4"):
        confusion_matrix(torch.tensor([4]), torch.tensor([0]), 4)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 4)


def test_agrees_with_torchmetrics_when_installed():
    tm = pytest.importorskip("torchmetrics")
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 4, (3, 11, 13), generator=g)
    t[0, :3] = 255
    p = torch.randint(0, 4, (3, 11, 13), generator=g)
    m = SegmentationMetrics(4)
    m.update(p, t)
    ref = tm.classification.MulticlassJaccardIndex(4, average=None, ignore_index=255)(p, t)
    assert m.compute()["per_class_IoU"] == pytest.approx(ref.tolist(), abs=1e-6)
