"""PETA pedestrian attributes: the processed ``PETA.mat`` release and the raw folders (spec ``datasets.md`` §5).

``PETA.mat`` (used by dangweili's DeepMAR code and Rethinking-PAR): images ``images/00001.png ... 19000.png``;
variable ``peta`` is a 1x1 struct read **by position**: field 0 = ``19000 x 109`` matrix (4 metadata columns,
then 105 binary attributes), field 1 = the 105 attribute names, field 3 = 5 random partitions, each a 1x1
struct with ``train, val, test`` vectors of **1-based** indices (9,500 / 1,900 / 7,600). The evaluated subset
is the first 35 attributes (``attributes='eval'``, default; ``'all'`` = 105). ``reorder='group'`` applies
Rethinking-PAR's semantic grouping of the 35 (mA does not depend on the order). Random partitions leak
identities between train and test; for the zero-shot split (PETAzs) pass its 0-based rows as ``indices``.

Raw release: 10 sub-datasets ``<name>/archive/`` with images and ``Label.txt`` lines ``<personID> <attr>...``
listing only the **positive** attribute names; some lines are keyed by a file name instead. An image belongs
to the person whose id is the first integer in its file name (parser of Lucas-Florin's
hardness-predictor-for-par). No official split: all images are returned (sub-folders and files sorted).

Labels are binary (every ``eval_mask`` entry is True). Differences from the references: a file-keyed line
labels that file; it also labels other images sharing its integer id only if all file-keyed lines with that
id agree (the reference silently keeps the last); images without any label line, duplicate keys, unknown
attribute names, non-binary values, out-of-range split indices and an empty split are errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    AnnotationError,
    MultiLabelDataset,
    check_values,
    load_mat,
    mat_cells,
    mat_field,
    mat_get,
    mat_indices,
    mat_matrix,
    mat_record,
    mat_strings,
    read_lines,
    require_dir,
    require_samples,
    select_split,
)

__all__ = ["PETA", "PETA_EVAL_ATTRIBUTES", "PETA_GROUP_ORDER", "PETARaw"]

PETA_EVAL_ATTRIBUTES = (
    "personalLess30", "personalLess45", "personalLess60", "personalLarger60", "carryingBackpack",
    "carryingOther", "lowerBodyCasual", "upperBodyCasual", "lowerBodyFormal", "upperBodyFormal",
    "accessoryHat", "upperBodyJacket", "lowerBodyJeans", "footwearLeatherShoes", "upperBodyLogo",
    "hairLong", "personalMale", "carryingMessengerBag", "accessoryMuffler", "accessoryNothing",
    "carryingNothing", "upperBodyPlaid", "carryingPlasticBags", "footwearSandals", "footwearShoes",
    "lowerBodyShorts", "upperBodyShortSleeve", "lowerBodyShortSkirt", "footwearSneaker",
    "upperBodyThinStripes", "accessorySunglasses", "lowerBodyTrousers", "upperBodyTshirt",
    "upperBodyOther", "upperBodyVNeck",
)  # fmt: skip
PETA_GROUP_ORDER = (10, 18, 19, 30, 15, 7, 9, 11, 14, 21, 26, 29, 32, 33, 34, 6, 8, 12, 25, 27, 31, 13, 23, 24,
                    28, 4, 5, 17, 20, 22, 0, 1, 2, 3, 16)  # fmt: skip
_IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


class PETA(MultiLabelDataset):
    """PETA from ``PETA.mat``.

    Args:
        root: folder with ``PETA.mat`` and ``images/``.
        split: ``'train'``, ``'val'``, ``'test'`` or ``'trainval'`` (train then val).
        partition: which of the 5 random partitions (0-4); results are usually reported on partition 0.
        attributes: ``'eval'`` (the 35 evaluated, default) or ``'all'`` (105).
        reorder: ``None`` (raw order) or ``'group'`` (Rethinking-PAR; only with ``attributes='eval'``).
        indices: explicit 0-based rows (e.g. the PETAzs split), overriding ``split``/``partition``.
        mat_file: override ``root/PETA.mat``.
        transform, check_files: see :class:`MultiLabelDataset`.

    Attributes: ``rows`` (0-based rows of the ``.mat`` matrix), ``metadata`` (the 4 leading columns).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        partition: int = 0,
        attributes: str = "eval",
        reorder: str | None = None,
        indices: Sequence[int] | None = None,
        mat_file: str | os.PathLike | None = None,
        transform: Callable[[Any], Any] | None = None,
        check_files: bool = False,
    ) -> None:
        if attributes not in ("eval", "all"):
            raise ValueError(f"attributes must be 'eval' or 'all', got {attributes!r}")
        if reorder not in (None, "group") or (reorder and attributes != "eval"):
            raise ValueError(f"reorder must be None or 'group' (with attributes='eval'), got {reorder!r}")
        root = Path(root)
        path = Path(mat_file) if mat_file else root / "PETA.mat"
        rec = mat_record(mat_get(load_mat(path), "peta", path), path, "peta")
        data = mat_matrix(mat_field(rec, 0, path, "peta field 0"), path, "peta field 0 (labels)")
        n = data.shape[0]
        names = mat_strings(mat_field(rec, 1, path, "peta field 1"), path, "peta field 1 (attribute names)")
        if data.shape[1] != 4 + len(names):
            raise AnnotationError(
                path, f"expected 4 + {len(names)} columns, got {data.shape[1]}", key="peta field 0"
            )
        if attributes == "eval" and len(names) < 35:
            raise AnnotationError(path, f"expected >= 35 attributes, got {len(names)}", key="peta field 1")
        labels = data[:, 4:]
        parts = mat_cells(mat_field(rec, 3, path, "peta field 3"), path, "peta field 3 (partitions)")
        if indices is None and not 0 <= partition < len(parts):
            raise ValueError(f"partition must lie in 0..{len(parts) - 1}, got {partition}")
        splits = {}
        if indices is None:
            key = f"peta field 3[{partition}]"
            part = mat_record(parts[partition], path, key)
            for k, name in enumerate(("train", "val", "test")):
                splits[name] = mat_indices(
                    mat_field(part, k, path, key), n, path, f"{key} field {k} ({name})"
                )
        rows = select_split(splits, split, indices, n, str(path))
        require_samples(
            len(rows), path, split, "the partition's index vector is empty", key=f"peta field 3[{partition}]"
        )
        cols = list(range(35)) if attributes == "eval" else list(range(len(names)))
        if reorder == "group":
            cols = list(PETA_GROUP_ORDER)
        labels = labels[np.ix_(rows, cols)]
        check_values(labels, (0, 1), path, "peta field 0 (labels, after 4 metadata columns)", rows, cols)
        self.split, self.partition, self.rows = split, partition, rows
        self.metadata = data[rows, :4]
        super().__init__(
            [str(root / "images" / f"{r + 1:05d}.png") for r in rows],
            np.where(labels == 1, 1, -1).astype(np.int8),
            [names[c] for c in cols],
            transform=transform,
            check_files=check_files,
            source=path,
            split=split,
        )


def _read_label_file(path: Path, files: set[str]):
    persons: dict[int, tuple[int, list[str]]] = {}
    by_file: dict[str, tuple[int, list[str]]] = {}
    for n, line in read_lines(path):
        key, *attrs = line.split()
        if key.isdigit():
            if int(key) in persons:
                raise AnnotationError(
                    path, f"duplicate person id {key} (first on line {persons[int(key)][0]})", line=n
                )
            persons[int(key)] = (n, attrs)
        elif key in files:
            if key in by_file:
                raise AnnotationError(path, f"duplicate file {key!r}", line=n)
            by_file[key] = (n, attrs)
        else:
            raise AnnotationError(
                path, f"first token {key!r} is neither a person id nor an image in archive/", line=n
            )
    return persons, by_file


class PETARaw(MultiLabelDataset):
    """PETA from the raw release (10 sub-folders with ``archive/Label.txt``); binary labels, no split.

    Args:
        root: folder containing the sub-datasets (``<name>/archive/``).
        attributes: class vocabulary; default = sorted union of all names in the ``Label.txt`` files. Names
            not in a given vocabulary are an error.
        transform, check_files: see :class:`MultiLabelDataset`.

    Attributes: ``person_ids`` (``(sub-dataset, id)`` per image; ``id`` is None for file-keyed images).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        attributes: Sequence[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        check_files: bool = False,
    ) -> None:
        root = require_dir(root, "PETA root")
        archives = sorted(p for p in root.glob("*/archive") if p.is_dir())
        if not archives:
            raise FileNotFoundError(2, "no <sub-dataset>/archive folders found in", str(root))
        samples: list[tuple[str, Path, int, list[str], tuple[str, int | None]]] = []
        for archive in archives:
            label_file = archive / "Label.txt"
            images = sorted(
                p.name for p in archive.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS
            )
            persons, by_file = _read_label_file(label_file, set(images))
            shared: dict[int, list[tuple[int, list[str]]]] = {}
            for name, entry in by_file.items():
                m = re.search(r"\d+", name)
                if m:
                    shared.setdefault(int(m.group()), []).append(entry)
            for name in images:
                m = re.search(r"\d+", name)
                pid = int(m.group()) if m else None
                if name in by_file:
                    n, attrs = by_file[name]
                    samples.append((str(archive / name), label_file, n, attrs, (archive.parent.name, None)))
                    continue
                entry = persons.get(pid) if pid is not None else None
                candidates = shared.get(pid, []) if pid is not None else []
                if (
                    entry is None
                    and candidates
                    and all(sorted(c[1]) == sorted(candidates[0][1]) for c in candidates)
                ):
                    entry = candidates[0]
                if entry is None:
                    why = "has no integer id" if pid is None else f"person id {pid} has no (unambiguous) line"
                    raise AnnotationError(label_file, f"image {name!r} is not labelled: {why}")
                samples.append(
                    (str(archive / name), label_file, entry[0], entry[1], (archive.parent.name, pid))
                )
        vocab = list(attributes) if attributes is not None else sorted({a for s in samples for a in s[3]})
        column = {a: i for i, a in enumerate(vocab)}
        labels = np.full((len(samples), len(vocab)), -1, dtype=np.int8)
        for r, (_, label_file, n, attrs, _) in enumerate(samples):
            for a in attrs:
                if a not in column:
                    raise AnnotationError(
                        label_file, f"unknown attribute {a!r} (not in the given vocabulary)", line=n
                    )
                labels[r, column[a]] = 1
        self.person_ids = [s[4] for s in samples]
        require_samples(len(samples), root, hint="no image files in the <sub-dataset>/archive folders")
        super().__init__(
            [s[0] for s in samples], labels, vocab, transform=transform, check_files=check_files, source=root
        )
