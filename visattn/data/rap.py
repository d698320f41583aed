"""RAP v1 and v2 pedestrian attributes (spec ``datasets.md`` §7).

Layout: ``RAP_annotation/RAP_annotation.mat`` (variable ``RAP_annotation``, a 1x1 struct) and images under
``RAP_dataset/``.

* **v1** (41,585 images, 92 attributes, 51 evaluated = columns 0-50): struct fields read **by position** as in
  dangweili's and Rethinking-PAR's code: #0 = 5 partitions (each a 1x1 struct ``(trainval, test)`` of 1-based
  row vectors; 33,268 / 8,317), #1 = labels ``41585 x 92``, #3 = the 92 attribute names, #5 = image names,
  #6 = the 51 selected names.
* **v2** (84,928 images, 152 attributes): **named** fields ``name``, ``attribute``, ``data``,
  ``selected_attribute`` (54 **1-based** column indices = the evaluated attributes, in file order) and
  ``partition_attribute`` (1x5 cell of structs with 1-based ``train_index``, ``val_index``, ``test_index``;
  50,957 / 16,986 / 16,985).

Label values: 1 positive, 0 negative, 2 uncertain -> ternary 1 / -1 / 0 (uncertain = ignored: ``eval_mask``
False, trained as negative with the default ``train_ignore_value=0``). Rethinking-PAR instead zeroes the loss
weight where the label is 2 but counts 2 in its positive-ratio weights (``mean(label)``); here
``positive_ratio()`` is ``mean(label == 1)`` as in dangweili's code. Zero-shot splits (RAPzs): pass their
0-based rows as ``indices``.

Differences from the references: names/labels/partition shapes and values are validated (bad input is an
error naming the file and field) instead of indexing fixed ranges such as ``range(41585)``; an image name
listed twice and an empty split are errors too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    AnnotationError,
    MultiLabelDataset,
    check_unique,
    check_values,
    load_mat,
    mat_cells,
    mat_field,
    mat_get,
    mat_indices,
    mat_matrix,
    mat_record,
    mat_strings,
    require_samples,
    select_split,
)

__all__ = ["RAPv1", "RAPv2"]


def _ternary(labels: np.ndarray, path: Path, key: str, rows, cols) -> np.ndarray:
    check_values(labels, (0, 1, 2), path, key, rows, cols)
    out = np.full(labels.shape, -1, dtype=np.int8)
    out[labels == 1] = 1
    out[labels == 2] = 0
    return out


class _RAPBase(MultiLabelDataset):
    def _finish(
        self, root, split, indices, splits, n, path, labels, key, names, cols, image_names, kwargs, split_key
    ) -> None:
        rows = select_split(splits, split, indices, n, str(path))
        require_samples(len(rows), path, split, "the partition's index vector is empty", key=split_key)
        self.split, self.rows = split, rows
        self.image_names = [image_names[r] for r in rows]
        super().__init__(
            [str(root / "RAP_dataset" / name) for name in self.image_names],
            _ternary(labels[np.ix_(rows, cols)], path, key, rows, cols),
            [names[c] for c in cols],
            source=path,
            split=split,
            **kwargs,
        )


def _open(root, mat_file) -> tuple[Path, Path, np.void]:
    root = Path(root)
    path = Path(mat_file) if mat_file else root / "RAP_annotation" / "RAP_annotation.mat"
    rec = mat_record(mat_get(load_mat(path), "RAP_annotation", path), path, "RAP_annotation")
    return root, path, rec


def _check_partition(partition: int, parts: list, indices) -> None:
    if indices is None and not 0 <= partition < len(parts):
        raise ValueError(f"partition must lie in 0..{len(parts) - 1}, got {partition}")


class RAPv1(_RAPBase):
    """RAP v1 (positional struct fields).

    Args:
        root: folder with ``RAP_annotation/`` and ``RAP_dataset/``.
        split: ``'trainval'`` or ``'test'``.
        partition: which of the 5 random partitions (0-4).
        attributes: ``'eval'`` (first 51, default) or ``'all'`` (92).
        indices: explicit 0-based rows (e.g. a zero-shot split), overriding ``split``/``partition``.
        mat_file: override ``root/RAP_annotation/RAP_annotation.mat``.
        transform, train_ignore_value, check_files: see :class:`MultiLabelDataset`.

    Attributes: ``rows`` (0-based rows of the label matrix), ``image_names``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        *,
        partition: int = 0,
        attributes: str = "eval",
        indices: Sequence[int] | None = None,
        mat_file: str | os.PathLike | None = None,
        transform: Callable[[Any], Any] | None = None,
        train_ignore_value: float = 0.0,
        check_files: bool = False,
    ) -> None:
        if attributes not in ("eval", "all"):
            raise ValueError(f"attributes must be 'eval' or 'all', got {attributes!r}")
        root, path, rec = _open(root, mat_file)
        key = "RAP_annotation field"
        image_names = mat_strings(mat_field(rec, 5, path, f"{key} 5"), path, f"{key} 5 (image names)")
        check_unique(image_names, path, "image name", key=f"{key} 5 (image names)")
        n = len(image_names)
        labels = mat_matrix(mat_field(rec, 1, path, f"{key} 1"), path, f"{key} 1 (labels)", rows=n)
        names = mat_strings(mat_field(rec, 3, path, f"{key} 3"), path, f"{key} 3 (attribute names)")
        if labels.shape[1] != len(names) or (attributes == "eval" and len(names) < 51):
            raise AnnotationError(
                path, f"{labels.shape[1]} label columns for {len(names)} names (need >= 51)", key=f"{key} 1"
            )
        parts = mat_cells(mat_field(rec, 0, path, f"{key} 0"), path, f"{key} 0 (partitions)")
        _check_partition(partition, parts, indices)
        splits = {}
        if indices is None:
            pkey = f"{key} 0[{partition}]"
            part = mat_record(parts[partition], path, pkey)
            for k, name in enumerate(("trainval", "test")):
                splits[name] = mat_indices(
                    mat_field(part, k, path, pkey), n, path, f"{pkey} field {k} ({name})"
                )
        cols = list(range(51)) if attributes == "eval" else list(range(len(names)))
        self.partition = partition
        self._finish(root, split, indices, splits, n, path, labels, f"{key} 1 (labels)", names, cols, image_names,
                     dict(transform=transform, train_ignore_value=train_ignore_value, check_files=check_files),
                     f"{key} 0[{partition}]")  # fmt: skip


class RAPv2(_RAPBase):
    """RAP v2 (named struct fields).

    Args:
        root: folder with ``RAP_annotation/`` and ``RAP_dataset/``.
        split: ``'train'``, ``'val'``, ``'test'`` or ``'trainval'`` (train then val).
        partition: which of the 5 random partitions (0-4).
        attributes: ``'eval'`` (the 54 ``selected_attribute`` columns, default) or ``'all'`` (152).
        indices, mat_file, transform, train_ignore_value, check_files: as for :class:`RAPv1`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        partition: int = 0,
        attributes: str = "eval",
        indices: Sequence[int] | None = None,
        mat_file: str | os.PathLike | None = None,
        transform: Callable[[Any], Any] | None = None,
        train_ignore_value: float = 0.0,
        check_files: bool = False,
    ) -> None:
        if attributes not in ("eval", "all"):
            raise ValueError(f"attributes must be 'eval' or 'all', got {attributes!r}")
        root, path, rec = _open(root, mat_file)
        image_names = mat_strings(
            mat_field(rec, "name", path, "RAP_annotation.name"), path, "RAP_annotation.name"
        )
        check_unique(image_names, path, "image name", key="RAP_annotation.name")
        n = len(image_names)
        names = mat_strings(
            mat_field(rec, "attribute", path, "RAP_annotation"), path, "RAP_annotation.attribute"
        )
        labels = mat_matrix(
            mat_field(rec, "data", path, "RAP_annotation"), path, "RAP_annotation.data", rows=n
        )
        if labels.shape[1] != len(names):
            raise AnnotationError(
                path, f"{labels.shape[1]} columns for {len(names)} attribute names", key="RAP_annotation.data"
            )
        selected = mat_field(rec, "selected_attribute", path, "RAP_annotation")
        cols = mat_indices(selected, len(names), path, "RAP_annotation.selected_attribute").tolist()
        if attributes == "all":
            cols = list(range(len(names)))
        parts = mat_cells(
            mat_field(rec, "partition_attribute", path, "RAP_annotation"),
            path,
            "RAP_annotation.partition_attribute",
        )
        _check_partition(partition, parts, indices)
        splits = {}
        if indices is None:
            pkey = f"RAP_annotation.partition_attribute[{partition}]"
            part = mat_record(parts[partition], path, pkey)
            for name in ("train", "val", "test"):
                field = mat_field(part, f"{name}_index", path, pkey)
                splits[name] = mat_indices(field, n, path, f"{pkey}.{name}_index")
        self.partition = partition
        self._finish(root, split, indices, splits, n, path, labels, "RAP_annotation.data", names, cols, image_names,
                     dict(transform=transform, train_ignore_value=train_ignore_value, check_files=check_files),
                     f"RAP_annotation.partition_attribute[{partition}]")  # fmt: skip
