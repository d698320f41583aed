"""The keypoint heatmap codec: encode / decode with sub-pixel refinement, flip test, COCO constants.

Coordinates: pixel centres are integers (column ``x``, row ``y``), as in COCO annotations and torchvision's
keypoint kernels. A heatmap of size ``(h, w)`` for an input of size ``(H, W)`` uses the *unbiased* mapping
of UDP (Huang et al., CVPR 2020): ``u = x·(w-1)/(W-1)``, ``v = y·(h-1)/(H-1)``, so that flipping the
input (``x → W-1-x``) flips the heatmap exactly (``u → w-1-u``) and the flip test needs no one-pixel shift
(SimpleBaseline's biased ``x/stride`` convention needs one and is not reproduced).

* :func:`encode_heatmaps` — unnormalised Gaussians ``exp(-d²/(2σ²))`` centred at the exact sub-pixel
  position (``quantize=True``: at the rounded position, as SimpleBaseline/HRNet); weight 0 for invisible
  keypoints and for those whose ``3σ`` square lies entirely outside the heatmap (the HRNet rule).
* :func:`decode_heatmaps` — argmax, then ``"quarter"`` (a quarter-pixel step towards the higher neighbour,
  SimpleBaseline/HRNet) or ``"dark"`` (DARK, Zhang et al. CVPR 2020: optional Gaussian modulation, then a
  second-order Taylor step of the log-heatmap at the maximum; exact for Gaussian heatmaps), or
  ``"argmax"`` (none).
* :func:`flip_back` — undo a horizontal flip of the input on the heatmaps (mirror and swap left/right).

The codec belongs to the data layer: the top-down transform encodes training targets with it, and the
keypoint task and metrics (:mod:`visattn.metrics.keypoints`) decode predictions with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "COCO_FLIP_PAIRS",
    "COCO_KEYPOINT_NAMES",
    "COCO_SIGMAS",
    "decode_heatmaps",
    "encode_heatmaps",
    "flip_back",
    "flip_pairs_from_names",
    "heatmap_to_input",
    "input_to_heatmap",
]

# Per-keypoint OKS constants of COCO (pycocotools' ``kpt_oks_sigmas``).
_COCO_SIGMAS_X10 = (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
)  # fmt: skip
COCO_SIGMAS = tuple(v / 10.0 for v in _COCO_SIGMAS_X10)
COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def flip_pairs_from_names(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Left/right pairs from keypoint names (``left_x`` ↔ ``right_x``, also ``l_``/``r_`` prefixes)."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        for left, right in (("left_", "right_"), ("left", "right"), ("l_", "r_")):
            if name.startswith(left) and (right + name[len(left) :]) in index:
                pairs.append((i, index[right + name[len(left) :]]))
                break
    return tuple(pairs)


# ------------------------------------------------------------------------------------------ coordinates
def input_to_heatmap(
    points: torch.Tensor, input_size: Sequence[int], heatmap_size: Sequence[int]
) -> torch.Tensor:
    """Input-pixel ``(..., 2)`` ``(x, y)`` → heatmap coordinates (UDP mapping); sizes are ``(H, W)``."""
    sx = (heatmap_size[1] - 1) / max(input_size[1] - 1, 1)
    sy = (heatmap_size[0] - 1) / max(input_size[0] - 1, 1)
    return points * points.new_tensor([sx, sy])


def heatmap_to_input(
    points: torch.Tensor, input_size: Sequence[int], heatmap_size: Sequence[int]
) -> torch.Tensor:
    """Inverse of :func:`input_to_heatmap`."""
    sx = (input_size[1] - 1) / max(heatmap_size[1] - 1, 1)
    sy = (input_size[0] - 1) / max(heatmap_size[0] - 1, 1)
    return points * points.new_tensor([sx, sy])


# ----------------------------------------------------------------------------------------------- encode
def encode_heatmaps(
    points: torch.Tensor,
    visible: torch.Tensor,
    heatmap_size: Sequence[int],
    sigma: float = 2.0,
    quantize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian target heatmaps ``(K, h, w)`` and weights ``(K,)`` for ``points`` ``(K, 2)`` (heatmap coords).

    ``visible`` ``(K,)``: bool or the COCO visibility flag (``> 0`` = labelled).
    """
    h, w = int(heatmap_size[0]), int(heatmap_size[1])
    points = points.float()
    if quantize:
        points = torch.floor(points + 0.5)
    u, v = points[:, 0:1], points[:, 1:2]
    xs = torch.arange(w, dtype=torch.float32)[None]
    ys = torch.arange(h, dtype=torch.float32)[None]
    gx = torch.exp(-((xs - u) ** 2) / (2 * sigma**2))  # (K, w)
    gy = torch.exp(-((ys - v) ** 2) / (2 * sigma**2))  # (K, h)
    heat = gy[:, :, None] * gx[:, None, :]
    r = 3 * sigma
    inside = (u[:, 0] + r >= 0) & (u[:, 0] - r <= w - 1) & (v[:, 0] + r >= 0) & (v[:, 0] - r <= h - 1)
    finite = torch.isfinite(points).all(1)
    weight = ((visible > 0) & inside & finite).float()
    heat = torch.nan_to_num(heat) * weight[:, None, None]
    return heat, weight


# ----------------------------------------------------------------------------------------------- decode
def _gaussian_kernel(size: int) -> torch.Tensor:
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a given kernel size (as DARK uses)
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _modulate(heat: torch.Tensor, kernel: int) -> torch.Tensor:
    """DARK's distribution modulation: Gaussian blur (reflect-101 borders), rescaled to the original max."""
    B, K, H, W = heat.shape
    g = _gaussian_kernel(kernel).to(heat)
    pad = kernel // 2
    x = heat.reshape(B * K, 1, H, W)
    mode = "reflect" if pad < H and pad < W else "replicate"
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode=mode), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode=mode), g.view(1, 1, -1, 1))
    x = x.reshape(B, K, H, W)
    old = heat.amax((2, 3), keepdim=True)
    new = x.amax((2, 3), keepdim=True)
    return x * (old / new.clamp(min=1e-12))


def decode_heatmaps(
    heatmaps: torch.Tensor, method: str = "dark", blur_kernel: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoint locations ``(B, K, 2)`` in heatmap coordinates and peak values ``(B, K)``.

    Args:
        heatmaps: ``(B, K, h, w)`` (or ``(K, h, w)``, then the outputs have no batch dimension).
        method: ``"dark"`` (Taylor refinement of the log-heatmap), ``"quarter"`` or ``"argmax"``.
        blur_kernel: odd Gaussian kernel size for DARK's modulation (``None``/0: none; DARK uses 11 for
            64×48 heatmaps with σ = 2).
    """
    if method not in ("dark", "quarter", "argmax"):
        raise ValueError(f"method must be 'dark', 'quarter' or 'argmax', got {method!r}")
    squeeze = heatmaps.dim() == 3
    heat = heatmaps[None] if squeeze else heatmaps
    heat = heat.detach().float()
    B, K, H, W = heat.shape
    flat = heat.reshape(B, K, -1)
    maxvals, idx = flat.max(-1)
    x = (idx % W).float()
    y = torch.div(idx, W, rounding_mode="floor").float()
    coords = torch.stack([x, y], -1)
    if method == "quarter":
        xi, yi = x.long(), y.long()
        b = torch.arange(B)[:, None].expand(B, K)
        k = torch.arange(K)[None].expand(B, K)
        inner_x = (xi > 0) & (xi < W - 1)
        inner_y = (yi > 0) & (yi < H - 1)
        right = heat[b, k, yi, (xi + 1).clamp(max=W - 1)]
        left = heat[b, k, yi, (xi - 1).clamp(min=0)]
        down = heat[b, k, (yi + 1).clamp(max=H - 1), xi]
        up = heat[b, k, (yi - 1).clamp(min=0), xi]
        coords[..., 0] += 0.25 * torch.sign(right - left) * inner_x
        coords[..., 1] += 0.25 * torch.sign(down - up) * inner_y
    elif method == "dark":
        if blur_kernel:
            heat = _modulate(heat, int(blur_kernel))
        coords = coords + _taylor_offsets(torch.log(heat.clamp(min=1e-10)), x.long(), y.long())
    coords = coords.masked_fill((maxvals <= 0)[..., None], 0.0) if method != "argmax" else coords
    if squeeze:
        return coords[0], maxvals[0]
    return coords, maxvals


def _taylor_offsets(logh: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-H⁻¹∇`` of the log-heatmap at integer ``(x, y)`` (finite differences); 0 on the border."""
    B, K, H, W = logh.shape
    b = torch.arange(B)[:, None].expand(B, K)
    k = torch.arange(K)[None].expand(B, K)
    inner = (x > 0) & (x < W - 1) & (y > 0) & (y < H - 1)
    xc, yc = x.clamp(1, max(W - 2, 1)), y.clamp(1, max(H - 2, 1))
    xp, xm = (xc + 1).clamp(max=W - 1), (xc - 1).clamp(min=0)
    yp, ym = (yc + 1).clamp(max=H - 1), (yc - 1).clamp(min=0)

    def at(yy, xx):
        return logh[b, k, yy, xx].double()

    c = at(yc, xc)
    dx = 0.5 * (at(yc, xp) - at(yc, xm))
    dy = 0.5 * (at(yp, xc) - at(ym, xc))
    dxx = at(yc, xp) - 2 * c + at(yc, xm)
    dyy = at(yp, xc) - 2 * c + at(ym, xc)
    dxy = 0.25 * (at(yp, xp) - at(yp, xm) - at(ym, xp) + at(ym, xm))
    det = dxx * dyy - dxy**2
    ok = inner & (det.abs() > 1e-12) & torch.isfinite(det)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(dxx * dy - dxy * dx) / safe
    off = torch.stack([ox, oy], -1).clamp(-1.0, 1.0).float()
    return off * ok[..., None]


def flip_back(heatmaps: torch.Tensor, flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Heatmaps of a horizontally flipped input, mapped back: mirror the width axis, swap left/right."""
    out = heatmaps.flip(-1)
    perm = list(range(out.shape[-3]))
    for a, b in flip_pairs:
        perm[a], perm[b] = perm[b], perm[a]
    return out[..., perm, :, :]
