"""Cityscapes loader on fixtures in the real layout (gtFine labelIds PNGs → 19 train ids)."""

import numpy as np
import pytest
import torch
from data_fixtures import write_image
from PIL import Image

from visattn.data._common import AnnotationError
from visattn.data.cityscapes import CITYSCAPES_CLASSES, ID_TO_TRAIN_ID, Cityscapes, labelids_to_trainids
from visattn.data.factory import create_dataset

FRAMES = {
    "train": [("aachen", "000000_000019"), ("bochum", "000000_000313")],
    "val": [("lindau", "000000_000019")],
}
# labelIds -> expected train ids: void/ignored ids 0..6, 9, 10, 14..16, 18, 29, 30 -> 255
IDS = np.array(
    [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        17,
        18,
        19,
        20,
        21,
        22,
        23,
        24,
        25,
        26,
        27,
        28,
        29,
        30,
        31,
        32,
        33,
    ]
)
TRAIN = np.array(
    [255] * 7
    + [
        0,
        1,
        255,
        255,
        2,
        3,
        4,
        255,
        255,
        255,
        5,
        255,
        6,
        7,
        8,
        9,
        10,
        11,
        12,
        13,
        14,
        15,
        255,
        255,
        16,
        17,
        18,
    ]
)


def label_ids(k: int) -> np.ndarray:
    return np.roll(np.resize(IDS, (16, 16)), k, axis=1).astype(np.uint8)


def make_cityscapes(root):
    for split, frames in FRAMES.items():
        for k, (city, frame) in enumerate(frames):
            write_image(root / "leftImg8bit" / split / city / f"{city}_{frame}_leftImg8bit.png", k)
            gt = root / "gtFine" / split / city
            gt.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label_ids(k), mode="L").save(gt / f"{city}_{frame}_gtFine_labelIds.png")
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(gt / f"{city}_{frame}_gtFine_color.png")
    return root


@pytest.fixture
def city(tmp_path):
    return make_cityscapes(tmp_path)


def test_official_id_table():
    assert len(ID_TO_TRAIN_ID) == 19 and sorted(ID_TO_TRAIN_ID.values()) == list(range(19))
    assert np.array_equal(labelids_to_trainids(IDS), TRAIN)
    assert (
        CITYSCAPES_CLASSES[ID_TO_TRAIN_ID[26]] == "car" and CITYSCAPES_CLASSES[ID_TO_TRAIN_ID[24]] == "person"
    )


def test_labelids_are_mapped_to_train_ids(city):
    ds = Cityscapes(city, "train")
    assert (
        len(ds) == 2
        and ds.num_classes == 19
        and ds.images[0].endswith("aachen_000000_000019_leftImg8bit.png")
    )
    image, mask = ds[1]
    assert image.shape == (3, 16, 16) and mask.dtype == torch.int64
    assert torch.equal(mask, torch.from_numpy(TRAIN[label_ids(1)]).long())
    assert len(create_dataset("cityscapes", split="val", root=str(city))) == 1


def test_label_train_ids_files(city):
    for split, frames in FRAMES.items():
        for k, (c, f) in enumerate(frames):
            Image.fromarray(TRAIN[label_ids(k)].astype(np.uint8), mode="L").save(
                city / "gtFine" / split / c / f"{c}_{f}_gtFine_labelTrainIds.png"
            )
    _, mask = Cityscapes(city, "train", target_type="labelTrainIds")[0]
    assert torch.equal(mask, torch.from_numpy(TRAIN[label_ids(0)]).long())


def test_not_a_labelids_image_names_the_file(city):
    bad = label_ids(0)
    bad[3, 4] = 40
    path = city / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    Image.fromarray(bad, mode="L").save(path)
    with pytest.raises(AnnotationError, match=r"aachen_000000_000019_gtFine_labelIds\.png.*\[40\].*labelIds"):
        Cityscapes(city, "train")[0]
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)  # a colour rendering in its place
    with pytest.raises(AnnotationError, match=r"labelIds\.png.*RGB image"):
        Cityscapes(city, "train")[0]


def test_missing_annotations_and_folders(city, tmp_path):
    (city / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="lindau_000000_000019_gtFine_labelIds.png"):
        Cityscapes(city, "val")
    with pytest.raises(FileNotFoundError, match="test"):
        Cityscapes(city, "test")
    empty = tmp_path / "empty"
    (empty / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    (empty / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no \\*_leftImg8bit.png images"):
        Cityscapes(empty, "train")
    with pytest.raises(ValueError, match="target_type"):
        Cityscapes(city, "train", target_type="color")
