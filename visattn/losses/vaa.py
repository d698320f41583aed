"""VAA's history-weighted attention loss and the VAA total loss (spec ``vaa.md`` §2.2-2.4).

Private half of :mod:`visattn.losses` (import from there; its docstring gives the sources and the
reduction modes): the Active-Bias corrected std :func:`corrected_std`, the per-sample prediction history
:class:`HistoryWeightedLoss`, and :class:`VAALoss`, which sums the primary and attention-branch terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visattn.utils.distributed import all_gather_variable

from .base import BCEWithLogits, WeightedFocalLoss, _check_reduction, _prepare, _reduce

Indices = Tensor | Sequence[int]
# ``1 / r_c`` hard-coded for WIDER-Attribute in the official code (``r_c`` = odds of the prior, capped at 1);
# the matching prior is ``a_c = r_c / (1 + r_c)``.
VAA_WIDER_INVERSE_RATIOS = (1.0, 3.4595959, 18.472435, 3.3854823, 3.5971165, 1.1370194, 12.584616,
                            5.7822747, 10.827924, 1.7478157, 8.8111115, 28.433332, 2.7568319, 18.020712)  # fmt: skip


def corrected_std(history: Tensor, count: Tensor | None = None) -> Tensor:
    """Active-Bias corrected std ``sqrt(v + v²/(n-1))``, ``v`` the population variance over dim -2.

    ``history`` is ``(..., H, C)`` ordered oldest → newest; ``count`` (shape ``...``) says how many of the
    newest entries are filled (default: all ``H``). Rows with ``count < 2`` give 0.
    """
    H = history.shape[-2]
    if count is None:
        v = history.var(dim=-2, unbiased=False)
        return torch.sqrt(v + v * v / (H - 1))
    n = count.clamp(0, H).to(history.dtype)[..., None, None]  # (..., 1, 1)
    slots = torch.arange(H, device=history.device, dtype=history.dtype)[:, None]
    valid = (slots >= H - n).to(history.dtype)  # (..., H, 1): the newest n slots
    mean = (history * valid).sum(-2, keepdim=True) / n.clamp(min=1)
    v = ((history - mean) ** 2 * valid).sum(-2) / n[..., 0].clamp(min=1)
    sigma = torch.sqrt(v + v * v / (n[..., 0] - 1).clamp(min=1))
    return torch.where(n[..., 0] >= 2, sigma, torch.zeros_like(sigma))


class HistoryWeightedLoss(nn.Module):
    """VAA attention loss: BCE × ``(1 + σ̂)`` from each sample's prediction history (vaa.md §2.2).

    The history is a FIFO per **dataset index** (buffers ``history`` ``(num_samples, history_len, C)``, oldest →
    newest, ``num_pushed``, ``last_push_epoch``), saved in ``state_dict`` so training can resume. Epochs
    are 0-based. :meth:`push` records predictions from ``start_history`` on, at most once per sample and
    epoch (duplicates, e.g. DistributedSampler padding, are dropped). From ``start_weighting`` on the loss
    is ``(1 + σ̂)·BCE`` with σ̂ = :func:`corrected_std` over the history (a constant); before, and for samples
    with fewer than ``min_history`` recorded entries, it is plain BCE exactly.

    Args:
        num_samples: dataset size (indices must be in ``[0, num_samples)``).
        num_classes: ``C``.
        history_len: ``Hn`` (code: 5).
        start_history: first epoch whose predictions are pushed (code: 2).
        start_weighting: first weighted epoch; default ``start_history + history_len`` (= 7, the first epoch
            with a full history), or 5 (the code's value) with ``code_compat``.
        min_history: entries needed before a sample is weighted (default ``history_len``: full history;
            2..history_len uses the filled entries only, with ``Hn`` = their number).
        code_compat: reproduce the official defect: σ̂ over the full zero-initialised FIFO (zeros count as
            predictions, ``Hn = history_len``) for every sample once ``epoch >= start_weighting``.
        reduction: see the module docstring.

    Which predictions to push (fused vs this branch's) is the caller's choice; :class:`VAALoss` does it.
    Under DDP every rank keeps the full buffer: :meth:`push` all-gathers indices and predictions over the
    default process group (``sync=True``), so it must be called on every rank at the same steps.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        history_len: int = 5,
        start_history: int = 2,
        start_weighting: int | None = None,
        min_history: int | None = None,
        code_compat: bool = False,
        reduction: str = "mean",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if num_samples < 1 or num_classes < 1 or history_len < 2 or start_history < 0:
            raise ValueError("need num_samples >= 1, num_classes >= 1, history_len >= 2, start_history >= 0")
        self.num_samples, self.num_classes, self.history_len = num_samples, num_classes, history_len
        self.start_history = start_history
        if start_weighting is None:
            start_weighting = 5 if code_compat else start_history + history_len
        self.start_weighting = start_weighting
        self.min_history = history_len if min_history is None else min_history
        if not 2 <= self.min_history <= history_len:
            raise ValueError(f"min_history must be in [2, {history_len}], got {self.min_history}")
        self.code_compat = code_compat
        self.reduction = _check_reduction(reduction)
        self.register_buffer("history", torch.zeros(num_samples, history_len, num_classes, dtype=dtype))
        self.register_buffer("num_pushed", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("last_push_epoch", torch.full((num_samples,), -1, dtype=torch.long))

    def _indices(self, indices: Indices) -> Tensor:
        idx = torch.as_tensor(indices, device=self.history.device).long().flatten()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            raise IndexError(f"sample indices must be in [0, {self.num_samples})")
        return idx

    @torch.no_grad()
    def sample_weights(self, indices: Indices, epoch: int) -> Tensor:
        """``(B, C)`` weights ``1 + σ̂`` for these samples at ``epoch`` (ones during burn-in)."""
        idx = self._indices(indices)
        if int(epoch) < self.start_weighting:
            return torch.ones(idx.numel(), self.num_classes, dtype=self.history.dtype, device=idx.device)
        rows = self.history[idx]
        if self.code_compat:
            return 1 + corrected_std(rows)
        count = self.num_pushed[idx]
        sigma = corrected_std(rows, count)
        return 1 + torch.where((count >= self.min_history)[:, None], sigma, torch.zeros_like(sigma))

    def forward(
        self,
        logits: Tensor,
        targets: Tensor,
        indices: Indices,
        epoch: int,
        mask: Tensor | None = None,
    ) -> Tensor:
        logits, targets = _prepare(logits, targets)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if int(epoch) >= self.start_weighting:
            loss = loss * self.sample_weights(indices, epoch).to(device=loss.device, dtype=loss.dtype)
        return _reduce(loss, mask, self.reduction)

    @torch.no_grad()
    def push(self, probabilities: Tensor, indices: Indices, epoch: int, sync: bool = True) -> None:
        """Append ``(B, C)`` probabilities to the FIFOs of ``indices`` (no-op before ``start_history``)."""
        if int(epoch) < self.start_history:
            return
        probs = probabilities.detach()
        idx = torch.as_tensor(indices, device=probs.device).long().flatten()
        if probs.shape != (idx.numel(), self.num_classes):
            raise ValueError(
                f"probabilities must be (B, {self.num_classes}) matching indices, got {tuple(probs.shape)}"
            )
        if sync:
            probs, idx = all_gather_variable(probs), all_gather_variable(idx)
        idx = self._indices(idx)
        probs = probs.to(device=self.history.device, dtype=self.history.dtype)
        uniq, inverse = torch.unique(idx, return_inverse=True)
        first = torch.full_like(uniq, idx.numel()).scatter_reduce(
            0, inverse, torch.arange(idx.numel(), device=idx.device), "amin"
        )
        idx, probs = idx[first], probs[first]
        fresh = self.last_push_epoch[idx] != int(epoch)
        idx, probs = idx[fresh], probs[fresh]
        self.history[idx] = torch.cat([self.history[idx, 1:], probs[:, None]], dim=1)
        self.num_pushed[idx] += 1
        self.last_push_epoch[idx] = int(epoch)

    def extra_repr(self) -> str:
        keys = (
            "num_samples",
            "num_classes",
            "history_len",
            "start_history",
            "start_weighting",
            "min_history",
        )
        return ", ".join(f"{k}={getattr(self, k)}" for k in (*keys, "code_compat", "reduction"))


class VAALoss(nn.Module):
    """VAA total loss ``L = L_primary(y_p) + Σ_b L_att(y_b)`` (sum, no weights; vaa.md §2.3-2.4).

    Takes the branch dict ``{"primary": (B,C), "attention": [(B,C), ...], "fused": (B,C)}`` (logits) of the
    VAA model. ``loss``: ``'paper'`` (default for ``variant='paper'``): weighted focal (γ 0.5, ``exp(-a)``) +
    :class:`HistoryWeightedLoss`; ``'bce'`` (default for ``'official'``, the code as released): plain BCE on
    all branches; ``'vaa_code'``: the dormant code (γ 2, odds weights, ``code_compat=True`` history).

    Args:
        prior: per-class positive frequency (needed unless ``loss='bce'``); ``num_samples``: dataset size
            (for the history).
        num_attention: attention branches (default 2 paper / 3 official); only used with
            ``history_source='branch'``.
        history_source: ``'fused'`` (code): one history of ``sigmoid(fused)`` shared by all branches;
            ``'branch'``: each branch keeps the history of its own predictions (paper: UNVERIFIED).
        include_primary: False drops the primary term (the code's ``--finetune``).
        gamma: overrides the focal γ; ``sync_history``: all-gather before pushing (DDP).
        **history_kwargs: passed to :class:`HistoryWeightedLoss` (``history_len``, ``start_weighting``, ...).

    ``forward`` never changes state; call :meth:`after_step` after each training step (the trainer's hook)
    to push predictions. ``needs_branches`` tells the trainer to pass the branch dict, indices and epoch.
    """

    needs_branches = True

    def __init__(
        self,
        variant: str = "paper",
        loss: str | None = None,
        *,
        prior: Tensor | Sequence[float] | None = None,
        num_samples: int | None = None,
        num_attention: int | None = None,
        history_source: str = "fused",
        include_primary: bool = True,
        attention_weight: float = 1.0,
        gamma: float | None = None,
        sync_history: bool = True,
        reduction: str = "mean",
        **history_kwargs: Any,
    ) -> None:
        super().__init__()
        if variant not in ("paper", "official"):
            raise ValueError(f"unknown variant {variant!r}; expected 'paper' or 'official'")
        loss = loss or ("paper" if variant == "paper" else "bce")
        if loss not in ("paper", "bce", "vaa_code"):
            raise ValueError(f"unknown loss {loss!r}; expected 'paper', 'bce' or 'vaa_code'")
        if history_source not in ("fused", "branch"):
            raise ValueError(f"unknown history_source {history_source!r}; expected 'fused' or 'branch'")
        self.variant, self.loss_name, self.history_source = variant, loss, history_source
        self.include_primary, self.sync_history = include_primary, sync_history
        self.attention_weight = float(attention_weight)  # 0: primary branch only (the code's stage 1)
        self.attention = BCEWithLogits(reduction)  # attention branches without history (loss='bce')
        self.histories: nn.ModuleList | None = None
        if loss == "bce":
            self.primary: nn.Module = BCEWithLogits(reduction)
            return
        if prior is None or num_samples is None:
            raise ValueError(f"loss={loss!r} needs prior= and num_samples=")
        self.primary = WeightedFocalLoss.from_prior(prior, loss, gamma=gamma, reduction=reduction)
        history_kwargs.setdefault("code_compat", loss == "vaa_code")
        n_hist = 1 if history_source == "fused" else (num_attention or (2 if variant == "paper" else 3))
        C = len(prior)
        self.histories = nn.ModuleList(
            HistoryWeightedLoss(num_samples, C, reduction=reduction, **history_kwargs) for _ in range(n_hist)
        )

    def _history(self, b: int) -> HistoryWeightedLoss:
        assert self.histories is not None
        return self.histories[0 if self.history_source == "fused" else b]  # type: ignore[return-value]

    def _check(self, branches: Mapping[str, Any], indices: Any, epoch: Any) -> None:
        if self.histories is None:
            return
        if indices is None or epoch is None:
            raise ValueError(f"loss={self.loss_name!r} needs indices= and epoch=")
        if self.history_source == "branch" and len(branches["attention"]) != len(self.histories):
            raise ValueError(
                f"expected {len(self.histories)} attention branches, got {len(branches['attention'])}"
            )

    def forward(
        self,
        branches: Mapping[str, Any],
        targets: Tensor,
        mask: Tensor | None = None,
        indices: Tensor | None = None,
        epoch: int | None = None,
    ) -> Tensor:
        self._check(branches, indices, epoch)
        total = self.primary(branches["primary"], targets, mask) if self.include_primary else None
        for b, logits in enumerate(branches["attention"]):
            if self.histories is None:
                term = self.attention(logits, targets, mask)
            else:
                term = self._history(b)(logits, targets, indices, epoch, mask)  # type: ignore[arg-type]
            term = self.attention_weight * term
            total = term if total is None else total + term
        if total is None:
            raise ValueError("no branch to compute a loss on")
        return total

    @torch.no_grad()
    def after_step(
        self, branches: Mapping[str, Any], targets: Tensor | None = None, *, indices: Tensor, epoch: int
    ) -> None:
        """Push this step's predictions into the history (no-op for ``loss='bce'``)."""
        if self.histories is None:
            return
        self._check(branches, indices, epoch)
        if self.history_source == "fused":
            self.histories[0].push(
                torch.sigmoid(branches["fused"].float()), indices, epoch, self.sync_history
            )
        else:
            for hist, logits in zip(self.histories, branches["attention"], strict=True):
                hist.push(torch.sigmoid(logits.float()), indices, epoch, self.sync_history)
