"""Properties every visattn layer must have, checked uniformly across all layers.

Layer-specific maths lives in each layer's own test file; here: dtype/device follow the input (which
also proves no tensor is left unregistered), inputs are never modified, batch 1 and odd non-square
sizes work, every layer publishes its maps under record_attention, and each layer survives
torch.fx tracing and torch.compile with outputs equal to eager.
"""

import math

import pytest
import torch
from torch import nn

from visattn import record_attention
from visattn.layers import (
    CSRA,
    AttentionAggregation,
    AttentionModule,
    ChannelOnlyAttention,
    MultiHeadCSRA,
    PairwiseSelfAttention,
    PatchwiseSelfAttention,
    PolarizedSelfAttention,
    SelfAttentionBottleneck,
    SpatialOnlyAttention,
)

# name -> (factory, input channels, expected recorded kinds)
LAYERS = {
    "csra": (lambda: CSRA(8, 5, temperature=2.0), 8, {"score", "attention"}),
    "csra_max": (lambda: CSRA(8, 5, temperature=math.inf), 8, {"score", "attention"}),
    "mhcsra4": (lambda: MultiHeadCSRA(8, 5, num_heads=4, lam=0.5), 8, {"score", "attention"}),
    "psa_paper_par": (lambda: PolarizedSelfAttention(8), 8, {"channel", "spatial"}),
    "psa_paper_seq": (lambda: PolarizedSelfAttention(8, layout="sequential"), 8, {"channel", "spatial"}),
    "psa_off_par": (lambda: PolarizedSelfAttention(8, variant="official"), 8, {"channel", "spatial"}),
    "psa_off_seq": (
        lambda: PolarizedSelfAttention(8, layout="sequential", variant="official"),
        8,
        {"channel", "spatial"},
    ),
    "channel_only": (lambda: ChannelOnlyAttention(8), 8, {"channel"}),
    "spatial_only": (lambda: SpatialOnlyAttention(8), 8, {"spatial"}),
    "san_pair": (lambda: PairwiseSelfAttention(8, 2, 8, kernel_size=3, share_planes=4), 8, {"weights"}),
    "san_pair_dot": (
        lambda: PairwiseSelfAttention(8, 2, 8, kernel_size=3, share_planes=4, relation="dot"),
        8,
        {"weights"},
    ),
    "san_patch": (lambda: PatchwiseSelfAttention(8, 2, 8, kernel_size=3, share_planes=4), 8, {"weights"}),
    "san_patch_star": (
        lambda: PatchwiseSelfAttention(8, 2, 8, kernel_size=3, share_planes=4, relation="star"),
        8,
        {"weights"},
    ),
    "san_block": (
        lambda: SelfAttentionBottleneck(16, 2, 8, 16, kernel_size=3, share_planes=4),
        16,
        {"weights"},
    ),
    "ran_mixed": (lambda: AttentionModule(8, num_pools=2), 8, {"mask"}),
    "ran_spatial_naive": (
        lambda: AttentionModule(8, num_pools=1, mask_activation="spatial", learning="naive"),
        8,
        {"mask"},
    ),
    "vaa_paper": (
        lambda: AttentionAggregation(8, 5, att_channels=(6, 6), sr_channels=(4, 6, 6), feature_size=(5, 7)),
        8,
        {"mask", "confidence"},
    ),
    "vaa_released": (
        lambda: AttentionAggregation(
            8, 5, layout="released", att_channels=(6, 6), sr_channels=(4, 6, 6), feature_size=(5, 7)
        ),
        8,
        {"mask", "confidence"},
    ),
}


def build(name: str, dtype=torch.float32) -> tuple[nn.Module, torch.Tensor]:
    factory, channels, _ = LAYERS[name]
    torch.manual_seed(0)
    layer = factory().to(dtype).eval()
    x = torch.randn(1, channels, 5, 7, dtype=dtype)  # batch 1, odd, non-square
    return layer, x


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_dtype_follows_input_and_input_untouched(name):
    layer, x = build(name, torch.float64)
    before = x.clone()
    y = layer(x)
    assert y.dtype == torch.float64 and torch.isfinite(y).all()
    assert torch.equal(x, before)
    if name.startswith(("psa", "channel", "spatial", "san_block", "ran")):
        assert y.shape == x.shape
    # Training mode too (BN batch statistics with batch 2), and gradients reach every parameter.
    layer.train()
    layer(torch.randn(2, *x.shape[1:], dtype=torch.float64)).square().mean().backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_record_attention_publishes_documented_kinds(name):
    layer, x = build(name)
    with record_attention(layer) as maps:
        layer(x)
    assert maps, "layer recorded nothing"
    kinds = set().union(*(store.keys() for store in maps.values()))
    assert kinds == LAYERS[name][2]
    for store in maps.values():
        for tensor in store.values():
            assert tensor.shape[0] == 1 and torch.isfinite(tensor).all()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fx_trace_matches_eager(name):
    layer, x = build(name)
    traced = torch.fx.symbolic_trace(layer)
    torch.testing.assert_close(traced(x), layer(x))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_compile_matches_eager(name):
    # aot_eager runs dynamo + AOTAutograd (the graph capture that fails on unsupported Python)
    # without inductor's C++ code generation, which would cost minutes across all layers.
    layer, x = build(name)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["psa_paper_par", "csra", "san_pair"])
def test_inductor_compile_matches_eager(name):
    layer, x = build(name)
    torch._dynamo.reset()
    compiled = torch.compile(layer, dynamic=False)
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-5)
