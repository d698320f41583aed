"""Tests for visattn.layers.aggregation (spec: /work/shared/specs/vaa.md §1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visattn import record_attention
from visattn.layers.aggregation import AttentionAggregation

LAYOUTS = ["paper", "released"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tensors are tiny; intra-op threads only add synchronisation cost (badly so on a busy CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, kh: int = 1, kw: int = 1) -> int:
    return cin * cout * kh * kw + cout  # every conv has a bias


def bn(ch: int) -> int:
    return 2 * ch  # affine weight + bias (running stats are buffers)


def expected_params(layout: str, D: int, C: int, kh: int, kw: int) -> int:
    """Hand count of spec §1.2 (paper) and §1.3 (released)."""
    f_conv = conv(D, C)
    if layout == "paper":
        f_att = conv(D, 256) + bn(256) + conv(256, 256) + bn(256) + conv(256, C)
        f_sr = (
            conv(C, 256)
            + bn(256)
            + conv(256, 512)
            + bn(512)
            + conv(512, 512, kh, kw)
            + bn(512)
            + (512 * C + C)
        )
    else:
        f_att = conv(D, 512) + bn(512) + conv(512, 512, 3, 3) + bn(512) + conv(512, C)
        f_sr = (
            conv(C, 256)
            + bn(256)
            + conv(256, 512)
            + bn(512)
            + conv(512, 1024, kh, kw)
            + bn(1024)
            + (1024 * C + C)
        )
    return f_att + f_conv + f_sr


def tiny(layout: str = "released", **kw) -> AttentionAggregation:
    kw.setdefault("feature_size", 3)
    return AttentionAggregation(5, 3, layout, att_channels=(6, 4), sr_channels=(4, 6, 8), **kw)


def randomize_bn(module: nn.Module) -> None:
    """Give eval-mode BN non-trivial statistics so that it is not the identity."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parameter_count_default_widths(layout):
    D, C = 16, 5
    assert n_params(AttentionAggregation(D, C, layout, feature_size=7)) == expected_params(layout, D, C, 7, 7)
    assert n_params(AttentionAggregation(D, C, layout, feature_size=(2, 3))) == expected_params(
        layout, D, C, 2, 3
    )
    # The official numbers at WIDER scale: stage-4 (2048 ch, 7x7) and stage-3 (1024 ch, 14x14) branches.
    assert n_params(AttentionAggregation(2048, 14, "released", feature_size=7)) == 29_291_306
    assert expected_params("released", 1024, 14, 14, 14) == 105_823_018


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_structure(layout):
    m = AttentionAggregation(16, 5, layout, feature_size=(2, 3))
    convs = [c for c in m.f_att if isinstance(c, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3) if layout == "released" else (1, 1), (1, 1)]
    assert [c.out_channels for c in convs] == ([512, 512, 5] if layout == "released" else [256, 256, 5])
    sr_convs = [c for c in m.f_sr if isinstance(c, nn.Conv2d)]
    assert [c.kernel_size for c in sr_convs] == [(1, 1), (1, 1), (2, 3)]
    assert all(c.padding == (0, 0) for c in sr_convs)
    assert [c.out_channels for c in sr_convs] == (
        [256, 512, 1024] if layout == "released" else [256, 512, 512]
    )
    assert isinstance(m.f_sr[-1], nn.Linear) and m.f_sr[-1].out_features == 5


@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_masks_and_confidence(layout):
    torch.manual_seed(0)
    m = AttentionAggregation(8, 4, layout, feature_size=(3, 5))
    x = torch.randn(2, 8, 3, 5)
    with record_attention(m) as maps:
        y = m(x)
    assert y.shape == (2, 4)
    mask, confidence = maps[""]["mask"], maps[""]["confidence"]
    assert mask.shape == confidence.shape == (2, 4, 3, 5)
    torch.testing.assert_close(mask.sum(dim=(2, 3)), torch.ones(2, 4))
    assert (mask > 0).all()
    assert ((confidence > 0) & (confidence < 1)).all()
    torch.testing.assert_close(confidence, torch.sigmoid(m.f_conv(x)))
    # The logits are f_sr of A = M * conf, recomputed here from the recorded maps.
    torch.testing.assert_close(m.f_sr(mask * confidence), y)


def test_mask_is_spatial_softmax_of_f_att():
    torch.manual_seed(1)
    m = tiny().eval()
    x = torch.randn(2, 5, 3, 3)
    with record_attention(m) as maps:
        m(x)
    att = m.f_att(x)
    expected = torch.exp(att) / torch.exp(att).sum(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(maps[""]["mask"], expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wrong_size_and_adaptive_pool(layout):
    strict = tiny(layout, feature_size=(3, 4))
    with pytest.raises(ValueError, match=r"expects a 3x4 feature map .* got 5x4"):
        strict(torch.randn(2, 5, 5, 4))
    adaptive = tiny(layout, feature_size=(3, 4), sr_pool="adaptive")
    for size in ((5, 4), (3, 4), (2, 7), (8, 8)):
        with record_attention(adaptive) as maps:
            assert adaptive(torch.randn(2, 5, *size)).shape == (2, 3)
        assert maps[""]["mask"].shape == (2, 3, *size)  # recorded before pooling
    # At the native grid the pool is the identity.
    adaptive.load_state_dict(strict.state_dict())
    adaptive.eval(), strict.eval()
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(adaptive(x), strict(x))


def test_fx_trace_keeps_size_check():
    gm = torch.fx.symbolic_trace(tiny().eval())
    assert gm(torch.randn(1, 5, 3, 3)).shape == (1, 3)
    with pytest.raises(ValueError, match="expects a 3x3"):
        gm(torch.randn(1, 5, 4, 3))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_one_and_non_square(layout):
    m = AttentionAggregation(6, 2, layout, feature_size=(2, 5)).eval()
    x = torch.randn(1, 6, 2, 5)
    before = x.clone()
    assert m(x).shape == (1, 2)
    assert torch.equal(x, before)
    # Training mode needs more than one value per channel in the final 1x1 BN, i.e. batch > 1.
    assert m.train()(torch.randn(3, 6, 2, 5)).shape == (3, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_default_widths(layout):
    torch.manual_seed(2)
    m = AttentionAggregation(3, 2, layout, feature_size=2).double().eval()
    randomize_bn(m)
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


def test_gradcheck_tiny_with_parameters():
    torch.manual_seed(3)
    m = tiny("paper").double().eval()
    randomize_bn(m)
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    names = [
        "f_att.0.weight",
        "f_att.4.weight",
        "f_conv.weight",
        "f_sr.6.bias",
        "f_sr.10.weight",
        "f_sr.10.bias",
    ]
    params = {k: v.detach().clone().requires_grad_(True) for k, v in m.named_parameters() if k in names}
    assert len(params) == len(names)

    def fn(inp, *values):
        return torch.func.functional_call(m, dict(zip(names, values, strict=True)), (inp,))

    assert torch.autograd.gradcheck(fn, (x, *params.values()))


def test_gradients_reach_all_parameters():
    torch.manual_seed(4)
    m = tiny("released")
    x = torch.randn(4, 5, 3, 3, requires_grad=True)
    m(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_dtype_follows_input():
    m = tiny().double().eval()
    assert m(torch.randn(2, 5, 3, 3, dtype=torch.float64)).dtype == torch.float64


def test_init_mxnet_vs_torch():
    torch.manual_seed(5)
    m = AttentionAggregation(64, 4, "released", feature_size=3)
    w = m.f_att[3].weight  # 3x3 conv, fan_in = 512 * 9
    assert w.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)
    assert m.f_sr[-1].weight.std().item() == pytest.approx((2 / 1024) ** 0.5, rel=0.05)
    assert all(
        (mod.bias == 0).all()
        for mod in m.modules()
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.bias is not None
    )
    t = AttentionAggregation(64, 4, "released", feature_size=3, init="torch")
    assert t.f_att[3].weight.std().item() < 0.5 * w.std().item()  # kaiming-uniform(a=sqrt 5) is smaller
    assert t.f_att[0].bias.abs().sum() > 0


def test_act_and_norm_layers():
    m = tiny(act_layer=nn.GELU, norm_layer=None)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert sum(isinstance(x, nn.GELU) for x in m.modules()) == 5
    assert m(torch.randn(1, 5, 3, 3)).shape == (1, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout must be one of"):
        AttentionAggregation(4, 2, "official")
    with pytest.raises(ValueError, match="sr_pool must be one of"):
        AttentionAggregation(4, 2, sr_pool="max")
    with pytest.raises(ValueError, match="feature_size must be"):
        AttentionAggregation(4, 2, feature_size=0)
    with pytest.raises(ValueError, match="feature_size must be"):
        AttentionAggregation(4, 2, feature_size=(3, 4, 5))
    with pytest.raises(ValueError, match="init must be one of"):
        AttentionAggregation(4, 2, init="xavier")
    with pytest.raises(ValueError, match="sr_channels must be 3"):
        AttentionAggregation(4, 2, sr_channels=(8, 8))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        AttentionAggregation(4, 0)
