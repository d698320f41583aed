"""Row accumulator shared by :class:`~visattn.metrics.MultiLabelMetrics` and
:class:`~visattn.metrics.AttributeMetrics`: stores validated rows per batch and gathers them across
processes (padded all-gather, de-duplication and dataset order by sample index) in ``_state()``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from visattn.utils.distributed import all_gather_variable

from ._multilabel_inputs import Array, _prepare


def _gather_rows(t: torch.Tensor, sizes: list[int], group: Any, device: torch.device) -> torch.Tensor:
    """All-gather rows whose count differs per rank (known ``sizes``), on ``device``, back to the CPU."""
    return all_gather_variable(t.to(device), group=group, sizes=sizes).cpu()


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
