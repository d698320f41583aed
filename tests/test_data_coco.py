"""MS-COCO 2014 multi-label loader on a tiny instances JSON."""

import json

import pytest
import torch
from data_fixtures import coco_json, make_coco

from visattn.data._common import AnnotationError
from visattn.data.coco import COCO2014


def test_protocol_drops_empty_images_and_counts_crowd(tmp_path):
    ds = COCO2014(make_coco(tmp_path), "val")
    assert ds.image_ids == [10, 12] and ds.category_ids == [1, 3, 90]
    assert ds.class_names == ["person", "car", "toothbrush"]
    assert ds.labels.tolist() == [[1, -1, 1], [-1, 1, -1]]  # crowd toothbrush counted; duplicate car once
    assert ds.masks.all() and ds.targets.tolist() == [[1, 0, 1], [0, 1, 0]]
    image, target, mask, index = ds[1]
    assert image.shape == (3, 16, 16) and index == 1 and mask.all()
    assert ds.meta(1)["path"].endswith("val2014/COCO_val2014_000000000012.jpg")
    kept = COCO2014(tmp_path, "val", keep_empty=True)
    assert kept.image_ids == [10, 11, 12] and kept.labels[1].tolist() == [-1, -1, -1]


def test_alphabetical_order_is_a_column_permutation(tmp_path):
    by_id = COCO2014(make_coco(tmp_path), "val")
    alpha = COCO2014(tmp_path, "val", class_order="alphabetical")
    assert alpha.class_names == ["car", "person", "toothbrush"] and alpha.category_ids == [3, 1, 90]
    perm = [by_id.category_ids.index(c) for c in alpha.category_ids]
    assert torch.equal(alpha.targets, by_id.targets[:, perm])


def _bad(tmp_path, mutate):
    data = coco_json()
    mutate(data)
    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps(data))
    return ann


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[3\]: duplicate image id 10"),
        (
            lambda d: d["annotations"][1].update(image_id=99),
            r"annotations\[1\]: image_id 99 is not in 'images'",
        ),
        (lambda d: d["annotations"][0].update(category_id=2), r"annotations\[0\]: category_id 2 is not in"),
        (
            lambda d: d["categories"].append({"id": 3, "name": "x"}),
            r"categories\[3\]: duplicate category id 3",
        ),
        (lambda d: d.pop("categories"), r"categories: missing or not a list"),
        (lambda d: d["images"][2].update(id="12"), r"images\[2\]: 'id' must be an integer"),
    ],
)
def test_malformed_json_named(tmp_path, mutate, message):
    ann = _bad(tmp_path, mutate)
    with pytest.raises(AnnotationError, match=message) as err:
        COCO2014(annotation_file=ann, image_dir=tmp_path)
    assert str(ann) in str(err.value)


def test_syntax_error_and_missing_file(tmp_path):
    ann = tmp_path / "broken.json"
    ann.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(AnnotationError, match=r"broken\.json, line 2: invalid JSON"):
        COCO2014(annotation_file=ann, image_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"instances_train2014\.json"):
        COCO2014(tmp_path, "train")
    with pytest.raises(ValueError, match="class_order"):
        COCO2014(make_coco(tmp_path / "c"), "val", class_order="name")
