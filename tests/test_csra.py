"""Tests for visattn.layers.csra (spec: /work/shared/specs/csra.md)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from visattn import record_attention
from visattn.layers.csra import CSRA, CSRA_TEMPERATURES, MultiHeadCSRA, residual_attention_logits

INF = math.inf


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tensors are tiny; intra-op threads only add synchronisation cost (badly so on a busy CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fixture_input() -> torch.Tensor:
    """Spec §3.1: positions x_1=(1,0), x_2=(0,1), x_3=(1,1) as a (1, 2, 1, 3) map."""
    return torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64).view(1, 2, 1, 3)


def set_weight(module: CSRA, weight) -> CSRA:
    with torch.no_grad():
        module.head.weight.copy_(
            torch.as_tensor(weight, dtype=module.head.weight.dtype).view_as(module.head.weight)
        )
    return module


def fixture_head(temperature: float, lam: float = 0.1, **kw) -> CSRA:
    return set_weight(CSRA(2, 1, temperature, lam, **kw).double(), [3.0, 4.0])


def reference_feature_space(x, weight, temperature, lam, normalize=True):
    """The paper's feature-space form (spec §2), independent of the score-space implementation."""
    m = weight.flatten(1)  # (C, d)
    if normalize:
        m = m / m.norm(dim=1, keepdim=True)
    feats = x.flatten(2)  # (B, d, N)
    g = feats.mean(dim=2)  # (B, d)
    s = torch.einsum("cd,bdn->bcn", m, feats)
    att = (
        torch.nn.functional.one_hot(s.argmax(2), s.shape[2]).to(s)
        if temperature == INF
        else (s * temperature).softmax(2)
    )
    a = torch.einsum("bcn,bdn->bcd", att, feats)
    f = g[:, None, :] + lam * a
    return (f * m).sum(dim=2)


# ---------------------------------------------------------------------------------------------- maths


@pytest.mark.parametrize(
    ("temperature", "att", "logit"),
    [(1.0, 1.055304, 1.038864), (2.0, 1.172313, 1.050565), (4.0, 1.323074, 1.065641), (INF, 1.4, 1.073333)],
)
def test_worked_fixture(temperature, att, logit):
    head = fixture_head(temperature)
    x = fixture_input()
    assert head(x).item() == pytest.approx(logit, abs=1e-6)
    assert head.score_map(x).flatten().tolist() == pytest.approx([0.6, 0.8, 1.4], abs=1e-12)
    # lam = 1 isolates mean + att, so the attention term itself is checked too.
    assert fixture_head(temperature, lam=1.0)(x).item() - 0.933333 == pytest.approx(att, abs=2e-6)


def test_worked_fixture_softmax_weights():
    head = fixture_head(1.0)
    with record_attention(head) as maps:
        head(fixture_input())
    assert maps[""]["attention"].flatten().tolist() == pytest.approx([0.224874, 0.274661, 0.500465], abs=1e-6)


def test_four_heads_fixture_sum():
    mh = MultiHeadCSRA(2, 1, num_heads=4, lam=0.1).double()
    assert mh.temperatures == (1.0, 2.0, 4.0, INF)
    for head in mh.heads:
        set_weight(head, [3.0, 4.0])
    assert mh(fixture_input()).item() == pytest.approx(4.228403, abs=1e-6)


def test_limits_in_temperature():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    head = CSRA(5, 3, 1.0, lam=0.3).double()
    mean = head.score_map(x).flatten(2).mean(2)
    head.temperature = 1e-9
    torch.testing.assert_close(head(x), 1.3 * mean)
    head.temperature = INF
    at_inf = head(x)
    head.temperature = 1e5
    torch.testing.assert_close(head(x), at_inf)
    head.temperature = 99.0  # not a sentinel: an ordinary softmax temperature
    assert not torch.allclose(head(x), at_inf, atol=1e-6)
    torch.testing.assert_close(head(x), reference_feature_space(x, head.head.weight, 99.0, 0.3))


def test_lam_zero_is_mean_pooled_score():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    for temperature in (1.0, INF):
        head = CSRA(4, 6, temperature, lam=0.0).double()
        torch.testing.assert_close(head(x), head.score_map(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("temperature", [0.5, 3.0, INF])
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_feature_space_reference(temperature, normalize):
    torch.manual_seed(2)
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    head = CSRA(6, 4, temperature, lam=0.4, normalize=normalize).double()
    torch.testing.assert_close(
        head(x), reference_feature_space(x, head.head.weight, temperature, 0.4, normalize)
    )


def test_multi_head_is_sum_of_single_heads():
    torch.manual_seed(3)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    mh = MultiHeadCSRA(5, 3, num_heads=6, lam=0.5).double()
    assert mh.temperatures == CSRA_TEMPERATURES[6]
    expected = 0
    for head, temperature in zip(mh.heads, CSRA_TEMPERATURES[6], strict=True):
        single = set_weight(CSRA(5, 3, temperature, 0.5).double(), head.head.weight)
        expected = expected + single(x)
    torch.testing.assert_close(mh(x), expected)


def test_normalize_invariance_to_positive_class_scaling():
    torch.manual_seed(4)
    x = torch.randn(2, 5, 3, 3)
    scale = torch.tensor([0.5, 3.0, 10.0]).view(3, 1, 1, 1)
    for temperature in (2.0, INF):
        head = CSRA(5, 3, temperature)
        scaled = set_weight(CSRA(5, 3, temperature), head.head.weight * scale)
        torch.testing.assert_close(head(x), scaled(x))
        raw, raw_scaled = (
            set_weight(CSRA(5, 3, temperature, normalize=False), m.head.weight) for m in (head, scaled)
        )
        assert not torch.allclose(raw(x), raw_scaled(x))


def test_gradients_reach_weight_through_norm_and_input():
    torch.manual_seed(5)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    head = CSRA(4, 3, 1.0)
    head(x).sum().backward()
    grad = head.head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    # With normalisation the output is scale-invariant per class, so the gradient is orthogonal to W_c.
    radial = (grad.flatten(1) * head.head.weight.flatten(1)).sum(1)
    torch.testing.assert_close(radial, torch.zeros(3), atol=1e-5, rtol=0)
    # A detached norm (not what the official code does) would leave a radial component.
    w = head.head.weight.detach().clone().requires_grad_(True)
    norm = w.flatten(1).norm(dim=1).detach().view(1, -1, 1, 1)
    flat = (torch.nn.functional.conv2d(x.detach(), w) / norm).flatten(2)
    (flat.mean(2) + 0.1 * (flat.softmax(2) * flat).sum(2)).sum().backward()
    assert (w.grad.flatten(1) * w.flatten(1)).sum(1).abs().min() > 1e-3


def test_max_gradient_goes_to_one_position():
    x = torch.zeros(1, 2, 1, 3, requires_grad=True)  # all scores tie
    head = set_weight(CSRA(2, 1, INF, lam=1.0), [3.0, 4.0])
    head(x).sum().backward()
    per_position = x.grad[0, :, 0, :].norm(dim=0)  # |m̂| = 1: 1/3 from the mean, +1 where the max is
    torch.testing.assert_close(per_position.sort().values, torch.tensor([1 / 3, 1 / 3, 4 / 3]))


# ------------------------------------------------------------------------------------------ "4 lines"


def test_four_lines_fixture():
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    b = torch.tensor([0.5], dtype=torch.float64)
    x = fixture_input()
    assert residual_attention_logits(x, w, b).item() == pytest.approx(6.666667, abs=1e-6)
    assert residual_attention_logits(x, w.view(1, 2, 1, 1), b, lam=0.0).item() == pytest.approx(
        5.166667, abs=1e-6
    )
    assert residual_attention_logits(x, w, None, lam=1.0).item() == pytest.approx(4.666667 + 7.0, abs=1e-6)


def test_four_lines_lam_zero_reproduces_gap_linear():
    torch.manual_seed(6)
    fc = nn.Linear(16, 7)
    x = torch.randn(3, 16, 5, 6)
    torch.testing.assert_close(
        residual_attention_logits(x, fc.weight, fc.bias, lam=0.0), fc(x.mean(dim=(2, 3)))
    )


def test_four_lines_bad_shapes():
    x = torch.randn(1, 4, 2, 2)
    with pytest.raises(ValueError, match="weight must be"):
        residual_attention_logits(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="bias must"):
        residual_attention_logits(x, torch.randn(3, 4), torch.randn(4))
    with pytest.raises(ValueError, match="feature_map"):
        residual_attention_logits(x[0], torch.randn(3, 4))


# -------------------------------------------------------------------------------- official checkpoints


def _full_kevinz_dict(mh: MultiHeadCSRA) -> dict[str, torch.Tensor]:
    sd = {
        "conv1.weight": torch.randn(4, 3, 7, 7),
        "bn1.running_mean": torch.zeros(4),
        "layer4.2.bn3.weight": torch.ones(8),
    }
    sd.update(mh.official_state_dict())
    return sd


@pytest.mark.parametrize("variant", ["heads", "module", "full", "full_module", "relative"])
def test_load_official_kevinz_round_trip(variant):
    torch.manual_seed(7)
    src, dst = MultiHeadCSRA(8, 5, num_heads=4), MultiHeadCSRA(8, 5, num_heads=4)
    sd = src.official_state_dict()
    assert sorted(sd) == [f"classifier.multi_head.{h}.head.weight" for h in range(4)]
    assert sd["classifier.multi_head.0.head.weight"].shape == (5, 8, 1, 1)
    if variant.startswith("full"):
        sd = _full_kevinz_dict(src)
    if variant.endswith("module"):
        sd = {f"module.{k}": v for k, v in sd.items()}
    if variant == "relative":
        sd = {k.removeprefix("classifier."): v for k, v in sd.items()}
    dst.load_official_state_dict(sd)
    x = torch.randn(2, 8, 3, 4)
    torch.testing.assert_close(dst(x), src(x))


@pytest.mark.parametrize("wrapped", [False, True])
def test_load_official_mmpretrain(wrapped):
    torch.manual_seed(8)
    src, dst = MultiHeadCSRA(8, 5, num_heads=2), MultiHeadCSRA(8, 5, num_heads=2)
    sd = {"backbone.conv1.weight": torch.randn(4, 3, 7, 7)}
    sd.update(
        {f"head.csra_heads.{h}.head.weight": src.heads[h].head.weight.detach().clone() for h in range(2)}
    )
    dst.load_official_state_dict({"state_dict": sd, "meta": {}} if wrapped else sd)
    x = torch.randn(1, 8, 2, 3)
    torch.testing.assert_close(dst(x), src(x))


def test_load_official_errors():
    sd = MultiHeadCSRA(8, 5, num_heads=2).official_state_dict()
    with pytest.raises(ValueError, match="has 2 CSRA heads, but this MultiHeadCSRA has 4"):
        MultiHeadCSRA(8, 5, num_heads=4).load_official_state_dict(sd)
    with pytest.raises(ValueError, match=r"expects \(6, 8, 1, 1\)"):
        MultiHeadCSRA(8, 6, num_heads=2).load_official_state_dict(sd)
    with pytest.raises(KeyError, match="no CSRA head weights"):
        MultiHeadCSRA(8, 5).load_official_state_dict({"conv1.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="unexpected"):
        MultiHeadCSRA(8, 5, num_heads=2).load_official_state_dict(
            {**sd, "classifier.multi_head.0.head.bias": torch.zeros(5)}
        )


# ------------------------------------------------------------------------------------ shapes, dtypes


@pytest.mark.parametrize("shape", [(1, 6, 7, 7), (2, 6, 3, 5), (3, 6, 1, 1), (2, 6, 5, 2)])
def test_shapes(shape):
    mh = MultiHeadCSRA(6, 4, num_heads=2)
    assert mh(torch.randn(shape)).shape == (shape[0], 4)


def test_dtype_follows_input_and_input_untouched():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    before = x.clone()
    for module in (MultiHeadCSRA(3, 2, num_heads=8).double(), CSRA(3, 2, INF).double()):
        assert module(x).dtype == torch.float64
    assert residual_attention_logits(x, torch.randn(2, 3, dtype=torch.float64)).dtype == torch.float64
    assert torch.equal(x, before)


def test_parameter_count_and_registration():
    mh = MultiHeadCSRA(10, 7, num_heads=4)
    assert sum(p.numel() for p in mh.parameters()) == 7 * 10 * 4
    assert [n for n, _ in mh.named_parameters()] == [f"heads.{h}.head.weight" for h in range(4)]
    assert len(mh.state_dict()) == 4  # no buffers


def test_any_head_count_via_temperatures():
    mh = MultiHeadCSRA(4, 3, temperatures=[0.5, 1.5, INF])
    assert mh.num_heads == 3 and mh.temperatures == (0.5, 1.5, INF)
    assert MultiHeadCSRA(4, 3, num_heads=3, temperatures=[1, 2, 3]).num_heads == 3
    assert MultiHeadCSRA(4, 3).temperatures == (1.0,)


@pytest.mark.parametrize("temperature", [1.7, INF])
def test_gradcheck_csra(temperature):
    torch.manual_seed(9)
    head = CSRA(3, 2, temperature, lam=0.3).double()
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = head.head.weight.detach().clone().requires_grad_(True)

    def fn(inp, weight):
        return torch.func.functional_call(head, {"head.weight": weight}, (inp,))

    assert torch.autograd.gradcheck(fn, (x, w))


def test_gradcheck_residual_attention_logits():
    torch.manual_seed(10)
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: residual_attention_logits(*a, lam=0.2), (x, w, b))


# --------------------------------------------------------------------------------------- recording


@pytest.mark.parametrize("num_heads", [2, 4])
def test_record_attention(num_heads):
    model = nn.Sequential()
    model.add_module("head", MultiHeadCSRA(6, 3, num_heads=num_heads))
    x = torch.randn(2, 6, 3, 5)
    with record_attention(model) as maps:
        out = model(x)
    assert sorted(maps) == [f"head.heads.{h}" for h in range(num_heads)]
    for h, temperature in enumerate(model.head.temperatures):
        rec = maps[f"head.heads.{h}"]
        assert set(rec) == {"score", "attention"}
        assert rec["score"].shape == rec["attention"].shape == (2, 3, 3, 5)
        torch.testing.assert_close(rec["attention"].sum(dim=(2, 3)), torch.ones(2, 3))
        assert not rec["score"].requires_grad
        if temperature == INF:
            assert set(rec["attention"].unique().tolist()) == {0.0, 1.0}
            flat = rec["score"].flatten(2)
            assert torch.equal(rec["attention"].flatten(2).argmax(2), flat.argmax(2))
    torch.testing.assert_close(model(x), out)
    assert all(h._attention_store is None for h in model.head.heads)


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("num_heads", [3, 5, 0])
def test_bad_num_heads(num_heads):
    match = "allowed values are" if num_heads else "positive int"
    with pytest.raises(ValueError, match=match) as info:
        MultiHeadCSRA(4, 3, num_heads=num_heads)
    if num_heads:
        assert "temperatures=" in str(info.value) and "[1, 2, 4, 6, 8]" in str(info.value)


def test_bad_temperatures_and_lam():
    for temperature in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            CSRA(4, 3, temperature)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        MultiHeadCSRA(4, 3, temperatures=[1.0, 0.0])
    with pytest.raises(ValueError, match="does not match the 2 temperatures"):
        MultiHeadCSRA(4, 3, num_heads=4, temperatures=[1.0, INF])
    with pytest.raises(ValueError, match="empty"):
        MultiHeadCSRA(4, 3, temperatures=[])
    with pytest.raises(ValueError, match="lam must be"):
        CSRA(4, 3, lam=-0.1)
