"""A seeded held-out part of a split: the selection set of recipes whose dataset has no validation split.

``holdout_indices(n, fraction, seed)`` splits ``range(n)`` into a kept and a held-out part (the held-out part
has ``round(fraction · n)`` samples, at least one); :class:`HeldOut` views one part of a dataset. Items keep
the *dataset's* sample indices (multi-label items carry them), so metrics de-duplicate and the VAA history
addresses samples as with the whole split; ``num_indices`` tells how many indices that space has. Per-sample
arrays (``targets``, ``masks``, ``boxes``) are sliced; every other attribute (``class_names``, ``flip_pairs``,
...) is the dataset's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["HeldOut", "holdout_indices"]

_PER_SAMPLE = ("targets", "masks", "boxes")


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(kept, held_out)``: sorted disjoint index lists covering ``range(n)``; the same for the same seed."""
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"data.val_fraction must lie strictly between 0 and 1, got {fraction!r}")
    if n < 2:
        raise ValueError(f"cannot hold out a validation part of a split with {n} sample(s)")
    count = min(n - 1, max(1, round(float(fraction) * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return sorted(order[count:]), sorted(order[:count])


class HeldOut(Dataset):
    """The samples ``indices`` of ``dataset`` (see the module docstring); ``part`` names it in messages."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], part: str = "") -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.part = part

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    @property
    def num_indices(self) -> int:
        """Size of the sample-index space of the items (the whole split's)."""
        return int(getattr(self.dataset, "num_indices", len(self.dataset)))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "indices", "part"):
            raise AttributeError(name)
        value = getattr(self.dataset, name)
        if name in _PER_SAMPLE and value is not None:
            if torch.is_tensor(value):
                return value[torch.as_tensor(self.indices, dtype=torch.long)]
            return [value[i] for i in self.indices]
        return value

    def __repr__(self) -> str:
        return (
            f"HeldOut({self.part or 'part'}: {len(self)} of {len(self.dataset)} samples of {self.dataset!r})"
        )
