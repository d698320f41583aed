"""MS-COCO 2014 under the multi-label classification protocol (spec ``datasets.md`` §3).

Format: the official instances JSON (cocodataset.org/#format-data), ``annotations/instances_{train,val}2014.json``
with images in ``train2014/`` and ``val2014/`` (names from ``file_name``). Used keys: ``images[{id,
file_name}]``, ``annotations[{image_id, category_id}]``, ``categories[{id, name}]``. Protocol of CSRA and
ML-GCN: train on train2014, test on val2014; the target of an image is the set of categories over all its
annotations, **including** ``iscrowd=1`` ones; images without annotations are dropped (``keep_empty=True``
keeps them as all-negative). Labels are binary: every ``eval_mask`` entry is True.

Class order: ``class_order='id'`` (default, ascending category id = CSRA) or ``'alphabetical'`` (sorted names
= ML-GCN). ``category_ids`` gives the id of each column, so a checkpoint trained with one order can be
permuted to the other.

Differences from the reference loaders: duplicate image/category ids, annotations pointing at unknown images
or categories, malformed entries and a split left without samples (no image annotated) are errors (pycocotools silently overwrites duplicates). Samples follow
the order of the JSON ``images`` list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import AnnotationError, MultiLabelDataset, read_json, require_samples

__all__ = ["COCO2014", "parse_coco_instances"]


def _int_key(entry: Any, key: str, file: Path, where: str) -> int:
    if not isinstance(entry, dict) or key not in entry:
        raise AnnotationError(file, f"expected an object with key {key!r}", key=where)
    v = entry[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise AnnotationError(file, f"{key!r} must be an integer, got {v!r}", key=where)
    return v


def parse_coco_instances(
    path: str | os.PathLike, class_order: str = "id", keep_empty: bool = False
) -> tuple[list[str], np.ndarray, list[str], list[int], list[int]]:
    """Parse an instances JSON -> ``(file_names, ternary labels, class names, category ids, image ids)``."""
    if class_order not in ("id", "alphabetical"):
        raise ValueError(f"class_order must be 'id' or 'alphabetical', got {class_order!r}")
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(path, "expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(path, "missing or not a list", key=key)

    names: dict[int, str] = {}
    for k, cat in enumerate(data["categories"]):
        cid = _int_key(cat, "id", path, f"categories[{k}]")
        if not isinstance(cat.get("name"), str):
            raise AnnotationError(path, "missing category name", key=f"categories[{k}]")
        if cid in names:
            raise AnnotationError(path, f"duplicate category id {cid}", key=f"categories[{k}]")
        names[cid] = cat["name"]
    if len(set(names.values())) != len(names):
        raise AnnotationError(path, "duplicate category names", key="categories")
    cat_ids = sorted(names) if class_order == "id" else sorted(names, key=lambda i: names[i])
    column = {cid: c for c, cid in enumerate(cat_ids)}

    files: dict[int, str] = {}
    for k, img in enumerate(data["images"]):
        iid = _int_key(img, "id", path, f"images[{k}]")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise AnnotationError(path, "missing file_name", key=f"images[{k}]")
        if iid in files:
            raise AnnotationError(path, f"duplicate image id {iid}", key=f"images[{k}]")
        files[iid] = img["file_name"]
    row = {iid: r for r, iid in enumerate(files)}

    labels = np.full((len(files), len(cat_ids)), -1, dtype=np.int8)
    annotated = np.zeros(len(files), dtype=bool)
    for k, ann in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        iid = _int_key(ann, "image_id", path, where)
        cid = _int_key(ann, "category_id", path, where)
        if iid not in row:
            raise AnnotationError(path, f"image_id {iid} is not in 'images'", key=where)
        if cid not in column:
            raise AnnotationError(path, f"category_id {cid} is not in 'categories'", key=where)
        labels[row[iid], column[cid]] = 1  # iscrowd annotations count, as in CSRA and ML-GCN
        annotated[row[iid]] = True
    keep = np.ones(len(files), bool) if keep_empty else annotated
    image_ids = [iid for iid, k in zip(files, keep, strict=True) if k]
    return (
        [files[i] for i in image_ids],
        labels[keep],
        [names[c] for c in cat_ids],
        cat_ids,
        image_ids,
    )


class COCO2014(MultiLabelDataset):
    """MS-COCO 2014 multi-label classification (80 classes).

    Args:
        root: folder with ``annotations/`` and ``{split}2014/``.
        split: ``'train'`` or ``'val'``.
        class_order: ``'id'`` (default, CSRA) or ``'alphabetical'`` (ML-GCN).
        keep_empty: keep images without annotations (all-negative); default False drops them (CSRA, ML-GCN).
        annotation_file, image_dir: override ``root/annotations/instances_{split}2014.json`` and
            ``root/{split}2014``.
        transform, check_files: see :class:`MultiLabelDataset`.

    Attributes: ``image_ids``, ``category_ids`` (category id of each column).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        *,
        class_order: str = "id",
        keep_empty: bool = False,
        annotation_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        transform: Callable[[Any], Any] | None = None,
        check_files: bool = False,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if root is None and (annotation_file is None or image_dir is None):
            raise ValueError("give root, or both annotation_file and image_dir")
        root_path = Path(root) if root is not None else None
        ann = (
            Path(annotation_file)
            if annotation_file
            else root_path / "annotations" / f"instances_{split}2014.json"
        )
        images = Path(image_dir) if image_dir else root_path / f"{split}2014"
        files, labels, names, cat_ids, image_ids = parse_coco_instances(ann, class_order, keep_empty)
        # Say why the split is empty: images dropped for lacking an annotation are the surprising case.
        require_samples(
            len(files),
            ann,
            split,
            "the 'images' list is empty"
            if keep_empty
            else "no image in 'images' has an annotation; images without one are dropped "
            "(keep_empty=True keeps them as all-negative)",
        )
        self.split, self.class_order = split, class_order
        self.image_ids, self.category_ids = image_ids, cat_ids
        super().__init__(
            [str(images / f) for f in files],
            labels,
            names,
            transform=transform,
            check_files=check_files,
            source=ann,
            split=split,
        )
