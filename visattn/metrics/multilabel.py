"""Multi-label recognition metrics: AP variants, CP/CR/CF1/OP/OR/OF1, and an accumulating metric object.

Spec: ``multilabel_metrics.md``. All values are fractions in [0, 1]. Conventions (and what they reproduce):

Inputs. ``scores (N, C)`` are probabilities, or logits with ``from_logits=True`` (a sigmoid is applied once, in
float64, to the full array; nothing is ever guessed per batch, unlike torchmetrics). Threshold metrics reject
probabilities outside [0, 1]. Labels are ``targets`` in {0, 1} plus an optional ``mask`` (True = evaluate), or
ternary with ``ternary=True``: 1 positive, -1 negative, 0 ignored (VOC "difficult", WIDER "unspecified"). Label
values are checked only on evaluated entries, so e.g. RAP's value 2 may stay where ``mask`` is False.
``ignore_as='positive'|'negative'`` turns ignored entries into labels first (mmpretrain ``difficult_as_positive``).

Average precision (per class, ignored entries dropped, then the unweighted mean over classes):

* ``'noninterp'`` (default) ``(1/P) sum_{i: rel_i=1} prec@i``: CSRA, ML-GCN, mmpretrain, Rethinking_of_PAR.
* ``'voc07'`` 11-point ``(1/11) sum_t max{prec@i : rec@i >= t}``: VOC2007 devkit ``VOCevalcls.m``. The grid
  ``t = k/10`` is compared exactly (``10 * TP >= k * P``); the devkit's floating grid may differ by one ulp.
* ``'allpoint'`` area under the right-monotone precision envelope: VOC2010+ devkit, SRN, VAA test code.
* ``'sklearn'`` step AP over distinct score thresholds (tie-invariant): scikit-learn
  ``average_precision_score``, torchmetrics ``MultilabelAveragePrecision(thresholds=None)``.

Ties (all but ``'sklearn'``): ``tie_break='stable'`` (default) keeps input order among tied scores (CSRA's
quicksort is arbitrary); ``'pessimistic'`` puts negatives first (worst case). AP is rank-based, so it ranks the
raw scores (logits are not squashed, which could create ties). A class with no evaluated positive:
``empty_class='exclude'`` (default: NaN, :class:`UndefinedMetricWarning` naming the classes, left out of the
means and reported), ``'zero'`` (counts as 0: mmpretrain, torchmetrics), ``'error'`` (CSRA divides by zero).
Per-batch AP averaging is not offered: accumulate with :class:`MultiLabelMetrics`.

Threshold metrics: predicted positive iff ``p >= thr`` (default 0.5: CSRA, ML-GCN, mmpretrain) or ``p > thr``
with ``strict=True`` (SRN, torchmetrics, Rethinking). ``CP = mean_c TP_c/Pred_c`` with ``Pred_c = 0`` giving 0
(as CSRA/ML-GCN), ``CR = mean_c TP_c/GT_c``; classes with ``GT_c = 0`` are handled by ``empty_class`` for all
class means (CP, CR, mean F1). ``OP, OR, OF1`` are micro (= torchmetrics micro). ``cf1='harmonic'`` (default;
CSRA, ML-GCN, papers) ``2 CP CR/(CP+CR)``; ``cf1='mean_f1'`` mean of per-class F1 (SRN ``evaluate.m``,
mmpretrain and torchmetrics macro F1). Ignored entries: ``ignore_for_pr='drop'`` (default; VOC: CSRA drops the
sample, mmpretrain zeroes both sides) or ``'negative'`` (WIDER: CSRA ``cal_PR``, SRN). ``topk=k``: a label is
predicted iff among the row's k highest scores (ties to the lower class index) **and** past the threshold
(ML-GCN ``overall_topk``, CSRA top-3); ``thr=None`` is pure top-k (mmpretrain ``topk``). The top-k selection
ranks all C scores of a row, including ignored entries (as CSRA and ML-GCN do).

Presets (explicit arguments win): ``'voc07'`` and ``'coco'`` drop ignored entries (CSRA/ML-GCN protocol),
``'voc07_devkit'`` adds 11-point AP, ``'wider'`` counts ignored as negative (CSRA), ``'wider_srn'`` is SRN's
WIDER protocol (all-point AP, ``> 0.5``, CF1 as mean F1, ignored as negative).

Layout: input validation lives in ``_multilabel_inputs.py``, AP in ``_average_precision.py`` and the row
accumulator in ``_accumulator.py`` (all re-exported or used from here); this module holds the presets, the
threshold metrics and :class:`MultiLabelMetrics`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ._accumulator import _Accumulator
from ._average_precision import _ap, average_precision, mean_average_precision
from ._multilabel_inputs import (
    APMode,
    Array,
    EmptyClass,
    UndefinedMetricWarning,
    _choice,
    _empty,
    _prepare,
    _probabilities,
    _safe_div,
)

__all__ = [
    "PRESETS",
    "MultiLabelMetrics",
    "UndefinedMetricWarning",
    "average_precision",
    "mean_average_precision",
    "multilabel_metrics",
    "precision_recall_f1",
]

PRESETS: dict[str, dict[str, Any]] = {
    "generic": {},
    "voc07": {"ignore_for_pr": "drop"},
    "voc07_devkit": {"ap_mode": "voc07", "ignore_for_pr": "drop"},
    "coco": {"ignore_for_pr": "drop"},
    "wider": {"ignore_for_pr": "negative"},
    "wider_srn": {"ap_mode": "allpoint", "ignore_for_pr": "negative", "strict": True, "cf1": "mean_f1"},
}
_DEFAULTS: dict[str, Any] = {
    "ap_mode": "noninterp",
    "ignore_for_pr": "drop",
    "strict": False,
    "cf1": "harmonic",
}


def _resolve(preset: str | None, **given: Any) -> dict[str, Any]:
    """Fill the ``None`` options from ``preset`` then from the library defaults."""
    base = PRESETS[_choice("preset", preset or "generic", tuple(PRESETS))]
    out = {k: (v if v is not None else base.get(k, _DEFAULTS[k])) for k, v in given.items()}
    _choice("ap_mode", out.get("ap_mode", "noninterp"), ("noninterp", "voc07", "allpoint", "sklearn"))
    _choice("ignore_for_pr", out.get("ignore_for_pr", "drop"), ("drop", "negative"))
    _choice("cf1", out.get("cf1", "harmonic"), ("harmonic", "mean_f1"))
    return out


def _prf(
    s, pos, m, *, from_logits, thr, strict, topk, ignore_for_pr, cf1, empty_class, warn
) -> dict[str, Any]:
    N, C = s.shape
    if thr is None and topk is None:
        raise ValueError("give a threshold thr, a topk, or both")
    pred = torch.ones(N, C, dtype=torch.bool)
    if thr is not None:
        p = _probabilities(s, from_logits)
        pred = p > thr if strict else p >= thr
    if topk is not None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        top = torch.sort(s, dim=1, descending=True, stable=True).indices[:, : min(topk, C)]
        pred &= torch.zeros_like(pred).scatter_(1, top, True)
    if ignore_for_pr == "drop":
        pred &= m
    tp = (pred & pos).sum(0).double()
    n_pred, n_gt = pred.sum(0).double(), pos.sum(0).double()
    precision, recall = _safe_div(tp, n_pred), _safe_div(tp, n_gt)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    excluded = _empty(n_gt == 0, empty_class, "recall (CR)", warn)
    keep = torch.ones(C, dtype=torch.bool)
    keep[excluded] = False
    if not keep.any():
        raise ValueError("no class has a positive label among the evaluated entries: CP/CR are undefined")
    recall[~keep], f1[~keep] = float("nan"), float("nan")
    cp, cr = precision[keep].mean(), recall[keep].mean()
    op, orc = _safe_div(tp.sum(), n_pred.sum()), _safe_div(tp.sum(), n_gt.sum())
    out = {
        "CP": cp,
        "CR": cr,
        "CF1": _safe_div(2 * cp * cr, cp + cr) if cf1 == "harmonic" else f1[keep].mean(),
        "OP": op,
        "OR": orc,
        "OF1": _safe_div(2 * op * orc, op + orc),
    }
    out = {k: float(v) for k, v in out.items()}
    return out | {"per_class_precision": precision, "per_class_recall": recall, "per_class_f1": f1}, excluded


def precision_recall_f1(
    scores: Array,
    targets: Array,
    mask: Array | None = None,
    *,
    ternary: bool = False,
    from_logits: bool = False,
    thr: float | None = 0.5,
    strict: bool | None = None,
    topk: int | None = None,
    cf1: Literal["harmonic", "mean_f1"] | None = None,
    ignore_for_pr: Literal["drop", "negative"] | None = None,
    ignore_as: Literal["positive", "negative"] | None = None,
    empty_class: EmptyClass = "exclude",
    preset: str | None = None,
) -> dict[str, Any]:
    """CP, CR, CF1, OP, OR, OF1 (floats) plus per-class precision/recall/F1 tensors, ``excluded_classes``
    and the ``cf1`` convention used. ``None`` options come from ``preset`` (see :data:`PRESETS`)."""
    o = _resolve(preset, strict=strict, cf1=cf1, ignore_for_pr=ignore_for_pr)
    s, pos, m = _prepare(scores, targets, mask, ternary=ternary, ignore_as=ignore_as)
    out, excluded = _prf(
        s, pos, m, from_logits=from_logits, thr=thr, topk=topk, empty_class=empty_class, warn=True, **o
    )
    return out | {"excluded_classes": excluded, "cf1": o["cf1"]}


def multilabel_metrics(
    scores: Array,
    targets: Array,
    mask: Array | None = None,
    *,
    ternary: bool = False,
    from_logits: bool = False,
    ap_mode: APMode | None = None,
    tie_break: Literal["stable", "pessimistic"] = "stable",
    empty_class: EmptyClass = "exclude",
    thr: float | None = 0.5,
    strict: bool | None = None,
    topk: int | None = None,
    cf1: Literal["harmonic", "mean_f1"] | None = None,
    ignore_for_pr: Literal["drop", "negative"] | None = None,
    ignore_as: Literal["positive", "negative"] | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """Everything at once: ``mAP``, per-class ``AP``, the threshold metrics (``CP`` … ``OF1`` at ``thr``; with
    ``topk=k`` also ``CP_top{k}`` … ``OF1_top{k}``, thresholded unless ``thr=None``), per-class
    precision/recall/F1, ``excluded_classes`` (classes without an evaluated positive left out of the means),
    ``cf1`` and ``num_samples``. Emits at most one :class:`UndefinedMetricWarning`."""
    o = _resolve(preset, ap_mode=ap_mode, strict=strict, cf1=cf1, ignore_for_pr=ignore_for_pr)
    s, pos, m = _prepare(scores, targets, mask, ternary=ternary, ignore_as=ignore_as)
    ap, excluded = _ap(s, pos, m, o.pop("ap_mode"), tie_break, empty_class, warn=True)
    keep = ~torch.isnan(ap)
    if not keep.any():
        raise ValueError("no class has a positive label among the evaluated entries: mAP is undefined")
    out: dict[str, Any] = {"mAP": float(ap[keep].mean()), "AP": ap}
    pr = {"from_logits": from_logits, "empty_class": empty_class, "warn": False, **o}
    if thr is not None:
        out |= _prf(s, pos, m, thr=thr, topk=None, **pr)[0]
    if topk is not None:
        top = _prf(s, pos, m, thr=thr, topk=topk, **pr)[0]
        out |= {f"{k}_top{topk}": v for k, v in top.items() if not k.startswith("per_class")}
    return out | {"excluded_classes": excluded, "cf1": o["cf1"], "num_samples": s.shape[0]}


_PROBE = (torch.tensor([[0.9], [0.1]]), torch.tensor([[1], [0]]))  # two rows on which every option is valid


class MultiLabelMetrics(_Accumulator):
    """Accumulating multi-label metric (torchmetrics-like ``update`` / ``compute`` / ``reset``).

    Stores every row and computes once (AP averaged over batches is wrong and not offered); the options are
    those of :func:`multilabel_metrics`, validated here, and ``compute()`` returns its dict.

    Distributed evaluation: when ``torch.distributed`` is initialised, ``compute()`` is a collective (every
    rank of ``process_group`` must call it): it all-gathers the rows of all ranks (sizes first, then padded
    tensors, trimmed; on the current CUDA device under NCCL) and every rank returns the same result. Ranks
    may hold different numbers of rows, or none. Pass the dataset index of each sample (``update(...,
    indices=index)``) to drop the duplicates ``DistributedSampler`` pads the last shard with (the first copy
    is kept) and to evaluate in dataset order, so that tie order, hence the result, equals single-process
    evaluation. Without indices, rows are taken in rank-then-arrival order and nothing is de-duplicated.

    Example::

        metric = MultiLabelMetrics(ternary=True, topk=3, preset="voc07")
        for images, labels, index in loader:
            metric.update(model(images).sigmoid(), labels, indices=index)
        result = metric.compute()  # {"mAP": ..., "AP": tensor, "CF1": ..., "CF1_top3": ..., ...}
    """

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        ternary: bool = False,
        process_group: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(num_classes, ternary, process_group)
        self.options = options
        multilabel_metrics(_PROBE[0], _PROBE[1], **options)  # fail fast on bad or unknown options

    def compute(self) -> dict[str, Any]:
        """All metrics on the accumulated (and gathered) rows; see :func:`multilabel_metrics`."""
        s, pos, m = self._state()
        return multilabel_metrics(s, pos.long(), m, **self.options)
