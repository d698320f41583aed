"""Shared machinery of the file-based multi-label datasets (spec ``datasets.md`` §1).

Every loader parses **all** annotations eagerly in its constructor and raises one clear error for malformed
input (:class:`AnnotationError`, a ``ValueError`` naming the file and the line or key, or
``FileNotFoundError`` naming the missing path), so nothing fails late inside a ``DataLoader`` worker. A split
without samples is such an error too (:func:`require_samples`: training would "succeed" on nothing), and so
is an image listed twice (:class:`UniqueNames`, :func:`check_unique`: it would be weighted twice). Images
are read lazily; a missing or undecodable image raises an error naming its path (``check_files=True``
checks that every image exists at construction).

Label model: raw labels are a ternary ``int8`` matrix (1 positive, -1 negative, 0 ignore/unknown). Items are
``(image, target, eval_mask, index)`` like :class:`~visattn.data.GlyphCanvasDataset`:

* ``target`` float ``(C,)``: ``1 -> 1``, ``-1 -> 0``, ``0 -> train_ignore_value`` (default 0, i.e. ignored
  labels are trained as negatives, as CSRA and the VAA code do);
* ``eval_mask`` bool ``(C,)``: False where the label is 0 (AP drops those entries);
* ``index``: the stable dataset index.

Image contract (same as the glyph canvases): images are decoded with PIL (as CSRA does; torchvision's own
decoders are deprecated since 0.29) to uint8 RGB ``(3, H, W)``, cropped to the sample box if there is one, converted to float32
in [0, 1], then passed to ``transform`` if given — any callable on a float CHW tensor (torchvision
``transforms.v2`` pipelines such as :func:`visattn.data.transforms.build_transform` accept tensors).
``dataset.load(i)`` returns the cropped uint8 image before conversion.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["AnnotationError", "MultiLabelDataset", "crop_box", "load_image", "to_float"]

Box = tuple[float, float, float, float]  # x, y, w, h in pixels
BOX_POLICIES = ("clamp", "csra")


class AnnotationError(ValueError):
    """Malformed annotation; the message names the file and the line or key, and what was expected."""

    def __init__(
        self, file: str | os.PathLike, message: str, *, line: int | None = None, key: str | None = None
    ):
        where = str(file)
        if line is not None:
            where += f", line {line}"
        if key is not None:
            where += f", {key}"
        super().__init__(f"{where}: {message}")
        self.file, self.line, self.key = str(file), line, key


# ----------------------------------------------------------------------------------------------- files
def require_file(path: str | os.PathLike, what: str = "annotation file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, f"{what} not found", str(path))
    return path


def require_dir(path: str | os.PathLike, what: str = "directory") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(2, f"{what} not found", str(path))
    return path


def read_json(path: str | os.PathLike) -> Any:
    path = require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise AnnotationError(
            path, f"invalid JSON ({err.msg}, column {err.colno})", line=err.lineno
        ) from None
    except UnicodeDecodeError as err:
        raise AnnotationError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_lines(path: str | os.PathLike) -> list[tuple[int, str]]:
    """Non-blank lines as ``(1-based line number, stripped text)``."""
    path = require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return [(n, s.strip()) for n, s in enumerate(f, 1) if s.strip()]
    except UnicodeDecodeError as err:
        raise AnnotationError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_id_list(path: str | os.PathLike, split: str | None = None, what: str = "image id") -> list[str]:
    """One id per non-blank line (VOC ``ImageSets`` lists). A repeated id is an error naming both lines (it
    would silently weight that image twice), and so is a list without ids (the split would train on nothing)."""
    path = require_file(path, "split list")
    lines = read_lines(path)
    for n, line in lines:
        if len(line.split()) != 1:
            raise AnnotationError(path, f"expected one {what} per line, got {line!r}", line=n)
    require_samples(len(lines), path, split, f"empty split list; expected one {what} per line")
    check_unique([line for _, line in lines], path, what, lines=[n for n, _ in lines])
    return [line for _, line in lines]


# ------------------------------------------------------------------------------------- sample checks
class UniqueNames:
    """Refuses a name seen before (an image listed twice would be sampled and weighted twice, and a second
    label row for it would silently disagree with the first). Each name is remembered with where it was
    found (``line`` or ``key``) so the error names both places."""

    def __init__(self, file: str | os.PathLike, what: str = "image") -> None:
        self.file, self.what = file, what
        self.seen: dict[str, str] = {}

    def add(self, name: str, *, line: int | None = None, key: str | None = None) -> None:
        if name in self.seen:
            raise AnnotationError(
                self.file, f"duplicate {self.what} {name!r} (first at {self.seen[name]})", line=line, key=key
            )
        self.seen[name] = (
            f"line {line}" if line is not None else f"key {key}" if key is not None else "an earlier entry"
        )


def check_unique(
    names: Iterable[str],
    file: str | os.PathLike,
    what: str = "image",
    *,
    lines: Sequence[int] | None = None,
    key: str | None = None,
) -> None:
    """:class:`UniqueNames` over a whole list; positions are the file's ``lines`` when the format has lines,
    else 0-based indices into ``key`` (``key[i]``)."""
    unique = UniqueNames(file, what)
    for i, name in enumerate(names):
        if lines is not None:
            unique.add(name, line=lines[i])
        else:
            unique.add(name, key=f"{key}[{i}]" if key is not None else f"[{i}]")


def require_samples(
    count: int,
    file: str | os.PathLike | None,
    split: str | None = None,
    hint: str = "",
    *,
    key: str | None = None,
) -> None:
    """Refuse an empty dataset at construction: a loader that returns 0 samples would let training "succeed"
    on nothing (and metrics over no samples are NaN or 0). ``file`` names the annotation file the samples come
    from; ``hint`` says what to check."""
    if count > 0:
        return
    message = f"no samples in split {split!r}" if split is not None else "no samples"
    message += f" ({hint})" if hint else ""
    if file is None:
        raise ValueError(message)
    raise AnnotationError(file, message, key=key)


# --------------------------------------------------------------------------------------- MATLAB files
def load_mat(path: str | os.PathLike) -> dict[str, Any]:
    """``scipy.io.loadmat`` with clear errors (v7.3/HDF5 files are not readable by SciPy)."""
    path = require_file(path)
    try:
        import scipy.io
    except ImportError as err:  # pragma: no cover - scipy ships with the data extra
        raise ImportError(f"reading {path} needs SciPy: pip install scipy") from err
    with open(path, "rb") as f:
        head = f.read(520)
    hdf5 = b"\x89HDF\r\n\x1a\n"
    if head.startswith(b"MATLAB 7.3") or head[:8] == hdf5 or head[512:520] == hdf5:
        raise AnnotationError(
            path,
            "MATLAB v7.3 (HDF5) file; SciPy reads only v4-v7.2. Re-save it in MATLAB/Octave with "
            "save(..., '-v7') (or convert it to the v7 layout with h5py) and retry",
        )
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as err:  # scipy's message for v7.3 files
        raise AnnotationError(path, f"unsupported MAT file ({err}); re-save with save(..., '-v7')") from None
    except Exception as err:  # noqa: BLE001 - any parser failure becomes one clear error
        raise AnnotationError(path, f"not a readable MAT file ({type(err).__name__}: {err})") from None


def mat_get(obj: Any, key: str, file: str | os.PathLike) -> Any:
    """A top-level variable of a loaded MAT file."""
    if key not in obj:
        found = sorted(k for k in obj if not k.startswith("__"))
        raise AnnotationError(file, f"missing variable (found {found})", key=key)
    return obj[key]


def mat_record(x: Any, file: str | os.PathLike, key: str) -> np.void:
    """Unwrap a 1x1 MATLAB struct (possibly nested in 1x1 cells) to its record."""
    while isinstance(x, np.ndarray) and x.size == 1 and x.dtype.names is None and x.dtype == object:
        x = x.reshape(-1)[0]
    if isinstance(x, np.ndarray) and x.dtype.names is not None and x.size == 1:
        x = x.reshape(-1)[0]
    if not isinstance(x, np.void) or x.dtype.names is None:
        raise AnnotationError(file, f"expected a 1x1 MATLAB struct, got {_describe(x)}", key=key)
    return x


def mat_field(rec: np.void, field: int | str, file: str | os.PathLike, key: str) -> Any:
    names = rec.dtype.names
    if isinstance(field, int):
        if field >= len(names):
            raise AnnotationError(file, f"struct has {len(names)} fields, need field #{field}", key=key)
        return rec[field]
    if field not in names:
        raise AnnotationError(file, f"struct has no field {field!r} (fields: {list(names)})", key=key)
    return rec[field]


def mat_cells(x: Any, file: str | os.PathLike, key: str) -> list[Any]:
    if not isinstance(x, np.ndarray) or x.dtype != object or x.ndim != 2 or 1 not in x.shape:
        raise AnnotationError(file, f"expected an n x 1 or 1 x n cell array, got {_describe(x)}", key=key)
    return list(x.reshape(-1))


def mat_str(x: Any, file: str | os.PathLike, key: str) -> str:
    """A MATLAB string stored in a cell (``x[0]`` / ``x[0][0]`` in the reference code)."""
    y = x
    while isinstance(y, np.ndarray) and y.size == 1 and y.dtype == object:
        y = y.reshape(-1)[0]
    if isinstance(y, np.ndarray) and y.dtype.kind == "U" and y.size == 1:
        y = y.reshape(-1)[0]
    if not isinstance(y, str):
        raise AnnotationError(file, f"expected a string, got {_describe(x)}", key=key)
    return str(y)


def mat_strings(x: Any, file: str | os.PathLike, key: str) -> list[str]:
    return [mat_str(c, file, f"{key}[{i}]") for i, c in enumerate(mat_cells(x, file, key))]


def mat_matrix(x: Any, file: str | os.PathLike, key: str, rows: int | None = None) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind not in "biuf":
        raise AnnotationError(file, f"expected a numeric matrix, got {_describe(x)}", key=key)
    if rows is not None and x.shape[0] != rows:
        raise AnnotationError(file, f"expected {rows} rows, got shape {x.shape}", key=key)
    return x


def mat_indices(x: Any, n: int, file: str | os.PathLike, key: str) -> np.ndarray:
    """A vector of 1-based MATLAB indices into ``n`` rows -> validated 0-based int64 array."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf" or (x.ndim == 2 and 1 not in x.shape):
        raise AnnotationError(file, f"expected a vector of 1-based indices, got {_describe(x)}", key=key)
    v = x.reshape(-1)
    if v.dtype.kind == "f" and not np.all(v == np.round(v)):
        raise AnnotationError(file, "indices must be integers", key=key)
    v = v.astype(np.int64)
    if v.size and (v.min() < 1 or v.max() > n):
        raise AnnotationError(file, f"1-based indices must lie in 1..{n}, got {v.min()}..{v.max()}", key=key)
    if len(np.unique(v)) != len(v):
        raise AnnotationError(file, "duplicate indices", key=key)
    return v - 1


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return type(x).__name__


def check_values(
    labels: np.ndarray, allowed: Sequence[int], file: str | os.PathLike, key: str, rows=None, cols=None
) -> None:
    """Error if a label is not in ``allowed``; ``rows``/``cols`` map a sliced matrix back to file positions."""
    bad = ~np.isin(labels, allowed)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        fr = int(rows[r]) if rows is not None else int(r)
        fc = int(cols[c]) if cols is not None else int(c)
        raise AnnotationError(
            file,
            f"label {labels[r, c].item()!r} at row {fr}, column {fc} (0-based); expected one of {list(allowed)}",
            key=key,
        )


def select_split(
    splits: dict[str, np.ndarray], split: str, indices: Sequence[int] | None, n: int, file: str
) -> np.ndarray:
    """Row indices for ``split`` (``trainval`` = train then val) or an explicit 0-based ``indices`` list."""
    if indices is not None:
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        if not rows.size:
            raise ValueError(f"indices selects no rows of {file}; give at least one 0-based row")
        if rows.min() < 0 or rows.max() >= n:
            raise ValueError(f"indices must lie in 0..{n - 1} (the {n} rows of {file})")
        if len(np.unique(rows)) != len(rows):
            raise ValueError("indices contain duplicates")
        return rows
    choices = list(splits) + (["trainval"] if "train" in splits and "val" in splits else [])
    if split not in choices:
        raise ValueError(f"split must be one of {choices}, got {split!r}")
    if split == "trainval" and split not in splits:
        return np.concatenate([splits["train"], splits["val"]])
    return splits[split]


# ----------------------------------------------------------------------------------------------- images
def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]."""
    return image.float().div_(255.0)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor ``(3, H, W)``; errors name the path. Every dataset and every
    inference command decodes files through this one function; the recipe's transforms convert to the
    model's channels (``data.channels``)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "image not found", path)
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - any decoder failure becomes one clear error
        raise ValueError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def crop_box(image: torch.Tensor, box: Box, policy: str = "clamp") -> torch.Tensor:
    """Crop ``box = (x, y, w, h)`` from a ``(C, H, W)`` image.

    ``policy='clamp'`` (default): the box is clamped to the image; a box entirely outside the image (or of
    zero size after clamping) falls back to the whole image, as VAC does. ``policy='csra'``: reproduces
    CSRA's ``PIL.Image.crop([x, y, x + w, y + h])`` — corners rounded like PIL, output of the full box size
    with the out-of-image area filled with black (zeros).
    """
    x, y, w, h = box
    x0, y0, x1, y1 = (int(round(v)) for v in (x, y, x + w, y + h))
    H, W = image.shape[-2:]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if policy == "clamp":
        if cx1 <= cx0 or cy1 <= cy0:
            return image
        return image[..., cy0:cy1, cx0:cx1]
    if policy != "csra":
        raise ValueError(f"box_policy must be one of {BOX_POLICIES}, got {policy!r}")
    out = image.new_zeros((*image.shape[:-2], max(y1 - y0, 0), max(x1 - x0, 0)))
    if cx1 > cx0 and cy1 > cy0:
        out[..., cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = image[..., cy0:cy1, cx0:cx1]
    return out


def parse_box(value: Any, file: str | os.PathLike, key: str) -> Box:
    """Validate an ``[x, y, w, h]`` box (finite numbers, ``w, h >= 0``)."""
    ok = isinstance(value, (list, tuple)) and len(value) == 4
    ok = ok and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok or value[2] < 0 or value[3] < 0:
        raise AnnotationError(file, f"expected a box [x, y, w, h] with w, h >= 0, got {value!r}", key=key)
    return tuple(float(v) for v in value)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- base
class MultiLabelDataset(Dataset):
    """Images with ternary multi-label annotations; base of every file-based multi-label loader.

    Args:
        paths: image file paths, one per sample.
        labels: ternary ``(N, C)`` array in {1, -1, 0}.
        class_names: ``C`` names, in label-column order.
        boxes: optional per-sample ``(x, y, w, h)`` crop boxes (``None`` entries = whole image).
        transform: optional callable on the float ``(3, H, W)`` image in [0, 1] (see module docstring).
        train_ignore_value: training target for ignored (0) labels; default 0 (trained as negatives).
        box_policy: ``'clamp'`` or ``'csra'`` (see :func:`crop_box`).
        check_files: check at construction that every image file exists.
        source: the annotation file (or folder) the samples were read from; named in the error raised when
            there are no samples (an empty split is refused at construction, see :func:`require_samples`).
        split: the split's name, for that error.

    Attributes: ``paths``, ``class_names``, ``labels`` (int8 ``(N, C)``, also ``ternary``), ``targets``
    (float32 ``(N, C)``), ``masks`` (bool ``(N, C)``, the evaluation masks), ``boxes`` (list or ``None``).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        class_names: Sequence[str],
        *,
        boxes: Sequence[Box | None] | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        train_ignore_value: float = 0.0,
        box_policy: str = "clamp",
        check_files: bool = False,
        source: str | os.PathLike | None = None,
        split: str | None = None,
    ) -> None:
        require_samples(len(paths), source, split)
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape != (len(paths), len(class_names)):
            raise ValueError(
                f"labels must be (N, C) = ({len(paths)}, {len(class_names)}), got {labels.shape}"
            )
        if not np.isin(labels, (-1, 0, 1)).all():
            raise ValueError("labels must be ternary values in {1, -1, 0}")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"duplicate class names in {list(class_names)}")
        if boxes is not None and len(boxes) != len(paths):
            raise ValueError(f"got {len(boxes)} boxes for {len(paths)} samples")
        if box_policy not in BOX_POLICIES:
            raise ValueError(f"box_policy must be one of {BOX_POLICIES}, got {box_policy!r}")
        if not 0.0 <= float(train_ignore_value) <= 1.0:
            raise ValueError(f"train_ignore_value must lie in [0, 1], got {train_ignore_value}")
        self.paths = [str(p) for p in paths]
        self.class_names = [str(c) for c in class_names]
        self.labels = torch.from_numpy(labels.astype(np.int8))
        self.targets = (self.labels == 1).float()
        self.targets[self.labels == 0] = float(train_ignore_value)
        self.masks = self.labels != 0
        self.boxes = list(boxes) if boxes is not None else None
        self.transform = transform
        self.box_policy = box_policy
        if check_files:
            missing = [p for p in self.paths if not os.path.isfile(p)]
            if missing:
                raise FileNotFoundError(
                    2, f"{len(missing)} of {len(self.paths)} images not found, e.g.", missing[0]
                )

    @property
    def ternary(self) -> torch.Tensor:
        """Raw ternary labels ``(N, C)`` int8 (alias of ``labels``)."""
        return self.labels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """The uint8 ``(3, H, W)`` image of sample ``index``, cropped to its box, before ``transform``."""
        image = load_image(self.paths[index])
        box = self.boxes[index] if self.boxes is not None else None
        return crop_box(image, box, self.box_policy) if box is not None else image

    def __getitem__(self, index: int):
        index = range(len(self))[int(index)]
        image = to_float(self.load(index))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index], self.masks[index], index

    def meta(self, index: int) -> dict[str, Any]:
        """Path and optional box of a sample."""
        return {"path": self.paths[index], "box": self.boxes[index] if self.boxes is not None else None}

    def positive_ratio(self) -> torch.Tensor:
        """Per-class fraction of samples labelled positive, ``mean(labels == 1)`` (imbalance-aware losses)."""
        return (self.labels == 1).double().mean(0).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(samples={len(self)}, classes={self.num_classes})"
