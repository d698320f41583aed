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
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "PRESETS",
    "MultiLabelMetrics",
    "UndefinedMetricWarning",
    "average_precision",
    "mean_average_precision",
    "multilabel_metrics",
    "precision_recall_f1",
]

Array = torch.Tensor | np.ndarray
APMode = Literal["noninterp", "voc07", "allpoint", "sklearn"]
EmptyClass = Literal["exclude", "zero", "error"]

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


_HERE = os.path.dirname(os.path.abspath(__file__))


class UndefinedMetricWarning(UserWarning):
    """A per-class metric is undefined (no evaluated positive) and was left out of the class mean."""


def _choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _resolve(preset: str | None, **given: Any) -> dict[str, Any]:
    """Fill the ``None`` options from ``preset`` then from the library defaults."""
    base = PRESETS[_choice("preset", preset or "generic", tuple(PRESETS))]
    out = {k: (v if v is not None else base.get(k, _DEFAULTS[k])) for k, v in given.items()}
    _choice("ap_mode", out.get("ap_mode", "noninterp"), ("noninterp", "voc07", "allpoint", "sklearn"))
    _choice("ignore_for_pr", out.get("ignore_for_pr", "drop"), ("drop", "negative"))
    _choice("cf1", out.get("cf1", "harmonic"), ("harmonic", "mean_f1"))
    return out


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


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / torch.where(b > 0, b, 1), 0.0)


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


def _gather_rows(t: torch.Tensor, sizes: list[int], group: Any, device: torch.device) -> torch.Tensor:
    """All-gather tensors whose first dimension differs per rank: pad to the largest, gather, trim."""
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: t.shape[0]] = t.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]).cpu()


class _Accumulator:
    """Accumulates validated ``(scores, positive, evaluated)`` rows (and optional sample indices) on the CPU;
    ``_state()`` gathers them across processes, de-duplicates and orders them (see :class:`MultiLabelMetrics`).
    """

    def __init__(self, num_classes: int | None, ternary: bool, process_group: Any) -> None:
        self.num_classes, self.ternary, self.process_group = num_classes, ternary, process_group
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated row."""
        self._rows: list[tuple[torch.Tensor, ...]] = []
        self._with_indices: bool | None = None

    def update(
        self, scores: Array, targets: Array, mask: Array | None = None, indices: Array | None = None
    ) -> None:
        """Add a batch: ``scores (B, C)``, ``targets (B, C)`` (binary, or ternary if so constructed),
        optional ``mask (B, C)`` (True = evaluate) and optional per-sample dataset ``indices (B,)``."""
        s, pos, m = _prepare(scores, targets, mask, ternary=self.ternary)
        if self.num_classes is not None and s.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} classes, got scores of shape {tuple(s.shape)}")
        self.num_classes = s.shape[1]
        if self._with_indices is not None and self._with_indices != (indices is not None):
            raise ValueError("give indices to every update() or to none")
        self._with_indices = indices is not None
        row: tuple[torch.Tensor, ...] = (s, pos, m)
        if indices is not None:
            idx = torch.as_tensor(indices).detach().cpu().long().reshape(-1)
            if idx.shape[0] != s.shape[0]:
                raise ValueError(f"indices must have shape ({s.shape[0]},), got {tuple(idx.shape)}")
            row = (*row, idx)
        self._rows.append(row)

    def _state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.process_group
        world = dist.get_world_size(g) if dist.is_available() and dist.is_initialized() else 1
        nccl = world > 1 and dist.get_backend(g) == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        flag = -1 if self._with_indices is None else int(self._with_indices)
        meta = torch.tensor([[sum(r[0].shape[0] for r in self._rows), self.num_classes or 0, flag]])
        metas = _gather_rows(meta, [1] * world, g, device).tolist() if world > 1 else meta.tolist()
        classes, flags = {c for n, c, _ in metas if n > 0}, {f for n, _, f in metas if n > 0}
        if not classes:
            raise ValueError("no samples were accumulated: call update() before compute()")
        if len(classes) > 1 or len(flags) > 1:
            raise ValueError(f"processes disagree on the number of classes {classes} or on giving indices")
        C, with_idx = classes.pop(), flags.pop() == 1
        if self._rows:
            local = [torch.cat(parts) for parts in zip(*self._rows, strict=True)]
        else:  # this rank saw no data but still takes part in the gather
            local = [torch.zeros(0, C, dtype=torch.float64), torch.zeros(0, C, dtype=torch.bool)]
            local += [local[1], torch.zeros(0, dtype=torch.long)][: 1 + with_idx]
        if world > 1:  # bool is sent as uint8
            sizes = [n for n, _, _ in metas]
            local = [
                _gather_rows(x.to(torch.uint8) if x.dtype == torch.bool else x, sizes, g, device)
                for x in local
            ]
            local[1], local[2] = local[1].bool(), local[2].bool()
        s, pos, m = local[:3]
        if not with_idx:
            return s, pos, m
        order = torch.sort(local[3], stable=True).indices
        ranked = local[3][order]
        first = torch.ones_like(ranked, dtype=torch.bool)
        first[1:] = ranked[1:] != ranked[:-1]
        keep = order[first]
        return s[keep], pos[keep], m[keep]


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
