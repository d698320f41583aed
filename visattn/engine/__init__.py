"""Training engine: recipe → objects (:mod:`.build`), the trainer, checkpoints, optimisers, tasks."""

from visattn.utils.distributed import DistInfo, init_distributed, seed_everything

from .checkpoint import latest_checkpoint, load_checkpoint, load_model_weights, save_checkpoint
from .tasks import MultiLabelTask
from .trainer import Trainer, TrainingDivergedError

__all__ = [
    "DistInfo",
    "MultiLabelTask",
    "Trainer",
    "TrainingDivergedError",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "save_checkpoint",
    "seed_everything",
]
