"""Memory-lean implementation of SAN's local operators (pure PyTorch, registered as ``"fast_cpu"``).

The reference implementation unfolds the padded input into a ``(B, C, K², L)`` tensor (49× the input
for 7×7) and lets autograd keep it, and its product with the weights, for the backward pass. This one
never materialises a ``K²``-sized tensor that the operator's definition does not require:

* ``local_aggregation``: the forward pass loops over the ``K²`` footprint taps and accumulates
  ``out += w[:, c mod Cw, k] · shift_k(x̃)`` with strided views of the padded input ``x̃`` (interleaved
  weight sharing via a ``(B, C/Cw, Cw, ...)`` view), in cache-sized chunks of the batch / channel
  groups. Only the inputs are saved; the backward pass re-pads ``x`` and computes, per tap,
  ``grad_w[:, :, k] = Σ_j grad_out · shift_k(x̃)`` and ``shift_kᵀ(grad_x̃) += w[:, :, k] · grad_out``
  into a padded buffer whose borders are then folded back (reflect: added to the mirrored interior
  positions; zeros: dropped). Extra memory: a few input-sized buffers instead of ``2–3 × K²``.
* ``local_subtraction`` / ``local_subtraction2``: the ``K²``-sized output is the definition, so the
  forward pass writes it in one broadcast subtraction from an ``as_strided`` window view of ``x̃`` (no
  unfold copy); nothing is saved, and the backward pass accumulates the taps of the incoming gradient
  into a padded buffer (no ``K²``-sized temporaries).

float16 / bfloat16 inputs accumulate in float32 (products of two half-precision numbers are exact in
float32), then round once; float32 / float64 accumulate in their own dtype. Results equal the reference
up to the order of floating-point additions (exactly-ish in float64, see ``tests/test_ops_fast.py``).

Selected by ``impl="auto"`` for CPU tensors of those four dtypes (priority 10; the reference has −1);
``impl="fast_cpu"`` forces it on any device (the code is device-agnostic PyTorch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .local_attention import LocalGeometry, register_implementation

__all__ = ["aggregation", "subtraction", "subtraction2", "supports", "PRIORITY", "NAME"]

NAME = "fast_cpu"
PRIORITY = 10
_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Elements of one chunk's output: four chunk-sized operands (~4 MiB in float32) stay in L2/L3 cache
# across the K² taps instead of streaming the whole batch through memory once per tap.
_CHUNK_ELEMENTS = 1 << 18


def supports(x: torch.Tensor) -> bool:
    """CPU tensors of float32, float64, bfloat16 or float16."""
    return x.device.type == "cpu" and x.dtype in _DTYPES


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _taps(g: LocalGeometry) -> Iterator[tuple[int, slice, slice]]:
    """``(k, rows, cols)``: the slices of the padded input read by footprint tap ``k``."""
    (kh_n, kw_n), (sh, sw), (dh, dw) = g.kernel, g.stride, g.dilation
    Ho, Wo = g.out_size
    for kh in range(kh_n):
        rows = slice(kh * dh, kh * dh + (Ho - 1) * sh + 1, sh)
        for kw in range(kw_n):
            yield kh * kw_n + kw, rows, slice(kw * dw, kw * dw + (Wo - 1) * sw + 1, sw)


def _centre(g: LocalGeometry) -> tuple[slice, slice]:
    c = g.centre_tap
    for k, rows, cols in _taps(g):
        if k == c:
            return rows, cols
    raise AssertionError("unreachable")


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _chunks(B: int, G: int, per_item: int) -> list[tuple[slice, slice]]:
    """Disjoint ``(batch, group)`` slices whose output has about ``_CHUNK_ELEMENTS`` elements (``G``
    groups of ``per_item`` elements per image); one chunk under ``torch.compile`` (the compiler fuses
    the tap loop itself)."""
    if _compiling():
        return [(slice(0, B), slice(0, G))]
    per_batch = G * per_item
    if per_batch >= _CHUNK_ELEMENTS:
        ng = max(1, _CHUNK_ELEMENTS // per_item)
        return [(slice(b, b + 1), slice(j, min(j + ng, G))) for b in range(B) for j in range(0, G, ng)]
    nb = max(1, _CHUNK_ELEMENTS // per_batch)
    return [(slice(b, min(b + nb, B)), slice(0, G)) for b in range(0, B, nb)]


def _run(fn: Callable[[tuple[slice, slice]], None], chunks: list[tuple[slice, slice]]) -> None:
    """``fn(chunk)`` for every chunk, in order (each op uses PyTorch's intra-op threads).

    Tried and not kept: handing chunks to single-threaded worker threads avoids one OpenMP barrier
    per short op, which helped only while libgomp's threads spin-waited on an oversubscribed machine
    (and then hurt whole networks); with ``OMP_WAIT_POLICY=PASSIVE`` both ran alike."""
    for chunk in chunks:
        fn(chunk)


def _fold_padding(gp: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """Gradient of the padded input ``(..., H + 2ph, W + 2pw)`` -> gradient of the input (in place)."""
    ph, pw = g.padding
    H, W = g.in_size
    if g.padding_mode == "reflect":
        # Padded row i < ph is input row ph − i (padded ph + (ph − i)); padded row ph + H + j is input
        # row H − 2 − j (padded ph + H − 2 − j). Sources are border rows, targets interior rows.
        if ph:
            gp[..., ph + 1 : 2 * ph + 1, :] += gp[..., 0:ph, :].flip(-2)
            gp[..., H - 1 : H - 1 + ph, :] += gp[..., ph + H :, :].flip(-2)
        gp = gp[..., ph : ph + H, :]
        if pw:
            gp[..., pw + 1 : 2 * pw + 1] += gp[..., 0:pw].flip(-1)
            gp[..., W - 1 : W - 1 + pw] += gp[..., pw + W :].flip(-1)
        return gp[..., pw : pw + W]
    return gp[..., ph : ph + H, pw : pw + W]


# ------------------------------------------------------------------------------------------ aggregation


def _aggregation_forward(x: torch.Tensor, w: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    B, C = x.shape[:2]
    Cw = w.shape[1]
    J = C // Cw
    Ho, Wo = g.out_size
    acc = _acc_dtype(x.dtype)
    xp = g.pad(x.contiguous())
    xp = xp.view(B, J, Cw, *xp.shape[-2:])  # channel c = j·Cw + g: interleaved sharing
    w6 = w.contiguous().view(B, 1, Cw, g.num_taps, Ho, Wo)
    out = torch.zeros(B, J, Cw, Ho, Wo, dtype=acc, device=x.device)

    def chunk(c: tuple[slice, slice]) -> None:  # images bs, weight channels gs (all j)
        bs, gs = c
        o, xc, wc = out[bs, :, gs], xp[bs, :, gs], w6[bs, :, gs]
        for k, rows, cols in _taps(g):
            o.addcmul_(wc[:, :, :, k], xc[..., rows, cols])

    _run(chunk, _chunks(B, Cw, J * Ho * Wo))
    return out.view(B, C, Ho, Wo).to(x.dtype)


def _aggregation_backward(
    x: torch.Tensor, w: torch.Tensor, grad: torch.Tensor, g: LocalGeometry, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    B, C = x.shape[:2]
    Cw = w.shape[1]
    J = C // Cw
    Ho, Wo = g.out_size
    acc = _acc_dtype(x.dtype)
    go = grad.to(acc).contiguous().view(B, J, Cw, Ho, Wo)
    gw = gxp = xp = None
    if need_w:
        xp = g.pad(x.contiguous())
        xp = xp.view(B, J, Cw, *xp.shape[-2:])
        gw = torch.empty(B, Cw, g.num_taps, Ho, Wo, dtype=acc, device=x.device)
    if need_x:
        Hp, Wp = g.in_size[0] + 2 * g.padding[0], g.in_size[1] + 2 * g.padding[1]
        gxp = torch.zeros(B, J, Cw, Hp, Wp, dtype=acc, device=x.device)
    w6 = w.contiguous().view(B, 1, Cw, g.num_taps, Ho, Wo)
    if torch.is_grad_enabled() or _compiling():  # double backward / torch.compile: no out= arguments
        return _aggregation_backward_differentiable(xp, w6, go, gxp, g, x.dtype)

    def chunk(c: tuple[slice, slice]) -> None:  # images bs, weight channels gs (all j): disjoint writes
        bs, gs = c
        goc, wc = go[bs, :, gs], w6[bs, :, gs]
        if need_w:
            xc, gwc, tmp = xp[bs, :, gs], gw[bs, gs], torch.empty_like(goc)
        if need_x:
            gxc = gxp[bs, :, gs]
        for k, rows, cols in _taps(g):
            if need_w:
                torch.mul(goc, xc[..., rows, cols], out=tmp)
                torch.sum(tmp, dim=1, out=gwc[:, :, k])
            if need_x:
                gxc[..., rows, cols].addcmul_(wc[:, :, :, k], goc)

    _run(chunk, _chunks(B, Cw, J * Ho * Wo))
    grad_x = grad_w = None
    if need_x:
        grad_x = _fold_padding(gxp.view(B, C, *gxp.shape[-2:]), g).to(x.dtype)
    if need_w:
        grad_w = gw.view(B, Cw, g.num_taps, Ho * Wo).to(w.dtype)
    return grad_x, grad_w


def _aggregation_backward_differentiable(xp, w6, go, gxp, g: LocalGeometry, dtype: torch.dtype):
    """The backward pass of :func:`_aggregation_backward` with autograd-friendly ops only."""
    B, J, Cw = go.shape[:3]
    grad_x = grad_w = None
    if gxp is not None:
        for k, rows, cols in _taps(g):
            gxp[..., rows, cols] += w6[:, :, :, k] * go
        grad_x = _fold_padding(gxp.view(B, J * Cw, *gxp.shape[-2:]), g).to(dtype)
    if xp is not None:
        per_tap = [(go * xp[..., rows, cols]).sum(dim=1) for _, rows, cols in _taps(g)]
        grad_w = torch.stack(per_tap, dim=2).flatten(3).to(dtype)
    return grad_x, grad_w


class _Aggregation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.geometry = g
        return _aggregation_forward(x, w, g)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x, grad_w = _aggregation_backward(x, w, grad, ctx.geometry, need_x, need_w)
        return grad_x, grad_w, None


def aggregation(x: torch.Tensor, w: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """``Σ_k w[b, c mod Cw, k, l] · x̃[b, c, nbr_k(l)]`` without unfolding ``x``."""
    return _Aggregation.apply(x, w, g)


# ------------------------------------------------------------------------------------------ subtraction


def _windows(xp: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """``(B, C, Hp, Wp)`` -> ``(B, C, Kh, Kw, Ho, Wo)`` view of every footprint neighbour (no copy)."""
    (kh, kw), (dh, dw), (sh, sw) = g.kernel, g.dilation, g.stride
    win = xp.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)  # (B, C, Ho, Wo, eh, ew)
    return win[..., ::dh, ::dw].permute(0, 1, 4, 5, 2, 3)


def _subtraction_forward(x1: torch.Tensor, x2: torch.Tensor | None, g: LocalGeometry) -> torch.Tensor:
    B, C = x1.shape[:2]
    p1 = g.pad(x1.contiguous())
    p2 = p1 if x2 is None else g.pad(x2.contiguous())
    rows, cols = _centre(g)
    centre = p1[:, :, rows, cols].view(B, C, 1, 1, *g.out_size)
    if _compiling():  # functionalised graphs have no out= (the compiler picks the layout)
        # clone(): a fresh tensor, not a view (see below); the compiler fuses it into the subtraction.
        return (centre - _windows(p2, g)).reshape(B, C, g.num_taps, -1).clone()
    # Written in (k, l) order through a view, returning the base tensor: a view returned from an
    # autograd Function could not be modified in place (SAN's γ applies an in-place ReLU to it).
    out = torch.empty(B, C, g.num_taps, g.out_size[0] * g.out_size[1], dtype=x1.dtype, device=x1.device)
    torch.sub(centre, _windows(p2, g), out=out.view(B, C, *g.kernel, *g.out_size))
    return out


def _subtraction_backward(
    grad: torch.Tensor, g: LocalGeometry, need_centre: bool, need_nbr: bool, same: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``centre − x̃2[nbr]`` w.r.t. the centre input and the neighbour input (or their sum
    when ``same``, i.e. ``local_subtraction``)."""
    B, C = grad.shape[:2]
    Ho, Wo = g.out_size
    acc = _acc_dtype(grad.dtype)
    Hp, Wp = g.in_size[0] + 2 * g.padding[0], g.in_size[1] + 2 * g.padding[1]
    grad5 = grad.view(B, C, g.num_taps, Ho, Wo)
    rows, cols = _centre(g)
    g_nbr = g_centre = None
    if need_nbr:
        g_nbr = torch.zeros(B, C, Hp, Wp, dtype=acc, device=grad.device)

        def chunk(ch: tuple[slice, slice]) -> None:  # images bs, channels cs
            bs, cs = ch
            gb, gc = g_nbr[bs, cs], grad5[bs, cs]
            for k, r, c in _taps(g):
                gb[:, :, r, c].sub_(gc[:, :, k])

        _run(chunk, _chunks(B, C, Ho * Wo))
    if need_centre:
        total = grad5.sum(dim=2, dtype=acc)
        if same and g_nbr is not None:
            g_nbr[:, :, rows, cols] += total
            return _fold_padding(g_nbr, g).to(grad.dtype), None
        g_centre = torch.zeros(B, C, Hp, Wp, dtype=acc, device=grad.device)
        g_centre[:, :, rows, cols] = total
        g_centre = _fold_padding(g_centre, g).to(grad.dtype)
    if g_nbr is not None:
        g_nbr = _fold_padding(g_nbr, g).to(grad.dtype)
    return g_centre, g_nbr


class _Subtraction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
        ctx.geometry = g
        return _subtraction_forward(x, None, g)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None
        grad_x, _ = _subtraction_backward(grad, ctx.geometry, True, True, same=True)
        return grad_x, None


class _Subtraction2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
        ctx.geometry = g
        return _subtraction_forward(x1, x2, g)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        need1, need2 = ctx.needs_input_grad[:2]
        if not (need1 or need2):
            return None, None, None
        g1, g2 = _subtraction_backward(grad, ctx.geometry, need1, need2, same=False)
        return g1, g2, None


def subtraction(x: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """``x[centre(l)] − x̃[nbr_k(l)]``: one broadcast subtraction from a window view; saves nothing."""
    return _Subtraction.apply(x, g)


def subtraction2(x1: torch.Tensor, x2: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """``x1[centre(l)] − x̃2[nbr_k(l)]``."""
    return _Subtraction2.apply(x1, x2, g)


def register() -> None:
    """Register this implementation (idempotent); done when :mod:`visattn.ops` is imported."""
    register_implementation(
        NAME,
        subtraction=subtraction,
        subtraction2=subtraction2,
        aggregation=aggregation,
        supports=supports,
        priority=PRIORITY,
    )
