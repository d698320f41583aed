"""Tests for visattn.layers.polarized (Polarized Self-Attention, spec /work/shared/specs/psa.md)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from visattn import record_attention
from visattn.layers.polarized import ChannelOnlyAttention, PolarizedSelfAttention, SpatialOnlyAttention


@pytest.fixture(autouse=True)
def _one_thread():
    # Tensors here are tiny; on a loaded 2-core machine intra-op threads only add contention.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


COMBOS = [(v, lay) for v in ("paper", "official") for lay in ("parallel", "sequential")]


def _mat(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().flatten(1)


def _ln(vec: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = vec.mean(-1, keepdim=True)
    var = ((vec - mean) ** 2).mean(-1, keepdim=True)
    return (vec - mean) / torch.sqrt(var + eps) * gamma.flatten() + beta.flatten()


def _bias(conv: nn.Conv2d, n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(n, dtype=like.dtype) if conv.bias is None else conv.bias.detach()


# ---- independent hand computations (spec §2 and §3), returning (A_ch (B,C), A_sp (B,L)) ----
def paper_channel(m: ChannelOnlyAttention, x: torch.Tensor) -> torch.Tensor:
    xf = x.flatten(2)
    q = torch.einsum("oc,bcl->bol", _mat(m.query), xf)[:, 0].softmax(-1)  # (B, L)
    v = torch.einsum("kc,bcl->bkl", _mat(m.value), xf) + _bias(m.value, xf.shape[1] // 2, x)[:, None]
    z = torch.einsum("bkl,bl->bk", v, q)
    u = z @ _mat(m.up).T + _bias(m.up, x.shape[1], x)
    return torch.sigmoid(_ln(u, m.norm.weight.detach(), m.norm.bias.detach()))


def paper_spatial(m: SpatialOnlyAttention, x: torch.Tensor) -> torch.Tensor:
    xf, c2 = x.flatten(2), x.shape[1] // 2
    q = (torch.einsum("kc,bcl->bkl", _mat(m.query), xf) + _bias(m.query, c2, x)[:, None]).mean(-1)
    v = torch.einsum("kc,bcl->bkl", _mat(m.value), xf) + _bias(m.value, c2, x)[:, None]
    return torch.sigmoid(torch.einsum("bk,bkl->bl", q.softmax(-1), v))


def official_channel(sd: dict, x: torch.Tensor, layout: str) -> torch.Tensor:
    xf = x.flatten(2)
    q = torch.einsum("oc,bcl->bol", sd["conv_q_right.weight"].flatten(1), xf)[:, 0].softmax(-1)
    v = torch.einsum("kc,bcl->bkl", sd["conv_v_right.weight"].flatten(1), xf)
    z = torch.einsum("bkl,bl->bk", v, q)
    if layout == "parallel":
        return torch.sigmoid(z @ sd["conv_up.weight"].flatten(1).T)
    h = z @ sd["conv_up.0.weight"].flatten(1).T + sd["conv_up.0.bias"]
    h = torch.relu(_ln(h, sd["conv_up.1.weight"], sd["conv_up.1.bias"]))
    return torch.sigmoid(h @ sd["conv_up.3.weight"].flatten(1).T + sd["conv_up.3.bias"])


def official_spatial(sd: dict, x: torch.Tensor, layout: str) -> torch.Tensor:
    xf = x.flatten(2)
    q = torch.einsum("kc,bcl->bkl", sd["conv_q_left.weight"].flatten(1), xf).mean(-1)
    v = torch.einsum("kc,bcl->bkl", sd["conv_v_left.weight"].flatten(1), xf)
    if layout == "parallel":
        return torch.sigmoid(torch.einsum("bk,bkl->bl", q, v).softmax(-1))
    return torch.sigmoid(torch.einsum("bk,bkl->bl", q, v.softmax(-1)))


def compose(x, ch_fn, sp_fn, layout):
    """Hand composition; returns (output, A_ch (B,C,1,1), A_sp (B,1,H,W))."""
    b, _, h, w = x.shape
    a_ch = ch_fn(x)[:, :, None, None]
    y = x * a_ch if layout == "sequential" else x
    a_sp = sp_fn(y).reshape(b, 1, h, w)
    out = y * a_sp if layout == "sequential" else x * a_ch + x * a_sp
    return out, a_ch, a_sp


def official_shapes(c: int, layout: str) -> dict[str, tuple[int, ...]]:
    c2 = c // 2
    shapes = {
        "conv_q_right.weight": (1, c, 1, 1),
        "conv_v_right.weight": (c2, c, 1, 1),
        "conv_q_left.weight": (c2, c, 1, 1),
        "conv_v_left.weight": (c2, c, 1, 1),
    }
    if layout == "parallel":
        shapes["conv_up.weight"] = (c, c2, 1, 1)
    else:
        r = c2 // 4
        shapes.update({"conv_up.0.weight": (r, c2, 1, 1), "conv_up.0.bias": (r,)})
        shapes.update({"conv_up.1.weight": (r, 1, 1), "conv_up.1.bias": (r, 1, 1)})
        shapes.update({"conv_up.3.weight": (c, r, 1, 1), "conv_up.3.bias": (c,)})
    return shapes


def random_official(c: int, layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(s, generator=g, dtype=torch.float64) * 0.5
        for k, s in official_shapes(c, layout).items()
    }


def randomize(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return m


def zero_weights(m: nn.Module) -> nn.Module:
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.zeros_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.LayerNorm):
            mod.reset_parameters()
    return m


# ---- tests ----
@pytest.mark.parametrize("hw", [(2, 2), (3, 5)])
@pytest.mark.parametrize("variant,layout", COMBOS)
def test_zero_weight_table(variant, layout, hw):
    m = zero_weights(PolarizedSelfAttention(8, layout, variant, bias=variant == "paper")).double()
    x = torch.randn(2, 8, *hw, dtype=torch.float64)
    lsize = hw[0] * hw[1]
    with record_attention(m) as maps:
        out = m(x)
    sp = 1 / (1 + math.exp(-1 / lsize)) if (variant, layout) == ("official", "parallel") else 0.5
    factor = {"parallel": 0.5 + sp, "sequential": 0.25}[layout]
    torch.testing.assert_close(out, factor * x, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(maps["channel"]["channel"], torch.full((2, 8, 1, 1), 0.5, dtype=torch.float64))
    torch.testing.assert_close(maps["spatial"]["spatial"], torch.full((2, 1, *hw), sp, dtype=torch.float64))
    if (variant, layout, lsize) == ("official", "parallel", 4):
        assert abs(factor - 1.062177) < 1e-6


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_paper_matches_hand_formulas(layout, bias):
    m = randomize(PolarizedSelfAttention(8, layout, "paper", bias=bias).double(), seed=1)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    with record_attention(m) as maps:
        out = m(x)
    ref, a_ch, a_sp = compose(
        x, lambda t: paper_channel(m.channel, t), lambda t: paper_spatial(m.spatial, t), layout
    )
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(maps["channel"]["channel"], a_ch)
    torch.testing.assert_close(maps["spatial"]["spatial"], a_sp)


def test_paper_channel_with_zero_query_pools_by_mean():
    m = randomize(ChannelOnlyAttention(6).double())
    nn.init.zeros_(m.query.weight)
    x = torch.randn(1, 6, 4, 3, dtype=torch.float64)
    z = m.value(x).mean((2, 3), keepdim=True)
    expected = torch.sigmoid(m.norm(m.up(z).flatten(1))).reshape(1, 6, 1, 1)
    with record_attention(m) as maps:
        m(x)
    torch.testing.assert_close(maps[""]["channel"], expected)


@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_official_load_matches_hand_and_round_trips(layout):
    sd = random_official(16, layout, seed=2)
    m = PolarizedSelfAttention(16, layout, "official").double()
    m.load_official_state_dict(sd)
    x = torch.randn(2, 16, 3, 4, dtype=torch.float64)
    with record_attention(m) as maps:
        out = m(x)
    ref, a_ch, a_sp = compose(
        x, lambda t: official_channel(sd, t, layout), lambda t: official_spatial(sd, t, layout), layout
    )
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(maps["channel"]["channel"], a_ch)
    torch.testing.assert_close(maps["spatial"]["spatial"], a_sp)
    exported = m.official_state_dict()
    assert set(exported) == set(sd)
    for k, v in sd.items():
        assert torch.equal(exported[k], v), k


def test_official_load_prefix_and_module_wrappers():
    sd = random_official(8, "sequential", seed=3)
    full = {f"module.stage2.0.deattn.{k}": v for k, v in sd.items()}
    full["module.stage2.0.conv1.weight"] = torch.zeros(8, 8, 3, 3)
    m = PolarizedSelfAttention(8, "sequential", "official").double()
    m.load_official_state_dict(full, prefix="stage2.0.deattn.")
    assert all(torch.equal(m.official_state_dict()[k], v) for k, v in sd.items())
    m2 = PolarizedSelfAttention(8, "sequential", "official").double()
    m2.load_official_state_dict({f"module.{k}": v for k, v in sd.items()})
    assert all(torch.equal(m2.official_state_dict()[k], v) for k, v in sd.items())


def test_official_load_errors():
    m = PolarizedSelfAttention(8, "parallel", "official")
    sd = {k: v.float() for k, v in random_official(8, "parallel").items()}
    with pytest.raises(KeyError, match="conv_up.weight"):
        m.load_official_state_dict({k: v for k, v in sd.items() if k != "conv_up.weight"})
    with pytest.raises(KeyError, match="conv_up.0.weight"):  # a PSA_s file into a PSA_p layer
        m.load_official_state_dict(random_official(8, "sequential"))
    with pytest.raises(ValueError, match="conv_v_left.weight"):
        m.load_official_state_dict({**sd, "conv_v_left.weight": torch.zeros(3, 8, 1, 1)})
    paper = PolarizedSelfAttention(8)
    with pytest.raises(ValueError, match="variant='official'"):
        paper.load_official_state_dict(sd)
    with pytest.raises(ValueError, match="variant='official'"):
        paper.official_state_dict()


def test_variants_differ_where_spec_says():
    paper = randomize(PolarizedSelfAttention(8, "parallel", "paper").double(), seed=4)
    official = PolarizedSelfAttention(8, "parallel", "official").double()
    with torch.no_grad():
        for name in ("channel.query", "channel.value", "channel.up", "spatial.query", "spatial.value"):
            official.get_submodule(name).weight.copy_(paper.get_submodule(name).weight)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    with record_attention(paper) as mp, record_attention(official) as mo:
        paper(x)
        official(x)
    assert not torch.allclose(mp["spatial"]["spatial"], mo["spatial"]["spatial"], atol=1e-3)
    assert not torch.allclose(mp["channel"]["channel"], mo["channel"]["channel"], atol=1e-3)  # LN
    pre = torch.logit(mo["spatial"]["spatial"]).flatten(1)  # PSA_p: softmax after the product
    torch.testing.assert_close(pre.sum(-1), torch.ones(2, dtype=torch.float64))
    assert (torch.logit(mp["spatial"]["spatial"]).flatten(1).sum(-1) - 1).abs().max() > 1e-2


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_sequential_spatial_branch_sees_channel_output(variant):
    m = PolarizedSelfAttention(8, "sequential", variant)
    seen = {}
    m.spatial.register_forward_hook(lambda mod, args, out: seen.update(y=args[0]))
    x = torch.randn(2, 8, 4, 3)
    with record_attention(m) as maps:
        out = m(x)
    torch.testing.assert_close(seen["y"], x * maps["channel"]["channel"])
    torch.testing.assert_close(out, seen["y"] * maps["spatial"]["spatial"])


@pytest.mark.parametrize("shape", [(1, 8, 5, 5), (2, 8, 3, 7), (3, 10, 1, 4)])
@pytest.mark.parametrize("variant,layout", COMBOS)
def test_shapes_ranges_dtype_no_inplace(variant, layout, shape):
    m = PolarizedSelfAttention(shape[1], layout, variant).double()
    x = torch.randn(shape, dtype=torch.float64)
    x0 = x.clone()
    with record_attention(nn.Sequential(m)) as maps:
        out = m(x)
    assert out.shape == x.shape and out.dtype == torch.float64
    assert torch.equal(x, x0)
    a_ch, a_sp = maps["0.channel"]["channel"], maps["0.spatial"]["spatial"]
    assert a_ch.shape == (shape[0], shape[1], 1, 1) and a_sp.shape == (shape[0], 1, *shape[2:])
    for a in (a_ch, a_sp):
        assert a.dtype == torch.float64 and bool(((a > 0) & (a < 1)).all())


@pytest.mark.parametrize("c", [8, 9, 16])
@pytest.mark.parametrize("variant,layout", COMBOS)
def test_parameter_counts(variant, layout, c):
    c2, r = c // 2, c // 2 // 4
    n = sum(p.numel() for p in PolarizedSelfAttention(c, layout, variant).parameters())
    if variant == "paper":
        expected = c + 2 * c * c2 + 2 * c + 2 * c * c2  # W_q, W_v, W_z, LN(C), spatial W_q + W_v
        nb = sum(p.numel() for p in PolarizedSelfAttention(c, layout, variant, bias=True).parameters())
        assert nb == expected + c2 + c + 2 * c2  # no bias on the softmax-invariant channel W_q
    elif layout == "parallel":
        expected = c + 4 * c * c2  # == 2C² + C for even C
    else:
        expected = c + c * c2 + (c2 * r + r) + 2 * r + (r * c + c) + 2 * c * c2
    assert n == expected
    if c % 2 == 0 and (variant, layout) != ("official", "sequential"):
        assert n == 2 * c * c + (3 * c if variant == "paper" else c)


@pytest.mark.parametrize("variant,layout", COMBOS)
def test_gradcheck(variant, layout):
    m = randomize(PolarizedSelfAttention(8, layout, variant, bias=variant == "paper").double(), seed=5)
    x = torch.randn(2, 8, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("variant,layout", COMBOS)
def test_fx_trace(variant, layout):
    m = PolarizedSelfAttention(8, layout, variant)
    x = torch.randn(2, 8, 3, 4)
    torch.testing.assert_close(torch.fx.symbolic_trace(m)(x), m(x))


def test_init_options():
    torch.manual_seed(0)
    c = 256
    m = PolarizedSelfAttention(c, "sequential", "official")
    target = math.sqrt(2 / c)
    for name in ("channel.value", "spatial.query", "spatial.value"):
        assert abs(m.get_submodule(name).weight.std().item() / target - 1) < 0.05, name
    assert abs(m.channel.query.weight.std().item() / target - 1) < 0.25
    up0 = m.channel.up[0].weight  # PyTorch default init (std 1/sqrt(3·fan_in)), not kaiming
    assert up0.std().item() < 0.5 * math.sqrt(2 / up0.shape[1])
    h = PolarizedSelfAttention(c, "sequential", "official", init="hrnet_official")
    for name, mod in h.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.weight.numel() > 1000:
            assert abs(mod.weight.std().item() / 1e-3 - 1) < 0.1, name
    assert h.channel.up[0].bias.abs().max() > 1e-2  # biases keep their default init
    torch.testing.assert_close(h.channel.up[1].weight, torch.ones(c // 8, 1, 1))
    p = PolarizedSelfAttention(c, bias=True)
    assert torch.equal(p.spatial.value.bias, torch.zeros(c // 2))


def test_record_attention_names_and_branches_standalone():
    model = nn.Sequential()
    model.add_module("psa", PolarizedSelfAttention(8))
    with record_attention(model) as maps:
        model(torch.randn(2, 8, 3, 5))
    assert set(maps) == {"psa.channel", "psa.spatial"}
    assert maps["psa.channel"]["channel"].shape == (2, 8, 1, 1)
    assert maps["psa.spatial"]["spatial"].shape == (2, 1, 3, 5)
    x = torch.randn(1, 6, 2, 3)
    for branch, kind in ((ChannelOnlyAttention(6), "channel"), (SpatialOnlyAttention(6), "spatial")):
        with record_attention(branch) as maps:
            out = branch(x)
        torch.testing.assert_close(out, x * maps[""][kind])


def test_branch_official_forms():
    sd = random_official(8, "sequential", seed=6)
    ch = ChannelOnlyAttention(8, "official", official_form="sequential").double()
    state = {"query.weight": sd["conv_q_right.weight"], "value.weight": sd["conv_v_right.weight"]}
    state.update({k.replace("conv_up", "up"): v for k, v in sd.items() if k.startswith("conv_up")})
    ch.load_state_dict(state)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(ch(x), x * official_channel(sd, x, "sequential")[:, :, None, None])
    assert isinstance(ChannelOnlyAttention(8, "official").up, nn.Conv2d)
    assert SpatialOnlyAttention(8, "official").form == "parallel"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"channels": 8, "layout": "serial"}, "layout must be one of"),
        ({"channels": 8, "variant": "hrnet"}, "variant must be one of"),
        ({"channels": 8, "init": "xavier"}, "init must be one of"),
        ({"channels": 1}, "channels must be an int >= 2"),
        ({"channels": 0, "variant": "official"}, "channels must be an int >= 2"),
        ({"channels": 6, "layout": "sequential", "variant": "official"}, "channels >= 8"),
        ({"channels": 8, "variant": "official", "bias": True}, "bias=True"),
        ({"channels": 8, "variant": "official", "norm_layer": nn.LayerNorm}, "norm_layer"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolarizedSelfAttention(**kwargs)


def test_bad_branch_arguments():
    with pytest.raises(ValueError, match="official_form applies only"):
        ChannelOnlyAttention(8, "paper", official_form="parallel")
    with pytest.raises(ValueError, match="official_form must be one of"):
        SpatialOnlyAttention(8, "official", official_form="p")
    with pytest.raises(ValueError, match="channels must be"):
        SpatialOnlyAttention(2.5)  # type: ignore[arg-type]
