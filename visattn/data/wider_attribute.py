"""WIDER-Attribute: 14 person attributes, one sample per annotated person (spec ``datasets.md`` §4).

Format (official release, mmlab.ie.cuhk.edu.hk/projects/WIDERAttribute.html):
``Annotations/wider_attribute_{trainval,test}.json`` =
``{"images": [{"file_name", "scene_id", "targets": [{"attribute": [14 ints], "bbox": [x, y, w, h]}]}],
"attribute_id_map": {"0": "Male", ...}, "scene_id_map": {...}}``; images under ``Image/`` joined with
``file_name`` (as CSRA does). Labels: 1 positive, -1 negative, 0 unspecified (ignored: ``eval_mask`` False,
trained as negative with the default ``train_ignore_value=0``, like CSRA). Counts used by all methods:
trainval 28,340 persons, test 29,177.

Person crops: ``box_policy='clamp'`` (default) clamps the box to the image and falls back to the whole image
when the box lies entirely outside it (VAC's fallback); ``box_policy='csra'`` reproduces CSRA's
``PIL.Image.crop``, which rounds the corners and pads the out-of-image part with black.

:class:`WIDERAttributeSRN` reads SRN's pre-cropped text lists (used by VAA): ``wider_att_{train,test}_imglist.txt``
(one image path per line) and ``wider_att_{train,test}_label.txt`` (14 integers in {-1, 0, 1} per line); the
validation images are those whose third path component is ``val``.

Differences from CSRA: labels stay ternary until the item is built (CSRA writes 0 or the sentinel 99 into its
JSON); the class names come from ``attribute_id_map`` (CSRA misspells ``Tshirt`` as ``Tshiirt``); wrong
attribute counts, values or boxes, an image listed twice (JSON ``file_name`` or SRN list line) and a split
without samples are errors.
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
    check_unique,
    parse_box,
    read_json,
    read_lines,
    require_samples,
)

__all__ = ["WIDER_ATTRIBUTES", "WIDERAttribute", "WIDERAttributeSRN"]

WIDER_ATTRIBUTES = (
    "Male", "longHair", "sunglass", "Hat", "Tshirt", "longSleeve", "formal",
    "shorts", "jeans", "longPants", "skirt", "faceMask", "logo", "stripe",
)  # fmt: skip


def _attribute_names(data: dict, path: Path) -> list[str]:
    amap = data.get("attribute_id_map")
    if amap is None:
        return list(WIDER_ATTRIBUTES)
    expected = [str(i) for i in range(len(WIDER_ATTRIBUTES))]
    if not isinstance(amap, dict) or sorted(amap, key=lambda k: (len(k), k)) != expected:
        raise AnnotationError(
            path, f"expected keys {expected[0]!r}..{expected[-1]!r}", key="attribute_id_map"
        )
    names = [amap[k] for k in expected]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise AnnotationError(path, f"expected distinct attribute names, got {names}", key="attribute_id_map")
    return names


class WIDERAttribute(MultiLabelDataset):
    """WIDER-Attribute person crops.

    Args:
        root: folder with ``Annotations/`` and ``Image/``.
        split: ``'trainval'`` or ``'test'``.
        box_policy: ``'clamp'`` (default) or ``'csra'`` (see module docstring).
        annotation_file: override ``root/Annotations/wider_attribute_{split}.json``.
        transform, train_ignore_value, check_files: see :class:`MultiLabelDataset`.

    Attributes: ``boxes`` (``(x, y, w, h)`` per person), ``image_index`` (index of the person's image in the
    JSON ``images`` list), ``scene_ids``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        *,
        box_policy: str = "clamp",
        annotation_file: str | os.PathLike | None = None,
        transform: Callable[[Any], Any] | None = None,
        train_ignore_value: float = 0.0,
        check_files: bool = False,
    ) -> None:
        if split not in ("trainval", "test"):
            raise ValueError(f"split must be 'trainval' or 'test', got {split!r}")
        root = Path(root)
        path = (
            Path(annotation_file)
            if annotation_file
            else root / "Annotations" / f"wider_attribute_{split}.json"
        )
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise AnnotationError(path, "expected a JSON object with an 'images' list", key="images")
        names = _attribute_names(data, path)
        paths, rows, boxes, image_index, scenes = [], [], [], [], []
        unique = UniqueNames(path, "file_name")
        for i, img in enumerate(data["images"]):
            where = f"images[{i}]"
            if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
                raise AnnotationError(path, "expected an object with a 'file_name' string", key=where)
            unique.add(img["file_name"], key=where)
            targets = img.get("targets")
            if not isinstance(targets, list):
                raise AnnotationError(path, "missing 'targets' list", key=where)
            for j, person in enumerate(targets):
                pwhere = f"{where}.targets[{j}]"
                attr = person.get("attribute") if isinstance(person, dict) else None
                if (
                    not isinstance(attr, list)
                    or len(attr) != len(names)
                    or not all(type(v) is int and v in (-1, 0, 1) for v in attr)
                ):
                    raise AnnotationError(
                        path,
                        f"'attribute' must be {len(names)} ints in {{1, -1, 0}}, got {attr!r}",
                        key=pwhere,
                    )
                boxes.append(parse_box(person.get("bbox"), path, f"{pwhere}.bbox"))
                rows.append(attr)
                paths.append(str(root / "Image" / img["file_name"]))
                image_index.append(i)
                scenes.append(img.get("scene_id"))
        require_samples(len(rows), path, split, "no person in the 'targets' of any image", key="images")
        labels = np.array(rows, dtype=np.int8).reshape(len(rows), len(names))
        self.split, self.image_index, self.scene_ids = split, image_index, scenes
        super().__init__(
            paths,
            labels,
            names,
            boxes=boxes,
            transform=transform,
            train_ignore_value=train_ignore_value,
            box_policy=box_policy,
            check_files=check_files,
            source=path,
            split=split,
        )


class WIDERAttributeSRN(MultiLabelDataset):
    """WIDER-Attribute from SRN's pre-cropped image and label lists.

    Args:
        root: folder holding the list files; image paths are joined to ``image_root`` (default ``root``).
        split: ``'train'``, ``'val'``, ``'trainval'`` (from the train lists) or ``'test'``.
        transform, train_ignore_value, check_files: see :class:`MultiLabelDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        *,
        image_root: str | os.PathLike | None = None,
        transform: Callable[[Any], Any] | None = None,
        train_ignore_value: float = 0.0,
        check_files: bool = False,
    ) -> None:
        if split not in ("train", "val", "trainval", "test"):
            raise ValueError(f"split must be 'train', 'val', 'trainval' or 'test', got {split!r}")
        root = Path(root)
        tag = "test" if split == "test" else "train"
        list_file, label_file = root / f"wider_att_{tag}_imglist.txt", root / f"wider_att_{tag}_label.txt"
        images, label_lines = read_lines(list_file), read_lines(label_file)
        if len(images) != len(label_lines):
            raise AnnotationError(
                label_file, f"{len(label_lines)} label lines for {len(images)} images in {list_file}"
            )
        check_unique([img for _, img in images], list_file, "image", lines=[n for n, _ in images])
        C = len(WIDER_ATTRIBUTES)
        paths, rows = [], []
        for (_, img), (n, line) in zip(images, label_lines, strict=True):
            try:
                row = [int(v) for v in line.split()]
            except ValueError:
                row = []
            if len(row) != C or not all(v in (-1, 0, 1) for v in row):
                raise AnnotationError(
                    label_file, f"expected {C} integers in {{-1, 0, 1}}, got {line!r}", line=n
                )
            is_val = len(img.split("/")) > 2 and img.split("/")[2] == "val"
            if split == "trainval" or split == "test" or (split == "val") == is_val:
                paths.append(str(Path(image_root or root) / img))
                rows.append(row)
        hint = "the list is empty"
        if images and split == "val":
            hint = "no listed path has 'val' as its third component (e.g. data/wider/val/x.jpg)"
        elif images and split == "train":
            hint = f"all {len(images)} listed paths have 'val' as their third component"
        require_samples(len(paths), list_file, split, hint)
        self.split = split
        super().__init__(
            paths,
            np.array(rows, dtype=np.int8).reshape(len(rows), C),
            WIDER_ATTRIBUTES,
            transform=transform,
            train_ignore_value=train_ignore_value,
            check_files=check_files,
            source=list_file,
            split=split,
        )
