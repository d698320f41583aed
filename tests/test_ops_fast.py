"""The memory-lean ``fast_cpu`` implementation of SAN's operators against the unfold reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from visattn.ops import (
    available_implementations,
    fast_cpu,
    local_aggregation,
    local_subtraction,
    local_subtraction2,
)
from visattn.ops import local_attention as la

FAST = dict(impl="fast_cpu")
REF = dict(impl="reference")


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Thousands of tiny ops (gradcheck): OpenMP barriers would dominate on a loaded machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _out_size(H, W, k, s, d, p):
    return (H + 2 * p - (d * (k - 1) + 1)) // s + 1, (W + 2 * p - (d * (k - 1) + 1)) // s + 1


def _inputs(B, C, Cw, H, W, k, s, d, p=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = (d * (k - 1) + 1) // 2 if p is None else p
    Ho, Wo = _out_size(H, W, k, s, d, p)
    x1 = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    x2 = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(B, Cw, k * k, Ho * Wo, generator=g, dtype=torch.float64).to(dtype)
    return x1, x2, w


def _values_and_grads(fn, inputs, seed=1):
    """Output of ``fn(*inputs)`` and the gradients of ``<out, r>`` for a fixed random ``r``."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    (out * r.to(out.dtype)).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def _compare(kw, inputs_sub, inputs_agg, atol=1e-12, rtol=1e-12):
    ops = [
        (lambda a, **o: local_subtraction(a, **kw, **o), inputs_sub[:1]),
        (lambda a, b, **o: local_subtraction2(a, b, **kw, **o), inputs_sub),
        (lambda a, b, **o: local_aggregation(a, b, **kw, **o), inputs_agg),
    ]
    for fn, inputs in ops:
        got, got_grads = _values_and_grads(lambda *t, fn=fn: fn(*t, **FAST), inputs)
        want, want_grads = _values_and_grads(lambda *t, fn=fn: fn(*t, **REF), inputs)
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol)
        for a, b in zip(got_grads, want_grads, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def test_auto_selects_fast_cpu_for_cpu_floats():
    # "triton" (GPU, or CPU under its interpreter) ranks above; it declines CPU tensors: test_ops_triton.py
    assert [n for n in available_implementations() if n != "triton"][0] == "fast_cpu"
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        assert la._pick("auto", torch.zeros(1, dtype=dtype)).name == "fast_cpu"
    assert la._pick("auto", torch.zeros(1, dtype=torch.int64)).name == "reference"
    assert la._pick("auto", torch.zeros(1, device="meta")).name == "reference"


# (kernel, stride, dilation, H, W): includes the official kernel test case K=5, s=4, d=2 on 9×9.
CASES = [(3, 1, 1, 5, 6), (5, 4, 2, 9, 9), (3, 2, 1, 7, 5), (3, 1, 2, 6, 7), (1, 1, 1, 3, 4), (7, 1, 1, 8, 9)]


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("k,s,d,H,W", CASES)
def test_equals_reference_float64(mode, k, s, d, H, W):
    x1, x2, w = _inputs(2, 6, 3, H, W, k, s, d)
    kw = dict(kernel_size=k, stride=s, dilation=d, padding_mode=mode)
    _compare(kw, (x1, x2), (x1, w))


@settings(max_examples=30, deadline=None)
@given(
    k=st.sampled_from([1, 3, 5, 7]),
    s=st.integers(1, 4),
    d=st.integers(1, 3),
    H=st.integers(4, 12),
    W=st.integers(4, 12),
    mode=st.sampled_from(["reflect", "zeros"]),
    groups=st.sampled_from([(4, 4), (4, 2), (6, 1), (4, 1)]),
    pad_delta=st.sampled_from([None, -1, 1]),
)
def test_random_geometry_equals_reference(k, s, d, H, W, mode, groups, pad_delta):
    p = (d * (k - 1) + 1) // 2
    if pad_delta is not None:
        p = max(0, p + pad_delta)
    Ho, Wo = _out_size(H, W, k, s, d, p)
    if (mode == "reflect" and p >= min(H, W)) or min(Ho, Wo) < 1:
        return
    C, Cw = groups
    x1, x2, w = _inputs(2, C, Cw, H, W, k, s, d, p=p)
    kw = dict(kernel_size=k, stride=s, dilation=d, padding=p, padding_mode=mode)
    _compare(kw, (x1, x2), (x1, w))


def test_rectangular_kernel_stride_and_padding():
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(2, 4, 9, 8, dtype=torch.float64, generator=g)
    x2 = torch.randn(2, 4, 9, 8, dtype=torch.float64, generator=g)
    for mode in ("reflect", "zeros"):
        kw = dict(kernel_size=(3, 5), stride=(2, 1), dilation=(1, 2), padding=(1, 3), padding_mode=mode)
        Ho, Wo = (9 + 2 - 3) // 2 + 1, (8 + 6 - 9) // 1 + 1
        w = torch.randn(2, 2, 15, Ho * Wo, dtype=torch.float64, generator=g)
        _compare(kw, (x1, x2), (x1, w))


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("k,s,d,H,W", [(3, 2, 1, 6, 5), (5, 4, 2, 9, 9), (3, 1, 2, 5, 6), (3, 1, 1, 4, 5)])
def test_gradcheck_float64(mode, k, s, d, H, W):
    x1, x2, w = _inputs(1, 2, 1, H, W, k, s, d, seed=5)
    x1, x2, w = (t.requires_grad_() for t in (x1, x2, w))
    kw = dict(kernel_size=k, stride=s, dilation=d, padding_mode=mode, **FAST)
    check = dict(fast_mode=H * W > 40)  # full Jacobians for the smallest case, projections otherwise
    assert torch.autograd.gradcheck(lambda a: local_subtraction(a, **kw), (x1,), **check)
    assert torch.autograd.gradcheck(lambda a, b: local_subtraction2(a, b, **kw), (x1, x2), **check)
    assert torch.autograd.gradcheck(lambda a, b: local_aggregation(a, b, **kw), (x1, w), **check)


def test_gradgradcheck_float64():
    """The backward passes are made of differentiable PyTorch ops, so double backward works too."""
    x1, x2, w = _inputs(1, 2, 1, 5, 5, 3, 1, 1, seed=6)
    x1, x2, w = (t.requires_grad_() for t in (x1, x2, w))
    kw = dict(kernel_size=3, padding_mode="reflect", **FAST)
    assert torch.autograd.gradgradcheck(lambda a, b: local_aggregation(a, b, **kw), (x1, w))
    assert torch.autograd.gradgradcheck(lambda a, b: local_subtraction2(a, b, **kw), (x1, x2))


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)], ids=str
)
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_low_precision_close_to_float64(dtype, tol, mode):
    """Half precision accumulates in float32: at least as close to the float64 result as the reference."""
    x1, x2, w = _inputs(2, 8, 4, 9, 10, 5, 1, 1, dtype=dtype, seed=7)
    kw = dict(kernel_size=5, padding_mode=mode)
    for fn, inputs in (
        (lambda a, **o: local_subtraction(a, **kw, **o), (x1,)),
        (lambda a, b, **o: local_subtraction2(a, b, **kw, **o), (x1, x2)),
        (lambda a, b, **o: local_aggregation(a, b, **kw, **o), (x1, w)),
    ):
        exact, exact_grads = _values_and_grads(lambda *t, fn=fn: fn(*t, **REF), [t.double() for t in inputs])
        got, got_grads = _values_and_grads(lambda *t, fn=fn: fn(*t, **FAST), inputs)
        ref, ref_grads = _values_and_grads(lambda *t, fn=fn: fn(*t, **REF), inputs)
        assert got.dtype == dtype and all(g.dtype == dtype for g in got_grads)
        for a, r, e in zip([got, *got_grads], [ref, *ref_grads], [exact, *exact_grads], strict=True):
            scale = e.abs().max().item()
            err = (a.double() - e).abs().max().item()
            assert err <= tol * scale, (err, scale)
            assert err <= 1.01 * (r.double() - e).abs().max().item() + 1e-6 * scale


def test_memory_layouts_and_partial_gradients():
    x1, x2, w = _inputs(2, 8, 4, 7, 7, 3, 1, 1, dtype=torch.float32, seed=8)
    kw = dict(kernel_size=3, padding_mode="reflect")
    # channels_last input and a non-contiguous weight give the same values as the reference.
    xcl = x1.to(memory_format=torch.channels_last)
    wt = w.transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(
        local_aggregation(xcl, wt, **kw, **FAST), local_aggregation(x1, w, **kw, **REF), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(local_subtraction(xcl, **kw, **FAST), local_subtraction(x1, **kw, **REF))
    # Only one input requires a gradient.
    for needs in ((True, False), (False, True)):
        a = x1.clone().requires_grad_(needs[0])
        b = w.clone().requires_grad_(needs[1])
        local_aggregation(a, b, **kw, **FAST).sum().backward()
        ra = x1.clone().requires_grad_(needs[0])
        rb = w.clone().requires_grad_(needs[1])
        local_aggregation(ra, rb, **kw, **REF).sum().backward()
        for t, r in ((a, ra), (b, rb)):
            assert (t.grad is None) == (r.grad is None)
            if t.grad is not None:
                torch.testing.assert_close(t.grad, r.grad, atol=1e-5, rtol=1e-5)
        c = x2.clone().requires_grad_(needs[1])
        local_subtraction2(a, c, **kw, **FAST).sum().backward()
    # A non-contiguous incoming gradient.
    a = x1.clone().requires_grad_()
    out = local_subtraction(a, **kw, **FAST)
    grad = torch.randn(out.shape[::-1]).permute(3, 2, 1, 0)
    out.backward(grad)
    ra = x1.clone().requires_grad_()
    local_subtraction(ra, **kw, **REF).backward(grad)
    torch.testing.assert_close(a.grad, ra.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunk", [1, 100, 300])
def test_chunked_accumulation(monkeypatch, chunk, threads):
    """Batch and weight-channel chunks, with one or two intra-op threads."""
    monkeypatch.setattr(fast_cpu, "_CHUNK_ELEMENTS", chunk)
    x1, x2, w = _inputs(3, 12, 3, 6, 7, 3, 1, 1, seed=9)
    torch.set_num_threads(threads)
    try:
        _compare(dict(kernel_size=3, padding_mode="reflect"), (x1, x2), (x1, w))
        with torch.inference_mode():
            got = local_aggregation(x1, w, 3, **FAST)
        torch.testing.assert_close(got, local_aggregation(x1, w, 3, **REF))
    finally:
        torch.set_num_threads(1)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any new tensor an ATen op returns (views and
    in-place results share their input's memory and are not counted)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = torch.utils._pytree.tree_leaves((args, kwargs))
        seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                self.largest = max(self.largest, t.numel())
        return out


def _largest(fn) -> int:
    with _LargestTensor() as mode:
        fn()
    return mode.largest


def test_never_materialises_the_neighbourhood():
    """Aggregation forward+backward creates nothing larger than the weight (the reference: 49·|x|);
    subtraction backward creates nothing of the K²-sized output's size."""
    B, C, Cw, H, W, k = 2, 16, 2, 12, 12, 7
    x1, x2, w = _inputs(B, C, Cw, H, W, k, 1, 1, dtype=torch.float32)
    x, wt = x1.requires_grad_(), w.requires_grad_()

    def agg(impl):
        local_aggregation(x, wt, k, impl=impl).sum().backward()

    assert _largest(lambda: agg("fast_cpu")) <= w.numel()
    assert _largest(lambda: agg("reference")) >= k * k * x.numel()

    out = local_subtraction2(x, x2, k, **FAST)
    grad = torch.ones_like(out)
    assert _largest(lambda: out.backward(grad)) < out.numel() // 4
    assert _largest(lambda: local_subtraction2(x.detach(), x2, k, **FAST)) == out.numel()


def test_compile_matches_eager():
    x1, x2, w = _inputs(2, 4, 2, 6, 6, 3, 1, 1, dtype=torch.float32, seed=10)

    def fn(a, b, c):
        return local_aggregation(a, local_subtraction2(a, b, 3, **FAST).softmax(2)[:, :2], 3, **FAST) + c

    eager = _values_and_grads(lambda a, b: fn(a, b, 1.0), (x1, x2))
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    got = _values_and_grads(lambda a, b: compiled(a, b, 1.0), (x1, x2))
    torch.testing.assert_close(got[0], eager[0])
    for a, b in zip(got[1], eager[1], strict=True):
        torch.testing.assert_close(a, b)
