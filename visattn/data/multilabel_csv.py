"""Generic multi-label datasets from CSV or JSON annotation files (library-defined; spec ``datasets.md`` §8).

**CSV, wide** — header ``path,<class_0>,...,<class_{C-1}>``, one row per image, integer cells in the stated
``encoding``: ``'binary'`` ({1, 0}, 0 = negative) or ``'ternary'`` ({1, -1, 0}, 0 = ignore; an empty cell =
ignore). Class order = header order.

**CSV, list** — header ``path,positive[,ignore]``; ``positive``/``ignore`` are ``;``-separated class names,
every other class is negative. Vocabulary = ``classes=`` if given (unknown names are an error), else the
sorted union of the names used. With ``encoding='binary'`` an ``ignore`` entry is an error.

**JSON** (``format='visattn'``, native)::

    {"classes": ["cat", "dog"], "samples": [{"path": "img/0001.jpg", "positive": ["cat"], "ignore": ["dog"],
                                              "box": [x, y, w, h]}]}

``positive``/``ignore`` take names or integer indices; ``box`` is optional (the sample is cropped like a
WIDER person, see ``box_policy``). Importers: ``format='mmpretrain'`` (``{"metainfo": {"classes": [...]},
"data_list": [{"img_path", "gt_label": [indices]}]}``, binary) and ``format='csra'`` (CSRA's prepared lists
``[{"target": [...], "img_path", "bbox"?}]``), which needs an explicit ``encoding`` because the meaning of 0
differs by CSRA file: ``'ternary'`` for the VOC test file (0 = difficult), ``'binary'`` for the VOC trainval,
COCO and WIDER trainval files, ``'csra_wider_test'`` for the WIDER test file (1 positive, 0 negative, 99 =
unspecified -> ignore).

Rules: paths are relative to ``root`` (default: the annotation file's folder) with ``/`` separators; duplicate
paths, unknown class names, values outside the encoding, a file without samples (a CSV with only its header)
and, for JSON, a key of the wrong type (``metainfo`` not a mapping, ``data_list`` not a list, an entry without
its image path, ``gt_label`` not a list) are errors naming the file and line or key.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    AnnotationError,
    MultiLabelDataset,
    UniqueNames,
    parse_box,
    read_json,
    require_file,
    require_samples,
)

__all__ = ["MultiLabelCSV", "MultiLabelJSON"]

_ENCODINGS = {
    "binary": {1: 1, 0: -1},
    "ternary": {1: 1, -1: -1, 0: 0},
    "csra_wider_test": {1: 1, 0: -1, 99: 0},
}


def _encoding(encoding: str, allowed: Sequence[str]) -> dict[int, int]:
    if encoding not in allowed:
        raise ValueError(f"encoding must be stated explicitly, one of {list(allowed)}; got {encoding!r}")
    return _ENCODINGS[encoding]


def _kind(value: Any) -> str:
    """JSON type name of a parsed value, for "expected X, got a list" messages."""
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


class _Rows:
    """Collects (path, ternary row, box) with duplicate-path detection."""

    def __init__(self, file: Path, root: Path) -> None:
        self.file, self.root = file, root
        self.paths: list[str] = []
        self.rows: list[np.ndarray] = []
        self.boxes: list[Any] = []
        self.unique = UniqueNames(file, "path")

    def add(self, path: Any, row: np.ndarray, where: dict, box=None) -> None:
        if not isinstance(path, str) or not path.strip():
            raise AnnotationError(self.file, f"expected a non-empty image path, got {path!r}", **where)
        path = path.strip()
        self.unique.add(path, **where)
        self.paths.append(str(self.root / path))
        self.rows.append(row)
        self.boxes.append(box)

    def labels(self, C: int) -> np.ndarray:
        return np.stack(self.rows).astype(np.int8) if self.rows else np.zeros((0, C), np.int8)


def _names_to_row(items: Any, index: dict, C: int, file: Path, where: dict, allow_int: bool) -> list[int]:
    if not isinstance(items, list):
        raise AnnotationError(file, f"expected a list of class names or indices, got {items!r}", **where)
    cols = []
    for item in items:
        if allow_int and type(item) is int:
            if not 0 <= item < C:
                raise AnnotationError(file, f"class index {item} out of range 0..{C - 1}", **where)
            cols.append(item)
        elif isinstance(item, str) and item in index:
            cols.append(index[item])
        else:
            raise AnnotationError(file, f"unknown class {item!r}; expected one of {list(index)}", **where)
    return cols


class MultiLabelCSV(MultiLabelDataset):
    """Multi-label CSV (wide or list layout, chosen by the header).

    Args:
        csv_file: the annotation file.
        encoding: ``'binary'`` or ``'ternary'`` (required: no guessing).
        root: image root (default: the CSV's folder).
        classes: list layout: the vocabulary; wide layout: optional expected names (columns are re-ordered
            to this order; a mismatch with the header is an error).
        transform, train_ignore_value, check_files: see :class:`MultiLabelDataset`.
    """

    def __init__(
        self,
        csv_file: str | os.PathLike,
        *,
        encoding: str,
        root: str | os.PathLike | None = None,
        classes: Sequence[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        train_ignore_value: float = 0.0,
        check_files: bool = False,
    ) -> None:
        values = _encoding(encoding, ("binary", "ternary"))
        file = require_file(csv_file)
        with open(file, newline="", encoding="utf-8") as f:
            try:
                lines = [(n, row) for n, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)]
            except (csv.Error, UnicodeDecodeError) as err:
                raise AnnotationError(file, f"unreadable CSV ({err})") from None
        if not lines or lines[0][1][0].strip() != "path":
            raise AnnotationError(
                file, "expected a header starting with 'path'", line=lines[0][0] if lines else 1
            )
        header = [h.strip() for h in lines[0][1]]
        out = _Rows(file, Path(root) if root is not None else file.parent)
        if header[1:2] == ["positive"] and header[2:] in ([], ["ignore"]):
            names = self._list_layout(file, header, lines[1:], out, classes, encoding)
        else:
            names = self._wide_layout(file, header, lines[1:], out, classes, values)
        require_samples(len(out.paths), file, hint="only a header; expected one row per image after it")
        self.encoding = encoding
        super().__init__(
            out.paths,
            out.labels(len(names)),
            names,
            transform=transform,
            train_ignore_value=train_ignore_value,
            check_files=check_files,
            source=file,
        )

    @staticmethod
    def _wide_layout(file, header, lines, out, classes, values) -> list[str]:
        names = header[1:]
        if not names or len(set(names)) != len(names) or "" in names:
            raise AnnotationError(file, f"expected distinct class names after 'path', got {names}", line=1)
        order = list(range(len(names)))
        if classes is not None:
            if sorted(classes) != sorted(names):
                raise AnnotationError(
                    file, f"header classes {names} differ from classes={list(classes)}", line=1
                )
            order = [names.index(c) for c in classes]
            names = list(classes)
        for n, cells in lines:
            if len(cells) != len(header):
                raise AnnotationError(file, f"expected {len(header)} cells, got {len(cells)}", line=n)
            row = []
            for h, cell in zip(header[1:], cells[1:], strict=True):
                cell = cell.strip()
                try:
                    v = values[int(cell)] if cell else (0 if 0 in values.values() else None)
                except (ValueError, KeyError):
                    v = None
                if v is None:
                    raise AnnotationError(
                        file, f"column {h!r}: value {cell!r} not in {sorted(values)}", line=n
                    )
                row.append(v)
            out.add(cells[0], np.array(row)[order], {"line": n})
        return names

    @staticmethod
    def _list_layout(file, header, lines, out, classes, encoding) -> list[str]:
        parsed = []
        for n, cells in lines:
            if len(cells) > len(header) or len(cells) < 2:
                raise AnnotationError(file, f"expected {len(header)} cells, got {len(cells)}", line=n)
            split = [[s.strip() for s in c.split(";") if s.strip()] for c in cells[1:]]
            pos, ign = split[0], (split[1] if len(split) > 1 else [])
            if ign and encoding == "binary":
                raise AnnotationError(file, "an 'ignore' entry needs encoding='ternary'", line=n)
            if set(pos) & set(ign):
                raise AnnotationError(
                    file, f"classes both positive and ignored: {sorted(set(pos) & set(ign))}", line=n
                )
            parsed.append((n, cells[0], pos, ign))
        names = list(classes) if classes is not None else sorted({c for p in parsed for c in p[2] + p[3]})
        index = {c: i for i, c in enumerate(names)}
        for n, path, pos, ign in parsed:
            row = np.full(len(names), -1)
            row[_names_to_row(ign, index, len(names), file, {"line": n}, False)] = 0
            row[_names_to_row(pos, index, len(names), file, {"line": n}, False)] = 1
            out.add(path, row, {"line": n})
        return names


class MultiLabelJSON(MultiLabelDataset):
    """Multi-label JSON: ``format='visattn'`` (native), ``'mmpretrain'`` or ``'csra'`` (see module docstring).

    Args:
        json_file: the annotation file.
        format: ``'visattn'``, ``'mmpretrain'`` or ``'csra'``.
        encoding: required for ``'csra'`` (``'binary'``, ``'ternary'`` or ``'csra_wider_test'``); not used
            otherwise.
        root: image root (default: the JSON's folder); absolute paths in the file are kept.
        classes: class names for ``'csra'`` files (default ``'0'..'C-1'``).
        box_policy: how boxes are cropped (``'clamp'`` or ``'csra'``).
        transform, train_ignore_value, check_files: see :class:`MultiLabelDataset`.
    """

    def __init__(
        self,
        json_file: str | os.PathLike,
        *,
        format: str = "visattn",
        encoding: str | None = None,
        root: str | os.PathLike | None = None,
        classes: Sequence[str] | None = None,
        box_policy: str = "clamp",
        transform: Callable[[Any], Any] | None = None,
        train_ignore_value: float = 0.0,
        check_files: bool = False,
    ) -> None:
        if format not in ("visattn", "mmpretrain", "csra"):
            raise ValueError(f"format must be 'visattn', 'mmpretrain' or 'csra', got {format!r}")
        file = require_file(json_file)
        data = read_json(file)
        out = _Rows(file, Path(root) if root is not None else file.parent)
        if format == "csra":
            names = self._csra(file, data, out, _encoding(encoding, tuple(_ENCODINGS)), classes)
            require_samples(len(out.paths), file, hint="the list is empty")
        else:
            names = self._named(file, data, out, format)
            skey = "data_list" if format == "mmpretrain" else "samples"
            require_samples(len(out.paths), file, hint="the list is empty", key=skey)
        boxes = out.boxes if any(b is not None for b in out.boxes) else None
        self.format = format
        super().__init__(
            out.paths,
            out.labels(len(names)),
            names,
            boxes=boxes,
            transform=transform,
            train_ignore_value=train_ignore_value,
            box_policy=box_policy,
            check_files=check_files,
            source=file,
        )

    @staticmethod
    def _named(file: Path, data: Any, out: _Rows, format: str) -> list[str]:
        mm = format == "mmpretrain"
        ckey, skey, pkey = (
            ("metainfo.classes", "data_list", "img_path") if mm else ("classes", "samples", "path")
        )
        if not isinstance(data, dict):
            top = "'metainfo' and 'data_list'" if mm else "'classes' and 'samples'"
            raise AnnotationError(file, f"expected a JSON object with {top}, got a {_kind(data)}")
        if mm:
            meta = data.get("metainfo")
            if not isinstance(meta, dict):
                got = "missing" if meta is None else f"got a {_kind(meta)}"
                raise AnnotationError(
                    file, f"expected a mapping with 'classes' (a list of class names), {got}", key="metainfo"
                )
            names = meta.get("classes")
        else:
            names = data.get("classes")
        if (
            not isinstance(names, list)
            or not all(isinstance(c, str) for c in names)
            or len(set(names)) != len(names)
        ):
            raise AnnotationError(file, "expected a list of distinct class names", key=ckey)
        samples = data.get(skey)
        if not isinstance(samples, list):
            got = "missing" if samples is None else f"got a {_kind(samples)}"
            raise AnnotationError(file, f"expected a list of samples, {got}", key=skey)
        index = {c: i for i, c in enumerate(names)}
        for k, s in enumerate(samples):
            where = {"key": f"{skey}[{k}]"}
            if not isinstance(s, dict):
                raise AnnotationError(file, f"expected an object, got a {_kind(s)}", **where)
            if pkey not in s:
                raise AnnotationError(file, f"missing {pkey!r} (the image path)", **where)
            row = np.full(len(names), -1)
            if mm:
                label = s.get("gt_label")
                if not isinstance(label, list):
                    got = "missing" if label is None else f"got {label!r}"
                    raise AnnotationError(
                        file, f"expected a list of class indices, {got}", key=f"{skey}[{k}].gt_label"
                    )
                row[_names_to_row(label, index, len(names), file, where, True)] = 1
                box = None
            else:
                ign = _names_to_row(s.get("ignore", []), index, len(names), file, where, True)
                pos = _names_to_row(s.get("positive", []), index, len(names), file, where, True)
                if set(pos) & set(ign):
                    raise AnnotationError(file, "a class is both positive and ignored", **where)
                row[ign], row[pos] = 0, 1
                box = parse_box(s["box"], file, f"{skey}[{k}].box") if s.get("box") is not None else None
            out.add(s.get(pkey), row, where, box)
        return names

    @staticmethod
    def _csra(file: Path, data: Any, out: _Rows, values: dict, classes) -> list[str]:
        if not isinstance(data, list):
            raise AnnotationError(file, "expected a JSON list of {'target', 'img_path'} objects")
        C = len(classes) if classes is not None else None
        for k, s in enumerate(data):
            where = {"key": f"[{k}]"}
            target = s.get("target") if isinstance(s, dict) else None
            if not isinstance(target, list) or not all(
                type(v) in (int, float) and v in values for v in target
            ):
                raise AnnotationError(file, f"'target' must be a list of values in {sorted(values)}", **where)
            C = len(target) if C is None else C
            if len(target) != C:
                raise AnnotationError(file, f"'target' has {len(target)} entries, expected {C}", **where)
            box = parse_box(s["bbox"], file, f"[{k}].bbox") if s.get("bbox") is not None else None
            out.add(s.get("img_path"), np.array([values[int(v)] for v in target]), where, box)
        return list(classes) if classes is not None else [str(i) for i in range(C or 0)]
