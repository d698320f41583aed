"""COCO person keypoints (top-down): one sample per person box, 17 keypoints.

Format (``person_keypoints_{train,val}2017.json``, the COCO annotation format)::

    {"images": [{"id", "file_name", "width", "height", ...}],
     "annotations": [{"id", "image_id", "category_id": 1, "bbox": [x, y, w, h], "area", "iscrowd",
                      "keypoints": [x1, y1, v1, ..., x17, y17, v17], "num_keypoints", ...}],
     "categories": [{"id": 1, "name": "person", "keypoints": [17 names], "skeleton": [...]}]}

with ``v`` = 0 (not labelled), 1 (labelled, occluded), 2 (labelled, visible). Images are
``<root>/<split><year>/<file_name>`` (``image_dir`` overrides).

Samples (as SimpleBaseline / HRNet with ground-truth boxes): every non-crowd annotation with at least
``min_keypoints`` labelled keypoints and a box that is non-empty after clipping to the image
(``x1 = max(0, x)``, ``x2 = min(width-1, x1 + max(0, w-1))``, same for y). With ``det_file`` (COCO results
format: ``[{"image_id", "category_id", "bbox", "score"}]``, e.g. the detections HRNet evaluates with) the
samples are the person detections scoring at least ``det_score_thresh`` instead, without keypoints.

Items: ``transform(sample)`` where ``sample`` is a dict with ``image`` (uint8 ``(3, H, W)``), ``keypoints``
``(K, 3)`` float, ``box`` ``(x, y, w, h)``, ``image_id``, ``area``, ``score`` (1 for GT boxes),
``index`` and ``flip_pairs`` (see :class:`visattn.data.joint_transforms.TopDownTransform`); without a
transform the dict itself. ``class_names`` are the keypoint names (so recipes get ``num_classes = K``),
``flip_pairs`` are derived from the ``left_*``/``right_*`` names, ``sigmas`` are COCO's OKS constants, and
:meth:`COCOKeypoints.coco_gt` returns the annotation dict COCOeval needs. Malformed files raise
:class:`~visattn.data._common.AnnotationError` naming the file and the key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ._common import AnnotationError, load_image, parse_box, read_json, require_dir

__all__ = ["COCOKeypoints", "parse_keypoint_annotations"]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_keypoint_annotations(
    data: Any, path: str | os.PathLike, category_id: int | None = None
) -> tuple[dict[str, Any], dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """Validate a COCO keypoints dict → ``(category, images by id, annotations of that category)``."""
    if not isinstance(data, dict):
        raise AnnotationError(path, f"expected a JSON object at the top level, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(path, "missing or not a list", key=key)
    cats = [c for c in data["categories"] if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    if category_id is not None:
        cats = [c for c in cats if c.get("id") == category_id]
    elif len(cats) > 1:
        cats = [c for c in cats if c.get("name") == "person"] or cats[:1]
    if not cats:
        which = f"id {category_id}" if category_id is not None else "any"
        raise AnnotationError(path, f"no category ({which}) with a 'keypoints' name list", key="categories")
    cat = cats[0]
    names = cat["keypoints"]
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise AnnotationError(
            path, f"keypoint names must be distinct strings, got {names!r}", key="categories"
        )
    images: dict[int, dict[str, Any]] = {}
    for i, img in enumerate(data["images"]):
        key = f"images[{i}]"
        if not isinstance(img, dict):
            raise AnnotationError(path, "expected an object", key=key)
        if not _is_int(img.get("id")):
            raise AnnotationError(path, f"'id' must be an integer, got {img.get('id')!r}", key=key)
        if not isinstance(img.get("file_name"), str):
            raise AnnotationError(
                path, f"'file_name' must be a string, got {img.get('file_name')!r}", key=key
            )
        for dim in ("width", "height"):
            if not _is_int(img.get(dim)) or img[dim] <= 0:
                raise AnnotationError(
                    path, f"{dim!r} must be a positive integer, got {img.get(dim)!r}", key=key
                )
        if img["id"] in images:
            raise AnnotationError(path, f"duplicate image id {img['id']}", key=key)
        images[img["id"]] = img
    K = len(names)
    anns = []
    for i, ann in enumerate(data["annotations"]):
        key = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise AnnotationError(path, "expected an object", key=key)
        if ann.get("category_id") != cat["id"]:
            continue
        if ann.get("image_id") not in images:
            raise AnnotationError(path, f"image_id {ann.get('image_id')!r} is not in 'images'", key=key)
        parse_box(ann.get("bbox"), path, key + ".bbox")
        kp = ann.get("keypoints")
        if not isinstance(kp, list) or len(kp) != 3 * K or not all(_is_num(v) for v in kp):
            got = f"{len(kp)} values" if isinstance(kp, list) else repr(kp)
            raise AnnotationError(
                path,
                f"expected {3 * K} numbers (x, y, v for {K} keypoints), got {got}",
                key=key + ".keypoints",
            )
        bad = [v for v in kp[2::3] if v not in (0, 1, 2)]
        if bad:
            raise AnnotationError(
                path, f"visibility flags must be 0, 1 or 2, got {bad[0]!r}", key=key + ".keypoints"
            )
        if ann.get("iscrowd", 0) not in (0, 1):
            raise AnnotationError(path, f"'iscrowd' must be 0 or 1, got {ann.get('iscrowd')!r}", key=key)
        if "area" in ann and not _is_num(ann["area"]):
            raise AnnotationError(path, f"'area' must be a number, got {ann['area']!r}", key=key)
        anns.append(ann)
    return cat, images, anns


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """HRNet's box cleaning; ``None`` if the clipped box is empty."""
    x, y, w, h = box
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1))
    if w * h <= 0 or x2 < x1 or y2 < y1:
        return None
    return (x1, y1, x2 - x1, y2 - y1)


class COCOKeypoints(Dataset):
    """COCO person keypoints, one item per person instance (see the module docstring).

    Args:
        root: COCO folder (``annotations/``, ``<split><year>/``); optional when ``ann_file`` and
            ``image_dir`` are given.
        split: ``train`` or ``val``.
        transform: a :class:`~visattn.data.joint_transforms.TopDownTransform` (or any callable on the dict).
        ann_file: annotation JSON (default ``<root>/annotations/person_keypoints_<split><year>.json``).
        image_dir: image folder (default ``<root>/<split><year>``).
        year: ``2017`` (also ``2014``).
        min_keypoints: minimum labelled keypoints of a GT instance.
        det_file: person detections (COCO results JSON) to use instead of the GT boxes.
        det_score_thresh: minimum detection score.
        category_id: keypoint category (default: the one named ``person``, or the only one).
        sigmas: OKS constants (default COCO's for 17 keypoints; required for other keypoint sets).
        check_files: check at construction that every image exists.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "val",
        transform: Callable | None = None,
        ann_file: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        year: int | str = 2017,
        min_keypoints: int = 1,
        det_file: str | os.PathLike | None = None,
        det_score_thresh: float = 0.0,
        category_id: int | None = None,
        sigmas: Sequence[float] | None = None,
        check_files: bool = False,
    ) -> None:
        from .heatmaps import COCO_SIGMAS, flip_pairs_from_names

        if ann_file is None or image_dir is None:
            if root is None:
                raise ValueError("COCOKeypoints needs root= (or both ann_file= and image_dir=)")
            base = require_dir(root, "COCO root")
            ann_file = ann_file or base / "annotations" / f"person_keypoints_{split}{year}.json"
            image_dir = image_dir or base / f"{split}{year}"
        self.ann_file, self.image_dir, self.split = Path(ann_file), Path(image_dir), split
        cat, images, anns = parse_keypoint_annotations(read_json(self.ann_file), self.ann_file, category_id)
        self.category_id = int(cat["id"])
        self.class_names = list(cat["keypoints"])
        K = len(self.class_names)
        self.flip_pairs = flip_pairs_from_names(self.class_names)
        if sigmas is None:
            if len(COCO_SIGMAS) != K:
                raise ValueError(
                    f"{self.ann_file}: {K} keypoints; pass sigmas= (OKS constants) for a non-COCO set"
                )
            sigmas = COCO_SIGMAS
        if len(sigmas) != K:
            raise ValueError(f"got {len(sigmas)} sigmas for {K} keypoints")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.images = images
        self.samples: list[dict[str, Any]] = []
        if det_file is None:
            for ann in anns:
                if ann.get("iscrowd", 0) or sum(v > 0 for v in ann["keypoints"][2::3]) < min_keypoints:
                    continue
                img = images[ann["image_id"]]
                box = clip_box(ann["bbox"], img["width"], img["height"])
                if box is None:
                    continue
                self.samples.append(
                    {
                        "image_id": ann["image_id"],
                        "box": box,
                        "keypoints": ann["keypoints"],
                        "area": float(ann.get("area", box[2] * box[3])),
                        "score": 1.0,
                    }
                )
        else:
            self._add_detections(Path(det_file), det_score_thresh, K)
        self.transform = transform
        if check_files:
            for s in self.samples:
                path = self.image_path(s["image_id"])
                if not path.is_file():
                    raise FileNotFoundError(2, "image not found", str(path))

    def _add_detections(self, path: Path, thresh: float, K: int) -> None:
        dets = read_json(path)
        if not isinstance(dets, list):
            raise AnnotationError(path, f"expected a JSON list of detections, got {type(dets).__name__}")
        for i, det in enumerate(dets):
            key = f"[{i}]"
            if not isinstance(det, dict) or not _is_num(det.get("score")):
                raise AnnotationError(path, "expected {image_id, category_id, bbox, score}", key=key)
            if det.get("category_id", self.category_id) != self.category_id or det["score"] < thresh:
                continue
            if det.get("image_id") not in self.images:
                raise AnnotationError(
                    path, f"image_id {det.get('image_id')!r} is not in {self.ann_file}", key=key
                )
            img = self.images[det["image_id"]]
            box = clip_box(parse_box(det.get("bbox"), path, key + ".bbox"), img["width"], img["height"])
            if box is None:
                continue
            self.samples.append(
                {
                    "image_id": det["image_id"],
                    "box": box,
                    "keypoints": [0.0] * (3 * K),
                    "area": box[2] * box[3],
                    "score": float(det["score"]),
                }
            )

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.images[image_id]["file_name"]

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        return {
            "image": load_image(self.image_path(s["image_id"])),
            "keypoints": torch.tensor(s["keypoints"], dtype=torch.float32).reshape(-1, 3),
            "box": s["box"],
            "image_id": s["image_id"],
            "area": s["area"],
            "score": s["score"],
            "index": index,
            "flip_pairs": self.flip_pairs,
        }

    def __getitem__(self, index: int):
        index = range(len(self))[int(index)]
        sample = self.sample(index)
        return self.transform(sample) if self.transform is not None else sample

    def coco_gt(self) -> dict[str, Any]:
        """The annotation dict for COCOeval (the file re-read: the dataset keeps no copy of it)."""
        return read_json(self.ann_file)

    def __repr__(self) -> str:
        return f"COCOKeypoints(samples={len(self)}, keypoints={len(self.class_names)}, file={str(self.ann_file)!r})"
