"""SAN layers: official structure vs an independent unfold re-computation, relations, sharing, loaders."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn.functional as F

from visattn.layers.san import PairwiseSelfAttention, PatchwiseSelfAttention, SelfAttentionBottleneck
from visattn.recording import record_attention

PAIRWISE = ("subtraction", "summation", "concatenation", "hadamard", "dot")
PATCHWISE = ("concatenation", "star", "clique")


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random parameters and BN statistics (positive variances), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                vals = (
                    torch.rand(t.shape, generator=g) + 0.5
                    if "running_var" in name
                    else torch.randn(t.shape, generator=g)
                )
                t.copy_(vals * (0.5 if "weight" in name else 1.0))
    return module.eval()


# ---------------------------------------------------------------- independent reference (plain torch)


def unfold(x, K, mode, stride=1, dilation=1):
    p = dilation * (K - 1) // 2
    xp = F.pad(x, (p, p, p, p), mode="reflect" if mode == "reflect" else "constant")
    return F.unfold(xp, K, dilation=dilation, stride=stride).view(x.shape[0], x.shape[1], K * K, -1)


def conv(x, sd, name):
    return F.conv2d(x, sd[name + ".weight"], sd.get(name + ".bias"))


def bn(x, sd, name):
    w, b = sd[name + ".weight"], sd[name + ".bias"]
    return F.batch_norm(x, sd[name + ".running_mean"], sd[name + ".running_var"], w, b, False, 0.0, 1e-5)


def sam_ref(sd, x, sa_type, K, mode="reflect", stride=1, dilation=1):
    """Official SAM forward (eval BN) from official keys, with unfold on padded tensors."""
    B, _, H, W = x.shape
    x1, x2, x3 = conv(x, sd, "conv1"), conv(x, sd, "conv2"), conv(x, sd, "conv3")
    c = K * K // 2
    args = (K, mode, stride, dilation)
    if sa_type == "pairwise":
        loc_w = torch.linspace(-1, 1, W, dtype=x.dtype).unsqueeze(0).repeat(H, 1)
        loc_h = torch.linspace(-1, 1, H, dtype=x.dtype).unsqueeze(1).repeat(1, W)
        pos = unfold(conv(torch.stack([loc_w, loc_h]).unsqueeze(0), sd, "conv_p"), *args)
        r = torch.cat(
            [
                unfold(x1, *args)[:, :, c : c + 1] - unfold(x2, *args),
                (pos[:, :, c : c + 1] - pos).repeat(B, 1, 1, 1),
            ],
            1,
        )
    else:
        x1 = x1[:, :, ::stride, ::stride].reshape(B, x1.shape[1], 1, -1)
        r = torch.cat([x1, unfold(x2, *args).reshape(B, -1, 1, x1.shape[-1])], 1)
    h = F.relu(bn(r, sd, "conv_w.0"))
    h = F.relu(bn(F.conv2d(h, sd["conv_w.2.weight"]), sd, "conv_w.3"))
    w = conv(h, sd, "conv_w.5")
    cw = sd["conv_w.5.bias"].numel() // (1 if sa_type == "pairwise" else K * K)
    w = w.softmax(2) if sa_type == "pairwise" else w.view(B, cw, K * K, -1)
    cols = unfold(x3, *args)
    cols = cols.view(B, cols.shape[1] // cw, cw, K * K, -1)  # channel j·Cw + g: interleaved
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    return (cols * w.unsqueeze(1)).sum(3).view(B, -1, Ho, Wo)


def block_ref(sd, x, sa_type, K):
    sam = {k[4:]: v for k, v in sd.items() if k.startswith("sam.")}
    out = F.relu(bn(sam_ref(sam, F.relu(bn(x, sd, "bn1")), sa_type, K), sd, "bn2"))
    return x + conv(out, sd, "conv")


def official_sam_dict(sa_type, C, rel, mid, share, K, seed=1):
    """Random tensors in the spec §10 layout, written from the spec (not from the layer)."""
    g = torch.Generator().manual_seed(seed)
    cw = mid // share
    sd = {}

    def add_bn(name, n):
        sd.update(
            {f"{name}.weight": torch.randn(n, generator=g), f"{name}.bias": torch.randn(n, generator=g)}
        )
        sd.update(
            {
                f"{name}.running_mean": torch.randn(n, generator=g),
                f"{name}.running_var": torch.rand(n, generator=g) + 0.5,
            }
        )
        sd[f"{name}.num_batches_tracked"] = torch.tensor(7)

    for name, out in (("conv1", rel), ("conv2", rel), ("conv3", mid)):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = (
            torch.randn(out, C, 1, 1, generator=g) * 0.5,
            torch.randn(out, generator=g),
        )
    w_in, w_mid, w_out = (rel + 2, rel, cw) if sa_type == "pairwise" else (rel * (K * K + 1), cw, K * K * cw)
    add_bn("conv_w.0", w_in)
    sd["conv_w.2.weight"] = torch.randn(w_mid, w_in, 1, 1, generator=g) * 0.5
    add_bn("conv_w.3", w_mid)
    sd["conv_w.5.weight"], sd["conv_w.5.bias"] = (
        torch.randn(w_out, w_mid, 1, 1, generator=g) * 0.5,
        torch.randn(w_out, generator=g),
    )
    if sa_type == "pairwise":
        sd["conv_p.weight"], sd["conv_p.bias"] = (
            torch.randn(2, 2, 1, 1, generator=g),
            torch.randn(2, generator=g),
        )
    return sd, add_bn


def make(sa_type, C=8, rel=2, mid=8, K=3, share=4, **kw):
    cls = PairwiseSelfAttention if sa_type == "pairwise" else PatchwiseSelfAttention
    return cls(C, rel, mid, kernel_size=K, share_planes=share, **kw)


# ---------------------------------------------------------------- official structure


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_official_forward_matches_unfold_reference(sa_type, mode):
    layer = randomize(make(sa_type, padding_mode=mode))
    x = torch.randn(2, 8, 5, 6)
    torch.testing.assert_close(layer(x), sam_ref(layer.official_state_dict(), x, sa_type, 3, mode))


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_stride_and_dilation_match_reference(sa_type):
    x = torch.randn(1, 8, 7, 9)
    for stride, dilation in ((2, 1), (1, 2), (2, 2)):
        layer = randomize(make(sa_type, stride=stride, dilation=dilation))
        ref = sam_ref(layer.official_state_dict(), x, sa_type, 3, "reflect", stride, dilation)
        torch.testing.assert_close(layer(x), ref)
        dense = make(sa_type, dilation=dilation).eval()
        dense.load_state_dict(layer.state_dict())
        torch.testing.assert_close(layer(x), dense(x)[..., ::stride, ::stride])  # φ taken at the centres


# ---------------------------------------------------------------- relations


def _hand(layer, x, pairwise_fn=None, patch_fn=None):
    """Per-pixel loop over the footprint with explicit border handling; γ applied per position."""
    B, _, H, W = x.shape
    K, cw, mode = layer.kernel_size, layer.weight_channels, layer.padding_mode

    def at(t, a, b):  # t[:, :, a, b] with reflect (no edge repeat) or zero padding
        if 0 <= a < t.shape[2] and 0 <= b < t.shape[3]:
            return t[:, :, a, b]
        if mode == "zeros":
            return torch.zeros_like(t[:, :, 0, 0])
        refl = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)  # noqa: E731
        return t[:, :, refl(a, t.shape[2]), refl(b, t.shape[3])]

    with torch.no_grad():
        phi, psi, beta = layer.phi(x), layer.psi(x), layer.beta(x)
        if pairwise_fn is not None and layer.position_encoding:
            grid = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
            pos = layer.pos_proj(torch.stack(grid[::-1]).unsqueeze(0))
        y = torch.zeros_like(beta)
        for h in range(H):
            for w in range(W):
                nb = [(h - K // 2 + a, w - K // 2 + b) for a in range(K) for b in range(K)]
                if pairwise_fn is not None:
                    cols = []
                    for a, b in nb:
                        d = pairwise_fn(phi[:, :, h, w], at(psi, a, b))
                        if layer.position_encoding:
                            d = torch.cat([d, (pos[:, :, h, w] - at(pos, a, b)).expand(B, -1)], 1)
                        cols.append(d)
                    wt = layer.gamma(torch.stack(cols, 2).unsqueeze(-1))[..., 0].softmax(2)
                else:
                    nbr_phi = torch.stack([at(phi, a, b) for a, b in nb], 2)  # (B, rel, K²)
                    nbr_psi = torch.stack([at(psi, a, b) for a, b in nb], 2)
                    vec = patch_fn(phi[:, :, h, w], nbr_phi, nbr_psi)
                    wt = layer.gamma(vec[:, :, None, None]).view(B, cw, K * K)
                for c in range(beta.shape[1]):
                    y[:, c, h, w] = sum(
                        wt[:, c % cw, k] * at(beta, a, b)[:, c] for k, (a, b) in enumerate(nb)
                    )
    return y


PAIR_FNS = {
    "subtraction": lambda a, b: a - b,
    "summation": lambda a, b: a + b,
    "concatenation": lambda a, b: torch.cat([a, b], 1),
    "hadamard": lambda a, b: a * b,
    "dot": lambda a, b: (a * b).sum(1, keepdim=True),
}
PATCH_FNS = {
    "concatenation": lambda c, P, S: torch.cat([c, S.flatten(1)], 1),  # ψ channel-major: c·K² + k
    "star": lambda c, P, S: torch.einsum("bc,bck->bk", c, S),
    "clique": lambda c, P, S: torch.einsum("bcj,bck->bjk", P, S).flatten(1),
}


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("relation", PAIRWISE)
def test_pairwise_relations_by_hand(relation, mode):
    layer = randomize(make("pairwise", C=4, rel=3, mid=4, share=2, relation=relation, padding_mode=mode))
    x = torch.randn(2, 4, 4, 5)
    with record_attention(layer) as maps:
        y = layer(x)
    torch.testing.assert_close(y, _hand(layer, x, pairwise_fn=PAIR_FNS[relation]))
    wts = maps[""]["weights"]
    assert wts.shape == (2, 2, 9, 4, 5)
    torch.testing.assert_close(wts.sum(2), torch.ones(2, 2, 4, 5))
    width = {"concatenation": 6, "dot": 1}.get(relation, 3) + 2
    assert layer.gamma[0].num_features == width and layer.gamma[2].in_channels == width


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("relation", PATCHWISE)
def test_patchwise_relations_by_hand(relation, mode):
    layer = randomize(make("patchwise", C=4, rel=2, mid=4, share=2, relation=relation, padding_mode=mode))
    x = torch.randn(2, 4, 4, 3)
    with record_attention(layer) as maps:
        y = layer(x)
    torch.testing.assert_close(y, _hand(layer, x, patch_fn=PATCH_FNS[relation]))
    wts = maps[""]["weights"]
    assert wts.shape == (2, 2, 9, 4, 3)
    assert (wts.sum(2) - 1).abs().max() > 0.1  # not normalised
    assert layer.gamma[0].num_features == {"concatenation": 2 * 10, "star": 9, "clique": 81}[relation]
    assert layer.gamma[5].out_channels == 9 * 2


def test_no_position_encoding_and_parameters_registered():
    layer = make("pairwise", position_encoding=False)
    assert layer.pos_proj is None and layer.gamma[0].num_features == 2
    assert list(layer.buffers(recurse=False)) == []
    sizes = [layer(torch.randn(1, 8, h, w)).shape[-2:] for h, w in ((4, 4), (6, 3))]  # no size-fixed buffers
    assert sizes == [(4, 4), (6, 3)]


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_fx_symbolic_trace(sa_type):
    block = randomize(SelfAttentionBottleneck(8, 2, 8, 8, sa_type, kernel_size=3, share_planes=4))
    traced = torch.fx.symbolic_trace(block)
    for shape in ((2, 8, 4, 5), (1, 8, 6, 3)):  # the position map follows the input size
        x = torch.randn(shape)
        torch.testing.assert_close(traced(x), block(x))


# ---------------------------------------------------------------- sharing, gradients, shapes


def test_interleaved_sharing():
    x = torch.randn(1, 8, 5, 5)
    patch = randomize(make("patchwise", mid=8, share=4))  # Cw = 2
    with torch.no_grad():
        keep = torch.zeros(18, dtype=torch.bool)
        keep[9:18] = True  # weight group g = 1: channels g·K² + k
        patch.gamma[5].weight[~keep] = 0
        patch.gamma[5].bias[~keep] = 0
    y = patch(x)
    assert y[:, 0::2].abs().max() == 0 and y[:, 1::2].abs().min() > 0
    pair = randomize(make("pairwise", mid=8, share=4))
    y0 = pair(x)
    with torch.no_grad():
        pair.gamma[5].weight[1] += 1.0
    diff = (pair(x) - y0).abs().amax(dim=(0, 2, 3))
    assert diff[0::2].max() == 0 and diff[1::2].min() > 0


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_conv_p_bias_gradient(mode):
    layer = make("pairwise", padding_mode=mode).double()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    (layer(x) * torch.randn(2, 8, 5, 6, dtype=torch.float64)).sum().backward()
    grad = layer.pos_proj.bias.grad.abs().max()
    assert grad < 1e-10 if mode == "reflect" else grad > 1e-6


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_shapes_dtype_input_untouched(sa_type):
    for B, H, W, stride, dilation in ((1, 5, 7, 1, 1), (2, 7, 5, 2, 1), (1, 9, 6, 1, 2), (3, 3, 3, 2, 1)):
        layer = make(sa_type, stride=stride, dilation=dilation).double()
        x = torch.randn(B, 8, H, W, dtype=torch.float64)
        x0 = x.clone()
        y = layer(x)
        assert y.shape == (B, 8, (H - 1) // stride + 1, (W - 1) // stride + 1) and y.dtype == torch.float64
        torch.testing.assert_close(x, x0, rtol=0, atol=0)
    block = SelfAttentionBottleneck(8, 2, 8, 8, sa_type, kernel_size=3, share_planes=4)
    with record_attention(block) as maps:
        assert block(torch.randn(1, 8, 3, 5)).shape == (1, 8, 3, 5)
    assert list(maps) == ["attention"] and maps["attention"]["weights"].shape == (1, 2, 9, 3, 5)


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_gradcheck(sa_type):
    layer = randomize(make(sa_type, C=4, rel=2, mid=4, share=2)).double()
    x = torch.randn(1, 4, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("C, K", [(64, 3), (256, 7)])
@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_parameter_counts_match_spec(sa_type, C, K):
    rel, mid = C // 16, C // 4
    cw = mid // 8
    block = SelfAttentionBottleneck(C, rel, mid, C, sa_type, kernel_size=K)
    common = 2 * C + 2 * (C * rel + rel) + (C * mid + mid) + 2 * mid + (mid * C + C)
    if sa_type == "pairwise":
        extra = 2 * (rel + 2) + (rel + 2) * rel + 2 * rel + (rel * cw + cw) + 6
    else:
        extra = 2 * rel * (K * K + 1) + rel * (K * K + 1) * cw + 2 * cw + (cw * K * K * cw + K * K * cw)
    assert sum(p.numel() for p in block.parameters()) == common + extra


# ---------------------------------------------------------------- official state dicts


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_load_official_sam_and_bottleneck(sa_type):
    sam, add_bn = official_sam_dict(sa_type, 8, 2, 8, 4, 3)
    layer = make(sa_type)
    layer.load_official_state_dict(
        {"module.layer1.0.sam." + k: v for k, v in sam.items()}, prefix="layer1.0.sam."
    )
    x = torch.randn(2, 8, 4, 5)
    torch.testing.assert_close(layer.eval()(x), sam_ref(sam, x, sa_type, 3))
    assert {k: v.equal(sam[k]) for k, v in layer.official_state_dict().items()} == dict.fromkeys(sam, True)

    block_sd = {"sam." + k: v for k, v in sam.items()}
    sam.clear()
    add_bn("bn1", 8)
    add_bn("bn2", 8)
    sam["conv.weight"], sam["conv.bias"] = torch.randn(8, 8, 1, 1), torch.randn(8)
    block_sd.update(sam)
    block = SelfAttentionBottleneck(8, 2, 8, 8, sa_type, kernel_size=3, share_planes=4)
    other = {"module.layer2.0.conv.weight": torch.zeros(1)}  # outside the prefix: ignored
    block.load_official_state_dict(
        {"module.layer1.0." + k: v for k, v in block_sd.items()} | other, prefix="layer1.0."
    )
    torch.testing.assert_close(block.eval()(x), block_ref(block_sd, x, sa_type, 3))
    again = SelfAttentionBottleneck(8, 2, 8, 8, sa_type, kernel_size=3, share_planes=4)
    again.load_official_state_dict(block.official_state_dict(prefix="module.layer1.0."), prefix="layer1.0.")
    torch.testing.assert_close(again.eval()(x), block(x))

    with pytest.raises(KeyError, match="missing"):
        block.load_official_state_dict({k: v for k, v in block_sd.items() if k != "sam.conv1.weight"})
    with pytest.raises(KeyError, match="unexpected"):
        block.load_official_state_dict(block_sd | {"sam.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        block.load_official_state_dict(block_sd | {"sam.conv3.weight": torch.zeros(4, 8, 1, 1)})


def test_non_official_configurations_have_no_layout():
    for layer in (
        make("pairwise", relation="dot"),
        make("pairwise", position_encoding=False),
        make("patchwise", relation="star"),
    ):
        with pytest.raises(ValueError, match="official"):
            layer.official_state_dict()
    block = SelfAttentionBottleneck(8, 2, 8, 8, "patchwise", kernel_size=3, share_planes=4, relation="clique")
    with pytest.raises(ValueError, match="official"):
        block.load_official_state_dict({})


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(relation="cosine"), "relation must be one of"),
        (dict(mid=6, share=4), "divisible by share_planes"),
        (dict(K=4), "odd"),
        (dict(padding_mode="circular"), "padding_mode"),
    ],
)
@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_bad_arguments(sa_type, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(sa_type, **kwargs)


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_reflect_padding_larger_than_input(sa_type):
    layer = make(sa_type, K=7)
    with pytest.raises(ValueError, match=r"reflect.*pads 3 pixels.*got 3x8"):
        layer(torch.randn(1, 8, 3, 8))
    assert make(sa_type, K=7, padding_mode="zeros")(torch.randn(1, 8, 3, 8)).shape == (1, 8, 3, 8)


def test_bottleneck_arguments():
    with pytest.raises(ValueError, match="identity shortcut"):
        SelfAttentionBottleneck(8, 2, 8, 16, kernel_size=3, share_planes=4)
    with pytest.raises(ValueError, match="sa_type"):
        SelfAttentionBottleneck(8, 2, 8, 8, "axial", kernel_size=3, share_planes=4)
    with pytest.raises(ValueError, match="position encoding"):
        SelfAttentionBottleneck(
            8, 2, 8, 8, "patchwise", kernel_size=3, share_planes=4, position_encoding=True
        )
