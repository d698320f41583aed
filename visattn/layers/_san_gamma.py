"""SAN's weight function γ and a cheaper, exactly equivalent evaluation of its first stage.

γ = BN, act, 1×1 conv, BN, act, 1×1 conv runs on ``(B, width, K², L)`` relation tensors: few channels,
``K²`` times the spatial extent of the feature map. Two things here make it cheaper without changing the
maths (same parameters, buffers and state-dict keys; equal up to floating-point summation order):

* :class:`PointwiseConv` computes the 1×1 convolutions as one batched matrix product, which PyTorch's CPU
  convolutions are not tuned for at these shapes.
* :func:`folded_gamma_input` folds γ's first BatchNorm into the pairwise ``subtraction`` relation.
  ``r = φ_i − ψ_j`` is affine in ``(φ, ψ)``, so BN's batch statistics over ``(B, K², L)`` follow from
  sums over the feature maps and their ``K×K`` box sums (``Σ_j ψ_j``, ``Σ_j ψ_j²``, ``Σ_i φ_i Σ_j ψ_j``),
  and ``a·r + b = (a·φ_i + b) − a·ψ_j`` is one local subtraction of rescaled inputs. The relation is then
  written once, instead of being written, read for the statistics, read and written again by BN, and read
  again by BN's backward pass. The position-encoding channels (``p_i − p_j``) are the same for every image,
  so their BN, activation and share of the first convolution run once per batch, not once per image.
  Running statistics are updated exactly as ``nn.BatchNorm2d`` does (count ``B·K²·L``).

The folded path is used by :class:`visattn.layers.PairwiseSelfAttention` when the relation is
``subtraction`` (the official one) and γ's first norm is exactly ``nn.BatchNorm2d``; any other norm (e.g.
``SyncBatchNorm`` after ``convert_sync_batchnorm``, ``GroupNorm``) takes the plain path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visattn.ops import LocalGeometry, local_subtraction2

__all__ = [
    "PointwiseConv",
    "batch_norm_affine",
    "can_fold_norm",
    "folded_gamma_input",
    "make_gamma",
    "pointwise",
]


def pointwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    shared: torch.Tensor | None = None,
) -> torch.Tensor:
    """1×1 convolution of ``(B, Cin, H, W)`` with a ``(Cout, Cin)`` weight as one batched matrix product;
    ``shared`` adds a batch-independent ``(1, Cout, H, W)`` term."""
    b, c_in, h, w = x.shape
    c_out = weight.shape[0]
    flat = x.reshape(b, c_in, h * w)
    offset = None if bias is None else bias.reshape(1, c_out, 1)
    if shared is not None:
        shared = shared.reshape(1, c_out, h * w)
        offset = shared if offset is None else shared + offset
    weight = weight.unsqueeze(0).expand(b, -1, -1)
    y = torch.bmm(weight, flat) if offset is None else torch.baddbmm(offset, weight, flat)
    return y.reshape(b, c_out, h, w)


class PointwiseConv(nn.Conv2d):
    """A 1×1 ``nn.Conv2d`` (same parameters and state-dict keys) computed by :func:`pointwise`.

    On the ``(B, C, K², L)`` relation tensors of SAN (few channels, huge spatial extent) PyTorch's CPU
    convolutions (im2col with one thread, oneDNN with more) are slower than ``baddbmm`` on the
    ``(B, C, K²·L)`` view, markedly so with two threads on SAN10's first-stage relation.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.weight.flatten(1), self.bias)


def _activation(act_layer) -> nn.Module:
    # In place for ReLU, as the official conv_w: it follows a norm (or the relation, a fresh tensor),
    # whose backward pass does not need its output, and saves a K²-sized buffer per activation.
    return act_layer(inplace=True) if act_layer is nn.ReLU else act_layer()


def make_gamma(c_in: int, c_mid: int, c_out: int, act_layer, norm_layer) -> nn.Sequential:
    """SAN's weight function γ; indices 0, 2, 3, 5 match the official ``conv_w``."""
    return nn.Sequential(
        norm_layer(c_in),
        _activation(act_layer),
        PointwiseConv(c_in, c_mid, bias=False),
        norm_layer(c_mid),
        _activation(act_layer),
        PointwiseConv(c_mid, c_out),
    )


def can_fold_norm(gamma: nn.Sequential) -> bool:
    """γ's first norm is a plain ``nn.BatchNorm2d`` and its first conv a :class:`PointwiseConv`."""
    return type(gamma[0]) is nn.BatchNorm2d and isinstance(gamma[2], PointwiseConv)


def batch_norm_affine(
    bn: nn.BatchNorm2d, mean: torch.Tensor | None, var: torch.Tensor | None, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` with ``bn(x) = a·x + b`` per channel; updates the running statistics as ``bn`` would.

    ``mean``/``var`` (biased) are the batch statistics, or ``None`` when ``bn`` normalises with its running
    statistics (evaluation); ``count`` is the number of values per channel (for the unbiased running
    variance). Mirrors ``torch.nn.modules.batchnorm._BatchNorm.forward``.
    """
    if bn.training or bn.running_mean is None:
        if mean is None or var is None:
            raise ValueError("batch_norm_affine: batch statistics are needed in training mode")
        if bn.training and bn.track_running_stats and bn.running_mean is not None:
            factor = 0.0 if bn.momentum is None else bn.momentum
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if bn.momentum is None:
                    factor = 1.0 / float(bn.num_batches_tracked)
            with torch.no_grad():
                unbiased = var.detach() * (count / max(count - 1, 1))
                bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), factor)
                bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), factor)
    else:
        mean, var = bn.running_mean, bn.running_var
    inv_std = torch.rsqrt(var + bn.eps)
    a = inv_std if bn.weight is None else bn.weight * inv_std
    b = -mean * a if bn.bias is None else bn.bias - mean * a
    return a, b


def _box_sum(xp: torch.Tensor, g: LocalGeometry) -> torch.Tensor:
    """``Σ_k xp[nbr_k(l)]`` of an already padded map as ``(B, C, L)`` (depthwise all-ones convolution)."""
    ones = xp.new_ones(xp.shape[1], 1, *g.kernel)
    return F.conv2d(xp, ones, stride=g.stride, dilation=g.dilation, groups=xp.shape[1]).flatten(2)


def subtraction_moments(
    x1: torch.Tensor, x2: torch.Tensor, geometry: dict
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance of ``local_subtraction2(x1, x2)`` over ``(B, K², L)``, and
    that count ``B·K²·L``; float32 (float64 inputs stay float64), differentiable, without building the
    relation."""
    g = LocalGeometry.of(x1, **geometry, op="subtraction_moments")
    if x1.dtype != torch.float64:
        x1, x2 = x1.float(), x2.float()
    # Shift both by detached constants (after padding, so zero padding stays zero in the original
    # values): the variance is shift-invariant and the shifted relation has a mean near 0, so
    # E[r²] − E[r]² does not cancel catastrophically in float32.
    sh, sw = g.stride
    centre = x1[:, :, ::sh, ::sw].flatten(2)
    c1 = centre.detach().mean(dim=(0, 2))
    c2 = x2.detach().mean(dim=(0, 2, 3))
    centre = centre - c1.view(1, -1, 1)
    x2p = g.pad(x2) - c2.view(1, -1, 1, 1)
    box1 = _box_sum(x2p, g)
    box2 = _box_sum(x2p * x2p, g)
    taps = g.num_taps
    count = centre.shape[0] * centre.shape[2] * taps
    sum_r = taps * centre.sum(dim=(0, 2)) - box1.sum(dim=(0, 2))
    sum_r2 = (
        taps * centre.square().sum(dim=(0, 2)) - 2 * (centre * box1).sum(dim=(0, 2)) + box2.sum(dim=(0, 2))
    )
    mean = sum_r / count
    var = (sum_r2 / count - mean * mean).clamp_min(0)
    return mean + (c1 - c2), var, count


def folded_gamma_input(
    gamma: nn.Sequential, x1: torch.Tensor, x2: torch.Tensor, pos: torch.Tensor | None, geometry: dict
) -> torch.Tensor:
    """``gamma[:3](cat([local_subtraction2(x1, x2), pos.expand(B)], 1))`` without building either tensor.

    ``pos``: the ``(1, 2, K², L)`` position relation or ``None``. Requires :func:`can_fold_norm`. Equal to
    the plain evaluation up to floating-point rounding, running statistics included.
    """
    bn, act, conv = gamma[0], gamma[1], gamma[2]
    c = x1.shape[1]
    mean = var = None
    count = 0
    if bn.training or bn.running_mean is None:
        mean, var, count = subtraction_moments(x1, x2, geometry)
        if pos is not None:
            p = pos.to(mean.dtype)
            mean = torch.cat([mean, p.mean(dim=(0, 2, 3))])
            var = torch.cat([var, p.var(dim=(0, 2, 3), unbiased=False)])
    a, b = batch_norm_affine(bn, mean, var, count)
    a4, b4 = a.view(1, -1, 1, 1), b.view(1, -1, 1, 1)
    rel = local_subtraction2(
        (a4[:, :c] * x1 + b4[:, :c]).to(x1.dtype), (a4[:, :c] * x2).to(x2.dtype), **geometry
    )
    weight = conv.weight.flatten(1)
    shared = None
    if pos is not None:
        pos_n = act((a4[:, c:] * pos + b4[:, c:]).to(rel.dtype))
        shared = pointwise(pos_n, weight[:, c:].to(rel.dtype))
    return pointwise(act(rel), weight[:, :c].to(rel.dtype), None if conv.bias is None else conv.bias, shared)
