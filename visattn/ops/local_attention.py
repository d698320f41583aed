"""Local (footprint) operators of SAN: subtraction, subtraction2 and aggregation.

Zhao, Jia & Koltun, "Exploring Self-attention for Image Recognition", CVPR 2020; official CuPy kernels in
``hszhao/SAN`` (``lib/sa/functions``). Semantics reproduced exactly (see ``docs/ops.md``):

* footprint ``K×K`` (odd for the subtraction ops), stride ``s``, dilation ``d``, padding ``p`` (default
  ``(d·(K−1)+1)//2``, as SAN uses); output position ``l = h·W_out + w``, footprint index ``k = kh·K + kw``;
  neighbour ``k`` of output ``(h, w)`` is input ``(−p + h·s + kh·d, −p + w·s + kw·d)`` and the centre is
  the middle footprint position ``((K−1)/2, (K−1)/2)``;
* ``padding_mode="reflect"`` reflects without repeating the edge (``ReflectionPad2d``), valid only for
  ``p < H`` and ``p < W``; ``"zeros"`` treats out-of-range neighbours as 0;
* weights are shared **interleaved**: channel ``c`` uses weight channel ``c mod Cw``.

Differences from the official code: runs on every device and dtype, validates its arguments (the
CUDA kernels read out of bounds when reflect padding exceeds the input), and takes rectangular
kernels/strides as pairs.

Implementations are pluggable: :func:`register_implementation` adds one (e.g. a memory-lean CPU path or a
Triton kernel); ``impl="auto"`` picks the highest-priority implementation that accepts the inputs, and
``impl="reference"`` forces the unfold-based reference kept for testing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "local_subtraction",
    "local_subtraction2",
    "local_aggregation",
    "register_implementation",
    "available_implementations",
    "use_implementation",
    "LocalGeometry",
    "observe_calls",
]

_PAD_MODES = ("reflect", "zeros")


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return v  # type: ignore[return-value]


@dataclass(frozen=True)
class LocalGeometry:
    """Validated footprint geometry for one call of a local operator."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int]
    padding_mode: str
    in_size: tuple[int, int]
    out_size: tuple[int, int]

    @property
    def num_taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def centre_tap(self) -> int:
        return (self.kernel[0] - 1) // 2 * self.kernel[1] + (self.kernel[1] - 1) // 2

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``x̃``: ``x`` padded as the operators read it (reflect without edge repeat, or zeros)."""
        ph, pw = self.padding
        if not (ph or pw):
            return x
        return F.pad(x, (pw, pw, ph, ph), mode="reflect" if self.padding_mode == "reflect" else "constant")

    @classmethod
    def of(
        cls,
        x: torch.Tensor,
        kernel_size,
        stride=1,
        dilation=1,
        padding=None,
        padding_mode: str = "reflect",
        op: str = "local operator",
    ) -> LocalGeometry:
        """The validated geometry of a call on ``x`` with these arguments (errors name ``op``)."""
        return _geometry(x, kernel_size, stride, dilation, padding, padding_mode, op=op, odd_kernel=True)


def _geometry(
    x: torch.Tensor,
    kernel_size,
    stride,
    dilation,
    padding,
    padding_mode: str,
    *,
    op: str,
    odd_kernel: bool,
) -> LocalGeometry:
    if x.dim() != 4:
        raise ValueError(f"{op}: expected a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride, "stride")
    d = _pair(dilation, "dilation")
    if min(k) < 1 or min(s) < 1 or min(d) < 1:
        raise ValueError(f"{op}: kernel_size, stride and dilation must be >= 1, got {k}, {s}, {d}")
    if odd_kernel and (k[0] % 2 == 0 or k[1] % 2 == 0):
        raise ValueError(f"{op}: kernel_size must be odd (the footprint needs a centre), got {k}")
    if padding is None:
        p = ((d[0] * (k[0] - 1) + 1) // 2, (d[1] * (k[1] - 1) + 1) // 2)
    else:
        p = _pair(padding, "padding")
    if min(p) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {p}")
    if padding_mode not in _PAD_MODES:
        raise ValueError(f"{op}: padding_mode must be one of {_PAD_MODES}, got {padding_mode!r}")
    H, W = x.shape[-2:]
    if padding_mode == "reflect" and (p[0] >= H or p[1] >= W):
        raise ValueError(
            f"{op}: reflect padding {p} needs an input larger than the padding in each dimension, got "
            f"{H}x{W} (kernel {k}, dilation {d}); use a smaller kernel, padding_mode='zeros', or a larger input"
        )
    ext = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    out = ((H + 2 * p[0] - ext[0]) // s[0] + 1, (W + 2 * p[1] - ext[1]) // s[1] + 1)
    if min(out) < 1:
        raise ValueError(f"{op}: footprint {ext} does not fit the padded input {H + 2 * p[0]}x{W + 2 * p[1]}")
    return LocalGeometry(k, s, d, p, padding_mode, (H, W), out)


# --------------------------------------------------------------------------------------------------
# Reference implementation: pad -> unfold -> elementwise. Materialises C·K²·L values per image.
# --------------------------------------------------------------------------------------------------


def _unfold(x: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, K², L): every footprint neighbour of every output position."""
    x = g.pad(x)
    cols = F.unfold(x, g.kernel, dilation=g.dilation, padding=0, stride=g.stride)
    return cols.view(x.shape[0], x.shape[1], g.num_taps, -1)


def _reference_subtraction(x: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    cols = _unfold(x, g)
    c = g.centre_tap
    return cols[:, :, c : c + 1] - cols


def _reference_subtraction2(x1: torch.Tensor, x2: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    c = g.centre_tap
    centre = _unfold(x1, g)[:, :, c : c + 1]
    return centre - _unfold(x2, g)


def _reference_aggregation(x: torch.Tensor, w: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    B, C = x.shape[:2]
    Cw = w.shape[1]
    cols = _unfold(x, g).view(B, C // Cw, Cw, g.num_taps, -1)  # channel c = j·Cw + g (interleaved)
    out = (cols * w.unsqueeze(1)).sum(dim=3)
    return out.view(B, C, *g.out_size)


@dataclass(frozen=True)
class _Implementation:
    name: str
    subtraction: Callable[[torch.Tensor, LocalGeometry], torch.Tensor]
    subtraction2: Callable[[torch.Tensor, torch.Tensor, LocalGeometry], torch.Tensor]
    aggregation: Callable[[torch.Tensor, torch.Tensor, LocalGeometry], torch.Tensor]
    supports: Callable[[torch.Tensor], bool]
    priority: int


_IMPLEMENTATIONS: dict[str, _Implementation] = {}


def register_implementation(
    name: str,
    *,
    subtraction: Callable[[torch.Tensor, LocalGeometry], torch.Tensor],
    subtraction2: Callable[[torch.Tensor, torch.Tensor, LocalGeometry], torch.Tensor],
    aggregation: Callable[[torch.Tensor, torch.Tensor, LocalGeometry], torch.Tensor],
    supports: Callable[[torch.Tensor], bool] = lambda x: True,
    priority: int = 0,
) -> None:
    """Register an implementation of the three operators.

    Each callable receives already validated tensors and a :class:`LocalGeometry`, and must return
    exactly what the reference returns (same shape, dtype and values up to rounding), with gradients.
    ``supports(x)`` tells whether it can handle an input (device, dtype); ``impl="auto"`` uses the
    supporting implementation with the highest ``priority``.
    """
    _IMPLEMENTATIONS[name] = _Implementation(name, subtraction, subtraction2, aggregation, supports, priority)


def available_implementations() -> list[str]:
    """Names of registered implementations, highest priority first."""
    return [i.name for i in sorted(_IMPLEMENTATIONS.values(), key=lambda i: -i.priority)]


register_implementation(
    "reference",
    subtraction=_reference_subtraction,
    subtraction2=_reference_subtraction2,
    aggregation=_reference_aggregation,
    priority=-1,
)


# Observers see (op name, output, geometry) after every call, e.g. the FLOP counter in
# visattn.models.complexity. Empty in normal use: the cost is one list test per call.
_OBSERVERS: list[Callable[[str, torch.Tensor, LocalGeometry], None]] = []


class observe_calls:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Context manager: call ``fn(op_name, output, geometry)`` after every operator call inside it."""

    def __init__(self, fn: Callable[[str, torch.Tensor, LocalGeometry], None]) -> None:
        self.fn = fn

    def __enter__(self) -> observe_calls:
        _OBSERVERS.append(self.fn)
        return self

    def __exit__(self, *exc) -> None:
        _OBSERVERS.remove(self.fn)


def _notify(op: str, out: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    for fn in _OBSERVERS:
        fn(op, out, g)
    return out


# ``impl="auto"`` inside ``use_implementation(name)`` resolves to ``name`` (per thread / asyncio task).
_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar("visattn_ops_forced", default=None)


@contextmanager
def use_implementation(name: str) -> Iterator[None]:
    """Context manager: every ``impl="auto"`` call inside it uses implementation ``name``.

    Scoped to the current thread (a :class:`contextvars.ContextVar`); the registry itself is never
    changed. ONNX export traces SAN models under ``use_implementation("reference")``.
    """
    if name not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}; available: {available_implementations()}")
    token = _FORCED.set(name)
    try:
        yield
    finally:
        _FORCED.reset(token)


def _pick(impl: str, x: torch.Tensor) -> _Implementation:
    if impl == "auto" and _FORCED.get() is not None:
        return _IMPLEMENTATIONS[_FORCED.get()]
    if impl == "auto" and torch.onnx.is_in_onnx_export():
        # Both ONNX exporters trace the pure-PyTorch reference; fast paths (autograd Functions, chunk
        # loops) do not export (TorchScript) or unroll into huge graphs (dynamo).
        return _IMPLEMENTATIONS["reference"]
    if impl == "auto":
        for cand in sorted(_IMPLEMENTATIONS.values(), key=lambda i: -i.priority):
            if cand.supports(x):
                return cand
        return _IMPLEMENTATIONS["reference"]
    if impl not in _IMPLEMENTATIONS:
        raise ValueError(
            f"unknown implementation {impl!r}; available: {available_implementations()} or 'auto'"
        )
    return _IMPLEMENTATIONS[impl]


def local_subtraction(
    x: torch.Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | None = None,
    padding_mode: str = "reflect",
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """``y[b,c,k,l] = x[b,c,centre(l)] − x̃[b,c,nbr_k(l)]``: SAN's ``subtraction``.

    Args:
        x: ``(B, C, H, W)``.
        kernel_size: footprint size ``K`` (odd).
        padding: defaults to ``(dilation·(K−1)+1)//2``.
        padding_mode: ``"reflect"`` (official default) or ``"zeros"``.
        impl: ``"auto"``, ``"reference"`` or a registered implementation name.

    Returns:
        ``(B, C, K·K, H_out·W_out)``.
    """
    g = _geometry(
        x, kernel_size, stride, dilation, padding, padding_mode, op="local_subtraction", odd_kernel=True
    )
    return _notify("subtraction", _pick(impl, x).subtraction(x, g), g)


def local_subtraction2(
    x1: torch.Tensor,
    x2: torch.Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | None = None,
    padding_mode: str = "reflect",
    *,
    impl: str = "auto",
    observe: bool = True,
) -> torch.Tensor:
    """``y[b,c,k,l] = x1[b,c,centre(l)] − x̃2[b,c,nbr_k(l)]``: SAN's ``subtraction2``.

    ``x1`` and ``x2`` must have the same shape; returns ``(B, C, K·K, H_out·W_out)``. ``observe=False``
    hides the call from :class:`observe_calls` (for callers that use it as a plain neighbour gather).
    """
    if x1.shape != x2.shape:
        raise ValueError(
            f"local_subtraction2: x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    g = _geometry(
        x1, kernel_size, stride, dilation, padding, padding_mode, op="local_subtraction2", odd_kernel=True
    )
    out = _pick(impl, x1).subtraction2(x1, x2, g)
    return _notify("subtraction2", out, g) if observe else out


def local_aggregation(
    x: torch.Tensor,
    weight: torch.Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | None = None,
    padding_mode: str = "reflect",
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """``y[b,c,l] = Σ_k weight[b, c mod Cw, k, l] · x̃[b,c,nbr_k(l)]``: SAN's ``aggregation``.

    Args:
        x: ``(B, C, H, W)``.
        weight: ``(B, Cw, K·K, H_out·W_out)`` with ``C % Cw == 0`` (interleaved sharing).

    Returns:
        ``(B, C, H_out, W_out)``.
    """
    g = _geometry(
        x, kernel_size, stride, dilation, padding, padding_mode, op="local_aggregation", odd_kernel=False
    )
    B, C = x.shape[:2]
    L = g.out_size[0] * g.out_size[1]
    if weight.dim() != 4 or weight.shape[0] != B or weight.shape[2] != g.num_taps or weight.shape[3] != L:
        raise ValueError(
            f"local_aggregation: weight must have shape (B={B}, Cw, K*K={g.num_taps}, H_out*W_out={L}), "
            f"got {tuple(weight.shape)}"
        )
    if C % weight.shape[1] != 0:
        raise ValueError(
            f"local_aggregation: input channels ({C}) must be divisible by weight channels ({weight.shape[1]})"
        )
    if weight.dtype != x.dtype or weight.device != x.device:
        raise ValueError(
            f"local_aggregation: x and weight must share dtype and device, got {x.dtype}/{x.device} "
            f"and {weight.dtype}/{weight.device}"
        )
    return _notify("aggregation", _pick(impl, x).aggregation(x, weight, g), g)
