"""Tasks: what a training step computes and how evaluation is scored, one module per kind of problem.

``multilabel`` / ``attribute`` (:mod:`.multilabel`), ``classification`` (:mod:`.classification`),
``segmentation`` (:mod:`.segmentation`), ``keypoints`` (:mod:`.keypoints`); the registry is in :mod:`.base`.
"""

from . import classification, keypoints, multilabel, segmentation
from .base import (
    TaskSpec,
    get_task_spec,
    image_transform,
    list_tasks,
    model_input_fn,
    num_classes_of,
    register_task,
    task_options,
)
from .multilabel import BranchOutputs, MultiLabelTask

__all__ = [
    "BranchOutputs",
    "MultiLabelTask",
    "TaskSpec",
    "classification",
    "get_task_spec",
    "image_transform",
    "keypoints",
    "list_tasks",
    "model_input_fn",
    "multilabel",
    "num_classes_of",
    "register_task",
    "segmentation",
    "task_options",
]
