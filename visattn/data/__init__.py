"""Datasets (one file per format), transforms, and the built-in glyph canvases.

Multi-label datasets yield ``(image, target, eval_mask, index)``; see :mod:`visattn.data._common`.
"""

from ._common import AnnotationError, MultiLabelDataset, load_image, to_float
from .coco import COCO2014
from .factory import create_dataset, list_datasets, register_dataset
from .glyph_canvas import GlyphCanvasDataset, load_mnist5k
from .holdout import HeldOut, holdout_indices
from .idx import IDXDataset, read_idx
from .multilabel_csv import MultiLabelCSV, MultiLabelJSON
from .pa100k import PA100K
from .peta import PETA, PETARaw
from .rap import RAPv1, RAPv2
from .transforms import build_transform
from .voc import VOC2007
from .wider_attribute import WIDERAttribute, WIDERAttributeSRN

__all__ = [
    "PA100K",
    "PETA",
    "AnnotationError",
    "COCO2014",
    "GlyphCanvasDataset",
    "HeldOut",
    "IDXDataset",
    "MultiLabelCSV",
    "MultiLabelDataset",
    "MultiLabelJSON",
    "PETARaw",
    "RAPv1",
    "RAPv2",
    "VOC2007",
    "WIDERAttribute",
    "WIDERAttributeSRN",
    "build_transform",
    "create_dataset",
    "holdout_indices",
    "list_datasets",
    "load_image",
    "load_mnist5k",
    "read_idx",
    "register_dataset",
    "to_float",
]
