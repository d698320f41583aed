"""CIFAR-10 / CIFAR-100 in their "python version" pickle format (spec ``datasets.md`` §9).

Layout: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}``. Each file is a Python-2 pickle of a dict: ``data`` uint8
``(N, 3072)`` — per row 1024 red, then 1024 green, then 1024 blue values, each plane 32×32 row-major, i.e.
``(N, 3, 32, 32)`` — and ``labels`` (CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100), lists of
ints. Meta: ``label_names`` (CIFAR-10), ``fine_label_names`` / ``coarse_label_names`` (CIFAR-100).

**The files are pickles, and a pickle can run arbitrary code.** They are read with
:func:`load_restricted_pickle`, an unpickler that resolves only the globals a numpy array needs
(:data:`ALLOWED_GLOBALS`: ``numpy.core.multiarray._reconstruct`` (and its numpy-2 name
``numpy._core.multiarray._reconstruct``), ``numpy.ndarray``, ``numpy.dtype``); every other global
(``os.system``, ``builtins.eval``, …) is refused with :class:`UnsafePickleError` naming the file and the
global, before anything is called. Python-2 strings are decoded as latin-1 (numpy's advice for Python-2
array pickles), so keys may come back as ``str`` or ``bytes``; both are accepted.

Items are ``(image, label)``: ``image`` float32 ``(3, 32, 32)`` in [0, 1] passed through ``transform`` if
given, ``label`` an int. Attributes: ``images`` uint8 ``(N, 3, 32, 32)``, ``targets`` int64 ``(N,)``,
``class_names``, ``files`` (the batch files read).
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import AnnotationError, require_dir, require_file, require_samples, to_float

__all__ = [
    "ALLOWED_GLOBALS",
    "CIFAR10",
    "CIFAR100",
    "UnsafePickleError",
    "load_restricted_pickle",
]


def _reconstruct():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


# (module, name) -> the object it resolves to. Nothing else is ever imported or called.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class UnsafePickleError(AnnotationError, pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS` (it was not loaded)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        resolve = ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise UnsafePickleError(
                self._path,
                f"refusing to unpickle global '{module}.{name}': CIFAR files hold only dicts, lists, strings, "
                f"numbers and numpy arrays (allowed globals: {allowed}). The file is not a genuine CIFAR "
                "batch and may be malicious",
            )
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self._path, "refusing a pickle with persistent ids")


def load_restricted_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` allowing only plain containers and numpy arrays (see module docstring)."""
    path = require_file(path, "CIFAR file")
    raw = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated/garbled pickles become one clear error
        raise AnnotationError(path, f"not a readable CIFAR pickle ({type(err).__name__}: {err})") from None


def _key(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise AnnotationError(path, f"expected a pickled dict, got {type(d).__name__}")
    for k in (key, key.encode("latin1")):
        if k in d:
            return d[k]
    found = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in d)
    raise AnnotationError(path, f"missing key (found {found})", key=repr(key))


def _names(meta: dict, key: str, path: Path, expected: int) -> list[str]:
    names = _key(meta, key, path)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise AnnotationError(path, "expected a list of strings", key=repr(key))
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if len(names) != expected:
        raise AnnotationError(path, f"expected {expected} names, got {len(names)}", key=repr(key))
    return names


def _batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = load_restricted_pickle(path)
    data = _key(d, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise AnnotationError(path, f"expected a uint8 (N, 3072) array, got {got}", key="'data'")
    labels = _key(d, label_key, path)
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels
    ):
        raise AnnotationError(path, "expected a list of ints", key=repr(label_key))
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(data):
        raise AnnotationError(path, f"{len(y)} labels for {len(data)} images", key=repr(label_key))
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise AnnotationError(
            path, f"labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}", key=repr(label_key)
        )
    return data.reshape(-1, 3, 32, 32), y


def _folder(root: str | os.PathLike, name: str) -> Path:
    root = require_dir(root, "CIFAR root")
    return root / name if (root / name).is_dir() else root


class _CIFAR(Dataset):
    def __init__(
        self, files: list[Path], names: list[str], label_key: str, transform: Callable | None
    ) -> None:
        parts = [_batch(f, label_key, len(names)) for f in files]
        require_samples(sum(len(p[1]) for p in parts), files[0], hint="the batch files hold 0 images")
        self.images = torch.from_numpy(np.concatenate([p[0] for p in parts]).copy())
        self.targets = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        self.class_names = names
        self.files = [str(f) for f in files]
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        index = range(len(self))[int(index)]
        image = to_float(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(samples={len(self)}, classes={self.num_classes})"


class CIFAR10(_CIFAR):
    """CIFAR-10, python version.

    Args:
        root: the ``cifar-10-batches-py`` folder, or the folder containing it.
        split: ``"train"`` (``data_batch_1..5``, 50,000) or ``"test"`` (``test_batch``, 10,000).
        transform: optional callable on the float ``(3, 32, 32)`` image in [0, 1].
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"CIFAR-10: split must be 'train' or 'test', got {split!r}")
        folder = _folder(root, "cifar-10-batches-py")
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        files = [require_file(folder / n, "CIFAR-10 batch") for n in names]
        meta_path = folder / "batches.meta"
        meta = load_restricted_pickle(meta_path)
        super().__init__(files, _names(meta, "label_names", meta_path, 10), "labels", transform)


class CIFAR100(_CIFAR):
    """CIFAR-100, python version.

    Args:
        root: the ``cifar-100-python`` folder, or the folder containing it.
        split: ``"train"`` (50,000) or ``"test"`` (10,000).
        label: ``"fine"`` (100 classes, default) or ``"coarse"`` (20 super-classes).
        transform: optional callable on the float ``(3, 32, 32)`` image in [0, 1].
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        label: str = "fine",
    ):
        if split not in ("train", "test"):
            raise ValueError(f"CIFAR-100: split must be 'train' or 'test', got {split!r}")
        if label not in ("fine", "coarse"):
            raise ValueError(f"CIFAR-100: label must be 'fine' or 'coarse', got {label!r}")
        folder = _folder(root, "cifar-100-python")
        files = [require_file(folder / split, "CIFAR-100 file")]
        meta_path = folder / "meta"
        meta = load_restricted_pickle(meta_path)
        names = _names(meta, f"{label}_label_names", meta_path, 100 if label == "fine" else 20)
        self.label = label
        super().__init__(files, names, f"{label}_labels", transform)
