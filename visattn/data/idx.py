"""IDX files (MNIST, Fashion-MNIST) as a single-label dataset (spec ``datasets.md`` §9).

Format (yann.lecun.com/exdb/mnist): a big-endian header — two zero bytes, a type code (``0x08`` uint8,
``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions
``d`` — then ``d`` big-endian int32 sizes and the data. MNIST images are ``2051 = 0x00000803`` (N, rows,
cols) uint8 and labels ``2049 = 0x00000801`` (N,) uint8. Files may be gzip-compressed (detected from the
content, not the name). Standard names: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, shared by
MNIST and Fashion-MNIST.

Items are ``(image, label)`` (the single-label contract of spec §9): ``image`` is float32 ``(1, H, W)`` in
[0, 1] (like the glyph canvases), passed through ``transform`` if given; ``label`` is an int.

Differences from torchvision's reader: truncated or oversized files, a wrong header, mismatched image/label
counts and labels outside ``classes`` are errors naming the file.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import AnnotationError, require_dir, require_file, require_samples, to_float

__all__ = ["FASHION_MNIST_CLASSES", "IDXDataset", "read_idx"]

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array of its declared type and shape."""
    path = require_file(path, "IDX file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise AnnotationError(path, f"corrupt gzip stream ({err})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _DTYPES:
        raise AnnotationError(path, f"not an IDX file (header {raw[:4].hex()}; expected 0000<type><ndim>)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise AnnotationError(path, f"truncated header ({ndim} dimensions)")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(raw) - 4 - 4 * ndim
    if body != expected:
        raise AnnotationError(path, f"data has {body} bytes, header {shape} of {dtype.name} needs {expected}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(2, "IDX file not found (tried with and without .gz)", str(root / stem))


class IDXDataset(Dataset):
    """Single-label images from a pair of IDX files.

    Args:
        images: IDX file of ``(N, H, W)`` uint8 images, or a folder holding the standard MNIST file names.
        labels: IDX file of ``(N,)`` uint8 labels (``None`` when ``images`` is a folder).
        split: with a folder: ``'train'`` or ``'test'`` (``t10k``).
        classes: class names (default ``'0'..'9'``; :data:`FASHION_MNIST_CLASSES` for Fashion-MNIST).
        transform: optional callable on the float ``(1, H, W)`` image in [0, 1].

    Attributes: ``images`` uint8 ``(N, H, W)``, ``targets`` int64 ``(N,)``, ``class_names``.
    """

    def __init__(
        self,
        images: str | os.PathLike,
        labels: str | os.PathLike | None = None,
        *,
        split: str = "train",
        classes: Sequence[str] = tuple(str(i) for i in range(10)),
        transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        folder = labels is None
        if folder:
            if split not in ("train", "test"):
                raise ValueError(f"split must be 'train' or 'test', got {split!r}")
            root = require_dir(images, "IDX folder")
            prefix = "train" if split == "train" else "t10k"
            images, labels = (
                _find(root, f"{prefix}-images-idx3-ubyte"),
                _find(root, f"{prefix}-labels-idx1-ubyte"),
            )
        x, y = read_idx(images), read_idx(labels)
        if x.ndim != 3 or x.dtype != np.uint8:
            raise AnnotationError(images, f"expected (N, H, W) uint8 images, got {x.shape} {x.dtype}")
        if y.ndim != 1 or y.dtype != np.uint8:
            raise AnnotationError(labels, f"expected (N,) uint8 labels, got {y.shape} {y.dtype}")
        if len(x) != len(y):
            raise AnnotationError(labels, f"{len(y)} labels for {len(x)} images in {images}")
        require_samples(len(x), images, split if folder else None, "the IDX file holds 0 images")
        if len(y) and int(y.max()) >= len(classes):
            raise AnnotationError(labels, f"label {int(y.max())} out of range for {len(classes)} classes")
        self.images = torch.from_numpy(x.copy())
        self.targets = torch.from_numpy(y.astype(np.int64))
        self.class_names = [str(c) for c in classes]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        index = range(len(self))[int(index)]
        image = to_float(self.images[index].unsqueeze(0))
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])
