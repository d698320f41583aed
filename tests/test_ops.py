"""SAN local operators: exact semantics against explicit loops, gradients, validation."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visattn.ops import (
    available_implementations,
    local_aggregation,
    local_subtraction,
    local_subtraction2,
    register_implementation,
)
from visattn.ops import local_attention as la


def _read(x, b, c, h, w, mode):
    """x̃[b, c, h, w] with SAN's padding semantics (reflect without edge repeat, or zeros)."""
    H, W = x.shape[-2:]
    if mode == "reflect":
        h = -h if h < 0 else (2 * (H - 1) - h if h >= H else h)
        w = -w if w < 0 else (2 * (W - 1) - w if w >= W else w)
        return x[b, c, h, w].item()
    if 0 <= h < H and 0 <= w < W:
        return x[b, c, h, w].item()
    return 0.0


def _geometry(H, W, k, s, d, p):
    Ho = (H + 2 * p - (d * (k - 1) + 1)) // s + 1
    Wo = (W + 2 * p - (d * (k - 1) + 1)) // s + 1
    return Ho, Wo


def loop_subtraction2(x1, x2, k, s, d, p, mode):
    B, C, H, W = x1.shape
    Ho, Wo = _geometry(H, W, k, s, d, p)
    out = torch.zeros(B, C, k * k, Ho * Wo, dtype=x1.dtype)
    for b, c, h, w in itertools.product(range(B), range(C), range(Ho), range(Wo)):
        ch, cw = -p + h * s + (k - 1) // 2 * d, -p + w * s + (k - 1) // 2 * d
        centre = _read(x1, b, c, ch, cw, mode)
        for kh, kw in itertools.product(range(k), range(k)):
            nb = _read(x2, b, c, -p + h * s + kh * d, -p + w * s + kw * d, mode)
            out[b, c, kh * k + kw, h * Wo + w] = centre - nb
    return out


def loop_aggregation(x, wt, k, s, d, p, mode):
    B, C, H, W = x.shape
    Cw = wt.shape[1]
    Ho, Wo = _geometry(H, W, k, s, d, p)
    out = torch.zeros(B, C, Ho, Wo, dtype=x.dtype)
    for b, c, h, w in itertools.product(range(B), range(C), range(Ho), range(Wo)):
        acc = 0.0
        for kh, kw in itertools.product(range(k), range(k)):
            nb = _read(x, b, c, -p + h * s + kh * d, -p + w * s + kw * d, mode)
            acc += wt[b, c % Cw, kh * k + kw, h * Wo + w].item() * nb
        out[b, c, h, w] = acc
    return out


# (kernel, stride, dilation, H, W): includes the official kernel test case K=5, s=4, d=2 on 9×9.
CASES = [(3, 1, 1, 5, 6), (5, 4, 2, 9, 9), (3, 2, 1, 7, 5), (3, 1, 2, 6, 7), (1, 1, 1, 3, 4)]


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("k,s,d,H,W", CASES)
def test_ops_match_explicit_loops(mode, k, s, d, H, W):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 4, H, W, dtype=torch.float64, generator=g)
    x2 = torch.randn(2, 4, H, W, dtype=torch.float64, generator=g)
    p = (d * (k - 1) + 1) // 2
    Ho, Wo = _geometry(H, W, k, s, d, p)
    wt = torch.randn(2, 2, k * k, Ho * Wo, dtype=torch.float64, generator=g)
    kw = dict(kernel_size=k, stride=s, dilation=d, padding_mode=mode)
    torch.testing.assert_close(local_subtraction2(x1, x2, **kw), loop_subtraction2(x1, x2, k, s, d, p, mode))
    torch.testing.assert_close(local_subtraction(x1, **kw), loop_subtraction2(x1, x1, k, s, d, p, mode))
    torch.testing.assert_close(local_aggregation(x1, wt, **kw), loop_aggregation(x1, wt, k, s, d, p, mode))


def test_explicit_padding_and_rectangular_kernel():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    # Padding other than the default: the centre stays the footprint middle (official forward kernel).
    out = local_subtraction(x, 3, padding=0, padding_mode="zeros")
    assert out.shape == (1, 2, 9, 4 * 5)
    torch.testing.assert_close(out, loop_subtraction2(x, x, 3, 1, 1, 0, "zeros"))
    agg = local_aggregation(
        x, torch.ones(1, 1, 3 * 5, 6 * 7, dtype=torch.float64), (3, 5), padding_mode="zeros"
    )
    box = torch.nn.functional.conv2d(x, torch.ones(2, 1, 3, 5, dtype=torch.float64), padding=(1, 2), groups=2)
    torch.testing.assert_close(agg, box)


def test_zero_padding_subtraction_returns_centre_out_of_range():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    y = local_subtraction(x, 3, padding_mode="zeros")
    # Output position (0, 0); footprint tap (0, 0) lies outside the image: x_centre − 0.
    assert y[0, 0, 0, 0] == x[0, 0, 0, 0]
    # Centre tap is always zero.
    assert torch.all(y[:, :, 4] == 0)


def test_interleaved_sharing():
    x = torch.randn(1, 6, 5, 5)
    w = torch.zeros(1, 3, 9, 25)
    w[:, 1] = torch.rand(9, 25)
    y = local_aggregation(x, w, 3)
    touched = (y.abs().sum(dim=(0, 2, 3)) > 0).nonzero().flatten().tolist()
    assert touched == [1, 4]  # channels ≡ 1 (mod Cw = 3), not the contiguous block [2, 3]


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_gradcheck(mode):
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(1, 4, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    x2 = torch.randn(1, 4, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(1, 2, 9, 9, dtype=torch.float64, generator=g, requires_grad=True)
    kw = dict(kernel_size=3, stride=2, dilation=1, padding_mode=mode)
    assert torch.autograd.gradcheck(lambda a: local_subtraction(a, **kw), (x1,))
    assert torch.autograd.gradcheck(lambda a, b: local_subtraction2(a, b, **kw), (x1, x2))
    assert torch.autograd.gradcheck(lambda a, b: local_aggregation(a, b, **kw), (x1, w))


@settings(max_examples=25, deadline=None)
@given(
    k=st.sampled_from([1, 3, 5]),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    H=st.integers(5, 9),
    W=st.integers(5, 9),
    mode=st.sampled_from(["reflect", "zeros"]),
)
def test_aggregation_random_geometry(k, s, d, H, W, mode):
    p = (d * (k - 1) + 1) // 2
    if mode == "reflect" and p >= min(H, W):
        return
    x = torch.randn(1, 4, H, W, dtype=torch.float64)
    Ho, Wo = _geometry(H, W, k, s, d, p)
    w = torch.randn(1, 2, k * k, Ho * Wo, dtype=torch.float64)
    got = local_aggregation(x, w, k, s, d, padding_mode=mode)
    torch.testing.assert_close(got, loop_aggregation(x, w, k, s, d, p, mode))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_follows_input_and_no_in_place(dtype):
    x = torch.randn(2, 4, 6, 6).to(dtype)
    w = torch.randn(2, 2, 9, 36).to(dtype)
    before = x.clone()
    assert local_subtraction(x, 3).dtype == dtype
    assert local_aggregation(x, w, 3).dtype == dtype
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: local_subtraction(torch.randn(1, 1, 3, 3), 7), "reflect padding"),
        (lambda: local_subtraction(torch.randn(1, 1, 8, 8), 4), "odd"),
        (lambda: local_subtraction(torch.randn(1, 1, 8, 8), 3, padding_mode="circular"), "padding_mode"),
        (lambda: local_subtraction(torch.randn(1, 8, 8), 3), "4-D"),
        (lambda: local_subtraction2(torch.randn(1, 1, 8, 8), torch.randn(1, 2, 8, 8), 3), "same shape"),
        (lambda: local_aggregation(torch.randn(1, 6, 4, 4), torch.randn(1, 4, 9, 16), 3), "divisible"),
        (
            lambda: local_aggregation(torch.randn(1, 4, 4, 4), torch.randn(1, 2, 9, 15), 3),
            "weight must have shape",
        ),
        (lambda: local_subtraction(torch.randn(1, 1, 8, 8), 3, impl="nope"), "unknown implementation"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_registered_implementation_is_used_by_auto():
    calls = []

    def counting(x, g):
        calls.append(g)
        return la._reference_subtraction(x, g)

    register_implementation(
        "counting",
        subtraction=counting,
        subtraction2=la._reference_subtraction2,
        aggregation=la._reference_aggregation,
        supports=lambda x: x.dtype == torch.float64,
        priority=100,
    )
    try:
        assert available_implementations()[0] == "counting"
        local_subtraction(torch.randn(1, 1, 5, 5, dtype=torch.float64), 3)
        local_subtraction(torch.randn(1, 1, 5, 5), 3)  # float32: not supported -> falls back
        assert len(calls) == 1 and calls[0].kernel == (3, 3)
    finally:
        la._IMPLEMENTATIONS.pop("counting")
