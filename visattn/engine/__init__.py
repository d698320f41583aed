"""Training engine: trainer, tasks, checkpoints, optimisers/schedulers, distributed helpers."""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .distributed import DistInfo, init_distributed, seed_everything
from .tasks import MultiLabelTask
from .trainer import Trainer

__all__ = [
    "DistInfo",
    "MultiLabelTask",
    "Trainer",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
]
