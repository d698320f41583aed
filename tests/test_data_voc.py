"""PASCAL VOC 2007 loader on a tiny fixture in the real layout."""

import numpy as np
import pytest
import torch
from data_fixtures import VOC_OBJECTS, make_voc, voc_xml

from visattn.data._common import AnnotationError
from visattn.data.voc import VOC2007, VOC_CLASSES, parse_voc_xml


def expected_labels() -> dict[str, np.ndarray]:
    out = {}
    for i, objects in VOC_OBJECTS.items():
        lab = np.full(20, -1, np.int8)
        for name, difficult in objects:
            c = VOC_CLASSES.index(name)
            lab[c] = 1 if not difficult or lab[c] == 1 else 0
        out[i] = lab
    return out


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path, expected_labels())


def test_labels_follow_the_difficult_rule(voc):
    ds = VOC2007(voc.parent, "trainval")  # the VOCdevkit folder is accepted too
    assert ds.image_ids == ["000005", "000007"] and ds.class_names == list(VOC_CLASSES)
    row = ds.labels[0]
    assert row[VOC_CLASSES.index("chair")] == 0  # only a difficult chair -> ignored
    assert row[VOC_CLASSES.index("person")] == 1  # one difficult + one non-difficult -> positive
    assert row[VOC_CLASSES.index("car")] == -1  # absent -> negative
    assert ds.targets[0, VOC_CLASSES.index("chair")] == 0 and not ds.masks[0, VOC_CLASSES.index("chair")]
    assert ds.masks.sum() == 39 and ds.targets.sum() == 2


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_per_class_files_agree_with_xml(voc, split):
    a = VOC2007(voc, split)
    b = VOC2007(voc, split, labels_from="imagesets")
    assert torch.equal(a.labels, b.labels) and a.image_ids == b.image_ids
    if split == "test":  # 000009: dog difficult only, two horses; 000012: car difficult only, tv
        assert a.labels[0, VOC_CLASSES.index("dog")] == 0 and a.labels[0, VOC_CLASSES.index("horse")] == 1
        assert a.labels[1, VOC_CLASSES.index("car")] == 0 and a.labels[1, VOC_CLASSES.index("tvmonitor")] == 1


def test_item_contract_and_ignore_value(voc):
    ds = VOC2007(voc, "test", train_ignore_value=1.0)
    image, target, mask, index = ds[-1]
    assert (
        image.shape == (3, 16, 16) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    )
    assert index == 1 and target.dtype == torch.float32 and mask.dtype == torch.bool
    car = VOC_CLASSES.index("car")
    assert target[car] == 1.0 and not mask[car]  # difficult-only car trained with the chosen value
    assert ds.meta(1)["path"].endswith("JPEGImages/000012.jpg")


def test_malformed_inputs_name_the_file(voc):
    xml = voc / "Annotations" / "000007.xml"
    xml.write_text("<annotation><object><name>car</name>\n<difficult>0</difficult>")
    with pytest.raises(AnnotationError, match=r"000007\.xml, line \d+: invalid XML"):
        VOC2007(voc, "trainval")
    xml.write_text(voc_xml([("zebra", 0)]))
    with pytest.raises(AnnotationError, match=r"000007\.xml, object #0: unknown class 'zebra'"):
        VOC2007(voc, "trainval")
    xml.write_text(voc_xml([("car", 2)]))
    with pytest.raises(AnnotationError, match="difficult"):
        parse_voc_xml(xml)
    xml.unlink()
    with pytest.raises(FileNotFoundError, match=r"000007\.xml"):
        VOC2007(voc, "trainval")
    main = voc / "ImageSets" / "Main"
    (main / "test.txt").write_text("000009\n000009\n")
    with pytest.raises(AnnotationError, match=r"test\.txt, line 2: duplicate image id"):
        VOC2007(voc, "test")
    (main / "test.txt").write_text("000009\n000012\n")
    (main / "cat_test.txt").write_text("000009 -1\n000012  2\n")
    with pytest.raises(AnnotationError, match=r"cat_test\.txt, line 2"):
        VOC2007(voc, "test", labels_from="imagesets")
    (main / "cat_test.txt").write_text("000009 -1\n")
    with pytest.raises(AnnotationError, match=r"cat_test\.txt: ids differ"):
        VOC2007(voc, "test", labels_from="imagesets")
    with pytest.raises(ValueError, match="split"):
        VOC2007(voc, "train2")


def test_missing_image_named(voc):
    (voc / "JPEGImages" / "000007.jpg").unlink()
    ds = VOC2007(voc, "trainval")
    with pytest.raises(FileNotFoundError, match=r"000007\.jpg"):
        ds[1]
    with pytest.raises(FileNotFoundError, match=r"000007\.jpg"):
        VOC2007(voc, "trainval", check_files=True)
