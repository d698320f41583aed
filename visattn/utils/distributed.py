"""torchrun-style distributed set-up: gloo on CPU, NCCL on GPU; nothing happens in a single process.

Launch with ``torchrun --nproc_per_node N -m visattn.cli train RECIPE`` (multi-node: the usual torchrun
``--nnodes/--node_rank/--rdzv_*`` flags). The environment variables torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) select the process group.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_main_process",
    "seed_everything",
    "all_gather_variable",
    "barrier",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise the default process group from torchrun's environment (idempotent)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch; each rank gets ``seed + rank`` so augmentations differ."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


def all_gather_variable(
    tensor: torch.Tensor, group: Any = None, sizes: Sequence[int] | None = None
) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of all ranks of ``group``, whose first dimensions may differ.

    The one variable-length gather of visattn (metrics, the VAA history, evaluation): the first dimensions
    are exchanged first (unless every rank already knows them: ``sizes``), each tensor is padded to the
    longest, gathered and trimmed again. Without an initialised process group (or with one process) the
    tensor is returned unchanged.
    """
    if not dist.is_available() or not dist.is_initialized():
        return tensor
    world = dist.get_world_size(group)
    if world == 1:
        return tensor
    if sizes is None:
        size = torch.tensor([tensor.shape[0]], device=tensor.device)
        exchanged = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(exchanged, size, group=group)
        sizes = [int(s) for s in exchanged]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[: int(n)] for p, n in zip(parts, sizes, strict=True)])
