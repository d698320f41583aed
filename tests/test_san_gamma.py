"""SAN's γ evaluation shortcuts (visattn/layers/_san_gamma.py) equal the literal evaluation order."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from visattn.layers import PairwiseSelfAttention
from visattn.layers._san_gamma import PointwiseConv, can_fold_norm, subtraction_moments
from visattn.ops import local_subtraction2

GEOMETRIES = [
    dict(kernel_size=3),
    dict(kernel_size=5, dilation=2, padding_mode="zeros"),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=7, position_encoding=False),
    dict(kernel_size=3, stride=2, padding_mode="zeros", dilation=2),
]


def _pair(dtype=torch.float64, **kw) -> tuple[PairwiseSelfAttention, PairwiseSelfAttention]:
    torch.manual_seed(0)
    folded = PairwiseSelfAttention(16, 4, 16, share_planes=4, **kw).to(dtype)
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for m in folded.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    plain = copy.deepcopy(folded)
    plain.fold_norm = False
    return folded, plain


def _scale(t: torch.Tensor) -> float:
    return t.abs().max().item() + 1e-3


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_folded_first_norm_equals_literal_order(kw, mode):
    folded, plain = _pair(**kw)
    getattr(folded, mode)()
    getattr(plain, mode)()
    x = torch.randn(3, 16, 9, 10, dtype=torch.float64) * 2 + 0.7
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = folded(xa), plain(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, [xa, *folded.parameters()], g)
    gb = torch.autograd.grad(yb, [xb, *plain.parameters()], g)
    for (name, _), u, v in zip([("x", None), *folded.named_parameters()], ga, gb, strict=True):
        assert (u - v).abs().max().item() <= 1e-8 * _scale(v), name
    for (name, u), v in zip(folded.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12, msg=name)


def test_folded_path_skips_the_batchnorm_module_and_still_counts_the_batch():
    folded, plain = _pair(dtype=torch.float32)
    folded.train()
    calls = []
    handle = folded.gamma[0].register_forward_hook(lambda *a: calls.append(1))
    folded(torch.randn(2, 16, 8, 8))
    assert calls == []  # the BatchNorm module itself never ran: its statistics were folded
    assert folded.gamma[0].num_batches_tracked.item() == 1
    plain.gamma[0].register_forward_hook(lambda *a: calls.append(1))
    plain(torch.randn(2, 16, 8, 8))
    assert calls == [1]
    handle.remove()


def test_running_statistics_with_cumulative_momentum_and_without_tracking():
    for bn_kwargs in (dict(momentum=None), dict(track_running_stats=False), dict(affine=False)):
        folded, _ = _pair()
        folded.gamma[0] = nn.BatchNorm2d(6, **bn_kwargs).double()
        plain = copy.deepcopy(folded)
        plain.fold_norm = False
        for _ in range(3):
            x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
            torch.testing.assert_close(folded(x), plain(x), rtol=1e-10, atol=1e-12)
        for u, v in zip(folded.buffers(), plain.buffers(), strict=True):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


def test_other_norms_and_relations_take_the_literal_path():
    summation = PairwiseSelfAttention(16, 4, 16, share_planes=4, kernel_size=3, relation="summation").double()
    plain = copy.deepcopy(summation)
    plain.fold_norm = False
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    assert torch.equal(summation(x), plain(x))  # only the subtraction relation is folded
    layer = PairwiseSelfAttention(
        16, 4, 16, share_planes=4, kernel_size=3, norm_layer=lambda c: nn.GroupNorm(1, c)
    )
    assert not can_fold_norm(layer.gamma)
    assert can_fold_norm(PairwiseSelfAttention(16, 4, 16, share_planes=4, kernel_size=3).gamma)
    y = layer(torch.randn(2, 16, 8, 8))
    assert y.shape == (2, 16, 8, 8) and torch.isfinite(y).all()


def test_moments_match_the_materialised_relation_in_float32_with_a_large_offset():
    torch.manual_seed(1)
    geometry = dict(kernel_size=7, stride=1, dilation=1, padding_mode="reflect")
    # A large common offset: the naive E[r²] − E[r]² would lose most digits in float32.
    x1 = torch.randn(2, 5, 12, 12) * 0.1 + 50.0
    x2 = torch.randn(2, 5, 12, 12) * 0.1 + 49.0
    mean, var, count = subtraction_moments(x1, x2, geometry)
    r = local_subtraction2(x1.double(), x2.double(), **geometry)
    assert count == r[0, 0].numel() * r.shape[0]
    torch.testing.assert_close(mean.double(), r.mean(dim=(0, 2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var.double(), r.var(dim=(0, 2, 3), unbiased=False), rtol=1e-3, atol=1e-7)


def test_pointwise_conv_equals_conv2d_and_keeps_the_state_dict_layout():
    torch.manual_seed(0)
    for bias in (True, False):
        pw = PointwiseConv(6, 4, bias=bias).double()
        ref = nn.Conv2d(6, 4, 1, bias=bias).double()
        ref.load_state_dict(pw.state_dict())
        x = torch.randn(3, 6, 49, 20, dtype=torch.float64)
        torch.testing.assert_close(pw(x), ref(x))
        assert list(pw.state_dict()) == list(ref.state_dict())


def test_bf16_autocast_stays_close_to_float32():
    folded, _ = _pair(dtype=torch.float32)
    folded.eval()
    x = torch.randn(2, 16, 8, 8)
    y32 = folded(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = folded(x)
    assert (y16.float() - y32).abs().max().item() < 0.05 * y32.abs().max().item()
