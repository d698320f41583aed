"""Multi-label ranking metrics (see ``docs/metrics.md`` and the spec ``multilabel_metrics.md``).

Conventions: average precision is non-interpolated (``AP = (1/P) Σ_{i: rel_i=1} prec@i``) over the
entries whose evaluation mask is True, ranked by a **stable** descending sort (tied scores keep input
order); a class with no positive after masking has no AP: it is reported as NaN and left out of the mean.
"""

from __future__ import annotations

import torch

__all__ = ["average_precision", "mean_average_precision"]


def average_precision(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-class non-interpolated AP.

    Args:
        scores: ``(N, C)`` scores (probabilities or logits: AP depends only on the ranking).
        targets: ``(N, C)`` in {0, 1}.
        mask: optional ``(N, C)`` bool, True = evaluate the entry (e.g. False for VOC "difficult").

    Returns:
        ``(C,)`` float64 AP per class; NaN for classes without positives.
    """
    if scores.shape != targets.shape or scores.dim() != 2:
        raise ValueError(
            f"scores and targets must both be (N, C), got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    scores = scores.detach().double().cpu()
    targets = targets.detach().cpu() > 0.5
    if mask is None:
        mask = torch.ones_like(targets)
    elif mask.shape != targets.shape:
        raise ValueError(
            f"mask must have the shape of targets {tuple(targets.shape)}, got {tuple(mask.shape)}"
        )
    mask = mask.detach().cpu().bool()
    ap = torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    for c in range(scores.shape[1]):
        keep = mask[:, c]
        s, t = scores[keep, c], targets[keep, c]
        positives = int(t.sum())
        if positives == 0:
            continue
        order = torch.sort(s, descending=True, stable=True).indices
        hits = t[order].double()
        precision_at = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
        ap[c] = (precision_at * hits).sum() / positives
    return ap


def mean_average_precision(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """mAP: unweighted mean of :func:`average_precision` over classes that have positives."""
    ap = average_precision(scores, targets, mask)
    valid = ~torch.isnan(ap)
    if not valid.any():
        raise ValueError("no class has a positive label among the evaluated entries: mAP is undefined")
    return float(ap[valid].mean())
