"""Per-class average precision (all four ``ap_mode`` conventions) and mAP for multi-label scores.

The conventions (``noninterp``, ``voc07``, ``allpoint``, ``sklearn``; tie breaking; empty classes) are
documented in :mod:`visattn.metrics.multilabel`, which re-exports :func:`average_precision` and
:func:`mean_average_precision`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ._multilabel_inputs import APMode, Array, EmptyClass, _choice, _empty, _prepare


def _suffix_max(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(torch.cummax(torch.flip(x, [0]), 0).values, [0])


def _ap_core(
    s: torch.Tensor, pos: torch.Tensor, m: torch.Tensor, ap_mode: str, tie_break: str
) -> torch.Tensor:
    """Per-class AP, all classes at once (columns sorted independently); NaN where there is no positive."""
    N, C = s.shape
    if N == 0:
        return torch.full((C,), float("nan"), dtype=torch.float64)
    if _choice("tie_break", tie_break, ("stable", "pessimistic")) == "pessimistic":
        pre = torch.sort(pos.to(torch.uint8), dim=0, stable=True).indices  # negatives first ...
        order = pre.gather(0, torch.sort(s.gather(0, pre), dim=0, descending=True, stable=True).indices)
    else:  # ... and kept first among ties by the stable score sort
        order = torch.sort(s, dim=0, descending=True, stable=True).indices
    hit = pos.gather(0, order).double()
    valid = m.gather(0, order)
    tp = hit.cumsum(0)
    precision = tp / valid.double().cumsum(0).clamp_min(1)  # ignored entries leave both counts unchanged
    n_pos = tp[-1]
    if ap_mode == "noninterp":
        total = (precision * hit).sum(0)
    elif ap_mode == "allpoint":
        total = (_suffix_max(precision * valid) * hit).sum(0)
    elif ap_mode == "voc07":
        envelope = torch.cat([_suffix_max(precision * valid), torch.zeros(1, C, dtype=torch.float64)])
        # recall is non-decreasing down the ranking: the first rank with recall >= k/10 starts the admissible set
        ap = sum(envelope.gather(0, (10 * tp < k * n_pos).sum(0, keepdim=True))[0] for k in range(11)) / 11
        return torch.where(n_pos > 0, ap, float("nan"))
    elif ap_mode == "sklearn":  # precision taken at the last rank of each group of tied scores
        ranked = s.gather(0, order)
        is_end = torch.ones_like(valid)
        is_end[:-1] = ranked[:-1] != ranked[1:]
        rank = torch.arange(N).unsqueeze(1).expand(N, C)
        group_end = _suffix_max(torch.where(is_end, -rank, -N)).neg()  # smallest end index >= i
        total = (precision.gather(0, group_end) * hit).sum(0)
    else:
        raise ValueError(
            f"ap_mode must be one of ('noninterp', 'voc07', 'allpoint', 'sklearn'), got {ap_mode!r}"
        )
    return torch.where(n_pos > 0, total / n_pos.clamp_min(1), float("nan"))


def _ap(s, pos, m, ap_mode, tie_break, empty_class, warn) -> tuple[torch.Tensor, list[int]]:
    ap = _ap_core(s, pos, m, ap_mode, tie_break)
    excluded = _empty(torch.isnan(ap), empty_class, "AP", warn)
    if empty_class == "zero":
        ap = torch.nan_to_num(ap, nan=0.0)
    return ap, excluded


def average_precision(
    scores: Array,
    targets: Array,
    mask: Array | None = None,
    *,
    ternary: bool = False,
    ap_mode: APMode = "noninterp",
    tie_break: Literal["stable", "pessimistic"] = "stable",
    empty_class: EmptyClass = "exclude",
    ignore_as: Literal["positive", "negative"] | None = None,
) -> torch.Tensor:
    """Per-class AP as a ``(C,)`` float64 tensor (NaN for classes without positives under ``'exclude'``).

    ``scores`` may be probabilities or logits (only the ranking matters). See the module docstring.
    """
    s, pos, m = _prepare(scores, targets, mask, ternary=ternary, ignore_as=ignore_as)
    return _ap(s, pos, m, ap_mode, tie_break, empty_class, warn=True)[0]


def mean_average_precision(scores: Array, targets: Array, mask: Array | None = None, **options: Any) -> float:
    """mAP: unweighted mean of :func:`average_precision` (same keyword options) over the included classes."""
    ap = average_precision(scores, targets, mask, **options)
    valid = ~torch.isnan(ap)
    if not valid.any():
        raise ValueError("no class has a positive label among the evaluated entries: mAP is undefined")
    return float(ap[valid].mean())
