"""Multi-label losses with ignore masks: BCE, weighted focal, VAA's history-weighted attention loss, ASL.

Every loss takes ``(logits, targets, ..., mask=None)`` with logits/targets ``(B, C)`` and an optional bool
``mask`` (broadcastable to ``(B, C)``; ``False`` = ignored: VOC difficult, WIDER unspecified, RAP uncertain).
Ignored entries contribute neither loss nor gradient. ``reduction``:

- ``'mean'`` (default): mean over evaluated entries (all ``B·C`` without a mask; CSRA's official loss);
  0 when nothing is evaluated.
- ``'batch_mean'``: sum over evaluated entries / ``B`` ("sum over classes, mean over batch": mmpretrain's
  CSRA head, Rethinking-of-PAR, timm's ASL ``'batchmean'``; ``C×`` the ``'mean'`` loss without a mask).
- ``'sum'``: sum over evaluated entries; ``'none'``: the ``(B, C)`` loss with ignored entries set to 0.

Sources (spec ``vaa.md`` §2):

- Sarafianos, Xu & Kakadiaris, "Deep Imbalanced Attribute Classification using Visual Attention
  Aggregation", ECCV 2018 (arXiv 1807.03903): weighted focal loss on the primary branch (``'paper'``
  weights ``exp(-a_c)``, γ = 0.5, not verified against the PDF) and an attention loss weighted by
  ``1 + σ̂`` of each sample's prediction history (Active-Bias corrected std, Chang et al., NeurIPS 2017).
- Official MXNet Gluon code ``cvcode18/imbalanced_learning`` @ ``cb08dd7``: both loss classes are built
  with ``from_sigmoid=False``, which selects plain BCE-with-logits, so **as released every branch trains with
  unweighted BCE and the focal/history code is dead** (``VAALoss(variant='official')`` defaults to
  ``loss='bce'``; ``loss='vaa_code'`` runs the dormant code: γ = 2, odds-ratio weights, history with the
  zero-placeholder defect). The code computes ``log(p + 1e-12)``; visattn uses ``logsigmoid`` throughout.
  Its history is indexed by batch position (valid only without shuffling) with a hard-coded size;
  visattn keys it by dataset index and sizes it with ``num_samples``.
- DeepMAR-style weights ``exp(1-a)/exp(a)`` (Li et al.; ``valencebond/Rethinking_of_PAR`` ``ratio2weight``),
  where targets > 1 (RAP "uncertain") get weight 0: here ``ignore_above=1`` masks them out.
- ASL (Ridnik et al., ICCV 2021) through timm's ``AsymmetricLossMultiLabel``, wrapped to add masking.

Layout: this package's ``__init__`` holds the factory :func:`create_loss`; the masked element-wise losses
live in :mod:`visattn.losses.base` and the VAA history/total losses in :mod:`visattn.losses.vaa`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from visattn.losses.base import REDUCTIONS as REDUCTIONS
from visattn.losses.base import (
    AsymmetricLoss,
    BCEWithLogits,
    WeightedFocalLoss,
    positive_prior,
)
from visattn.losses.base import weighted_focal_terms as weighted_focal_terms
from visattn.losses.vaa import (
    VAA_WIDER_INVERSE_RATIOS,
    HistoryWeightedLoss,
    VAALoss,
    corrected_std,
)
from visattn.losses.vaa import Indices as Indices

__all__ = [
    "LOSS_NAMES",
    "VAA_WIDER_INVERSE_RATIOS",
    "AsymmetricLoss",
    "BCEWithLogits",
    "HistoryWeightedLoss",
    "VAALoss",
    "WeightedFocalLoss",
    "corrected_std",
    "create_loss",
    "positive_prior",
]


def _focal(**kwargs: Any) -> WeightedFocalLoss:
    return WeightedFocalLoss.from_prior(**kwargs) if "prior" in kwargs else WeightedFocalLoss(**kwargs)


_FACTORIES: dict[str, Any] = {
    "bce": BCEWithLogits,
    "focal": _focal,
    "weighted_focal": _focal,
    "history_weighted": HistoryWeightedLoss,
    "vaa": VAALoss,
    "asl": AsymmetricLoss,
}
LOSS_NAMES = tuple(_FACTORIES)


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a loss by name: ``'bce'``, ``'focal'``/``'weighted_focal'`` (with ``prior=`` →
    :meth:`WeightedFocalLoss.from_prior`), ``'history_weighted'``, ``'vaa'``, ``'asl'``."""
    key = name.lower().replace("-", "_")
    if key not in _FACTORIES:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(LOSS_NAMES)}")
    return _FACTORIES[key](**kwargs)
