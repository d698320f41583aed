"""Dataset registry: recipes name a dataset (``data.name``) and give its keyword arguments (``data.kwargs``).

Each builder is called as ``builder(split=..., transform=..., **kwargs)`` and returns a dataset whose items
follow the contract of its task (multi-label: ``(image, target, eval_mask, index)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

__all__ = ["register_dataset", "create_dataset", "list_datasets"]

_DATASETS: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str, builder: Callable[..., Dataset]) -> None:
    _DATASETS[name] = builder


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def create_dataset(name: str, split: str, transform: Callable | None = None, **kwargs: Any) -> Dataset:
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {list_datasets()}")
    return _DATASETS[name](split=split, transform=transform, **kwargs)


def _glyph_canvas(
    split: str, transform=None, num_samples: dict | int | None = None, **kwargs: Any
) -> Dataset:
    from .glyph_canvas import GlyphCanvasDataset

    if isinstance(num_samples, dict):  # e.g. {train: 3000, test: 1000}
        num_samples = num_samples.get(split)
    if num_samples is not None:
        kwargs["num_samples"] = num_samples
    return GlyphCanvasDataset(split=split, transform=transform, **kwargs)


register_dataset("glyph_canvas", _glyph_canvas)


def _by_split_file(cls_name: str):
    """Generic CSV/JSON: ``files: {train: a.csv, test: b.csv}`` selects the file of each split."""

    def build(split: str, transform=None, files: dict | None = None, **kwargs: Any) -> Dataset:
        from . import multilabel_csv

        if not files or split not in files:
            raise ValueError(f"data.kwargs.files must map the split {split!r} to a file, got {files!r}")
        return getattr(multilabel_csv, cls_name)(files[split], transform=transform, **kwargs)

    return build


def _register_builtin_formats() -> None:
    from .coco import COCO2014
    from .pa100k import PA100K
    from .peta import PETA
    from .rap import RAPv1, RAPv2
    from .voc import VOC2007
    from .wider_attribute import WIDERAttribute, WIDERAttributeSRN

    for name, cls in (
        ("voc2007", VOC2007),
        ("coco2014", COCO2014),
        ("wider_attribute", WIDERAttribute),
        ("wider_attribute_srn", WIDERAttributeSRN),
        ("peta", PETA),
        ("pa100k", PA100K),
        ("rap_v1", RAPv1),
        ("rap_v2", RAPv2),
    ):
        register_dataset(name, cls)
    register_dataset("multilabel_csv", _by_split_file("MultiLabelCSV"))
    register_dataset("multilabel_json", _by_split_file("MultiLabelJSON"))


_register_builtin_formats()
