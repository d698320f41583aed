"""Input validation and shared helpers of the multi-label and attribute metrics.

Holds the array types, :class:`UndefinedMetricWarning`, option checking, label/mask validation
(:func:`_prepare`), the probability check for threshold metrics and the empty-class policy; the conventions
they implement are documented in :mod:`visattn.metrics.multilabel`. Used by that module,
:mod:`visattn.metrics._average_precision`, :mod:`visattn.metrics._accumulator` and
:mod:`visattn.metrics.attribute`.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Literal

import numpy as np
import torch

Array = torch.Tensor | np.ndarray
APMode = Literal["noninterp", "voc07", "allpoint", "sklearn"]
EmptyClass = Literal["exclude", "zero", "error"]

# Frames in files under this folder belong to visattn.metrics (see _user_stacklevel).
_HERE = os.path.dirname(os.path.abspath(__file__))


class UndefinedMetricWarning(UserWarning):
    """A per-class metric is undefined (no evaluated positive) and was left out of the class mean."""


def _choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _prepare(
    scores: Array,
    targets: Array,
    mask: Array | None = None,
    *,
    ternary: bool = False,
    ignore_as: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate inputs; return float64 scores, ``positive`` (evaluated positives) and ``evaluated`` (bool)."""
    s = torch.as_tensor(scores).detach().cpu()
    t = torch.as_tensor(targets).detach().cpu()
    if s.dim() != 2 or s.shape != t.shape:
        raise ValueError(
            f"scores and targets must both be (N, C) with the same shape, got {tuple(s.shape)} and {tuple(t.shape)}"
        )
    s = s.double()
    if torch.isnan(s).any():
        raise ValueError("scores contain NaN; expected real-valued probabilities or logits")
    if mask is None:
        m = torch.ones(t.shape, dtype=torch.bool)
    else:
        m = torch.as_tensor(mask).detach().cpu()
        if m.shape != t.shape:
            raise ValueError(f"mask must have the shape of targets {tuple(t.shape)}, got {tuple(m.shape)}")
        if m.dtype != torch.bool:
            if not ((m == 0) | (m == 1)).all():
                raise ValueError("mask must be boolean (True = evaluate) or in {0, 1}")
            m = m != 0
    allowed = (-1, 0, 1) if ternary else (0, 1)
    bad = m.clone()
    for v in allowed:
        bad &= t != v
    if bad.any():
        seen = torch.unique(t[bad])[:5].tolist()
        hint = "1 positive, -1 negative, 0 ignored" if ternary else "use ternary=True for {1, -1, 0} labels"
        expected = "{1, -1, 0}" if ternary else "{0, 1}"
        raise ValueError(f"targets must be in {expected} ({hint}) on evaluated entries, got values {seen}")
    if ternary:
        m = m & (t != 0)
    positive = (t == 1) & m
    if ignore_as is not None:
        positive = torch.where(
            m, positive, _choice("ignore_as", ignore_as, ("positive", "negative")) == "positive"
        )
        m = torch.ones_like(m)
    return s, positive, m


def _probabilities(s: torch.Tensor, from_logits: bool) -> torch.Tensor:
    if from_logits:
        return torch.sigmoid(s)
    if s.numel() and (s.min() < 0 or s.max() > 1):
        raise ValueError(
            "threshold metrics expect probabilities in [0, 1]; pass from_logits=True for logits "
            f"(got scores in [{float(s.min()):.4g}, {float(s.max()):.4g}])"
        )
    return s


def _user_stacklevel() -> int:
    """``stacklevel`` that points a warning at the first frame outside ``visattn.metrics``."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_HERE):
        frame, level = frame.f_back, level + 1
    return level


def _empty(undefined: torch.Tensor, empty_class: str, what: str, warn: bool) -> list[int]:
    """Classes to exclude from the means (``undefined`` classes under ``'exclude'``); raise for ``'error'``."""
    _choice("empty_class", empty_class, ("exclude", "zero", "error"))
    classes = torch.nonzero(undefined).flatten().tolist()
    if not classes or empty_class == "zero":
        return []
    if empty_class == "error":
        raise ValueError(f"{what} is undefined for classes {classes}: no positive among evaluated entries")
    if warn:
        warnings.warn(
            f"{what} is undefined for classes {classes} (no positive among evaluated entries): "
            "reported as NaN and left out of the class means (empty_class='exclude')",
            UndefinedMetricWarning,
            stacklevel=_user_stacklevel(),
        )
    return classes


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / torch.where(b > 0, b, 1), 0.0)
