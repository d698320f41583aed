"""Pedestrian-attribute metrics (PETA, PA-100K, RAP): label-based mA and instance-based Acc/Prec/Rec/F1.

Spec: ``multilabel_metrics.md`` §5; reference: ``valencebond/Rethinking_of_PAR``
``metrics/pedestrian_metrics.py`` (``get_pedestrian_metrics``), whose output names are kept. Values are fractions.

* Prediction: ``prob > 0.5`` (**strict**, Rethinking; ``strict=False`` for ``>=``). ``from_logits=True`` applies a
  sigmoid once to the full array; otherwise probabilities outside [0, 1] are rejected.
* Label-based, per attribute ``j`` over its evaluated samples: ``label_pos_recall = TP/(TP+FN)``,
  ``label_neg_recall = TN/(TN+FP)``, ``label_ma`` = their mean, ``mA`` = mean of ``label_ma``; extras
  ``label_prec = TP/(TP+FP)``, ``label_acc = TP/(TP+FP+FN)``, ``label_f1``. An empty denominator gives 0
  (Rethinking adds ``eps = 1e-20``); attributes without positives or without negatives are warned about.
* Instance-based, per sample ``i`` over its evaluated attributes (``Y`` true, ``P`` predicted positive sets):
  ``Acc = |Y∩P|/|Y∪P|``, ``Prec = |Y∩P|/|P|``, ``Rec = |Y∩P|/|Y|``, averaged over samples (samples with no
  evaluated attribute are skipped). ``instance_f1='averaged'`` (default, Rethinking) is ``2PR/(P+R)`` of the
  averaged P and R; ``'mean'`` averages per-sample F1. ``empty='zero'`` (default; Rethinking, VAC): every empty
  denominator gives 0; ``empty='one'``: a sample with ``Y`` and ``P`` both empty scores 1 on Acc, Prec and Rec.
* Ignored labels: RAP's value 2 ("uncertain") must be masked, e.g. ``attribute_metrics(p, labels,
  mask=labels != 2)`` (label values are only checked where ``mask`` is True); masked entries are dropped from
  both metric families. For ternary labels (1/−1/0, e.g. WIDER) the caller must state how 0 counts:
  ``ignore_for_pr='drop'`` or ``'negative'`` (VAC maps −1 → 0 and keeps unspecified as negative).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch

from ._accumulator import _Accumulator
from ._multilabel_inputs import (
    Array,
    UndefinedMetricWarning,
    _choice,
    _prepare,
    _probabilities,
    _safe_div,
    _user_stacklevel,
)
from .multilabel import _PROBE

__all__ = ["AttributeMetrics", "attribute_metrics"]


def _check_ignore(ternary: bool, ignore_for_pr: str | None) -> str:
    if ternary and ignore_for_pr is None:
        raise ValueError(
            "ternary attribute labels need an explicit ignore_for_pr='drop' or 'negative' "
            "(conventions for unspecified labels differ across codebases)"
        )
    return _choice("ignore_for_pr", ignore_for_pr or "drop", ("drop", "negative"))


def attribute_metrics(
    scores: Array,
    targets: Array,
    mask: Array | None = None,
    *,
    ternary: bool = False,
    ignore_for_pr: Literal["drop", "negative"] | None = None,
    from_logits: bool = False,
    thr: float = 0.5,
    strict: bool = True,
    empty: Literal["zero", "one"] = "zero",
    instance_f1: Literal["averaged", "mean"] = "averaged",
) -> dict[str, Any]:
    """Pedestrian-attribute metrics of ``scores (N, A)`` against ``targets (N, A)`` (see the module docstring).

    Returns floats ``mA``, ``instance_acc``, ``instance_prec``, ``instance_recall``, ``instance_f1`` and
    ``(A,)`` float64 tensors ``label_pos_recall``, ``label_neg_recall``, ``label_ma``, ``label_prec``,
    ``label_acc``, ``label_f1``, plus ``num_samples``.
    """
    ignore = _check_ignore(ternary, ignore_for_pr)
    _choice("empty", empty, ("zero", "one"))
    _choice("instance_f1", instance_f1, ("averaged", "mean"))
    s, gt, ev = _prepare(scores, targets, mask, ternary=ternary)
    if ignore == "negative":
        ev = torch.ones_like(ev)
    p = _probabilities(s, from_logits)
    pred = (p > thr if strict else p >= thr) & ev
    tp, fp = (pred & gt).sum(0).double(), (pred & ~gt).sum(0).double()
    fn, tn = (~pred & gt & ev).sum(0).double(), (~pred & ~gt & ev).sum(0).double()
    undefined = torch.nonzero((tp + fn == 0) | (tn + fp == 0)).flatten().tolist()
    if undefined:
        warnings.warn(
            f"attributes {undefined} have no evaluated positive or no evaluated negative: their missing "
            "recall counts as 0 in mA (Rethinking_of_PAR convention)",
            UndefinedMetricWarning,
            stacklevel=_user_stacklevel(),
        )
    pos_recall, neg_recall = _safe_div(tp, tp + fn), _safe_div(tn, tn + fp)
    label_ma = (pos_recall + neg_recall) / 2
    label_prec = _safe_div(tp, tp + fp)
    out: dict[str, Any] = {
        "mA": float(label_ma.mean()),
        "label_pos_recall": pos_recall,
        "label_neg_recall": neg_recall,
        "label_ma": label_ma,
        "label_prec": label_prec,
        "label_acc": _safe_div(tp, tp + fp + fn),
        "label_f1": _safe_div(2 * label_prec * pos_recall, label_prec + pos_recall),
    }
    inter = (pred & gt).sum(1).double()
    n_pred, n_gt = pred.sum(1).double(), gt.sum(1).double()
    acc, prec, rec = _safe_div(inter, n_pred + n_gt - inter), _safe_div(inter, n_pred), _safe_div(inter, n_gt)
    if empty == "one":
        both_empty = (n_pred == 0) & (n_gt == 0)
        acc, prec, rec = (torch.where(both_empty, 1.0, x) for x in (acc, prec, rec))
    rows = ev.any(1)
    if not rows.any():
        raise ValueError("no evaluated entry: attribute metrics are undefined")
    acc, prec, rec = acc[rows], prec[rows], rec[rows]
    mean_p, mean_r = prec.mean(), rec.mean()
    f1 = _safe_div(2 * mean_p * mean_r, mean_p + mean_r) if instance_f1 == "averaged" else None
    if f1 is None:
        f1 = _safe_div(2 * prec * rec, prec + rec).mean()
    out |= {
        "instance_acc": float(acc.mean()),
        "instance_prec": float(mean_p),
        "instance_recall": float(mean_r),
        "instance_f1": float(f1),
        "num_samples": s.shape[0],
    }
    return out


class AttributeMetrics(_Accumulator):
    """Accumulating :func:`attribute_metrics` (``update`` / ``compute`` / ``reset``), gathered across processes.

    ``update(scores, targets, mask=None, indices=None)`` stores a batch; ``compute()`` gathers the rows of
    every process when ``torch.distributed`` is initialised (all ranks must call it), drops duplicate samples
    by ``indices`` if given (``DistributedSampler`` pads with repeats) and returns the dict of
    :func:`attribute_metrics`. Options are those of :func:`attribute_metrics`.

    Example (RAP, value 2 = uncertain)::

        metric = AttributeMetrics(num_attributes=54)
        metric.update(model(images).sigmoid(), labels, mask=labels != 2, indices=index)
        metric.compute()["mA"]
    """

    def __init__(
        self,
        num_attributes: int | None = None,
        *,
        ternary: bool = False,
        ignore_for_pr: Literal["drop", "negative"] | None = None,
        process_group: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(num_attributes, ternary, process_group)
        self.ignore_for_pr = _check_ignore(ternary, ignore_for_pr)
        attribute_metrics(_PROBE[0], _PROBE[1], **options)  # fail fast on bad or unknown options
        self.options = options

    def compute(self) -> dict[str, Any]:
        """All attribute metrics on the accumulated (and gathered) rows."""
        s, pos, m = self._state()
        return attribute_metrics(s, pos.long(), m, ignore_for_pr=self.ignore_for_pr, **self.options)
