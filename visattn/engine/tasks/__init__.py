"""Tasks: what a training step computes and how evaluation is scored, one module per kind of problem.

``multilabel`` / ``attribute`` (:mod:`.multilabel`), ``classification`` (:mod:`.classification`),
``segmentation`` (:mod:`.segmentation`), ``keypoints`` (:mod:`.keypoints`); the registry is in :mod:`.base`.
"""

from . import classification, keypoints, multilabel, segmentation
from .base import (
    ROLES,
    TaskSpec,
    build_split,
    class_names_of,
    describe_split,
    get_task_spec,
    image_transform,
    input_channels,
    list_tasks,
    model_input_fn,
    num_classes_of,
    register_task,
    task_options,
)
from .multilabel import BranchOutputs, MultiLabelTask

__all__ = [
    "ROLES",
    "BranchOutputs",
    "build_split",
    "class_names_of",
    "describe_split",
    "input_channels",
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
