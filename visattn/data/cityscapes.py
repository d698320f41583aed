"""Cityscapes semantic segmentation: gtFine ``labelIds`` mapped to the 19 evaluation ("train") ids.

Format (the official packages ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``)::

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png    # 8-bit, values 0..33

(2,975 / 500 / 1,525 images of 1024×2048.) The mapping follows ``cityscapesscripts/helpers/labels.py``:
the 19 classes with a ``trainId`` (road=7→0, sidewalk=8→1, building=11→2, wall=12→3, fence=13→4, pole=17→5,
traffic light=19→6, traffic sign=20→7, vegetation=21→8, terrain=22→9, sky=23→10, person=24→11,
rider=25→12, car=26→13, truck=27→14, bus=28→15, train=31→16, motorcycle=32→17, bicycle=33→18); every other
id (unlabeled, ego vehicle, rectification border, out of roi, static, dynamic, ground, parking, rail track,
guard rail, bridge, tunnel, polegroup, caravan, trailer; license plate is -1 and never appears in the PNGs)
becomes 255 (ignored). A value above 33 means the file is not a labelIds image (e.g. a ``_color.png`` or
``_instanceIds.png``) and is an error naming the file. ``target_type="labelTrainIds"`` reads the
``*_gtFine_labelTrainIds.png`` files produced by ``createTrainIdLabelImgs.py`` (values 0..18, 255) as they are.
``annotation="gtCoarse"`` reads the coarse annotations (same id scheme).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ._common import AnnotationError, require_dir
from .voc_segmentation import IGNORE_INDEX, SegmentationDataset, check_labels, read_label_png

__all__ = ["CITYSCAPES_CLASSES", "Cityscapes", "ID_TO_TRAIN_ID", "labelids_to_trainids"]

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# labelId -> trainId for the 19 evaluated classes; all other ids 0..33 -> 255.
ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
    28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
MAX_LABEL_ID = 33

_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _id, _train in ID_TO_TRAIN_ID.items():
    _LUT[_id] = _train


def labelids_to_trainids(label_ids: np.ndarray, path: str = "<array>") -> np.ndarray:
    """Map a labelIds array (values 0..33) to train ids (0..18, 255 = ignore)."""
    if label_ids.size and (label_ids.min() < 0 or label_ids.max() > MAX_LABEL_ID):
        bad = sorted({int(v) for v in np.unique(label_ids) if v < 0 or v > MAX_LABEL_ID})[:8]
        raise AnnotationError(
            path,
            f"values {bad} are not Cityscapes label ids (0..{MAX_LABEL_ID}); expected a *_labelIds.png "
            "(not _color, _instanceIds or labelTrainIds: use target_type='labelTrainIds' for those)",
        )
    return _LUT[label_ids]


class Cityscapes(SegmentationDataset):
    """Cityscapes fine (or coarse) annotations with the 19 train ids.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/`` (or ``gtCoarse/``).
        split: ``train``, ``val``, ``test`` (test masks are all void), or ``train_extra`` (coarse only).
        transform: joint transform ``(Image, Mask) -> (image, mask)``.
        annotation: ``"gtFine"`` or ``"gtCoarse"``.
        target_type: ``"labelIds"`` (mapped here) or ``"labelTrainIds"`` (already mapped).
        check_files: check at construction that every mask exists (images are listed from the folder).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        annotation: str = "gtFine",
        target_type: str = "labelIds",
        check_files: bool = True,
    ) -> None:
        if annotation not in ("gtFine", "gtCoarse"):
            raise ValueError(f"annotation must be 'gtFine' or 'gtCoarse', got {annotation!r}")
        if target_type not in ("labelIds", "labelTrainIds"):
            raise ValueError(f"target_type must be 'labelIds' or 'labelTrainIds', got {target_type!r}")
        root = require_dir(root, "Cityscapes root")
        image_root = require_dir(root / "leftImg8bit" / split, "Cityscapes image folder")
        ann_root = require_dir(root / annotation / split, f"Cityscapes {annotation} folder")
        images, masks = [], []
        suffix = "_leftImg8bit.png"
        for city in sorted(p for p in image_root.iterdir() if p.is_dir()):
            for img in sorted(city.glob(f"*{suffix}")):
                stem = img.name[: -len(suffix)]
                images.append(str(img))
                masks.append(str(ann_root / city.name / f"{stem}_{annotation}_{target_type}.png"))
        if not images:
            raise FileNotFoundError(2, f"no *{suffix} images in the city folders of", str(image_root))
        self.root, self.split = root, split
        self.annotation, self.target_type = annotation, target_type
        super().__init__(images, masks, CITYSCAPES_CLASSES, transform, check_files)

    def decode_mask(self, path: str) -> np.ndarray:
        arr = read_label_png(path, what="Cityscapes label image")
        if self.target_type == "labelIds":
            return labelids_to_trainids(arr, path)
        check_labels(arr, self.num_classes, path, self.ignore_index)
        return arr
