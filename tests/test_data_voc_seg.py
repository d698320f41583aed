"""PASCAL VOC 2012 segmentation loader on fixtures in the real layout (palette PNG masks)."""

import numpy as np
import pytest
import torch
from data_fixtures import write_image
from PIL import Image

from visattn.data._common import AnnotationError
from visattn.data.joint_transforms import build_segmentation_transform
from visattn.data.voc_segmentation import VOC_SEG_CLASSES, VOCSegmentation, voc_colormap

IDS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}


def mask_of(k: int) -> np.ndarray:
    """16x16: class = x-column // 2 + k (0..8+k), a 255 boundary row, and one row of background."""
    m = (np.arange(16)[None].repeat(16, 0) // 2 + k).astype(np.uint8)
    m[5] = 255
    m[9] = 0
    return m


def write_palette_png(path, arr):
    im = Image.fromarray(arr, mode="P")
    im.putpalette(voc_colormap().reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def make_voc_seg(root, mask_writer=write_palette_png):
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    k = 0
    for split, ids in IDS.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for i in ids:
            write_image(voc / "JPEGImages" / f"{i}.jpg", k)
            mask_writer(voc / "SegmentationClass" / f"{i}.png", mask_of(k))
            k += 1
    return voc


@pytest.fixture
def voc(tmp_path):
    return make_voc_seg(tmp_path)


def test_palette_masks_are_read_as_class_indices(voc, tmp_path):
    ds = VOCSegmentation(tmp_path / "VOCdevkit", "train")  # VOCdevkit, VOC2012 and its parent all work
    assert len(ds) == 2 and ds.class_names == list(VOC_SEG_CLASSES) and ds.num_classes == 21
    image, mask = ds[1]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and mask.dtype == torch.int64
    assert torch.equal(mask, torch.from_numpy(mask_of(1)).long())
    assert (mask == 255).sum() == 16
    assert len(VOCSegmentation(voc, "val")) == 1 and len(VOCSegmentation(tmp_path, "val")) == 1


def test_greyscale_aug_masks_and_rgb_renderings(tmp_path):
    def grey(path, arr):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr, mode="L").save(path)

    def rgb(path, arr):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(voc_colormap()[arr]).save(path)

    for writer in (grey, rgb):
        root = tmp_path / writer.__name__
        make_voc_seg(root, writer)
        _, mask = VOCSegmentation(root, "train")[0]
        assert torch.equal(mask, torch.from_numpy(mask_of(0)).long())


def test_value_outside_the_classes_names_the_file(voc):
    bad = mask_of(0)
    bad[2, 3] = 30
    write_palette_png(voc / "SegmentationClass" / "2007_000032.png", bad)
    ds = VOCSegmentation(voc, "train")
    with pytest.raises(AnnotationError, match=r"2007_000032\.png.*\[30\].*row 2, column 3"):
        ds[0]


def test_unknown_rgb_colour_names_the_file(voc):
    rgb = voc_colormap()[mask_of(0)]
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(voc / "SegmentationClass" / "2007_000032.png")
    with pytest.raises(AnnotationError, match=r"2007_000032\.png.*colour \(1, 2, 3\)"):
        VOCSegmentation(voc, "train")[0]


def test_mask_of_the_wrong_size_names_both_files(voc):
    write_palette_png(voc / "SegmentationClass" / "2007_000039.png", mask_of(0)[:8])
    with pytest.raises(AnnotationError, match=r"2007_000039\.png.*\(8, 16\).*2007_000039\.jpg"):
        VOCSegmentation(voc, "train")[1]


def test_missing_files_and_bad_lists(voc):
    (voc / "SegmentationClass" / "2007_000033.png").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000033.png"):
        VOCSegmentation(voc, "val")
    assert len(VOCSegmentation(voc, "val", check_files=False)) == 1
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n2007_000032\n")
    with pytest.raises(AnnotationError, match=r"train\.txt, line 2: duplicate image id"):
        VOCSegmentation(voc, "train")
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        VOCSegmentation(voc, "trainval")
    (voc / "SegmentationClass" / "2007_000033.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"2007_000033\.png: cannot decode"):
        VOCSegmentation(voc, "val")[0]


def test_joint_transform_keeps_image_and_mask_aligned(voc):
    # image R channel = 10·x; mask = x // 2 (+ boundary rows): after crop + flip + pad they must still agree
    t = build_segmentation_transform(True, crop_size=(12, 20), hflip=1.0)
    ds = VOCSegmentation(voc, "train", transform=t)
    torch.manual_seed(0)
    image, mask = ds[0]
    assert image.shape == (3, 12, 20) and mask.shape == (12, 20) and mask.dtype == torch.int64
    x = torch.round(image[0] * 255 / 10).long()
    inside = image[1] > 0  # G = 10·y > 0 except on row 0 and in the padding
    labelled = inside & (mask != 255) & (mask != 0)
    assert labelled.any()
    assert torch.equal(mask[labelled], (x // 2)[labelled])
    padded = (image[1] == 0).all(0)  # columns without any G = 10·y > 0: the 4 padded columns
    assert padded.sum() == 4 and (mask[:, padded] == 255).all()  # padding is ignored


def test_random_scale_and_eval_padding(voc):
    t = build_segmentation_transform(True, scale_range=(2.0, 2.0), crop_size=8, hflip=0.0)
    image, mask = VOCSegmentation(voc, "train", transform=t)[0]
    assert image.shape == (3, 8, 8) and set(mask.unique().tolist()) <= set(range(21)) | {255}
    t = build_segmentation_transform(False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pad_to=20)
    image, mask = VOCSegmentation(voc, "val", transform=t)[0]
    assert image.shape == (3, 20, 20) and (mask[16:] == 255).all() and (image[:, 16:] == -1).all()
