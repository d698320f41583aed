"""COCO person-keypoints loader on a tiny JSON in the real format; OKS AP through COCOeval."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from visattn.data._common import AnnotationError
from visattn.data.coco_keypoints import COCOKeypoints
from visattn.data.joint_transforms import TopDownTransform
from visattn.engine.tasks.keypoints import to_image_coords
from visattn.metrics.keypoints import (
    COCO_FLIP_PAIRS,
    COCO_KEYPOINT_NAMES,
    COCO_SIGMAS,
    KeypointMetrics,
    coco_eval_keypoints,
    decode_heatmaps,
)


def person(cx, cy, scale, visible=2):
    """17 keypoints of a stick figure around (cx, cy), flattened [x, y, v, ...]."""
    offsets = [(0, -4), (-1, -5), (1, -5), (-2, -4.5), (2, -4.5), (-3, -2), (3, -2), (-4, 0), (4, 0), (-4.5, 2),
               (4.5, 2), (-2, 2), (2, 2), (-2, 5), (2, 5), (-2, 8), (2, 8)]  # fmt: skip
    out = []
    for dx, dy in offsets:
        out += [cx + dx * scale, cy + dy * scale, visible]
    return out


def coco_keypoints_json() -> dict:
    a = person(40, 40, 3.0)
    a[3 * 3 + 2] = 0  # left ear not labelled
    a[3 * 3] = a[3 * 3 + 1] = 0
    b = person(100, 50, 4.0, visible=1)
    return {
        "images": [
            {"id": 7, "file_name": "000000000007.jpg", "width": 128, "height": 96},
            {"id": 9, "file_name": "000000000009.jpg", "width": 128, "height": 96},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [24, 20, 32, 48], "area": 900.0, "iscrowd": 0,
             "keypoints": a, "num_keypoints": 16},
            {"id": 2, "image_id": 9, "category_id": 1, "bbox": [78, 26, 44, 66], "area": 1600.0, "iscrowd": 0,
             "keypoints": b, "num_keypoints": 17},
            {"id": 3, "image_id": 9, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 100.0, "iscrowd": 0,
             "keypoints": [0] * 51, "num_keypoints": 0},  # no keypoints: not a sample, ignored by COCOeval
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [0, 60, 30, 30], "area": 500.0, "iscrowd": 1,
             "keypoints": [0] * 51, "num_keypoints": 0},  # crowd region
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_KEYPOINT_NAMES),
                        "skeleton": [[16, 14], [14, 12]]}],
    }  # fmt: skip


def make_coco_keypoints(root, data=None):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "person_keypoints_val2017.json").write_text(
        json.dumps(data or coco_keypoints_json())
    )
    for k, img in enumerate(coco_keypoints_json()["images"]):
        (root / "val2017").mkdir(exist_ok=True)
        arr = np.full((img["height"], img["width"], 3), 40 * k, np.uint8)
        Image.fromarray(arr).save(root / "val2017" / img["file_name"])
    return root


@pytest.fixture
def coco(tmp_path):
    return make_coco_keypoints(tmp_path)


def test_samples_from_person_boxes(coco):
    ds = COCOKeypoints(coco, "val", check_files=True)
    assert len(ds) == 2 and ds.class_names == list(COCO_KEYPOINT_NAMES)
    assert ds.flip_pairs == COCO_FLIP_PAIRS and ds.sigmas == COCO_SIGMAS
    s = ds[1]  # no transform: the sample dict
    assert s["image"].shape == (3, 96, 128) and s["image_id"] == 9 and s["score"] == 1.0
    assert s["box"] == (78.0, 26.0, 43.0, 65.0)  # HRNet's cleaning: x2 = x1 + w - 1, clipped to the image
    assert s["keypoints"].shape == (17, 3) and s["keypoints"][:, 2].eq(1).all()


def test_items_through_the_top_down_transform(coco):
    t = TopDownTransform(False, (64, 48), (16, 12), sigma=1.0)
    image, heat, weight, meta = COCOKeypoints(coco, "val", transform=t)[0]
    assert image.shape == (3, 64, 48) and heat.shape == (17, 16, 12) and weight.shape == (17,)
    assert weight[3] == 0 and weight.sum() == 16  # the unlabelled ear
    assert meta["image_id"] == 7 and meta["keypoints"].shape == (17, 3)


def test_detection_boxes(coco, tmp_path):
    dets = [{"image_id": 9, "category_id": 1, "bbox": [70, 20, 50, 70], "score": 0.8},
            {"image_id": 9, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.01}]  # fmt: skip
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    ds = COCOKeypoints(coco, "val", det_file=tmp_path / "dets.json", det_score_thresh=0.05)
    assert len(ds) == 1 and ds.samples[0]["score"] == 0.8
    (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    with pytest.raises(AnnotationError, match=r"dets\.json, \[0\]: image_id 3"):
        COCOKeypoints(coco, "val", det_file=tmp_path / "dets.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["annotations"][0]["keypoints"].pop(),
            r"annotations\[0\]\.keypoints: expected 51 numbers",
        ),
        (
            lambda d: d["annotations"][1]["keypoints"].__setitem__(2, 3),
            r"annotations\[1\]\.keypoints: visibility",
        ),
        (lambda d: d["annotations"][0].__setitem__("image_id", 8), r"annotations\[0\]: image_id 8"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [1, 2, -3, 4]), r"annotations\[0\]\.bbox"),
        (lambda d: d.pop("categories"), r"categories: missing"),
        (lambda d: d["categories"][0].pop("keypoints"), r"categories: no category"),
        (lambda d: d["images"][1].__setitem__("id", 7), r"images\[1\]: duplicate image id 7"),
        (lambda d: d["images"][0].pop("width"), r"images\[0\]: 'width'"),
    ],
)
def test_malformed_annotations_name_the_file_and_key(tmp_path, edit, message):
    data = coco_keypoints_json()
    edit(data)
    root = make_coco_keypoints(tmp_path, data)
    with pytest.raises(AnnotationError, match=r"person_keypoints_val2017\.json.*" + message):
        COCOKeypoints(root, "val")


def test_invalid_json_names_the_line(coco):
    (coco / "annotations" / "person_keypoints_val2017.json").write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(AnnotationError, match=r"person_keypoints_val2017\.json, line 2: invalid JSON"):
        COCOKeypoints(coco, "val")
    with pytest.raises(FileNotFoundError, match="person_keypoints_train2017.json"):
        COCOKeypoints(coco, "train")


def _predictions(ds, shift=0.0):
    metric = KeypointMetrics(ds.coco_gt(), ds.sigmas, needs_cocoeval=True)
    for i, s in enumerate(ds.samples):
        kp = torch.tensor(s["keypoints"], dtype=torch.float32).reshape(1, 17, 3)
        metric.update(torch.tensor([s["image_id"]]), kp[..., :2] + shift, torch.ones(1, 17), torch.ones(1),
                      torch.tensor([s["area"]]), torch.tensor([i]), kp, torch.tensor([max(s["box"][2:])]))  # fmt: skip
    return metric.compute()


def test_oks_ap_is_one_for_perfect_predictions_and_lower_when_perturbed(coco):
    pytest.importorskip("pycocotools")
    ds = COCOKeypoints(coco, "val")
    perfect = _predictions(ds)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AR"] == pytest.approx(1.0)
    assert perfect["PCK"] == 1.0 and perfect["NME"] == 0.0
    off = _predictions(ds, shift=2.0)
    assert 0.0 <= off["AP"] < 1.0 and off["PCK"] == 1.0
    far = _predictions(ds, shift=8.0)
    assert far["AP"] < off["AP"] and far["PCK"] < 1.0


def test_ap_through_heatmaps_and_the_inverse_crop(coco):
    pytest.importorskip("pycocotools")
    # GT heatmaps as "predictions": encode → crop → decode (DARK) → original pixels must give AP 1
    t = TopDownTransform(False, (256, 192), (64, 48), sigma=2.0)
    ds = COCOKeypoints(coco, "val", transform=t)
    metric = KeypointMetrics(ds.coco_gt(), ds.sigmas)
    for i in range(len(ds)):
        _, heat, _, meta = ds[i]
        coords, maxvals = decode_heatmaps(heat[None], "dark")
        meta = {k: v[None] for k, v in meta.items()}
        pts = to_image_coords(coords, meta["center"], meta["size"], (256, 192), (64, 48))
        labelled = meta["keypoints"][..., 2] > 0
        assert (pts - meta["keypoints"][..., :2]).norm(dim=-1)[labelled].max() < 0.05
        metric.update(meta["image_id"], pts, maxvals, meta["score"], meta["area"], meta["index"])
    assert metric.compute()["AP"] == pytest.approx(1.0)


def test_coco_eval_without_results_is_zero():
    pytest.importorskip("pycocotools")
    assert coco_eval_keypoints(copy.deepcopy(coco_keypoints_json()), [])["AP"] == 0.0
