"""Built-in dense-prediction data from the real-glyph canvases: exact segmentation masks and glyph keypoints.

Both datasets wrap a :class:`~visattn.data.glyph_canvas.GlyphCanvasDataset` built with the same arguments
(same canvases, same disjoint train/test glyph pools, deterministic by ``seed``) and derive their targets
from where each real MNIST glyph was pasted: its class, its index in the bundled digits and its offset
``(oy, ox)`` on the canvas. When the canvas dataset records these (``placements``) they are used directly;
otherwise they are recovered from the canvas — for each annotated glyph box, the glyph of that class in
the split's pool whose ink box has the box's size and which fits under the canvas pixels with the least
extra ink — and the recovery is verified by re-composing every canvas exactly (pixel-wise maximum of the
placed glyphs); a canvas that does not re-compose raises ``RuntimeError``.

* :class:`GlyphSegmentationDataset` (``glyph_seg``): per-pixel labels ``0`` = background, ``1 + i`` = digit
  ``classes[i]`` for every *ink* pixel (glyph value ``>= ink_threshold``, default 128) of a glyph; where
  glyphs overlap the pixel goes to the glyph with the larger value there (the canvas is their maximum, so
  that glyph made the pixel; ties: the later one). Faint anti-aliasing pixels (``0 < value <
  ink_threshold``) are ``255`` (ignored, like VOC's object boundaries) unless ``ignore_faint=False`` (then
  background). Items ``(image, mask)`` like :mod:`visattn.data.voc_segmentation`.
* :class:`GlyphKeypointsDataset` (``glyph_keypoints``): one sample per pasted glyph, top-down like COCO
  persons: the whole canvas, the glyph's ink box (COCO ``(x, y, w, h)``) and five keypoints computed from
  the glyph's own pixels (not the canvas, so an overlapping glyph does not move them): ``centroid``
  (intensity-weighted mean of all its pixels), ``top`` / ``bottom`` (the first / last row holding ink, at
  the mean column of its ink pixels), ``left`` / ``right`` (the first / last ink column, at the mean row).
  All are labelled visible (``v = 2``); ``left``/``right`` swap under a horizontal flip (``flip_pairs =
  ((3, 4),)``). OKS constants ``sigmas`` (default 0.05 for the centroid, 0.07 for the extreme points) and
  the ink box area as the OKS scale make COCOeval's AP meaningful at glyph size (areas of a few hundred
  pixels: COCOeval's ``APm``/``APl`` are then -1, only ``AP``/``AR`` over all areas apply).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import to_float
from .glyph_canvas import GlyphCanvasDataset, _glyph_pool, load_mnist5k

__all__ = ["GLYPH_KEYPOINT_NAMES", "GlyphKeypointsDataset", "GlyphSegmentationDataset", "glyph_placements"]

GLYPH_KEYPOINT_NAMES = ("centroid", "top", "bottom", "left", "right")
GLYPH_FLIP_PAIRS = ((3, 4),)
GLYPH_SIGMAS = (0.05, 0.07, 0.07, 0.07, 0.07)
Placement = tuple[int, int, int, int]  # class, glyph index (into load_mnist5k), oy, ox


@lru_cache(maxsize=1)
def _ink_boxes() -> np.ndarray:
    """Ink box ``(y0, y1, x0, x1)`` (nonzero pixels, exclusive ends) of each of the 5,000 glyphs."""
    glyphs, _ = load_mnist5k()
    nz = glyphs > 0
    rows, cols = nz.any(2), nz.any(1)
    y0, y1 = rows.argmax(1), 28 - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), 28 - cols[:, ::-1].argmax(1)
    return np.stack([y0, y1, x0, x1], 1)


def _recover(canvas: GlyphCanvasDataset) -> list[list[Placement]]:
    glyphs, labels = load_mnist5k()
    boxes = _ink_boxes()
    pool = _glyph_pool(labels, canvas.split)
    by_class = {c: pool[labels[pool] == c] for c in canvas.classes}
    S = canvas.canvas_size
    images = canvas.images.numpy()
    out = []
    for i, annotated in enumerate(canvas.boxes):
        image = images[i].astype(np.int32)
        placed: list[Placement] = []
        for c, y0, x0, y1, x1 in annotated:
            cand = by_class[c]
            b = boxes[cand]
            cand = cand[(b[:, 1] - b[:, 0] == y1 - y0) & (b[:, 3] - b[:, 2] == x1 - x0)]
            best, best_extra = None, None
            for g in cand:
                oy, ox = y0 - boxes[g, 0], x0 - boxes[g, 2]
                if not (0 <= oy <= S - 28 and 0 <= ox <= S - 28):
                    continue
                window = image[oy : oy + 28, ox : ox + 28]
                glyph = glyphs[g].astype(np.int32)
                if (window >= glyph).all():
                    extra = int((window - glyph).sum())
                    if best_extra is None or extra < best_extra:
                        best, best_extra = (int(c), int(g), int(oy), int(ox)), extra
            if best is None:
                raise RuntimeError(f"canvas {i}: no glyph of class {c} fits the box {(y0, x0, y1, x1)}")
            placed.append(best)
        out.append(placed)
    return out


def glyph_placements(canvas: GlyphCanvasDataset) -> list[list[Placement]]:
    """``(class, glyph index, oy, ox)`` of every pasted glyph, per canvas, verified against the canvases."""
    recorded = getattr(canvas, "placements", None)
    placements = [list(map(tuple, p)) for p in recorded] if recorded is not None else _recover(canvas)
    glyphs, _ = load_mnist5k()
    S = canvas.canvas_size
    images = canvas.images.numpy()
    for i, placed in enumerate(placements):
        rebuilt = np.zeros((S, S), dtype=np.uint8)
        for _, g, oy, ox in placed:
            np.maximum(
                rebuilt[oy : oy + 28, ox : ox + 28], glyphs[g], out=rebuilt[oy : oy + 28, ox : ox + 28]
            )
        if not np.array_equal(rebuilt, images[i]):
            raise RuntimeError(f"canvas {i}: the glyph placements do not re-compose the canvas")
    return placements


def _canvas(split: str, kwargs: dict[str, Any]) -> GlyphCanvasDataset:
    return GlyphCanvasDataset(split=split, transform=None, **kwargs)


class GlyphSegmentationDataset(Dataset):
    """Glyph canvases with exact per-pixel digit labels (see the module docstring).

    Args: those of :class:`~visattn.data.glyph_canvas.GlyphCanvasDataset` (``split``, ``num_samples``,
    ``canvas_size``, ``glyphs_per_image``, ``classes``, ``seed``, ``channels``, ``max_overlap``), plus
    ``transform`` (joint ``(Image, Mask)`` transform), ``ink_threshold`` and ``ignore_faint``.
    """

    ignore_index = 255

    def __init__(
        self,
        split: str = "train",
        transform: Callable | None = None,
        ink_threshold: int = 128,
        ignore_faint: bool = True,
        **canvas_kwargs: Any,
    ) -> None:
        if not 1 <= int(ink_threshold) <= 255:
            raise ValueError(f"ink_threshold must lie in 1..255, got {ink_threshold}")
        self.canvas = _canvas(split, canvas_kwargs)
        self.transform = transform
        self.channels = self.canvas.channels
        self.class_names = ["background"] + [str(c) for c in self.canvas.classes]
        self.placements = glyph_placements(self.canvas)
        glyphs, _ = load_mnist5k()
        S = self.canvas.canvas_size
        label_of = {c: 1 + i for i, c in enumerate(self.canvas.classes)}
        masks = np.zeros((len(self.placements), S, S), dtype=np.uint8)
        for i, placed in enumerate(self.placements):
            value = np.zeros((S, S), dtype=np.int32)
            owner = np.zeros((S, S), dtype=np.uint8)
            for c, g, oy, ox in placed:
                win = np.s_[oy : oy + 28, ox : ox + 28]
                glyph = glyphs[g].astype(np.int32)
                take = (glyph > 0) & (glyph >= value[win])
                value[win] = np.where(take, glyph, value[win])
                owner[win] = np.where(take, label_of[c], owner[win])
            mask = np.where(value >= ink_threshold, owner, 0).astype(np.uint8)
            if ignore_faint:
                mask[(value > 0) & (value < ink_threshold)] = self.ignore_index
            masks[i] = mask
        self.masks = torch.from_numpy(masks)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.masks)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 image ``(channels, S, S)`` and uint8 mask ``(S, S)``."""
        image = self.canvas.images[index][None]
        if self.channels == 3:
            image = image.expand(3, -1, -1).contiguous()
        return image, self.masks[index]

    def __getitem__(self, index: int):
        index = range(len(self))[int(index)]
        image, mask = self.load(index)
        if self.transform is not None:
            from torchvision import tv_tensors

            return self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return to_float(image), mask.long()


def glyph_keypoints(glyph: np.ndarray, ink_threshold: int = 128) -> np.ndarray:
    """The five keypoints ``(5, 2)`` ``(x, y)`` of one 28×28 glyph in its own pixel coordinates."""
    g = glyph.astype(np.float64)
    ys, xs = np.mgrid[0:28, 0:28]
    total = g.sum()
    centroid = ((g * xs).sum() / total, (g * ys).sum() / total)
    ink = glyph >= ink_threshold
    if not ink.any():
        ink = glyph > 0
    iy, ix = np.nonzero(ink)
    top, bottom = iy.min(), iy.max()
    left, right = ix.min(), ix.max()
    return np.array(
        [
            centroid,
            (ix[iy == top].mean(), top),
            (ix[iy == bottom].mean(), bottom),
            (left, iy[ix == left].mean()),
            (right, iy[ix == right].mean()),
        ],
        dtype=np.float64,
    )


class GlyphKeypointsDataset(Dataset):
    """One top-down sample per pasted glyph with five keypoints (see the module docstring).

    Args: those of :class:`~visattn.data.glyph_canvas.GlyphCanvasDataset`, plus ``transform`` (a
    :class:`~visattn.data.joint_transforms.TopDownTransform`), ``ink_threshold`` and ``sigmas``.
    """

    def __init__(
        self,
        split: str = "train",
        transform: Callable | None = None,
        ink_threshold: int = 128,
        sigmas: Sequence[float] = GLYPH_SIGMAS,
        **canvas_kwargs: Any,
    ) -> None:
        self.canvas = _canvas(split, canvas_kwargs)
        self.transform = transform
        self.channels = self.canvas.channels
        self.class_names = list(GLYPH_KEYPOINT_NAMES)
        self.flip_pairs = GLYPH_FLIP_PAIRS
        if len(sigmas) != len(GLYPH_KEYPOINT_NAMES):
            raise ValueError(f"got {len(sigmas)} sigmas for {len(GLYPH_KEYPOINT_NAMES)} keypoints")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.placements = glyph_placements(self.canvas)
        glyphs, _ = load_mnist5k()
        samples = []
        for i, (placed, boxes) in enumerate(zip(self.placements, self.canvas.boxes, strict=True)):
            for (c, g, oy, ox), (_, y0, x0, y1, x1) in zip(placed, boxes, strict=True):
                kp = glyph_keypoints(glyphs[g], ink_threshold) + np.array([ox, oy])
                kp = np.concatenate([kp, np.full((len(kp), 1), 2.0)], 1)
                box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
                samples.append({"canvas": i, "digit": c, "box": box, "keypoints": kp.astype(np.float32)})
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image = self.canvas.images[s["canvas"]][None]
        if self.channels == 3:
            image = image.expand(3, -1, -1).contiguous()
        return {
            "image": image,
            "keypoints": torch.from_numpy(s["keypoints"]),
            "box": s["box"],
            "image_id": s["canvas"] + 1,
            "area": s["box"][2] * s["box"][3],
            "score": 1.0,
            "index": index,
            "flip_pairs": self.flip_pairs,
        }

    def __getitem__(self, index: int):
        index = range(len(self))[int(index)]
        sample = self.sample(index)
        return self.transform(sample) if self.transform is not None else sample

    def coco_gt(self) -> dict[str, Any]:
        """COCO-format ground truth (one image per canvas, one annotation per glyph) for COCOeval."""
        S = self.canvas.canvas_size
        images = [
            {"id": i + 1, "file_name": f"canvas_{i:06d}.png", "width": S, "height": S}
            for i in range(len(self.canvas))
        ]
        anns = []
        for n, s in enumerate(self.samples):
            anns.append(
                {
                    "id": n + 1,
                    "image_id": s["canvas"] + 1,
                    "category_id": 1,
                    "bbox": list(s["box"]),
                    "area": s["box"][2] * s["box"][3],
                    "iscrowd": 0,
                    "keypoints": [float(v) for v in s["keypoints"].reshape(-1)],
                    "num_keypoints": len(GLYPH_KEYPOINT_NAMES),
                }
            )
        cats = [{"id": 1, "name": "glyph", "keypoints": list(GLYPH_KEYPOINT_NAMES), "skeleton": []}]
        return {"images": images, "annotations": anns, "categories": cats}
