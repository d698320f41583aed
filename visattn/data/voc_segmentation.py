"""PASCAL VOC 2012 semantic segmentation (21 classes, PNG palette masks, 255 = ignore) and the shared base.

Format (``VOCdevkit/VOC2012``)::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png          # 8-bit palette ('P') PNG; pixel value = class index 0..20, 255 = boundary/void
    ImageSets/Segmentation/{train,val,trainval}.txt   # one id per line (1,464 / 1,449 / 2,913 ids)

``root`` may be ``VOCdevkit``, ``VOCdevkit/VOC2012`` or a folder holding ``VOC2012``. The SBD-augmented set
("SegmentationClassAug", 10,582 training ids, greyscale PNGs with the same values) is read with
``mask_dir="SegmentationClassAug", split_file=".../train_aug.txt"``. Masks are read as class indices: palette
PNGs by their indices (never by colour), greyscale PNGs by value; an RGB rendering of the masks is mapped back
through the VOC colour map (an unknown colour is an error). Every value must be a class index or 255, and the
mask must have the image's size; errors name the file.

Items: ``(image, mask)`` — without a transform a float ``(3, H, W)`` image in [0, 1] and an int64 ``(H, W)``
mask; with a transform, ``transform(tv_tensors.Image(uint8), tv_tensors.Mask(uint8))`` (see
:mod:`visattn.data.joint_transforms`). :class:`SegmentationDataset` is the base of every file-based
segmentation loader (also :mod:`visattn.data.cityscapes`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import AnnotationError, load_image, read_id_list, require_dir, to_float

__all__ = [
    "VOC_SEG_CLASSES",
    "SegmentationDataset",
    "VOCSegmentation",
    "read_label_png",
    "voc_colormap",
]

VOC_SEG_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
IGNORE_INDEX = 255


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC palette ``(n, 3)`` uint8 (bit-interleaved class index; 255 → (224, 224, 192))."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def read_label_png(
    path: str | os.PathLike, palette: np.ndarray | None = None, what: str = "label image"
) -> np.ndarray:
    """Integer label map ``(H, W)`` of a PNG: palette indices ('P'), grey values ('L', 'I', 'I;16').

    RGB(A) images are mapped through ``palette`` (``(n, 3)``: colour of value ``i`` in row ``i``) if given,
    else rejected. Errors name the file.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(2, f"{what} not found", path)
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "1"):
                arr = np.array(im, dtype=np.int64)
            elif mode in ("RGB", "RGBA"):
                rgb = np.array(im.convert("RGB"), dtype=np.int64)
            else:
                raise AnnotationError(path, f"unsupported PNG mode {mode!r} for a {what}")
    except AnnotationError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure becomes one clear error
        raise ValueError(f"{path}: cannot decode {what} ({type(err).__name__}: {err})") from None
    if mode in ("RGB", "RGBA"):
        if palette is None:
            raise AnnotationError(
                path, f"{what} is an RGB image; expected a palette ('P') or greyscale PNG of class indices"
            )
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        pal = palette.astype(np.int64)
        table = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in reversed(list(enumerate(pal)))}
        uniq, inv = np.unique(codes, return_inverse=True)
        unknown = [u for u in uniq.tolist() if u not in table]
        if unknown:
            u = unknown[0]
            raise AnnotationError(
                path, f"colour {(u >> 16, (u >> 8) & 255, u & 255)} is not in the palette of the class set"
            )
        arr = np.array([table[u] for u in uniq.tolist()], dtype=np.int64)[inv].reshape(codes.shape)
    return arr


def check_labels(arr: np.ndarray, num_classes: int, path: str, ignore_index: int = IGNORE_INDEX) -> None:
    bad = (arr >= num_classes) & (arr != ignore_index) | (arr < 0)
    if bad.any():
        values = sorted({int(v) for v in np.unique(arr[bad])})[:8]
        y, x = np.argwhere(bad)[0]
        raise AnnotationError(
            path,
            f"label values {values} (first at row {y}, column {x}) are neither class indices 0..{num_classes - 1} "
            f"nor the ignore index {ignore_index}",
        )


class SegmentationDataset(Dataset):
    """Image files with per-pixel label files; base of the segmentation loaders.

    Subclasses provide ``images``, ``masks`` (paths, same length), ``class_names`` and may override
    :meth:`decode_mask` (raw label map → train ids). Attributes: ``ignore_index`` (255).
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        images: Sequence[str],
        masks: Sequence[str],
        class_names: Sequence[str],
        transform: Callable | None = None,
        check_files: bool = True,
    ) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = [str(p) for p in images]
        self.masks = [str(p) for p in masks]
        self.class_names = list(class_names)
        self.transform = transform
        if check_files:
            for kind, paths in (("image", self.images), ("mask", self.masks)):
                missing = [p for p in paths if not os.path.isfile(p)]
                if missing:
                    raise FileNotFoundError(
                        2, f"{len(missing)} of {len(paths)} {kind} files not found, e.g.", missing[0]
                    )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def decode_mask(self, path: str) -> np.ndarray:
        arr = read_label_png(path, what="mask")
        check_labels(arr, self.num_classes, path, self.ignore_index)
        return arr

    def load_mask(self, index: int) -> torch.Tensor:
        """The uint8 ``(H, W)`` label map of sample ``index`` (train ids, 255 = ignore)."""
        return torch.from_numpy(self.decode_mask(self.masks[index]).astype(np.uint8))

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 image ``(3, H, W)`` and uint8 mask ``(H, W)``, size-checked."""
        image = load_image(self.images[index])
        mask = self.load_mask(index)
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise AnnotationError(
                self.masks[index],
                f"mask size {tuple(mask.shape)} differs from the image size {tuple(image.shape[-2:])} "
                f"of {self.images[index]}",
            )
        return image, mask

    def __getitem__(self, index: int):
        index = range(len(self))[int(index)]
        image, mask = self.load(index)
        if self.transform is not None:
            from torchvision import tv_tensors

            return self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return to_float(image), mask.long()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(samples={len(self)}, classes={self.num_classes})"


def _voc_root(root: str | os.PathLike, year: str) -> Path:
    root = require_dir(root, "VOC root")
    for cand in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (cand / "ImageSets").is_dir() or (cand / "JPEGImages").is_dir():
            return cand
    raise FileNotFoundError(2, f"no VOC{year} folder (with ImageSets/ and JPEGImages/) under", str(root))


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation.

    Args:
        root: ``VOCdevkit``, ``VOCdevkit/VOC2012`` or its parent.
        split: ``train``, ``val``, ``trainval`` (``ImageSets/Segmentation/<split>.txt``).
        transform: joint transform ``(Image, Mask) -> (image, mask)``.
        year: ``"2012"`` (also ``"2007"``, whose segmentation subset has the same layout).
        mask_dir: folder of the label PNGs (``SegmentationClass``; ``SegmentationClassAug`` for SBD).
        image_dir: folder of the images.
        split_file: explicit id list (overrides ``split``; relative paths are taken from the VOC folder).
        image_ext: image file extension.
        check_files: check at construction that every image and mask exists.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        year: str = "2012",
        mask_dir: str = "SegmentationClass",
        image_dir: str = "JPEGImages",
        split_file: str | os.PathLike | None = None,
        image_ext: str = ".jpg",
        check_files: bool = True,
    ) -> None:
        base = _voc_root(root, str(year))
        if split_file is not None:
            list_path = Path(split_file) if Path(split_file).is_absolute() else base / split_file
        else:
            list_path = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        self.ids = read_id_list(list_path, split if split_file is None else None)
        self.root, self.split = base, split
        self.palette = voc_colormap()
        super().__init__(
            [str(base / image_dir / f"{i}{image_ext}") for i in self.ids],
            [str(base / mask_dir / f"{i}.png") for i in self.ids],
            VOC_SEG_CLASSES,
            transform,
            check_files,
        )

    def decode_mask(self, path: str) -> np.ndarray:
        arr = read_label_png(path, palette=self.palette, what="VOC mask")
        check_labels(arr, self.num_classes, path, self.ignore_index)
        return arr
