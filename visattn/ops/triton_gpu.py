"""GPU implementation of SAN's local operators in Triton (registered as ``"triton"``).

The kernels (:mod:`visattn.ops.triton_kernels`) compute each output element directly from the inputs, as
the official CuPy kernels do, and follow the same memory rules as :mod:`visattn.ops.fast_cpu`: nothing
``K²``-sized is materialised beyond what the operator's definition requires, and only the inputs are
saved for the backward pass, which recomputes what it needs.

* ``local_aggregation``: the forward kernel gives each output element ``(b, c, l)`` a loop over the
  ``K²`` taps, ``Σ_k w[b, c mod Cw, k, l] · x̃[b, c, nbr_k(l)]`` (padding resolved by index arithmetic:
  no padded copy of ``x``). Saved: ``x`` and ``w``. Backward: ``grad_w[b, g, k, l]`` sums
  ``grad_out · x̃`` over the ``C/Cw`` channels sharing weight channel ``g``; ``grad_x`` is a *gather*:
  each input element enumerates the padded positions holding it (with reflect padding also its mirror
  images) and, per tap, the output position reading it. Each element is written by one program, so
  there are no atomics and no padded buffer whose border must be folded back.
* ``local_subtraction`` / ``local_subtraction2``: the ``(B, C, K², L)`` output is the definition; the
  forward kernel writes it in one pass and nothing is saved. The backward kernel gathers, per input
  element, ``Σ_k grad`` over the outputs centred on it minus the ``grad`` of every ``(k, l)`` reading it.

float16 / bfloat16 / float32 accumulate in float32, float64 in float64; the result is rounded once.
Results equal the reference up to the order of floating-point additions. The backward passes are not
themselves differentiable (double backward raises); use ``impl="fast_cpu"`` for that.

Selected by ``impl="auto"`` (priority 20, above ``fast_cpu``'s 10) for CUDA tensors of those four dtypes
when Triton imports and a GPU is present. With ``VISATTN_TRITON_INTERPRET=1`` or ``TRITON_INTERPRET=1``
set before the first call, Triton's interpreter runs the same kernels with numpy and CPU tensors are
accepted too (slow: for tests only). Registration only looks Triton up (``find_spec``); the kernels are
imported on first use. Without Triton nothing is registered; without a GPU ``supports`` is False, so
``fast_cpu`` stays the choice for CPU tensors.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

from .local_attention import LocalGeometry, register_implementation

__all__ = ["aggregation", "subtraction", "subtraction2", "supports", "register", "PRIORITY", "NAME"]

NAME = "triton"
PRIORITY = 20
_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_kernels_module: ModuleType | None = None
_import_failed = False


def interpreter_requested() -> bool:
    """Whether ``VISATTN_TRITON_INTERPRET=1`` or ``TRITON_INTERPRET=1`` is set."""
    return os.environ.get("VISATTN_TRITON_INTERPRET") == "1" or os.environ.get("TRITON_INTERPRET") == "1"


def _kernels() -> ModuleType | None:
    """Import :mod:`.triton_kernels` on first use (``None``, with a warning, if Triton is unusable).

    Triton decides between compiling and interpreting when ``@triton.jit`` runs (this import) and
    consults ``TRITON_INTERPRET`` again while interpreting, so ``VISATTN_TRITON_INTERPRET=1`` sets
    ``TRITON_INTERPRET=1`` for the rest of the process (it then applies to every Triton user)."""
    global _kernels_module, _import_failed
    if _kernels_module is None and not _import_failed:
        if os.environ.get("VISATTN_TRITON_INTERPRET") == "1":
            os.environ["TRITON_INTERPRET"] = "1"
        try:
            from . import triton_kernels

            _kernels_module = triton_kernels
        except Exception as exc:  # missing or broken Triton: fall back to the other implementations
            _import_failed = True
            warnings.warn(f"visattn: Triton kernels unavailable ({exc!r})", RuntimeWarning, stacklevel=3)
    return _kernels_module


def supports(x: torch.Tensor) -> bool:
    """CUDA tensors of float32, float64, bfloat16 or float16 when Triton imports and a GPU is present;
    also CPU tensors when the interpreter is requested (see the module docstring)."""
    if x.dtype not in _DTYPES:
        return False
    if interpreter_requested():
        device_ok = x.device.type in ("cpu", "cuda")
    else:
        device_ok = x.device.type == "cuda" and torch.cuda.is_available()
    return device_ok and _kernels() is not None


def _k() -> ModuleType:
    k = _kernels()
    if k is None:
        raise RuntimeError("visattn.ops.triton_gpu: Triton is not importable")
    return k


# ------------------------------------------------------------------------------------------ aggregation


class _Aggregation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.geometry = g
        return _k().aggregation_forward(x, w, g)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x, grad_w = _k().aggregation_backward(x, w, grad.contiguous(), ctx.geometry, need_x, need_w)
        return grad_x, grad_w, None


def aggregation(x: torch.Tensor, w: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """``Σ_k w[b, c mod Cw, k, l] · x̃[b, c, nbr_k(l)]``, one Triton program per block of outputs."""
    return _Aggregation.apply(x, w, g)


# ------------------------------------------------------------------------------------------ subtraction


class _Subtraction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
        ctx.geometry = g
        x = x.contiguous()
        return _k().subtraction_forward(x, x, g)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None
        grad_x, _ = _k().subtraction_backward(grad.contiguous(), ctx.geometry, True, True, same=True)
        return grad_x, None


class _Subtraction2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
        ctx.geometry = g
        return _k().subtraction_forward(x1.contiguous(), x2.contiguous(), g)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        need1, need2 = ctx.needs_input_grad[:2]
        if not (need1 or need2):
            return None, None, None
        g1, g2 = _k().subtraction_backward(grad.contiguous(), ctx.geometry, need1, need2, same=False)
        return g1, g2, None


def subtraction(x: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """``x[centre(l)] − x̃[nbr_k(l)]``; saves nothing for the backward pass."""
    return _Subtraction.apply(x, g)


def subtraction2(x1: torch.Tensor, x2: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """``x1[centre(l)] − x̃2[nbr_k(l)]``; saves nothing for the backward pass."""
    return _Subtraction2.apply(x1, x2, g)


def register() -> None:
    """Register this implementation if Triton is installed (idempotent; Triton itself is imported on
    the first :func:`supports` call that could say yes). Done when :mod:`visattn.ops` is imported."""
    try:
        if importlib.util.find_spec("triton") is None:
            return
    except (ImportError, ValueError, AttributeError):  # e.g. sys.modules["triton"] = None
        return
    register_implementation(
        NAME,
        subtraction=subtraction,
        subtraction2=subtraction2,
        aggregation=aggregation,
        supports=supports,
        priority=PRIORITY,
    )
