"""Triton kernels and launchers behind :mod:`visattn.ops.triton_gpu` (imported lazily: needs ``triton``).

The kernels use only ``triton.language`` builtins, no functions of Triton's standard library (``tl.zeros``
etc. are ``@triton.jit`` functions, compiled or interpreted depending on ``TRITON_INTERPRET`` when
``triton`` was first imported, which may be before :mod:`.triton_gpu` sets it).

Every kernel is one flat 1-D grid over the elements it writes (``BLOCK`` consecutive elements per program),
so no grid axis limit applies; indices are 32-bit unless a tensor has ``≥ 2^30`` elements (``WIDE``).
Footprint size, stride and dilation are compile-time constants (SAN uses a handful of them), the spatial
sizes and paddings are runtime arguments. Accumulation is in float32 (float64 for float64 inputs).

Backward passes are gathers, never scatters: each input element enumerates the padded positions that
read it (itself, plus with reflect padding its mirror images ``−i`` and ``2(N−1)−i`` along each axis:
``NR = 3`` candidates per axis, ``1`` with zero padding) and, for every footprint tap, the one output
position (if any) whose tap reads that padded position. Each element is written by one program: no
atomics, no padded buffer to fold.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from .local_attention import LocalGeometry

# ---------------------------------------------------------------------------------------------- helpers


@triton.jit
def _offsets(BLOCK: tl.constexpr, WIDE: tl.constexpr):
    if WIDE:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return offs


@triton.jit
def _src(o, k, N, P, S: tl.constexpr, D: tl.constexpr, REFLECT: tl.constexpr):
    """Input index (one axis) read by tap ``k`` of output index ``o``, and whether it is inside."""
    u = o * S + k * D - P
    if REFLECT:  # no edge repetition; one reflection suffices because P < N
        u = tl.where(u < 0, -u, u)
        u = tl.where(u >= N, 2 * (N - 1) - u, u)
        ok = u >= 0
    else:
        ok = (u >= 0) & (u < N)
        u = tl.where(ok, u, 0)
    return u, ok


@triton.jit
def _mirror(i, R: tl.constexpr, N, P):
    """``R``-th padded position (unpadded coordinates) holding input index ``i``: ``i`` (R=0), its
    reflection ``−i`` before the start (R=1) or ``2(N−1)−i`` after the end (R=2), and whether it exists."""
    if R == 0:
        u = i
        ok = i >= 0
    elif R == 1:
        u = -i
        ok = (i >= 1) & (i <= P)
    else:
        u = 2 * (N - 1) - i
        ok = (i <= N - 2) & (i >= N - 1 - P)
    return u, ok


@triton.jit
def _dst(u, k, No, P, S: tl.constexpr, D: tl.constexpr):
    """Output index (one axis) whose tap ``k`` reads padded position ``u``, and whether it exists."""
    t = u + P - k * D
    ok = (t >= 0) & (t % S == 0)
    o = tl.where(ok, t, 0) // S
    return o, ok & (o < No)


# ---------------------------------------------------------------------------------------------- kernels


@triton.jit
def _subtraction_fwd(
    x1, x2, out, total, H, W, Ho, Wo, PH, PW,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr,
    DW: tl.constexpr, REFLECT: tl.constexpr, F64: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``out[bc, k, l] = x1[bc, centre(l)] − x̃2[bc, nbr_k(l)]`` (half precision: in float32, rounded once)."""
    offs = _offsets(BLOCK, WIDE)
    m = offs < total
    L = Ho * Wo
    l = offs % L
    k = (offs // L) % (KH * KW)
    base = offs // (L * KH * KW) * (H * W)
    oh = l // Wo
    ow = l % Wo
    ch, okch = _src(oh, (KH - 1) // 2, H, PH, SH, DH, REFLECT)
    cw, okcw = _src(ow, (KW - 1) // 2, W, PW, SW, DW, REFLECT)
    ih, okh = _src(oh, k // KW, H, PH, SH, DH, REFLECT)
    iw, okw = _src(ow, k % KW, W, PW, SW, DW, REFLECT)
    c = tl.load(x1 + base + ch * W + cw, mask=m & okch & okcw, other=0.0)
    v = tl.load(x2 + base + ih * W + iw, mask=m & okh & okw, other=0.0)
    acc = c.to(tl.float64 if F64 else tl.float32) - v.to(tl.float64 if F64 else tl.float32)
    tl.store(out + offs, acc.to(out.dtype.element_ty), mask=m)


@triton.jit
def _subtraction_bwd(
    grad, g_centre, g_nbr, total, H, W, Ho, Wo, PH, PW,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr,
    DW: tl.constexpr, NR: tl.constexpr, NEED_CENTRE: tl.constexpr, NEED_NBR: tl.constexpr,
    SAME: tl.constexpr, F64: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Per input element: ``g_centre = Σ_k grad[k, l]`` over the outputs ``l`` centred on it and
    ``g_nbr = −Σ grad[k, l]`` over the ``(k, l)`` reading it; ``SAME`` stores their sum in ``g_centre``."""
    offs = _offsets(BLOCK, WIDE)
    m = offs < total
    j = offs % W
    i = (offs // W) % H
    L = Ho * Wo
    gbase = offs // (H * W) * (L * KH * KW)
    acc_c = tl.full([BLOCK], 0.0, tl.float64 if F64 else tl.float32)
    acc_n = tl.full([BLOCK], 0.0, tl.float64 if F64 else tl.float32)
    for r in tl.static_range(NR):
        u, oku = _mirror(i, r, H, PH)
        for q in tl.static_range(NR):
            v, okv = _mirror(j, q, W, PW)
            ok = m & oku & okv
            if NEED_NBR:
                for kh in range(KH):
                    oh, okh = _dst(u, kh, Ho, PH, SH, DH)
                    for kw in range(KW):
                        ow, okw = _dst(v, kw, Wo, PW, SW, DW)
                        src = grad + gbase + (kh * KW + kw) * L + oh * Wo + ow
                        acc_n += tl.load(src, mask=ok & okh & okw, other=0.0).to(acc_n.dtype)
            if NEED_CENTRE:
                oh, okh = _dst(u, (KH - 1) // 2, Ho, PH, SH, DH)
                ow, okw = _dst(v, (KW - 1) // 2, Wo, PW, SW, DW)
                for k in range(KH * KW):
                    src = grad + gbase + k * L + oh * Wo + ow
                    acc_c += tl.load(src, mask=ok & okh & okw, other=0.0).to(acc_c.dtype)
    if SAME:
        tl.store(g_centre + offs, (acc_c - acc_n).to(g_centre.dtype.element_ty), mask=m)
    else:
        if NEED_CENTRE:
            tl.store(g_centre + offs, acc_c.to(g_centre.dtype.element_ty), mask=m)
        if NEED_NBR:
            tl.store(g_nbr + offs, (-acc_n).to(g_nbr.dtype.element_ty), mask=m)


@triton.jit
def _aggregation_fwd(
    x, w, out, total, C, CW, H, W, Ho, Wo, PH, PW,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr,
    DW: tl.constexpr, REFLECT: tl.constexpr, F64: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``out[b, c, l] = Σ_k w[b, c mod CW, k, l] · x̃[b, c, nbr_k(l)]``."""
    offs = _offsets(BLOCK, WIDE)
    m = offs < total
    L = Ho * Wo
    l = offs % L
    bc = offs // L
    oh = l // Wo
    ow = l % Wo
    xbase = bc * (H * W)
    wbase = (bc // C * CW + bc % C % CW) * (KH * KW * L) + l
    acc = tl.full([BLOCK], 0.0, tl.float64 if F64 else tl.float32)
    for kh in range(KH):
        ih, okh = _src(oh, kh, H, PH, SH, DH, REFLECT)
        for kw in range(KW):
            iw, okw = _src(ow, kw, W, PW, SW, DW, REFLECT)
            ok = m & okh & okw
            xv = tl.load(x + xbase + ih * W + iw, mask=ok, other=0.0).to(acc.dtype)
            wv = tl.load(w + wbase + (kh * KW + kw) * L, mask=ok, other=0.0).to(acc.dtype)
            acc += xv * wv
    tl.store(out + offs, acc.to(out.dtype.element_ty), mask=m)


@triton.jit
def _aggregation_bwd_w(
    x, go, gw, total, C, CW, H, W, Ho, Wo, PH, PW,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr,
    DW: tl.constexpr, REFLECT: tl.constexpr, F64: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``gw[b, g, k, l] = Σ_{c ≡ g mod CW} go[b, c, l] · x̃[b, c, nbr_k(l)]``."""
    offs = _offsets(BLOCK, WIDE)
    m = offs < total
    L = Ho * Wo
    l = offs % L
    k = (offs // L) % (KH * KW)
    bg = offs // (L * KH * KW)
    ih, okh = _src(l // Wo, k // KW, H, PH, SH, DH, REFLECT)
    iw, okw = _src(l % Wo, k % KW, W, PW, SW, DW, REFLECT)
    ok = m & okh & okw
    bc = bg // CW * C + bg % CW  # channel j·CW + g of image b, advanced by CW per step
    acc = tl.full([BLOCK], 0.0, tl.float64 if F64 else tl.float32)
    for _ in range(C // CW):
        xv = tl.load(x + bc * (H * W) + ih * W + iw, mask=ok, other=0.0).to(acc.dtype)
        gv = tl.load(go + bc * L + l, mask=ok, other=0.0).to(acc.dtype)
        acc += xv * gv
        bc += CW
    tl.store(gw + offs, acc.to(gw.dtype.element_ty), mask=m)


@triton.jit
def _aggregation_bwd_x(
    w, go, gx, total, C, CW, H, W, Ho, Wo, PH, PW,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr,
    DW: tl.constexpr, NR: tl.constexpr, F64: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``gx[b, c, i, j] = Σ w[b, c mod CW, k, l] · go[b, c, l]`` over the ``(k, l)`` reading ``(i, j)``."""
    offs = _offsets(BLOCK, WIDE)
    m = offs < total
    j = offs % W
    i = (offs // W) % H
    bc = offs // (H * W)
    L = Ho * Wo
    gbase = bc * L
    wbase = (bc // C * CW + bc % C % CW) * (KH * KW * L)
    acc = tl.full([BLOCK], 0.0, tl.float64 if F64 else tl.float32)
    for r in tl.static_range(NR):
        u, oku = _mirror(i, r, H, PH)
        for q in tl.static_range(NR):
            v, okv = _mirror(j, q, W, PW)
            for kh in range(KH):
                oh, okh = _dst(u, kh, Ho, PH, SH, DH)
                for kw in range(KW):
                    ow, okw = _dst(v, kw, Wo, PW, SW, DW)
                    ok = m & oku & okv & okh & okw
                    lo = oh * Wo + ow
                    wv = tl.load(w + wbase + (kh * KW + kw) * L + lo, mask=ok, other=0.0).to(acc.dtype)
                    gv = tl.load(go + gbase + lo, mask=ok, other=0.0).to(acc.dtype)
                    acc += wv * gv
    tl.store(gx + offs, acc.to(gx.dtype.element_ty), mask=m)


# --------------------------------------------------------------------------------------------- launchers


def _launch(kernel, total: int, like: torch.Tensor, args: tuple, g: LocalGeometry, **meta) -> None:
    """Run ``kernel`` over ``total`` output elements with the geometry arguments of ``g``."""
    if total == 0:
        return
    # Interpreter (CPU tensors): large blocks, since its cost is per program; GPU: 256 elements.
    block = min(256 if like.is_cuda else 4096, max(16, triton.next_power_of_2(total)))
    (H, W), (Ho, Wo), (ph, pw) = g.in_size, g.out_size, g.padding
    wide = max(total, like.numel(), *(a.numel() for a in args if isinstance(a, torch.Tensor))) >= 1 << 30
    geometry = dict(KH=g.kernel[0], KW=g.kernel[1], SH=g.stride[0], SW=g.stride[1])
    geometry.update(DH=g.dilation[0], DW=g.dilation[1])
    device = torch.cuda.device(like.device) if like.is_cuda else contextlib.nullcontext()
    with device:
        kernel[(triton.cdiv(total, block),)](
            *args, total, *meta.pop("sizes", ()), H, W, Ho, Wo, ph, pw, **geometry, **meta,
            WIDE=wide, BLOCK=block,
        )  # fmt: skip


def _f64(t: torch.Tensor) -> bool:
    return t.dtype == torch.float64


def subtraction_forward(x1: torch.Tensor, x2: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    B, C = x1.shape[:2]
    out = torch.empty(B, C, g.num_taps, g.out_size[0] * g.out_size[1], dtype=x1.dtype, device=x1.device)
    meta = dict(REFLECT=g.padding_mode == "reflect", F64=_f64(x1))
    _launch(_subtraction_fwd, out.numel(), x1, (x1, x2, out), g, **meta)
    return out


def subtraction_backward(
    grad: torch.Tensor, g: LocalGeometry, need_centre: bool, need_nbr: bool, same: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    B, C = grad.shape[:2]
    g_centre = torch.empty(B, C, *g.in_size, dtype=grad.dtype, device=grad.device)
    g_nbr = torch.empty_like(g_centre) if need_nbr and not same else g_centre
    nr = 3 if g.padding_mode == "reflect" else 1
    flags = dict(NEED_CENTRE=need_centre, NEED_NBR=need_nbr, SAME=same, NR=nr, F64=_f64(grad))
    _launch(_subtraction_bwd, g_centre.numel(), grad, (grad, g_centre, g_nbr), g, **flags)
    if same:
        return g_centre, None
    return (g_centre if need_centre else None), (g_nbr if need_nbr else None)


def aggregation_forward(x: torch.Tensor, w: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    B, C = x.shape[:2]
    out = torch.empty(B, C, *g.out_size, dtype=x.dtype, device=x.device)
    meta = dict(sizes=(C, w.shape[1]), REFLECT=g.padding_mode == "reflect", F64=_f64(x))
    _launch(_aggregation_fwd, out.numel(), x, (x, w, out), g, **meta)
    return out


def aggregation_backward(
    x: torch.Tensor, w: torch.Tensor, grad: torch.Tensor, g: LocalGeometry, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    sizes, f64 = (x.shape[1], w.shape[1]), _f64(x)
    grad_x = grad_w = None
    if need_x:
        grad_x = torch.empty_like(x)
        nr = 3 if g.padding_mode == "reflect" else 1
        _launch(_aggregation_bwd_x, x.numel(), x, (w, grad, grad_x), g, sizes=sizes, NR=nr, F64=f64)
    if need_w:
        grad_w = torch.empty_like(w)
        meta = dict(sizes=sizes, REFLECT=g.padding_mode == "reflect", F64=f64)
        _launch(_aggregation_bwd_w, w.numel(), x, (x, grad, grad_w), g, **meta)
    return grad_x, grad_w
