"""PASCAL VOC 2007 as a 20-class multi-label dataset (spec ``datasets.md`` §2).

Format: ``VOCdevkit/VOC2007/{Annotations/<id>.xml, ImageSets/Main/*.txt, JPEGImages/<id>.jpg}``. Split lists
``ImageSets/Main/{train,val,trainval,test}.txt`` hold one 6-digit id per line; per-class lists
``ImageSets/Main/<class>_<split>.txt`` hold ``<id> <label>`` with label 1, -1 or 0 (0 = only difficult
instances). Official source: the VOC2007 devkit (host.robots.ox.ac.uk/pascal/VOC/voc2007); protocol of CSRA,
ML-GCN and mmpretrain: train on ``trainval`` (5,011 images), evaluate on ``test`` (4,952).

Image-level label per class, from the XMLs (``labels_from='xml'``, default): 1 if any non-difficult object of
the class exists, else 0 (ignored: ``eval_mask`` False) if only difficult objects exist, else -1. With
``labels_from='imagesets'`` the labels are read from the 20 per-class files instead (they encode the same
rule). With the default ``train_ignore_value=0`` the training target maps difficult-only to negative, exactly
CSRA's trainval file; the test evaluation drops those entries.

Differences from the reference loaders: only the images listed in the chosen split file are read (CSRA reads
every XML in the folder); unknown object names, malformed XML, duplicate ids and per-class files whose ids
disagree with the split list are errors instead of being skipped or silently mis-aligned.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    AnnotationError,
    MultiLabelDataset,
    UniqueNames,
    read_id_list,
    read_lines,
    require_dir,
    require_file,
)

__all__ = ["VOC_CLASSES", "VOC2007", "parse_voc_xml"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def parse_voc_xml(path: str | os.PathLike, classes=VOC_CLASSES) -> np.ndarray:
    """Ternary image-level labels ``(C,)`` of one VOC annotation XML (reads ``object/name``, ``difficult``)."""
    path = require_file(path, "annotation XML")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(path, f"invalid XML ({err})", line=err.position[0]) from None
    if root.tag != "annotation":
        raise AnnotationError(path, f"expected an <annotation> root element, got <{root.tag}>")
    index = {c: i for i, c in enumerate(classes)}
    label = np.full(len(classes), -1, dtype=np.int8)
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise AnnotationError(
                path, f"unknown class {name!r}; expected one of {list(classes)}", key=f"object #{k}"
            )
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise AnnotationError(path, f"<difficult> must be 0 or 1, got {difficult!r}", key=f"object #{k}")
        c = index[name]
        if difficult == "0":
            label[c] = 1
        elif label[c] == -1:
            label[c] = 0
    return label


def _read_class_file(path: Path, ids: list[str], split_file: Path) -> np.ndarray:
    values: dict[str, int] = {}
    unique = UniqueNames(path, "image id")
    for n, line in read_lines(path):
        parts = line.split()  # alignment spaces vary: split on any whitespace
        if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
            raise AnnotationError(
                path, f"expected '<id> <label>' with label 1, -1 or 0, got {line!r}", line=n
            )
        unique.add(parts[0], line=n)
        values[parts[0]] = int(parts[1])
    if set(values) != set(ids):
        extra, missing = sorted(set(values) - set(ids)), sorted(set(ids) - set(values))
        raise AnnotationError(
            path,
            f"ids differ from {split_file}: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})",
        )
    return np.array([values[i] for i in ids], dtype=np.int8)


class VOC2007(MultiLabelDataset):
    """PASCAL VOC 2007 multi-label classification.

    Args:
        root: the ``VOC2007`` folder (or the ``VOCdevkit`` folder containing it).
        split: ``'trainval'``, ``'train'``, ``'val'`` or ``'test'`` (reads ``ImageSets/Main/<split>.txt``).
        labels_from: ``'xml'`` (default) or ``'imagesets'`` (the per-class ``<class>_<split>.txt`` files).
        transform, train_ignore_value, check_files: see :class:`MultiLabelDataset`.

    Attributes: ``image_ids`` (6-digit strings), plus those of :class:`MultiLabelDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        *,
        labels_from: str = "xml",
        transform: Callable[[Any], Any] | None = None,
        train_ignore_value: float = 0.0,
        check_files: bool = False,
    ) -> None:
        root = Path(root)
        if (root / "VOC2007").is_dir():
            root = root / "VOC2007"
        require_dir(root, "VOC2007 folder")
        if split not in ("trainval", "train", "val", "test"):
            raise ValueError(f"split must be 'trainval', 'train', 'val' or 'test', got {split!r}")
        if labels_from not in ("xml", "imagesets"):
            raise ValueError(f"labels_from must be 'xml' or 'imagesets', got {labels_from!r}")
        split_file = root / "ImageSets" / "Main" / f"{split}.txt"
        ids = read_id_list(split_file, split)
        if labels_from == "xml":
            rows = [parse_voc_xml(root / "Annotations" / f"{i}.xml") for i in ids]
            labels = np.stack(rows) if rows else np.zeros((0, len(VOC_CLASSES)), np.int8)
        else:
            cols = [
                _read_class_file(
                    require_file(root / "ImageSets" / "Main" / f"{c}_{split}.txt"), ids, split_file
                )
                for c in VOC_CLASSES
            ]
            labels = np.stack(cols, axis=1)
        self.root, self.split, self.image_ids = root, split, ids
        super().__init__(
            [str(root / "JPEGImages" / f"{i}.jpg") for i in ids],
            labels,
            VOC_CLASSES,
            transform=transform,
            train_ignore_value=train_ignore_value,
            check_files=check_files,
            source=split_file,
            split=split,
        )
