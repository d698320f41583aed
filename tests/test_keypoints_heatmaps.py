"""Heatmap encode/decode round trips (sub-pixel), flip back, OKS and the top-down geometry."""

import math

import numpy as np
import pytest
import torch

from visattn.data.joint_transforms import TopDownTransform, affine_matrix, transform_points, warp_image
from visattn.engine.tasks.keypoints import to_image_coords
from visattn.metrics.keypoints import (
    COCO_FLIP_PAIRS,
    COCO_KEYPOINT_NAMES,
    decode_heatmaps,
    encode_heatmaps,
    flip_back,
    flip_pairs_from_names,
    input_to_heatmap,
    oks,
    oks_nms,
)


def random_points(n=40, size=(64, 48), margin=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = margin + torch.rand(n, generator=g) * (size[1] - 1 - 2 * margin)
    v = margin + torch.rand(n, generator=g) * (size[0] - 1 - 2 * margin)
    return torch.stack([u, v], 1)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_dark_decoding_inverts_unbiased_encoding(sigma):
    pts = random_points()
    heat, weight = encode_heatmaps(pts, torch.ones(len(pts)), (64, 48), sigma)
    assert heat.shape == (40, 64, 48) and weight.eq(1).all()
    coords, maxvals = decode_heatmaps(heat[None], "dark")
    assert (coords[0] - pts).abs().max() < 1e-3  # the log of a Gaussian is quadratic: exact up to rounding
    assert maxvals.min() > math.exp(-0.5 / sigma**2)  # peak within half a pixel of each axis
    inner = random_points(margin=10)  # away from the borders, DARK's modulation keeps the centre
    heat, _ = encode_heatmaps(inner, torch.ones(len(inner)), (64, 48), sigma)
    blurred, _ = decode_heatmaps(heat[None], "dark", blur_kernel=11)
    assert (blurred[0] - inner).abs().max() < 0.02


def test_quarter_and_argmax_decoding_bounds():
    pts = random_points(seed=1)
    heat, _ = encode_heatmaps(pts, torch.ones(len(pts)), (64, 48), 2.0)
    quarter, _ = decode_heatmaps(heat, "quarter")  # (K, h, w) input: no batch dimension
    argmax, _ = decode_heatmaps(heat, "argmax")
    assert (argmax - pts).abs().max() <= 0.5 + 1e-6
    assert (quarter - pts).abs().max() <= 0.25 + 1e-6
    assert (quarter - pts).abs().mean() < (argmax - pts).abs().mean()


def test_invisible_and_far_outside_keypoints_get_zero_weight():
    pts = torch.tensor([[10.0, 10.0], [10.0, 10.0], [-7.0, 5.0], [-5.0, 5.0], [60.0, 70.0]])
    heat, weight = encode_heatmaps(pts, torch.tensor([2, 0, 1, 1, 1]), (64, 48), 2.0)
    assert weight.tolist() == [1, 0, 0, 1, 0]  # the 3σ square decides, as in HRNet
    assert heat[1].abs().sum() == 0 and heat[0].max() == 1.0
    q, _ = encode_heatmaps(torch.tensor([[10.4, 10.6]]), torch.ones(1), (64, 48), 2.0, quantize=True)
    assert q[0, 11, 10] == 1.0  # SimpleBaseline: centred on the rounded position


def test_flip_back_is_exact_with_the_unbiased_mapping():
    pts = random_points(17, (256, 192), margin=20, seed=2)
    W = 192
    flipped = pts.clone()
    flipped[:, 0] = W - 1 - flipped[:, 0]
    perm = list(range(17))
    for a, b in COCO_FLIP_PAIRS:
        perm[a], perm[b] = perm[b], perm[a]
    flipped = flipped[perm]
    ones = torch.ones(17)
    direct, _ = encode_heatmaps(input_to_heatmap(pts, (256, 192), (64, 48)), ones, (64, 48), 2.0)
    mirrored, _ = encode_heatmaps(input_to_heatmap(flipped, (256, 192), (64, 48)), ones, (64, 48), 2.0)
    torch.testing.assert_close(flip_back(mirrored[None], COCO_FLIP_PAIRS)[0], direct, atol=1e-6, rtol=0)


def test_flip_pairs_from_names():
    assert flip_pairs_from_names(COCO_KEYPOINT_NAMES) == COCO_FLIP_PAIRS
    assert flip_pairs_from_names(["centroid", "top", "bottom", "left", "right"]) == ((3, 4),)


def test_oks_and_oks_nms():
    sig = [0.1] * 3
    gt = np.array([[10, 10, 2], [20, 10, 2], [0, 0, 0]], float)
    assert oks(gt, gt, 100.0, sig) == pytest.approx(1.0)
    shifted = gt + [[3, 4, 0]]
    expected = math.exp(-25 / (2 * 100 * 0.2**2))
    assert oks(shifted, gt, 100.0, sig) == pytest.approx(expected)  # the unlabelled third point is ignored
    poses = np.stack([gt, gt + [[0.1, 0, 0]], gt + [[50, 50, 0]]])
    poses[..., 2] = 1.0
    keep = oks_nms(poses, np.array([0.5, 0.9, 0.8]), np.array([100.0] * 3), 0.9, sig)
    assert keep == [1, 2]  # the near-duplicate of pose 1 is suppressed


def test_warp_and_inverse_mapping_round_trip():
    h, w = 40, 60
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    image = torch.stack([xs, ys])  # pixel value = its own coordinates
    m = affine_matrix((30.0, 20.0), (24.0, 32.0), 15.0, (32, 24))
    out = warp_image(image, m, (32, 24))
    src = transform_points(torch.tensor([[5.0, 7.0]]), torch.linalg.inv(m))[0]
    torch.testing.assert_close(out[:, 7, 5], src, atol=1e-4, rtol=0)
    pts = torch.tensor([[[25.0, 12.5], [33.3, 27.1]]])
    hm = input_to_heatmap(
        transform_points(pts, affine_matrix((30.0, 20.0), (24.0, 32.0), 0.0, (32, 24))), (32, 24), (8, 6)
    )
    back = to_image_coords(hm, torch.tensor([[30.0, 20.0]]), torch.tensor([[24.0, 32.0]]), (32, 24), (8, 6))
    torch.testing.assert_close(back, pts, atol=1e-4, rtol=0)


def test_top_down_transform_flip_swaps_pairs_consistently():
    # a 3-keypoint "pose": left (index 1) and right (index 2) of a centre; the image marks each keypoint
    image = torch.zeros(1, 50, 50, dtype=torch.uint8)
    kpts = torch.tensor([[25.0, 25.0, 2], [15.0, 25.0, 2], [35.0, 25.0, 2]])
    for x, y, _ in kpts.long().tolist():
        image[0, y, x] = 255
    sample = {"image": image, "keypoints": kpts, "box": (10.0, 10.0, 30.0, 30.0), "flip_pairs": ((1, 2),)}
    plain = TopDownTransform(False, (33, 33), (33, 33), sigma=1.0)(sample)
    flipped = TopDownTransform(
        True, (33, 33), (33, 33), sigma=1.0, scale_factor=0, rotation_factor=0, flip=1.0
    )(sample)
    img0, heat0, w0, meta = plain
    img1, heat1, w1, _ = flipped
    torch.testing.assert_close(img1, img0.flip(-1))
    torch.testing.assert_close(heat1, flip_back(heat0[None], ((1, 2),))[0], atol=1e-5, rtol=0)
    coords, _ = decode_heatmaps(heat0[None], "dark")
    for k in range(3):  # each heatmap peaks on its own marked pixel
        x, y = coords[0, k].round().long().tolist()
        assert img0[0, y, x] > 0.2
    assert meta["keypoints"].shape == (3, 3) and w0.tolist() == [1, 1, 1]
