"""PA-100K pedestrian attributes (spec ``datasets.md`` §6).

Format (HydraPlus-Net release, github.com/xh-liu/HydraPlus-Net): images ``data/<name>`` and ``annotation.mat``
with **top-level** variables ``attributes`` (26 x 1 cell), ``{train,val,test}_images_name`` (n x 1 cells of
strings, read as ``x[i][0][0]``) and ``{train,val,test}_label`` (n x 26, 0/1). Fixed split 80,000 / 10,000 /
10,000, by tracklets so identities do not cross splits. Labels are binary (every ``eval_mask`` entry is True);
``trainval`` = train then val, as in dangweili's and Rethinking-PAR's code.

Differences from the references: name/label count mismatches, non-binary labels, a wrong number of attribute
names, duplicate image names and an empty split are errors (the references index fixed ranges such as
``range(80000)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    AnnotationError,
    MultiLabelDataset,
    UniqueNames,
    check_values,
    load_mat,
    mat_get,
    mat_matrix,
    mat_strings,
)

__all__ = ["PA100K", "PA100K_ATTRIBUTES"]

PA100K_ATTRIBUTES = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
    "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride", "UpperLogo",
    "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts",
    "Skirt&Dress", "boots",
)  # fmt: skip


class PA100K(MultiLabelDataset):
    """PA-100K from ``annotation.mat``.

    Args:
        root: folder with ``annotation.mat`` and ``data/``.
        split: ``'train'``, ``'val'``, ``'test'`` or ``'trainval'``.
        mat_file: override ``root/annotation.mat``.
        transform, check_files: see :class:`MultiLabelDataset`.

    Attributes: ``names`` (image file names), ``split``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        mat_file: str | os.PathLike | None = None,
        transform: Callable[[Any], Any] | None = None,
        check_files: bool = False,
    ) -> None:
        if split not in ("train", "val", "test", "trainval"):
            raise ValueError(f"split must be 'train', 'val', 'test' or 'trainval', got {split!r}")
        root = Path(root)
        path = Path(mat_file) if mat_file else root / "annotation.mat"
        mat = load_mat(path)
        attributes = mat_strings(mat_get(mat, "attributes", path), path, "attributes")
        names: list[str] = []
        blocks = []
        unique = UniqueNames(path, "image name")
        for part in ("train", "val") if split == "trainval" else (split,):
            part_names = mat_strings(mat_get(mat, f"{part}_images_name", path), path, f"{part}_images_name")
            for i, name in enumerate(part_names):
                unique.add(name, key=f"{part}_images_name[{i}]")
            labels = mat_matrix(mat_get(mat, f"{part}_label", path), path, f"{part}_label")
            if labels.shape != (len(part_names), len(attributes)):
                raise AnnotationError(
                    path,
                    f"expected shape ({len(part_names)}, {len(attributes)}) to match {part}_images_name and "
                    f"attributes, got {labels.shape}",
                    key=f"{part}_label",
                )
            check_values(labels, (0, 1), path, f"{part}_label")
            names += part_names
            blocks.append(labels)
        self.split, self.names = split, names
        super().__init__(
            [str(root / "data" / n) for n in names],
            np.where(np.concatenate(blocks) == 1, 1, -1).astype(np.int8),
            attributes,
            transform=transform,
            check_files=check_files,
            source=path,
            split=split,
        )
