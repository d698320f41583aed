"""Tests for visattn.layers.residual_attention (Residual Attention Network, CVPR 2017)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visattn import record_attention
from visattn.layers.residual_attention import AttentionModule, PreActBottleneck


def _randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine parameters and running statistics, so eval-mode BN is not ~identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return module


def _module(channels: int = 16, num_pools: int = 2, seed: int = 0, **kwargs) -> AttentionModule:
    torch.manual_seed(seed)
    return _randomize_bn(AttentionModule(channels, num_pools, **kwargs), seed).eval()


def _mask(module: AttentionModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with record_attention(module) as maps:
        out = module(x)
    return out, maps[""]["mask"]


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


# --- spec §8 test 2: mask-branch wiring via a zeroed head ------------------------------------------


@pytest.mark.parametrize(("learning", "scale"), [("residual", 1.5), ("naive", 0.5)])
def test_zero_mask_head_gives_half_mask_and_scaled_trunk(learning: str, scale: float) -> None:
    module = _module(learning=learning)
    with torch.no_grad():
        module.mask_head[2].weight.zero_()
        module.mask_head[5].weight.zero_()
        x = torch.randn(2, 16, 20, 18)
        out, mask = _mask(module, x)
        trunk = module.trunk(module.pre(x))
        expected = module.post(scale * trunk)
    assert torch.equal(mask, torch.full_like(mask, 0.5))
    torch.testing.assert_close(out, expected)


def test_soft_mask_matches_prototxt_wiring() -> None:
    """Recompute M from the submodules exactly as the prototxt wires them (3 pools, 2 skips)."""
    module = _module(num_pools=3)
    down, skips, up = module.down, module.skips, module.up
    assert [_count(level, PreActBottleneck) for level in down] == [1, 1, 2]
    assert all(isinstance(level[0], nn.MaxPool2d) for level in down)
    assert (down[0][0].kernel_size, down[0][0].stride, down[0][0].padding, down[0][0].ceil_mode) == (
        3,
        2,
        0,
        True,
    )
    x = torch.randn(2, 16, 56, 56)

    def interp(h: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return F.interpolate(h, size=ref.shape[-2:], mode="bilinear", align_corners=True)

    with torch.no_grad():
        _, mask = _mask(module, x)
        u = module.pre(x)
        trunk = module.trunk(u)
        d1 = down[0](u)
        d2 = down[1](d1)
        d3 = down[2](d2)
        assert [d.shape[-1] for d in (d1, d2, d3)] == [28, 14, 7]
        h = up[1](interp(d3, d2) + skips[1](d2))
        h = up[0](interp(h, d1) + skips[0](d1))
        expected = torch.sigmoid(module.mask_head(interp(h, trunk)))
    torch.testing.assert_close(mask, expected)


@pytest.mark.parametrize(
    ("num_pools", "r", "units"), [(3, 1, 8), (2, 1, 5), (1, 1, 2), (0, 1, 2), (3, 2, 14), (2, 0, 1)]
)
def test_mask_unit_counts(num_pools: int, r: int, units: int) -> None:
    module = AttentionModule(8, num_pools, r=r)
    mask_units = sum(_count(m, PreActBottleneck) for m in (module.down, module.skips, module.up))
    assert mask_units == units
    assert _count(module, nn.MaxPool2d) == num_pools
    assert len(module.skips) == max(num_pools - 1, 0)


# --- spec §8 test 4 / §1.4: mask activations ------------------------------------------------------


def _capture_preactivation(module: AttentionModule, x: torch.Tensor, shift: torch.Tensor | None = None):
    captured = {}

    def hook(_m, _i, out):
        if shift is not None:
            out = out + shift.view(1, -1, 1, 1)
        captured["z"] = out
        return out

    handle = module.mask_head[-1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            _, mask = _mask(module, x)
    finally:
        handle.remove()
    return captured["z"], mask


def test_mixed_mask_is_sigmoid_of_preactivation() -> None:
    module = _module(mask_activation="mixed")
    z, mask = _capture_preactivation(module, torch.randn(2, 16, 16, 16))
    torch.testing.assert_close(mask, torch.sigmoid(z))
    assert mask.min() > 0 and mask.max() < 1


def test_channel_mask_has_unit_norm_over_channels() -> None:
    module = _module(mask_activation="channel")
    z, mask = _capture_preactivation(module, torch.randn(2, 16, 16, 16))
    torch.testing.assert_close(mask.norm(dim=1), torch.ones_like(mask[:, 0]))
    torch.testing.assert_close(mask, z / z.norm(dim=1, keepdim=True))


def test_spatial_mask_formula_and_shift_invariance() -> None:
    module = _module(mask_activation="spatial")
    x = torch.randn(2, 16, 16, 16)
    z, mask = _capture_preactivation(module, x)
    std, mean = torch.std_mean(z, dim=(2, 3), correction=0, keepdim=True)  # population std
    torch.testing.assert_close(mask, torch.sigmoid((z - mean) / (std + module.spatial_eps)))
    shift = torch.linspace(-3.0, 5.0, 16)
    _, shifted = _capture_preactivation(module, x, shift)
    torch.testing.assert_close(shifted, mask, atol=1e-5, rtol=1e-5)


def test_no_pooling_branch_and_single_pixel_spatial_mask() -> None:
    module = _module(channels=8, num_pools=0, mask_activation="spatial")
    out, mask = _mask(module, torch.randn(3, 8, 1, 1))
    assert out.shape == (3, 8, 1, 1)
    assert torch.equal(mask, torch.full_like(mask, 0.5))  # population std of one value is 0, not NaN


# --- ARL vs NAL -----------------------------------------------------------------------------------


def test_residual_and_naive_fusion_formulas() -> None:
    residual = _module(num_pools=2, learning="residual")
    naive = AttentionModule(16, 2, learning="naive").eval()
    naive.load_state_dict(residual.state_dict())
    x = torch.randn(2, 16, 24, 24)
    results = {}
    for name, module in (("residual", residual), ("naive", naive)):
        seen = {}
        hooks = [
            module.trunk.register_forward_hook(lambda _m, _i, o, seen=seen: seen.__setitem__("T", o)),
            module.post.register_forward_pre_hook(lambda _m, args, seen=seen: seen.__setitem__("F", args[0])),
        ]
        with torch.no_grad():
            seen["out"], seen["M"] = _mask(module, x)
        for h in hooks:
            h.remove()
        results[name] = seen
    res, nal = results["residual"], results["naive"]
    assert torch.equal(res["T"], nal["T"]) and torch.equal(res["M"], nal["M"])
    T, M = res["T"], res["M"]
    assert torch.equal(res["F"], T * M + T)
    assert torch.equal(nal["F"], T * M)
    torch.testing.assert_close(res["F"] - nal["F"], T)  # equal up to rounding
    assert not torch.allclose(res["out"], nal["out"])


# --- shapes, sizes, dtype, registration -----------------------------------------------------------


@pytest.mark.parametrize("size", [(224, 224), (320, 320), (57, 45)])
def test_runtime_input_sizes(size: tuple[int, int]) -> None:
    module = _module(channels=16, num_pools=3)
    x = torch.randn(1, 16, *size)
    with torch.no_grad():
        out, mask = _mask(module, x)
    assert out.shape == x.shape and mask.shape == x.shape
    assert torch.isfinite(out).all()


def test_dtype_follows_input_and_input_unmodified() -> None:
    module = _module(channels=8, num_pools=2).double()
    x = torch.randn(1, 8, 13, 11, dtype=torch.float64)
    x_copy = x.clone()
    out, mask = _mask(module, x)
    assert out.dtype == mask.dtype == torch.float64
    assert out.shape == (1, 8, 13, 11)
    assert torch.equal(x, x_copy)


def test_all_parameters_registered_and_receive_gradients() -> None:
    module = AttentionModule(8, 2).train()
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    module(x).square().mean().backward()
    params = dict(module.named_parameters())
    assert params and all(p.grad is not None for p in params.values())
    expected = sum(p.numel() for p in module.parameters())
    assert expected == sum(
        t.numel()
        for k, t in module.state_dict().items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )


@pytest.mark.parametrize("mask_activation", ["mixed", "channel", "spatial"])
def test_gradcheck_float64(mask_activation: str) -> None:
    module = _module(channels=8, num_pools=2, mask_activation=mask_activation).double()
    x = torch.randn(1, 8, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), fast_mode=True)


def test_fx_symbolic_trace() -> None:
    module = _module(channels=8, num_pools=3)
    traced = torch.fx.symbolic_trace(module)
    x = torch.randn(1, 8, 29, 23)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), module(x))


def test_record_attention_yields_mask() -> None:
    model = nn.Sequential(nn.Identity(), _module(channels=16, num_pools=2))
    x = torch.randn(2, 16, 20, 20)
    with torch.no_grad(), record_attention(model) as maps:
        model(x)
    mask = maps["1"]["mask"]
    assert mask.shape == (2, 16, 20, 20)
    assert mask.min() > 0 and mask.max() < 1
    assert not model[1].is_recording


# --- PreActBottleneck -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cin", "cout", "stride", "proj"), [(16, 16, 1, False), (8, 16, 1, True), (16, 16, 2, True)]
)
def test_preact_bottleneck_wiring_and_params(cin: int, cout: int, stride: int, proj: bool) -> None:
    torch.manual_seed(0)
    unit = _randomize_bn(PreActBottleneck(cin, cout, stride=stride)).eval()
    w = cout // 4
    assert (unit.shortcut is not None) == proj
    assert unit.conv2.stride == (stride, stride) and unit.conv1.stride == (1, 1)
    n_params = cin * w + 9 * w * w + w * cout + 2 * (cin + 2 * w) + (cin * cout if proj else 0)
    assert sum(p.numel() for p in unit.parameters()) == n_params
    assert all(m.bias is None for m in unit.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(2, cin, 15, 15)
    with torch.no_grad():
        pre = F.relu(unit.norm1(x))
        branch = unit.conv3(F.relu(unit.norm3(unit.conv2(F.relu(unit.norm2(unit.conv1(pre)))))))
        expected = branch + (unit.shortcut(pre) if proj else x)  # projection sees the BN-ReLU'd input
        out = unit(x)
    assert out.shape == (2, cout, 8 if stride == 2 else 15, 8 if stride == 2 else 15)
    torch.testing.assert_close(out, expected)


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask_activation": "softmax"}, r"mask_activation must be one of \('mixed', 'channel', 'spatial'\)"),
        ({"learning": "gated"}, r"learning must be one of \('residual', 'naive'\)"),
        ({"p": -1}, "p must be an int >= 0"),
        ({"t": -1}, "t must be an int >= 0"),
        ({"r": -2}, "r must be an int >= 0"),
        ({"num_pools": -1}, "num_pools must be an int >= 0"),
        ({"r": 1.5}, "got 1.5"),
        ({"p": True}, "got True"),
        ({"channels": 0}, "channels must be an int >= 1"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    args = {"channels": 16, "num_pools": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        AttentionModule(**args)


def test_invalid_bottleneck_arguments() -> None:
    with pytest.raises(ValueError, match="divisible by bottleneck_ratio=4, got 18"):
        PreActBottleneck(16, 18)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        PreActBottleneck(16, 16, stride=0)


# Attention-56 / -92 sizes (spec §2 / §8 test 1) are checked on the registered networks in
# tests/test_models_resattnet.py, which builds them from these units.
