"""Tests for visattn.losses (spec: /work/shared/specs/vaa.md §2, csra.md §6.1/§6.4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from visattn.losses import (
    LOSS_NAMES,
    VAA_WIDER_INVERSE_RATIOS,
    AsymmetricLoss,
    BCEWithLogits,
    HistoryWeightedLoss,
    VAALoss,
    WeightedFocalLoss,
    corrected_std,
    create_loss,
    positive_prior,
)

D = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# vaa.md §2.1 worked fixture: one sample, C = 2.
Z = torch.tensor([[0.5, -1.0]], dtype=D)
Y = torch.tensor([[1.0, 0.0]], dtype=D)
PRIOR = torch.tensor([0.2, 0.7], dtype=D)
FIXTURES = [  # (weights, gamma, per-class loss, mean)
    (None, 0.0, (0.474077, 0.313262), 0.393669),
    ("paper", None, (0.238491, 0.080673), 0.159582),
    ("vaa_code", None, (0.143053, 0.061591), 0.102322),
    ("deepmar", 0.0, (1.055078, 0.630832), 0.842955),
]


@pytest.mark.parametrize(("weights", "gamma", "per_class", "mean"), FIXTURES)
def test_weighted_focal_fixtures(weights, gamma, per_class, mean):
    loss = WeightedFocalLoss.from_prior(PRIOR, weights, gamma=gamma)
    assert loss(Z, Y).item() == pytest.approx(mean, abs=1e-6)
    per = WeightedFocalLoss.from_prior(PRIOR, weights, gamma=gamma, reduction="none")(Z, Y)
    assert per.squeeze(0).tolist() == pytest.approx(per_class, abs=1e-6)


def test_from_prior_defaults_and_weights():
    paper = WeightedFocalLoss.from_prior(PRIOR, "paper")
    assert paper.gamma == 0.5
    assert paper.pos_weight.tolist() == pytest.approx([0.818731, 0.496585], abs=1e-6)
    code = WeightedFocalLoss.from_prior(PRIOR, "vaa_code")
    assert code.gamma == 2.0
    assert code.pos_weight.tolist() == pytest.approx([2.117000, 1.0], abs=1e-6)
    assert code.neg_weight.tolist() == pytest.approx([1.284025, math.e], abs=1e-6)
    deep = WeightedFocalLoss.from_prior(PRIOR, "deepmar")
    assert deep.gamma == 0.0 and deep.ignore_above == 1.0
    assert deep.pos_weight.tolist() == pytest.approx([2.225541, 1.349859], abs=1e-6)
    # The code's WIDER table 1/r maps back through a = r / (1 + r).
    r = 1 / torch.tensor(VAA_WIDER_INVERSE_RATIOS, dtype=D)
    w = WeightedFocalLoss.from_prior(r / (1 + r), "vaa_code")
    assert torch.allclose(w.neg_weight.double(), torch.exp(r), atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        WeightedFocalLoss.from_prior(PRIOR, "nope")


def test_gamma0_unweighted_is_torch_bce_exactly():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(6, 5, generator=g), (torch.rand(6, 5, generator=g) > 0.5).float()
    for red, torch_red in (("mean", "mean"), ("sum", "sum"), ("none", "none")):
        ref = F.binary_cross_entropy_with_logits(z, y, reduction=torch_red)
        assert torch.equal(WeightedFocalLoss(reduction=red)(z, y), ref)
        assert torch.equal(BCEWithLogits(reduction=red)(z, y), ref)
    # batch_mean = sum over classes, mean over batch = C x mean (mmpretrain's CSRA loss).
    bm = BCEWithLogits(reduction="batch_mean")(z, y)
    assert bm.item() == pytest.approx(5 * F.binary_cross_entropy_with_logits(z, y).item(), rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 5),
    st.floats(-30, 30),
    st.integers(0, 2**31 - 1),
)
def test_property_gamma0_unit_weights_is_bce(B, C, scale, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, generator=g, dtype=D) * scale
    y = torch.rand(B, C, generator=g, dtype=D)  # soft targets too
    ones = torch.ones(C, dtype=D)
    got = WeightedFocalLoss(ones, ones, gamma=0.0, reduction="none")(z, y)
    ref = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_mask_excludes_entries():
    z = torch.tensor([[0.3, -2.0, 5.0], [1.0, 0.0, -1.0]], dtype=D, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=D)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    per = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    for loss in (BCEWithLogits(), WeightedFocalLoss.from_prior(torch.tensor([0.3, 0.5, 0.1]), "paper")):
        out = loss(z, y, mask)
        (grad,) = torch.autograd.grad(out, z)
        assert torch.all(grad[~mask] == 0) and torch.all(grad[mask] != 0)
    assert BCEWithLogits()(z, y, mask).item() == pytest.approx(per[mask].mean().item(), abs=1e-12)
    assert BCEWithLogits(reduction="sum")(z, y, mask).item() == pytest.approx(per[mask].sum().item())
    assert BCEWithLogits(reduction="batch_mean")(z, y, mask).item() == pytest.approx(
        per[mask].sum().item() / 2
    )
    assert torch.all(BCEWithLogits(reduction="none")(z, y, mask)[~mask] == 0)
    # Nothing evaluated: 0, not NaN.
    assert BCEWithLogits()(z, y, torch.zeros_like(mask)).item() == 0.0
    # Changing ignored logits/targets changes nothing.
    z2, y2 = z.detach().clone(), y.clone()
    z2[~mask], y2[~mask] = 50.0, 1 - y2[~mask]
    assert BCEWithLogits()(z2, y2, mask).item() == pytest.approx(
        BCEWithLogits()(z, y, mask).item(), abs=1e-12
    )


def test_deepmar_ignores_uncertain_targets_and_prior_helper():
    y = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    prior = positive_prior(y)  # class 0: 2 of 3 valid; class 1: 1 of 3 valid
    assert prior.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert positive_prior(y, torch.tensor([[True, True]] * 3 + [[True, False]])).tolist() == pytest.approx(
        [2 / 3, 1 / 2]
    )
    with pytest.raises(ValueError, match="classes without"):
        positive_prior(y, torch.tensor([True, False]).expand(4, 2))
    loss = WeightedFocalLoss.from_prior(prior, "deepmar", reduction="none")
    z = torch.randn(4, 2)
    out = loss(z, y)
    assert out[0, 1] == 0 and out[3, 0] == 0 and torch.all(out[y <= 1] > 0)


@pytest.mark.parametrize("weights", [None, "paper", "vaa_code", "deepmar"])
def test_extreme_logits_finite_and_correct(weights):
    z = torch.tensor([[100.0, -100.0, 100.0, -100.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    prior = torch.tensor([0.2, 0.4, 0.6, 0.8])
    loss = WeightedFocalLoss.from_prior(prior, weights, reduction="none")
    out = loss(z, y)
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert out[0, :2].abs().max() < 1e-30  # confident and right: ~0 loss
    # Confident and wrong: focal factor ~1, so loss = 100 * weight.
    w_neg = 1.0 if loss.neg_weight is None else loss.neg_weight[2].item()
    w_pos = 1.0 if loss.pos_weight is None else loss.pos_weight[3].item()
    assert out[0, 2].item() == pytest.approx(100 * w_neg, rel=1e-5)
    assert out[0, 3].item() == pytest.approx(100 * w_pos, rel=1e-5)


def test_weighted_focal_gradcheck():
    z = torch.randn(3, 4, dtype=D, requires_grad=True)
    y = (torch.rand(3, 4) > 0.5).to(D)
    loss = WeightedFocalLoss.from_prior(torch.tensor([0.1, 0.3, 0.6, 0.9]), "paper")
    assert torch.autograd.gradcheck(lambda t: loss(t, y, y.bool() | (t.detach() > 0)), (z,))


def test_half_precision_is_upcast():
    z = torch.tensor([[20.0, -20.0]], dtype=torch.float16)
    out = WeightedFocalLoss.from_prior(PRIOR, "paper")(z, torch.tensor([[0.0, 1.0]]))
    assert out.dtype == torch.float32 and torch.isfinite(out)


# --------------------------------------------------------------------- history-weighted attention loss


def test_corrected_std_fixtures():
    h = torch.tensor([0.2, 0.4, 0.6, 0.8, 0.5])[:, None]
    assert corrected_std(h).item() == pytest.approx(0.200998, abs=1e-6)
    defect = torch.tensor([0.2, 0.4, 0.6, 0.0, 0.0])[:, None]
    assert corrected_std(defect).item() == pytest.approx(0.234819, abs=1e-6)
    # Filled-entries mode: three newest slots (0.2, 0.4, 0.6) -> v = 0.08/3, n = 3.
    filled = torch.tensor([0.0, 0.0, 0.2, 0.4, 0.6])[:, None]
    v = 0.08 / 3
    assert corrected_std(filled, torch.tensor(3)).item() == pytest.approx(math.sqrt(v + v * v / 2), abs=1e-6)
    assert corrected_std(filled, torch.tensor(1)).item() == 0.0


def _filled(loss: HistoryWeightedLoss, values, index=0, start=2):
    for e, v in enumerate(values, start=start):
        loss.push(torch.full((1, loss.num_classes), v), torch.tensor([index]), epoch=e)


def test_history_fifo_order_and_schedule():
    h = HistoryWeightedLoss(3, 2)
    assert (h.history_len, h.start_history, h.start_weighting, h.min_history) == (5, 2, 7, 5)
    h.push(torch.full((1, 2), 0.9), torch.tensor([0]), epoch=1)  # before start_history: ignored
    assert h.num_pushed[0] == 0
    _filled(h, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert h.history[0, :, 0].tolist() == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
    assert h.num_pushed.tolist() == [6, 0, 0] and h.last_push_epoch.tolist() == [7, -1, -1]
    # A second push in the same epoch (duplicates, DistributedSampler padding) is dropped.
    h.push(torch.full((2, 2), 0.99), torch.tensor([0, 0]), epoch=7)
    assert h.history[0, -1, 0].item() == pytest.approx(0.6)


def test_history_weight_value_and_code_compat_defect():
    z, y = torch.randn(1, 1, dtype=D), torch.ones(1, 1, dtype=D)
    bce = F.binary_cross_entropy_with_logits(z, y)
    h = HistoryWeightedLoss(1, 1)
    _filled(h, [0.2, 0.4, 0.6, 0.8, 0.5])
    assert h(z, y, torch.tensor([0]), epoch=7).item() == pytest.approx(1.200998 * bce.item(), rel=1e-6)
    # Official defect: weighting from epoch 5 with only epochs 2-4 pushed, zeros count as history.
    compat = HistoryWeightedLoss(1, 1, code_compat=True)
    assert compat.start_weighting == 5
    _filled(compat, [0.2, 0.4, 0.6])
    assert compat.sample_weights([0], epoch=5).item() == pytest.approx(1.234819, abs=1e-6)
    # Default: an incomplete history is not weighted; min_history=3 uses the filled entries.
    fixed = HistoryWeightedLoss(1, 1, start_weighting=5)
    _filled(fixed, [0.2, 0.4, 0.6])
    assert fixed.sample_weights([0], epoch=5).item() == 1.0
    partial = HistoryWeightedLoss(1, 1, start_weighting=5, min_history=3)
    _filled(partial, [0.2, 0.4, 0.6])
    v = 0.08 / 3
    assert partial.sample_weights([0], epoch=5).item() == pytest.approx(
        1 + math.sqrt(v + v * v / 2), abs=1e-6
    )


def test_burn_in_is_bce_exactly_and_gradients_finite():
    h = HistoryWeightedLoss(4, 3)
    _filled(h, [0.1, 0.9, 0.1, 0.9, 0.1], index=2)
    z = torch.randn(4, 3, requires_grad=True)
    y = (torch.rand(4, 3) > 0.5).float()
    idx = torch.arange(4)
    for epoch in range(7):
        assert torch.equal(h(z, y, idx, epoch), F.binary_cross_entropy_with_logits(z, y))
    out = h(z * 100, y, idx, epoch=7)
    (grad,) = torch.autograd.grad(out, z)
    assert torch.isfinite(out) and torch.isfinite(grad).all()
    w = h.sample_weights(idx, 7)
    assert torch.all(w[[0, 1, 3]] == 1)
    v = 0.1536  # population variance of (0.1, 0.9, 0.1, 0.9, 0.1)
    assert w[2].tolist() == pytest.approx([1 + math.sqrt(v + v * v / 4)] * 3, abs=1e-6)


def test_history_keyed_by_index_under_shuffling():
    N, C = 12, 3
    g = torch.Generator().manual_seed(1)
    preds = torch.rand(8, N, C, generator=g)  # per epoch, per dataset index
    ordered, shuffled = HistoryWeightedLoss(N, C), HistoryWeightedLoss(N, C)
    for epoch in range(8):
        for batch in torch.arange(N).split(5):
            ordered.push(preds[epoch, batch], batch, epoch)
        perm = torch.randperm(N, generator=g)
        for batch in perm.split(4):
            shuffled.push(preds[epoch, batch], batch, epoch)
    assert torch.equal(ordered.history, shuffled.history)
    perm = torch.randperm(N, generator=g)
    assert torch.equal(ordered.sample_weights(perm, 8), ordered.sample_weights(torch.arange(N), 8)[perm])
    z, y = torch.randn(N, C), (torch.rand(N, C) > 0.5).float()
    a = ordered(z, y, torch.arange(N), 8)
    b = shuffled(z[perm], y[perm], perm, 8)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_history_state_dict_round_trip_and_index_check():
    h = HistoryWeightedLoss(5, 2)
    _filled(h, [0.3, 0.1, 0.7], index=4)
    state = h.state_dict()
    assert set(state) == {"history", "num_pushed", "last_push_epoch"}
    fresh = HistoryWeightedLoss(5, 2)
    fresh.load_state_dict(state)
    for name in state:
        assert torch.equal(getattr(fresh, name), getattr(h, name))
    with pytest.raises(IndexError):
        h.sample_weights([5], epoch=9)


def test_push_all_gathers_across_ranks(monkeypatch):
    """Simulated 2-rank DDP: push concatenates every rank's (indices, predictions); rank 0's copy of a
    duplicated index (DistributedSampler padding) wins and the other is dropped."""
    import torch.distributed as dist  # push() all-gathers through visattn.utils.all_gather_variable

    other_p, other_i = torch.full((3, 2), 0.7), torch.tensor([3, 4, 0])
    replies = iter([torch.tensor([3]), other_p, torch.tensor([3]), other_i])

    def fake_all_gather(outputs, tensor, group=None):
        outputs[0].copy_(tensor)
        outputs[1].copy_(next(replies))

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_gather", fake_all_gather)
    h = HistoryWeightedLoss(5, 2)
    h.push(torch.full((2, 2), 0.2), torch.tensor([1, 3]), epoch=2)
    assert h.history[:, -1, 0].tolist() == pytest.approx([0.7, 0.2, 0.0, 0.2, 0.7])
    assert h.num_pushed.tolist() == [1, 1, 0, 1, 1]


# --------------------------------------------------------------------- VAA total loss, ASL, factory


def _branches(B=4, C=3, n_att=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    prim = torch.randn(B, C, generator=g)
    att = [torch.randn(B, C, generator=g) for _ in range(n_att)]
    return {"primary": prim, "attention": att, "fused": (prim + sum(att)) / (n_att + 1)}


def test_vaa_official_is_sum_of_bce():
    br, y = _branches(n_att=3), (torch.rand(4, 3) > 0.5).float()
    loss = VAALoss("official")
    assert loss.needs_branches and loss.histories is None
    ref = sum(F.binary_cross_entropy_with_logits(t, y) for t in [br["primary"], *br["attention"]])
    assert loss(br, y).item() == pytest.approx(ref.item(), rel=1e-6)
    assert VAALoss("official", include_primary=False)(br, y).item() == pytest.approx(
        ref.item() - F.binary_cross_entropy_with_logits(br["primary"], y).item(), rel=1e-6
    )


@pytest.mark.parametrize("source", ["fused", "branch"])
def test_vaa_paper_sums_terms_and_pushes(source):
    prior = torch.tensor([0.2, 0.5, 0.7])
    y, idx = (torch.rand(4, 3) > 0.5).float(), torch.tensor([3, 0, 5, 1])
    loss = VAALoss("paper", prior=prior, num_samples=6, history_source=source)
    assert len(loss.histories) == (1 if source == "fused" else 2)
    for epoch in range(9):
        br = _branches(seed=epoch)
        out = loss(br, y, indices=idx, epoch=epoch)
        atts = [loss._history(b)(t, y, idx, epoch) for b, t in enumerate(br["attention"])]
        loss.after_step(br, y, indices=idx, epoch=epoch)
    focal = WeightedFocalLoss.from_prior(prior, "paper")(br["primary"], y)
    assert out.item() == pytest.approx((focal + sum(atts)).item(), rel=1e-6)
    assert atts[0].item() > F.binary_cross_entropy_with_logits(br["attention"][0], y).item()
    first = loss.histories[0].history[3, -1]
    expected = torch.sigmoid(br["fused"][0] if source == "fused" else br["attention"][0][0])
    assert torch.allclose(first, expected)
    assert set(loss.state_dict()) >= {"histories.0.history", "primary.pos_weight"}
    with pytest.raises(ValueError, match="indices"):
        loss(br, y)


def test_vaa_code_option():
    loss = VAALoss("official", "vaa_code", prior=torch.tensor([0.2, 0.7, 0.5]), num_samples=4)
    assert (
        loss.primary.gamma == 2.0 and loss.histories[0].code_compat and loss.histories[0].start_weighting == 5
    )
    with pytest.raises(ValueError, match="prior"):
        VAALoss("paper")


def test_asl_wrapper_matches_timm_and_masks():
    from timm.loss import AsymmetricLossMultiLabel

    z, y = torch.randn(3, 4), (torch.rand(3, 4) > 0.5).float()
    ref = AsymmetricLossMultiLabel(reduction="batchmean")(z, y)
    assert AsymmetricLoss(reduction="batch_mean")(z, y).item() == pytest.approx(ref.item(), rel=1e-6)
    mask = torch.rand(3, 4) > 0.3
    per = AsymmetricLossMultiLabel(reduction="none")(z, y)
    assert AsymmetricLoss()(z, y, mask).item() == pytest.approx(per[mask].mean().item(), rel=1e-6)


def test_create_loss():
    assert set(LOSS_NAMES) == {"bce", "focal", "weighted_focal", "history_weighted", "vaa", "asl"}
    assert isinstance(create_loss("bce"), BCEWithLogits)
    f = create_loss("focal", prior=PRIOR, weights="paper")
    assert isinstance(f, WeightedFocalLoss) and f.gamma == 0.5
    assert create_loss("weighted_focal", gamma=1.0).gamma == 1.0
    assert isinstance(create_loss("vaa", variant="official"), VAALoss)
    assert isinstance(create_loss("asl", gamma_neg=2), AsymmetricLoss)
    assert isinstance(create_loss("history_weighted", num_samples=2, num_classes=2), HistoryWeightedLoss)
    with pytest.raises(ValueError, match="available: bce"):
        create_loss("nope")
    with pytest.raises(ValueError, match="reduction"):
        BCEWithLogits(reduction="avg")
