"""ImageFolder (the ImageNet layout) as a single-label dataset (spec ``datasets.md`` §9).

Layout: ``root/<class_name>/**/<file>``. Classes are the immediate sub-folders of ``root`` sorted in Python
string order, indexed ``0..K-1`` (torchvision's rule, so ImageNet's ``n01440764 …`` folders give the usual
indices). Files are found recursively (symbolic links followed) and kept if their extension is one of
:data:`IMG_EXTENSIONS` (case-insensitive); hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are
skipped. Other files are ignored (``strict=False``, default, as torchvision) or are an error naming the file
(``strict=True``). Everything is listed eagerly in the constructor: a missing root, a root without class
folders and a class folder without images are errors naming the path. Images are decoded lazily with PIL
(:func:`visattn.data._common.load_image`: RGB, errors name the file); ``verify=True`` decodes every header at
construction instead.

Items are ``(image, label)``: ``image`` float32 ``(3, H, W)`` in [0, 1] passed through ``transform`` if
given, ``label`` an int. Attributes: ``samples`` (``(path, label)`` list), ``paths``, ``targets`` int64
``(N,)``, ``class_names``, ``class_to_idx``.

ImageNet: ``ImageFolder("imagenet/train")`` and ``ImageFolder("imagenet/val")`` with the validation images
sorted into class folders (the usual ``valprep.sh`` layout).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ._common import AnnotationError, load_image, require_dir, to_float

__all__ = ["IMG_EXTENSIONS", "ImageFolder"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _walk(folder: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


class ImageFolder(Dataset):
    """Single-label images in class sub-folders.

    Args:
        root: folder holding one sub-folder per class.
        transform: optional callable on the float ``(3, H, W)`` image in [0, 1].
        extensions: accepted file extensions (lower case, with the dot).
        strict: a file with another extension is an error (default: ignored).
        verify: open every image at construction (slow on large sets) so that undecodable files fail early.
        classes: expected class folders, in label order (default: all sub-folders, sorted); a missing one
            is an error and extra ones are ignored (e.g. to keep the training split's label order).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        *,
        extensions: Iterable[str] = IMG_EXTENSIONS,
        strict: bool = False,
        verify: bool = False,
        classes: Iterable[str] | None = None,
    ) -> None:
        root = require_dir(root, "ImageFolder root")
        exts = tuple(e.lower() for e in extensions)
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            if not found:
                raise AnnotationError(root, "no class sub-folders (expected root/<class_name>/<image files>)")
            names = found
        else:
            names = [str(c) for c in classes]
            missing = [c for c in names if c not in found]
            if missing:
                raise FileNotFoundError(2, f"class folders {missing} not found", str(root / missing[0]))
        samples: list[tuple[str, int]] = []
        for label, name in enumerate(names):
            files = []
            for path in _walk(root / name):
                if path.suffix.lower() in exts:
                    files.append(str(path))
                elif strict:
                    raise AnnotationError(path, f"not an image file (accepted extensions: {list(exts)})")
            if not files:
                raise AnnotationError(
                    root / name, f"class folder {name!r} holds no image file (extensions {list(exts)})"
                )
            samples += [(f, label) for f in files]
        if verify:
            from PIL import Image

            for path, _ in samples:
                try:
                    with Image.open(path) as im:
                        im.verify()
                except Exception as err:  # noqa: BLE001 - any decoder failure names the file
                    raise ValueError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None
        self.root = str(root)
        self.samples = samples
        self.paths = [p for p, _ in samples]
        self.targets = torch.tensor([y for _, y in samples], dtype=torch.int64)
        self.class_names = names
        self.class_to_idx = {c: i for i, c in enumerate(names)}
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        """The uint8 ``(3, H, W)`` image of sample ``index`` before ``transform``."""
        return load_image(self.samples[index][0])

    def __getitem__(self, index: int):
        index = range(len(self))[int(index)]
        image = to_float(self.load(index))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index][1]

    def __repr__(self) -> str:
        return f"ImageFolder({self.root!r}, samples={len(self)}, classes={self.num_classes})"
