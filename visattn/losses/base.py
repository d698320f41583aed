"""Masking, reduction and the element-wise multi-label losses: BCE, weighted focal, ASL.

Private half of :mod:`visattn.losses` (import from there): the ``(logits, targets, mask=None)`` contract
and the ``reduction`` modes are documented in that module's docstring.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REDUCTIONS = ("mean", "batch_mean", "sum", "none")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    return reduction


def _prepare(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(
            f"logits and targets must both be (B, C); got {tuple(logits.shape)}, {tuple(targets.shape)}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # low-precision logsigmoid/exp lose the tails
    return logits, targets.to(logits.dtype)


def _reduce(loss: Tensor, mask: Tensor | None, reduction: str) -> Tensor:
    if mask is not None:
        mask = torch.broadcast_to(mask.to(device=loss.device, dtype=torch.bool), loss.shape)
        loss = torch.where(mask, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "batch_mean":
        return loss.sum() / max(loss.shape[0], 1)
    if mask is None:
        return loss.mean()
    return loss.sum() / mask.sum().clamp(min=1).to(loss.dtype)


def weighted_focal_terms(
    logits: Tensor,
    targets: Tensor,
    gamma: float = 0.0,
    pos_weight: Tensor | None = None,
    neg_weight: Tensor | None = None,
) -> Tensor:
    """Element-wise ``-[w⁺(1-p)^γ y log p + w⁻ p^γ (1-y) log(1-p)]`` from logits (vaa.md §2.1).

    ``log p``/``log(1-p)`` are ``logsigmoid(±z)`` and the focal factors ``exp(γ·logsigmoid(∓z))``, so the
    value and gradient stay finite for any logit. ``γ = 0`` without weights is torch's BCE-with-logits.
    """
    if gamma == 0 and pos_weight is None and neg_weight is None:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos, neg = targets * log_p, (1 - targets) * log_q
    if gamma != 0:
        pos = pos * torch.exp(gamma * log_q)
        neg = neg * torch.exp(gamma * log_p)
    if pos_weight is not None:
        pos = pos * pos_weight.to(pos.dtype)
    if neg_weight is not None:
        neg = neg * neg_weight.to(neg.dtype)
    return -(pos + neg)


def positive_prior(targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-class positive frequency ``a_c`` over the evaluated entries of a ``(N, C)`` target matrix.

    Entries with ``mask`` False or target > 1 (RAP "uncertain") are excluded; a target counts as positive
    when > 0.5. Raises ``ValueError`` if a class has no evaluated entry.
    """
    valid = targets <= 1
    if mask is not None:
        valid = valid & torch.broadcast_to(mask.to(torch.bool), targets.shape)
    counts = valid.sum(0)
    if bool((counts == 0).any()):
        raise ValueError(
            f"classes without evaluated entries: {torch.nonzero(counts == 0).flatten().tolist()}"
        )
    return ((targets > 0.5) & valid).sum(0).double() / counts.double()


class BCEWithLogits(nn.Module):
    """Binary cross-entropy on logits with an ignore ``mask`` (torch's BCE-with-logits element-wise)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        logits, targets = _prepare(logits, targets)
        return _reduce(
            F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), mask, self.reduction
        )


class WeightedFocalLoss(nn.Module):
    """Class-weighted focal BCE, ``-[w⁺(1-p)^γ y log p + w⁻ p^γ (1-y) log(1-p)]`` (vaa.md §2.1).

    Args:
        pos_weight, neg_weight: absolute per-class weights ``w⁺``/``w⁻`` (``(C,)`` or scalar; None = 1).
            Constants (buffers, no gradient). Note: unlike torch's ``pos_weight`` these are not relative.
        gamma: focusing exponent (0 = weighted BCE). The focal factor is differentiated, as in the code.
        reduction: see the module docstring.
        ignore_above: entries whose target exceeds this value are ignored (``1`` for RAP "uncertain" = 2).
    """

    def __init__(
        self,
        pos_weight: Tensor | float | None = None,
        neg_weight: Tensor | float | None = None,
        gamma: float = 0.0,
        reduction: str = "mean",
        ignore_above: float | None = None,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.reduction = _check_reduction(reduction)
        self.ignore_above = ignore_above
        for name, w in (("pos_weight", pos_weight), ("neg_weight", neg_weight)):
            self.register_buffer(
                name, None if w is None else torch.as_tensor(w, dtype=torch.float32).detach()
            )

    @classmethod
    def from_prior(
        cls,
        prior: Tensor | Sequence[float],
        weights: str | None = "paper",
        gamma: float | None = None,
        **kwargs: Any,
    ) -> WeightedFocalLoss:
        """Build from the per-class positive frequency ``a_c`` (see :func:`positive_prior`).

        ``weights``: ``'paper'`` ``w⁺ = w⁻ = exp(-a)``, γ 0.5; ``'vaa_code'`` ``w⁺ = exp(1-r)``,
        ``w⁻ = exp(r)`` with ``r = a/(1-a)`` if ``a <= 0.5`` else 1, γ 2; ``'deepmar'`` ``w⁺ = exp(1-a)``,
        ``w⁻ = exp(a)``, γ 0, targets > 1 ignored; ``None`` unweighted, γ 0. ``gamma`` overrides the default.
        """
        a = torch.as_tensor(prior, dtype=torch.float64)
        if a.dim() != 1 or bool(((a < 0) | (a > 1)).any()):
            raise ValueError("prior must be a 1-D tensor of frequencies in [0, 1]")
        if weights == "paper":
            wp = wn = torch.exp(-a)
            default_gamma = 0.5
        elif weights == "vaa_code":
            r = torch.where(a <= 0.5, a / (1 - a).clamp(min=1e-12), torch.ones_like(a))
            wp, wn, default_gamma = torch.exp(1 - r), torch.exp(r), 2.0
        elif weights == "deepmar":
            wp, wn, default_gamma = torch.exp(1 - a), torch.exp(a), 0.0
            kwargs.setdefault("ignore_above", 1.0)
        elif weights is None:
            wp = wn = None
            default_gamma = 0.0
        else:
            raise ValueError(f"unknown weights {weights!r}; expected 'paper', 'vaa_code', 'deepmar' or None")
        return cls(wp, wn, default_gamma if gamma is None else gamma, **kwargs)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        logits, targets = _prepare(logits, targets)
        if self.ignore_above is not None:
            keep = targets <= self.ignore_above
            mask = keep if mask is None else keep & mask.to(device=keep.device, dtype=torch.bool)
        loss = weighted_focal_terms(logits, targets, self.gamma, self.pos_weight, self.neg_weight)
        return _reduce(loss, mask, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}, weighted={self.pos_weight is not None}"


class AsymmetricLoss(nn.Module):
    """timm's ``AsymmetricLossMultiLabel`` (ASL) with an ignore ``mask`` and visattn's reductions.

    timm computes element-wise (``reduction='none'``) in float32 (float64 inputs are down-cast); this
    wrapper masks and reduces. Default ``'mean'``; timm's own default is ``'batchmean'`` (= ``'batch_mean'``)
    and the original ASL code uses ``'sum'``, which matters for the learning rate.
    """

    def __init__(
        self,
        gamma_neg: float = 4,
        gamma_pos: float = 1,
        clip: float | None = 0.05,
        reduction: str = "mean",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        from timm.loss import AsymmetricLossMultiLabel

        if "reduction" not in inspect.signature(AsymmetricLossMultiLabel).parameters:
            raise RuntimeError(
                "this timm's AsymmetricLossMultiLabel has no reduction= (needed to mask); upgrade timm"
            )
        self.reduction = _check_reduction(reduction)
        self.asl = AsymmetricLossMultiLabel(gamma_neg, gamma_pos, clip, reduction="none", **kwargs)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        logits, targets = _prepare(logits, targets)
        return _reduce(self.asl(logits, targets), mask, self.reduction)
