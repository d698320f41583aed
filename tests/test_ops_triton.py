"""The Triton implementation of SAN's operators (``visattn.ops.triton_gpu``) against the unfold reference.

No GPU is available in this project, so the kernels run on CPU tensors under Triton's interpreter. Triton
chooses between compiling and interpreting when its modules are imported, so the ``test_interp_*`` tests
run in a child pytest process started with ``TRITON_INTERPRET=1`` (:func:`test_interpreter_suite`);
running this file with ``TRITON_INTERPRET=1`` set runs them directly. The interpreter is slow: tiny shapes
only. Without the flag, the tests check that CPU behaviour is unchanged and that the kernels compile for a
GPU target (PTX/cubin, nothing is run).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from visattn.ops import available_implementations, local_aggregation, local_subtraction, local_subtraction2
from visattn.ops import local_attention as la

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1" or os.environ.get("VISATTN_TRITON_INTERPRET") == "1"
interp_only = pytest.mark.skipif(
    not INTERPRETING, reason="needs TRITON_INTERPRET=1 at start-up: run by test_interpreter_suite in a child"
)
host_only = pytest.mark.skipif(INTERPRETING, reason="checks the default (non-interpreted) behaviour")
ROOT = Path(__file__).resolve().parents[1]
TRITON = dict(impl="triton")
REF = dict(impl="reference")
B, C, CW, H, W = 2, 4, 2, 6, 7
# (kernel, stride, dilation) on a 6×7 input; K=5, d=2 reflects up to 4 pixels (< 6).
GEOMETRIES = [(3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 2)]


def _inputs(k, s, d, p=None, dtype=torch.float64, seed=0, shape=(B, C, CW, H, W)):
    b, c, cw, h, w_ = shape
    g = torch.Generator().manual_seed(seed)
    p = (d * (k - 1) + 1) // 2 if p is None else p
    Ho, Wo = (h + 2 * p - (d * (k - 1) + 1)) // s + 1, (w_ + 2 * p - (d * (k - 1) + 1)) // s + 1
    x1 = torch.randn(b, c, h, w_, generator=g, dtype=torch.float64).to(dtype)
    x2 = torch.randn(b, c, h, w_, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(b, cw, k * k, Ho * Wo, generator=g, dtype=torch.float64).to(dtype)
    return x1, x2, w


def _ops(kw):
    """(name, fn(*tensors, impl=...), indices of the inputs it takes from (x1, x2, w))."""
    return [
        ("subtraction", lambda a, **o: local_subtraction(a, **kw, **o), (0,)),
        ("subtraction2", lambda a, b, **o: local_subtraction2(a, b, **kw, **o), (0, 1)),
        ("aggregation", lambda a, b, **o: local_aggregation(a, b, **kw, **o), (0, 2)),
    ]


def _values_and_grads(fn, inputs, requires=None, seed=1):
    """``fn(*inputs)`` and ``torch.autograd.grad`` of ``<out, r>`` (fixed random ``r``) w.r.t. the inputs
    flagged in ``requires`` (all by default)."""
    requires = requires or [True] * len(inputs)
    leaves = [t.detach().clone().requires_grad_(q) for t, q in zip(inputs, requires, strict=True)]
    out = fn(*leaves)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    wrt = [t for t in leaves if t.requires_grad]
    return out.detach(), torch.autograd.grad((out * r.to(out.device, out.dtype)).sum(), wrt)


def _assert_same(kw, tensors, atol=1e-12, rtol=1e-12, requires=None):
    for name, fn, idx in _ops(kw):
        inputs = [tensors[i] for i in idx]
        got, got_grads = _values_and_grads(lambda *t, fn=fn: fn(*t, **TRITON), inputs, requires)
        want, want_grads = _values_and_grads(lambda *t, fn=fn: fn(*t, **REF), inputs, requires)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")
        assert len(got_grads) == len(want_grads) > 0
        for a, b in zip(got_grads, want_grads, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n} grad: {m}")


# ----------------------------------------------------------------------- run under the interpreter (child)


@interp_only
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("k,s,d", GEOMETRIES)
def test_interp_float64_values_and_grads_equal_reference(mode, k, s, d):
    x1, x2, w = _inputs(k, s, d)
    _assert_same(dict(kernel_size=k, stride=s, dilation=d, padding_mode=mode), (x1, x2, w))


@interp_only
@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=(3, 5), stride=(2, 1), dilation=(1, 2), padding_mode="reflect"),
        dict(kernel_size=3, padding=3, padding_mode="zeros"),  # centre tap inside the padding
        dict(kernel_size=5, padding=(1, 0), padding_mode="reflect"),  # less than the default padding
        dict(kernel_size=1, stride=2, padding_mode="reflect"),
    ],
    ids=["rect", "pad3", "pad1x0", "k1"],
)
def test_interp_other_geometries_equal_reference(kw):
    k = kw["kernel_size"]
    taps = k * k if isinstance(k, int) else k[0] * k[1]
    x1, x2, _ = _inputs(1, 1, 1)
    L = local_subtraction(x1, **kw, **REF).shape[-1]
    w = torch.randn(B, CW, taps, L, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _assert_same(kw, (x1, x2, w))


@interp_only
def test_interp_partial_requires_grad_and_non_contiguous_inputs():
    x1, x2, w = _inputs(3, 2, 1)
    kw = dict(kernel_size=3, stride=2, padding_mode="reflect")
    for requires in ([True, False], [False, True]):  # each op takes two tensors except subtraction
        for name, fn, idx in _ops(kw)[1:]:
            inputs = [(x1, x2, w)[i] for i in idx]
            got = _values_and_grads(lambda *t, fn=fn: fn(*t, **TRITON), inputs, requires)
            want = _values_and_grads(lambda *t, fn=fn: fn(*t, **REF), inputs, requires)
            for a, b in zip((got[0], *got[1]), (want[0], *want[1]), strict=True):
                torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    xt = x1.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, column-major strides
    wt = w.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not xt.is_contiguous() and not wt.is_contiguous()
    _assert_same(kw, (xt, x2, wt))


@interp_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_interp_low_precision_forward(dtype, mode):
    """Float32 accumulation, one rounding: within one unit of the output dtype of the exact (float64)
    result on the same rounded inputs. (The interpreter truncates float32 -> bfloat16 instead of
    rounding to nearest, hence one unit rather than half.) The reference rounds every product in
    half precision, so it is only compared loosely."""
    x1, x2, w = _inputs(5, 1, 2, dtype=dtype)
    kw = dict(kernel_size=5, dilation=2, padding_mode=mode)
    eps = torch.finfo(dtype).eps
    for name, fn, idx in _ops(kw):
        inputs = [(x1, x2, w)[i] for i in idx]
        got = fn(*inputs, **TRITON)
        exact = fn(*[t.double() for t in inputs], **REF)
        ref = fn(*inputs, **REF)
        assert got.dtype == dtype and got.shape == exact.shape, name
        scale = exact.abs().max().item()
        tol = dict(rtol=eps, atol=1e-6 * scale)
        torch.testing.assert_close(got.double(), exact, **tol, msg=lambda m, n=name: f"{n}: {m}")
        loose = dict(rtol=0.0, atol=8 * eps * scale)
        torch.testing.assert_close(got.double(), ref.double(), **loose, msg=lambda m, n=name: f"{n}: {m}")


@interp_only
def test_interp_low_precision_grads():
    x1, x2, w = _inputs(3, 1, 1, dtype=torch.float16)
    kw = dict(kernel_size=3, padding_mode="reflect")
    for name, fn, idx in _ops(kw):
        inputs = [(x1, x2, w)[i] for i in idx]
        _, got = _values_and_grads(lambda *t, fn=fn: fn(*t, **TRITON), inputs)
        _, exact = _values_and_grads(lambda *t, fn=fn: fn(*t, **REF), [t.double() for t in inputs])
        for a, b in zip(got, exact, strict=True):
            assert a.dtype == torch.float16
            scale = b.abs().max().item()
            torch.testing.assert_close(
                a.double(), b, rtol=2e-3, atol=2e-3 * scale, msg=lambda m, n=name: f"{n}: {m}"
            )


@interp_only
def test_interp_auto_picks_triton_for_cpu_floats():
    from visattn.ops import triton_gpu

    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        x = torch.zeros(1, dtype=dtype)
        assert triton_gpu.supports(x)
        assert la._pick("auto", x).name == "triton"
    assert la._pick("auto", torch.zeros(1, dtype=torch.int64)).name == "reference"
    assert la._pick("auto", torch.zeros(1, device="meta")).name == "reference"
    x1, x2, w = _inputs(3, 1, 1)
    for name, fn, idx in _ops(dict(kernel_size=3)):
        inputs = [(x1, x2, w)[i] for i in idx]
        out = fn(*[t.clone().requires_grad_() for t in inputs], impl="auto")
        assert out.grad_fn._forward_cls.__module__ == "visattn.ops.triton_gpu", name
        torch.testing.assert_close(fn(*inputs, impl="auto"), fn(*inputs, **TRITON), atol=0, rtol=0)


@interp_only
def test_interp_saves_only_the_inputs_and_double_backward_raises():
    x1, x2, w = _inputs(5, 1, 2)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    for name, fn, idx in _ops(dict(kernel_size=5, dilation=2)):
        saved.clear()
        leaves = [(x1, x2, w)[i].clone().requires_grad_() for i in idx]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(*leaves, **TRITON)
        if name == "aggregation":  # x and w, nothing K²-sized beyond w itself
            assert [t.shape for t in saved] == [leaves[0].shape, leaves[1].shape]
            assert all(s.data_ptr() == t.data_ptr() for s, t in zip(saved, leaves, strict=True))
        else:
            assert saved == [], name
        (g,) = torch.autograd.grad(out.square().sum(), leaves[:1], create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable|twice"):
            g.sum().backward()


# ------------------------------------------------------------------------------- default process (host)


@host_only
def test_interpreter_suite():
    """Run the ``test_interp_*`` tests in a child process with ``TRITON_INTERPRET=1``."""
    env = {k: v for k, v in os.environ.items() if k != "VISATTN_TRITON_INTERPRET"}
    env.update(TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "test_interp_"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 22, summary
    assert not re.search(r"skipped|failed|error", summary), proc.stdout[-6000:]


@host_only
def test_visattn_flag_alone_enables_the_interpreter():
    """``VISATTN_TRITON_INTERPRET=1`` (without Triton's own flag) is enough, although ``import visattn``
    may import Triton (through ``torch._dynamo``) before the kernels are defined."""
    script = """
import os, torch
from visattn.ops import local_aggregation, local_attention as la
x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
w = torch.randn(1, 1, 9, 30, dtype=torch.float64, requires_grad=True)
assert la._pick("auto", x).name == "triton" and os.environ["TRITON_INTERPRET"] == "1"
out = local_aggregation(x, w, 3)
grads = torch.autograd.grad(out.square().sum(), (x, w))
want = local_aggregation(x, w, 3, impl="reference")
wgrads = torch.autograd.grad(want.square().sum(), (x, w))
for a, b in zip((out, *grads), (want, *wgrads)):
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
print("OK", out.grad_fn._forward_cls.__module__)
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(VISATTN_TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == ["OK", "visattn.ops.triton_gpu"], proc.stdout


@host_only
def test_cpu_default_is_unchanged():
    from visattn.ops import fast_cpu, triton_gpu

    names = available_implementations()
    assert names[0] == "triton" and triton_gpu.PRIORITY > fast_cpu.PRIORITY
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        x = torch.zeros(1, 1, 4, 4, dtype=dtype)
        assert not triton_gpu.supports(x)
        assert la._pick("auto", x).name == "fast_cpu"
    assert not triton_gpu.supports(torch.zeros(1, device="meta"))
    if not torch.cuda.is_available():  # nothing asked for Triton: the kernels were never imported
        assert triton_gpu._kernels_module is None


@host_only
def test_without_triton_nothing_is_registered():
    """With ``triton`` unimportable, ``import visattn`` works and CPU behaviour is unchanged."""
    script = """
import sys
sys.modules["triton"] = None  # makes `import triton` raise ImportError
import torch, visattn
from visattn.ops import available_implementations, local_aggregation, local_attention as la
x = torch.randn(1, 2, 5, 5)
assert la._pick("auto", x).name == "fast_cpu" and local_aggregation(x, torch.randn(1, 1, 9, 25), 3).shape == x.shape
print(*available_implementations())
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == ["fast_cpu", "reference"], proc.stdout


@host_only
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU (none in this project)")
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_cuda_equals_reference(mode):
    from visattn.ops import triton_gpu

    for k, s, d in GEOMETRIES:
        x1, x2, w = (t.cuda() for t in _inputs(k, s, d))
        assert triton_gpu.supports(x1) and la._pick("auto", x1).name == "triton"
        _assert_same(dict(kernel_size=k, stride=s, dilation=d, padding_mode=mode), (x1, x2, w))
        x1, x2, w = (t.cuda() for t in _inputs(k, s, d, dtype=torch.float32, shape=(2, 64, 16, 33, 40)))
        _assert_same(dict(kernel_size=k, stride=s, dilation=d, padding_mode=mode), (x1, x2, w), 1e-4, 1e-4)


@host_only
def test_kernels_compile_for_a_gpu_target():
    """Compile every kernel through Triton's real pipeline to a CUDA binary (sm_80), without a GPU: the
    interpreter accepts some programs the compiler rejects. Nothing is run."""
    import triton

    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as exc:  # pragma: no cover - internal API of other Triton versions
        pytest.skip(f"Triton's ahead-of-time API is unavailable: {exc}")
    from visattn.ops import triton_kernels as tk

    geometry = dict(KH=3, KW=5, SH=2, SW=1, DH=1, DW=2)
    variants = [
        (tk._subtraction_fwd, dict(REFLECT=True, F64=False)),
        (tk._subtraction_bwd, dict(NEED_CENTRE=True, NEED_NBR=True, SAME=True, NR=3, F64=False)),
        (tk._subtraction_bwd, dict(NEED_CENTRE=True, NEED_NBR=True, SAME=False, NR=1, F64=True)),
        (tk._aggregation_fwd, dict(REFLECT=False, F64=False)),
        (tk._aggregation_bwd_w, dict(REFLECT=True, F64=False)),
        (tk._aggregation_bwd_x, dict(NR=3, F64=False)),
    ]
    for kernel, flags in variants:
        for ptr, wide in (("*fp32", False), ("*bf16", True)):
            names = kernel.arg_names
            consts = {**geometry, **flags, "WIDE": wide, "BLOCK": 256}
            sig = {n: "constexpr" if n in consts else ptr if i < 3 else "i32" for i, n in enumerate(names)}
            src = ASTSource(kernel, sig, {(names.index(n),): v for n, v in consts.items()})
            compiled = triton.compile(src, target=GPUTarget("cuda", 80, 32))
            assert compiled.asm["ptx"] and compiled.asm["cubin"], kernel.__name__
