"""Dataset registry: recipes name a dataset (``data.name``) and give its keyword arguments (``data.kwargs``).

Every format is registered here, with builders that import their module on first use: ``import visattn.data``
alone makes :func:`list_datasets` complete, and no dataset module depends on import side effects.

Each builder is called as ``builder(split=..., transform=..., **kwargs)`` and returns a dataset whose items
follow the contract of its task (multi-label: ``(image, target, eval_mask, index)``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from visattn.utils.errors import unexpected_keyword, unknown_option_message

__all__ = ["create_dataset", "dataset_options", "list_datasets", "register_dataset", "takes_vocabulary"]

_DATASETS: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str, builder: Callable[..., Dataset]) -> None:
    _DATASETS[name] = builder


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def create_dataset(name: str, split: str, transform: Callable | None = None, **kwargs: Any) -> Dataset:
    """The dataset ``name`` (``data.name``) of ``split`` with ``kwargs`` (``data.kwargs``); an unknown option
    is one error naming it and the closest valid ones."""
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {list_datasets()}")
    try:
        return _DATASETS[name](split=split, transform=transform, **kwargs)
    except TypeError as err:
        unknown = unexpected_keyword(err)
        if unknown is None or unknown not in kwargs:
            raise
        message = unknown_option_message(f"dataset {name!r} (data.kwargs)", unknown, dataset_options(name))
        raise ValueError(message) from None


def takes_vocabulary(name: str) -> bool:
    """Whether dataset ``name`` reads class names from each split's files and accepts ``classes=`` (the
    training vocabulary, matched by name: re-ordered, unknown or missing names refused)."""
    return name in _NAMED_VOCABULARY


def dataset_options(name: str) -> list[str]:
    """The ``data.kwargs`` a registered dataset accepts (its builder's and its class's keyword arguments)."""
    options: set[str] = set()
    builder = _DATASETS[name]
    for fn in (builder, getattr(builder, "wrapped", None), getattr(builder, "dataset_class", lambda: None)()):
        if fn is None:
            continue
        target = fn.__init__ if inspect.isclass(fn) else fn
        params = inspect.signature(target).parameters.values()
        options |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return sorted(options - {"self", "split", "transform"})


def _per_split(split: str, kwargs: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Options given per split (``num_samples: {train: 3000, test: 1000}``) → this split's value."""
    kwargs = dict(kwargs)
    for key in keys:
        if isinstance(kwargs.get(key), dict):
            value = kwargs.pop(key).get(split)
            if value is not None:
                kwargs[key] = value
    return kwargs


def _class_builder(module: str, cls_name: str, per_split: tuple[str, ...] = ()) -> Callable[..., Dataset]:
    """``builder(split=, transform=, **kwargs)`` of ``visattn.data.<module>.<cls_name>``, imported on first use
    (so that listing the registry imports no dataset module)."""

    def dataset_class() -> type:
        return getattr(importlib.import_module(f"{__package__}.{module}"), cls_name)

    def build(split: str, transform=None, **kwargs: Any) -> Dataset:
        return dataset_class()(split=split, transform=transform, **_per_split(split, kwargs, per_split))

    build.__qualname__ = build.__name__ = f"build_{cls_name}"
    build.dataset_class = dataset_class  # type: ignore[attr-defined]
    return build


def _by_split_file(cls_name: str):
    """Generic CSV/JSON: ``files: {train: a.csv, test: b.csv}`` selects the file of each split."""

    def build(split: str, transform=None, files: dict | None = None, **kwargs: Any) -> Dataset:
        from . import multilabel_csv

        if not files or split not in files:
            raise ValueError(f"data.kwargs.files must map the split {split!r} to a file, got {files!r}")
        return getattr(multilabel_csv, cls_name)(files[split], transform=transform, **kwargs)

    return build


# ------------------------------------------------------------------------------------ multi-label
# Items ``(image, target, eval_mask, index)``.
for _name, _module, _cls in (
    ("voc2007", "voc", "VOC2007"),
    ("coco2014", "coco", "COCO2014"),
    ("wider_attribute", "wider_attribute", "WIDERAttribute"),
    ("wider_attribute_srn", "wider_attribute", "WIDERAttributeSRN"),
    ("peta", "peta", "PETA"),
    ("pa100k", "pa100k", "PA100K"),
    ("rap_v1", "rap", "RAPv1"),
    ("rap_v2", "rap", "RAPv2"),
):
    register_dataset(_name, _class_builder(_module, _cls))
register_dataset("glyph_canvas", _class_builder("glyph_canvas", "GlyphCanvasDataset", ("num_samples",)))
register_dataset("multilabel_csv", _by_split_file("MultiLabelCSV"))
register_dataset("multilabel_json", _by_split_file("MultiLabelJSON"))
# Formats whose splits name their own classes: every split is built with the training split's vocabulary
# (``classes=``), so columns / folders are matched by name, never by position.
_NAMED_VOCABULARY = {"multilabel_csv", "multilabel_json", "imagefolder"}

# ------------------------------------------------------------------------------------ dense
# Segmentation items ``(image, mask)``; keypoint items are samples for the top-down transform.
register_dataset("voc2012_seg", _class_builder("voc_segmentation", "VOCSegmentation"))
register_dataset("cityscapes", _class_builder("cityscapes", "Cityscapes"))
register_dataset("glyph_seg", _class_builder("glyph_dense", "GlyphSegmentationDataset", ("num_samples",)))
register_dataset("glyph_keypoints", _class_builder("glyph_dense", "GlyphKeypointsDataset", ("num_samples",)))
register_dataset(
    "coco_keypoints",
    _class_builder(
        "coco_keypoints", "COCOKeypoints", ("ann_file", "image_dir", "det_file", "det_score_thresh")
    ),
)


# ------------------------------------------------------------------------------------ single-label
# Items ``(image, label)``. Every builder below accepts ``label_noise`` (``visattn.data.label_noise``:
# ``{clean_ratio: 0.7, seed: 0}`` or ``{confusion: [[...]]}``), applied to the train split only.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist


def _with_label_noise(build: Callable[..., Dataset]) -> Callable[..., Dataset]:
    def builder(split: str, transform=None, label_noise: dict | None = None, **kwargs: Any) -> Dataset:
        from .label_noise import apply_label_noise

        return apply_label_noise(build(split=split, transform=transform, **kwargs), split, label_noise)

    builder.__doc__ = build.__doc__
    builder.wrapped = build  # type: ignore[attr-defined]
    return builder


def _imagefolder(
    split: str, transform=None, root: str | None = None, splits: dict | None = None, **kwargs: Any
) -> Dataset:
    """``root/<split>/<class>/...`` (ImageNet: ``train``, ``val``), or ``splits: {train: dir, val: dir}``."""
    from pathlib import Path

    from .imagefolder import ImageFolder

    if splits is not None:
        if split not in splits:
            raise ValueError(f"data.kwargs.splits must map the split {split!r} to a folder, got {splits!r}")
        folder = Path(splits[split])
    elif root is not None:
        folder = Path(root) / split
    else:
        raise ValueError(
            "imagefolder needs data.kwargs.root (holding <split>/<class>/...) or data.kwargs.splits"
        )
    return ImageFolder(folder, transform=transform, **kwargs)


def _cifar(cls_name: str) -> Callable[..., Dataset]:
    def build(split: str, transform=None, root: str | None = None, **kwargs: Any) -> Dataset:
        from . import cifar

        if root is None:
            raise ValueError(f"{cls_name} needs data.kwargs.root (the folder of the python-version files)")
        return getattr(cifar, cls_name)(root, split=split, transform=transform, **kwargs)

    return build


def _idx(
    split: str,
    transform=None,
    root: str | None = None,
    images: str | None = None,
    labels: str | None = None,
    classes: list | None = None,
    **kwargs: Any,
) -> Dataset:
    """IDX files: a folder with the standard MNIST names (``root``), or ``images``/``labels`` per split."""
    from .idx import IDXDataset

    if classes is not None:
        kwargs["classes"] = classes
    if images is not None:
        pick = lambda v: v[split] if isinstance(v, dict) else v  # noqa: E731
        return IDXDataset(pick(images), pick(labels), transform=transform, **kwargs)
    if root is None:
        raise ValueError("idx needs data.kwargs.root (a folder of {train,t10k}-*-ubyte[.gz] files)")
    return IDXDataset(root, split=split, transform=transform, **kwargs)


def _fashion_mnist(split: str, transform=None, root: str = FASHION_MNIST_DIR, **kwargs: Any) -> Dataset:
    """Fashion-MNIST (IDX) with its class names; default root: the Debian package's folder."""
    from .idx import FASHION_MNIST_CLASSES, IDXDataset

    kwargs.setdefault("classes", FASHION_MNIST_CLASSES)
    return IDXDataset(root, split=split, transform=transform, **kwargs)


for _name, _build in (
    ("imagefolder", _imagefolder),
    ("cifar10", _cifar("CIFAR10")),
    ("cifar100", _cifar("CIFAR100")),
    ("idx", _idx),
    ("mnist", _idx),
    ("fashion_mnist", _fashion_mnist),
):
    register_dataset(_name, _with_label_noise(_build))
