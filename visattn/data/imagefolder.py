"""ImageFolder (the ImageNet layout) as a single-label dataset (spec ``datasets.md`` §9).

Layout: ``root/<class_name>/**/<file>``. Classes are the immediate sub-folders of ``root`` sorted in Python
string order, indexed ``0..K-1`` (torchvision's rule, so ImageNet's ``n01440764 …`` folders give the usual
indices). Files are found recursively (symbolic links followed, each real folder listed once so that a link
to an ancestor cannot loop or count images twice) and kept if their extension is one of
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

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ._common import AnnotationError, load_image, require_dir, require_samples, to_float

__all__ = ["IMG_EXTENSIONS", "ImageFolder"]

_LOG = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _dir_id(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the directory ``path`` resolves to (links followed); ``None`` if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _own_folders(folder: Path) -> set[tuple[int, int] | None]:
    """Ids of ``folder`` and of the non-hidden folders below it reached without following a link."""
    own = set()
    for dirpath, dirnames, _ in os.walk(folder):  # links below ``folder`` not followed
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        own.add(_dir_id(dirpath))
    return own


def _walk(folder: Path, claimed: set[tuple[int, int] | None]) -> Iterator[Path]:
    """Files under ``folder`` in ``os.walk`` order (sorted; a folder's files before its sub-folders), hidden
    entries skipped, symbolic links followed.

    ``claimed`` holds the folders already accounted for (the root and every class folder's own tree, see
    :func:`_own_folders`); a folder reached through a link that is claimed (an ancestor, which would loop
    until the path length limit and multiply the samples, a second link to one folder, or another class's
    folder, which would relabel its images) is skipped with a warning naming the link, and a folder reached
    through a link is claimed when listed. Every image file thus counts once, under its own class.
    """

    def visit(path: str, linked: bool) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:  # unreadable folder: skipped, as os.walk does
            return
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows links, as os.walk does
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(entry)
            else:
                yield Path(path) / entry.name
        for entry in subdirs:
            via_link = linked or entry.is_symlink()
            if via_link:
                ident = _dir_id(entry.path)
                if ident in claimed:
                    _LOG.warning(
                        "%s: skipped, it leads to the folder %s, whose images are listed once already",
                        entry.path,
                        os.path.realpath(entry.path),
                    )
                    continue
                claimed.add(ident)
            yield from visit(entry.path, via_link)

    yield from visit(str(folder), False)


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
        # Every real folder is listed once (see _walk): claim the root and each class's own tree first.
        owner: dict[tuple[int, int] | None, str] = {_dir_id(str(root)): "the root"}
        for name in names:
            own = _own_folders(root / name)
            shared = [owner[i] for i in own if i is not None and i in owner]
            if shared:
                raise AnnotationError(
                    root / name,
                    f"class folder {name!r} shares a folder with {shared[0]} (through a link); its images "
                    "would be listed under two classes",
                )
            owner.update(dict.fromkeys(own, f"the class folder {name!r}"))
        claimed = set(owner)
        samples: list[tuple[str, int]] = []
        for label, name in enumerate(names):
            files = []
            for path in _walk(root / name, claimed):
                if path.suffix.lower() in exts:
                    files.append(str(path))
                elif strict:
                    raise AnnotationError(path, f"not an image file (accepted extensions: {list(exts)})")
            if not files:
                raise AnnotationError(
                    root / name, f"class folder {name!r} holds no image file (extensions {list(exts)})"
                )
            samples += [(f, label) for f in files]
        require_samples(len(samples), root, hint="classes=[] selects no class folder")
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
