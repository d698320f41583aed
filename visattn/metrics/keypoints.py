"""Keypoint heatmaps (encode / decode with sub-pixel refinement, flip test) and OKS AP/AR via COCOeval.

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
* :func:`oks`, :func:`oks_nms` — object keypoint similarity (COCO definition) and OKS-based NMS (HRNet's
  ``oks_nms``, used after rescoring when boxes come from a detector).
* :class:`KeypointMetrics` — accumulates per-instance predictions in original-image coordinates and
  computes COCO keypoint AP/AR with ``pycocotools.cocoeval.COCOeval`` (optional extra
  ``visattn[keypoints]``) plus PCK and the mean normalised error against the instances' own annotations
  (no pycocotools needed).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "COCO_FLIP_PAIRS",
    "COCO_KEYPOINT_NAMES",
    "COCO_SIGMAS",
    "KeypointMetrics",
    "coco_eval_keypoints",
    "decode_heatmaps",
    "encode_heatmaps",
    "flip_back",
    "flip_pairs_from_names",
    "heatmap_to_input",
    "input_to_heatmap",
    "oks",
    "oks_nms",
    "require_cocoeval",
]

COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
# Per-keypoint OKS constants of COCO (pycocotools' ``kpt_oks_sigmas``).
_COCO_SIGMAS_X10 = (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
)  # fmt: skip
COCO_SIGMAS = tuple(v / 10.0 for v in _COCO_SIGMAS_X10)
STATS_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


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


# ------------------------------------------------------------------------------------------------- OKS
def oks(pred: np.ndarray, gt: np.ndarray, area: float, sigmas: Sequence[float]) -> float:
    """COCO object keypoint similarity of one predicted pose ``(K, ≥2)`` with a GT pose ``(K, 3)``.

    Mean over the GT's labelled keypoints (``v > 0``) of ``exp(-d² / (2·area·(2σ)²))``; NaN without any.
    """
    pred, gt = np.asarray(pred, float), np.asarray(gt, float)
    k2 = (2 * np.asarray(sigmas, float)) ** 2
    d2 = ((pred[:, :2] - gt[:, :2]) ** 2).sum(1)
    e = d2 / (2 * k2 * (area + np.spacing(1)))
    vis = gt[:, 2] > 0
    return float(np.exp(-e[vis]).mean()) if vis.any() else math.nan


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    thresh: float = 0.9,
    sigmas: Sequence[float] = COCO_SIGMAS,
    in_vis_thresh: float | None = None,
) -> list[int]:
    """Greedy NMS of poses ``(N, K, 3)`` by OKS (HRNet's ``oks_nms``); returns the kept indices.

    OKS between two predictions uses their mean area; with ``in_vis_thresh`` only keypoints whose score
    exceeds it count.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    k2 = (2 * np.asarray(sigmas, float)) ** 2
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        if not rest.size:
            break
        d2 = ((keypoints[rest, :, :2] - keypoints[i, None, :, :2]) ** 2).sum(-1)
        area = (areas[i] + areas[rest])[:, None] / 2
        e = d2 / (2 * k2[None] * (area + np.spacing(1)))
        sim = np.exp(-e)
        if in_vis_thresh is not None:
            mask = (keypoints[rest, :, 2] > in_vis_thresh) & (keypoints[i, None, :, 2] > in_vis_thresh)
            counted = mask.sum(1)
            o = np.where(counted > 0, (sim * mask).sum(1) / np.maximum(counted, 1), 0.0)
        else:
            o = sim.mean(1)
        order = rest[o <= thresh]
    return keep


# ----------------------------------------------------------------------------------------------- COCOeval
def require_cocoeval():
    """pycocotools' ``COCO`` and ``COCOeval``; ``ImportError`` with the install hint without them."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise ImportError(
            "OKS AP/AR needs pycocotools: pip install 'visattn[keypoints]' (or pip install pycocotools)"
        ) from err
    return COCO, COCOeval


def coco_eval_keypoints(
    gt: dict[str, Any], results: list[dict[str, Any]], sigmas: Sequence[float] = COCO_SIGMAS
) -> dict[str, float]:
    """COCO keypoint AP/AR (``STATS_NAMES``) of ``results`` (COCO result format) against the GT dict."""
    COCO, COCOeval = require_cocoeval()
    if not results:
        return {name: 0.0 for name in STATS_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=float)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STATS_NAMES, ev.stats, strict=True)}


class KeypointMetrics:
    """Accumulating top-down keypoint metric.

    ``update(image_ids, keypoints, maxvals, box_scores, areas, indices, gt_keypoints=None, norms=None)``
    with per-instance tensors: ``keypoints`` ``(B, K, 2)`` in original-image pixels, ``maxvals`` ``(B, K)``
    heatmap peaks, ``box_scores`` ``(B,)`` (1 for GT boxes), ``areas`` ``(B,)`` (used by OKS-NMS),
    ``indices`` ``(B,)`` dataset indices (duplicates from distributed padding are dropped),
    ``gt_keypoints`` ``(B, K, 3)`` / ``norms`` ``(B,)`` for PCK.

    ``compute()``: rescoring ``score = box_score · mean(maxvals > in_vis_thresh)`` (HRNet), OKS-NMS per image
    (``use_nms``), then COCOeval keypoint AP/AR (when ``gt`` is given and pycocotools is installed) →
    ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl`` (-1 where COCOeval has no instance in the area
    range), plus ``PCK`` (fraction of labelled keypoints within ``pck_alpha·norm`` pixels; ``norm`` is the
    longer side of the instance's box) and ``NME`` (mean error / norm), which need no pycocotools.
    """

    def __init__(
        self,
        gt: dict[str, Any] | None,
        sigmas: Sequence[float] = COCO_SIGMAS,
        in_vis_thresh: float = 0.2,
        oks_thresh: float = 0.9,
        use_nms: bool = True,
        pck_alpha: float = 0.1,
        category_id: int = 1,
        needs_cocoeval: bool = False,
    ) -> None:
        if gt is not None and needs_cocoeval:
            require_cocoeval()
        self.gt = gt
        self.sigmas = tuple(float(s) for s in sigmas)
        self.in_vis_thresh = in_vis_thresh
        self.oks_thresh = oks_thresh
        self.use_nms = use_nms
        self.pck_alpha = pck_alpha
        self.category_id = category_id
        self.reset()

    def reset(self) -> None:
        self._parts: dict[str, list[torch.Tensor]] = {}

    @torch.no_grad()
    def update(
        self,
        image_ids: torch.Tensor,
        keypoints: torch.Tensor,
        maxvals: torch.Tensor,
        box_scores: torch.Tensor,
        areas: torch.Tensor,
        indices: torch.Tensor,
        gt_keypoints: torch.Tensor | None = None,
        norms: torch.Tensor | None = None,
    ) -> None:
        n = keypoints.shape[0]
        parts = {
            "image_ids": torch.as_tensor(image_ids).reshape(n).long().cpu(),
            "keypoints": keypoints.detach().float().cpu(),
            "maxvals": maxvals.detach().float().cpu(),
            "box_scores": torch.as_tensor(box_scores).reshape(n).float().cpu(),
            "areas": torch.as_tensor(areas).reshape(n).float().cpu(),
            "indices": torch.as_tensor(indices).reshape(n).long().cpu(),
        }
        if gt_keypoints is not None:
            parts["gt_keypoints"] = gt_keypoints.detach().float().cpu()
            parts["norms"] = torch.as_tensor(norms).reshape(n).float().cpu()
        for key, value in parts.items():
            self._parts.setdefault(key, []).append(value)

    def _gathered(self) -> dict[str, torch.Tensor]:
        from visattn.engine.distributed import all_gather_variable

        out = {}
        for key, values in self._parts.items():
            out[key] = all_gather_variable(torch.cat(values))
        if out:
            _, first = np.unique(out["indices"].numpy(), return_index=True)
            keep = torch.from_numpy(np.sort(first))
            out = {k: v[keep] for k, v in out.items()}
        return out

    def compute(self) -> dict[str, Any]:
        data = self._gathered()
        result: dict[str, Any] = {"instances": int(data["indices"].numel()) if data else 0}
        if not data:
            return result
        if "gt_keypoints" in data:
            result.update(_pck(data["keypoints"], data["gt_keypoints"], data["norms"], self.pck_alpha))
        if self.gt is None:
            return result
        try:
            require_cocoeval()
        except ImportError:
            return result  # AP needs the optional extra; PCK / NME above do not
        result.update(coco_eval_keypoints(self.gt, self.results(data), self.sigmas))
        return result

    def results(self, data: dict[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
        """COCO-format results after rescoring and OKS-NMS (what COCOeval scores)."""
        data = data if data is not None else self._gathered()
        if not data:
            return []
        kpts = torch.cat([data["keypoints"], data["maxvals"][..., None]], -1).numpy().astype(float)
        mv = data["maxvals"].numpy()
        above = mv > self.in_vis_thresh
        kpt_score = np.where(above.any(1), (mv * above).sum(1) / np.maximum(above.sum(1), 1), 0.0)
        scores = kpt_score * data["box_scores"].numpy()
        areas = data["areas"].numpy().astype(float)
        image_ids = data["image_ids"].numpy()
        out = []
        for image_id in np.unique(image_ids):
            rows = np.flatnonzero(image_ids == image_id)
            keep = (
                rows[
                    oks_nms(
                        kpts[rows],
                        scores[rows],
                        areas[rows],
                        self.oks_thresh,
                        self.sigmas,
                        self.in_vis_thresh,
                    )
                ]
                if self.use_nms
                else rows
            )
            for r in keep:
                out.append(
                    {
                        "image_id": int(image_id),
                        "category_id": self.category_id,
                        "keypoints": [float(v) for v in kpts[r].reshape(-1)],
                        "score": float(scores[r]),
                    }
                )
        return out


def _pck(pred: torch.Tensor, gt: torch.Tensor, norms: torch.Tensor, alpha: float) -> dict[str, float]:
    vis = gt[..., 2] > 0
    if not vis.any():
        return {"PCK": math.nan, "NME": math.nan}
    err = (pred[..., :2] - gt[..., :2]).norm(dim=-1) / norms.clamp(min=1e-6)[:, None]
    err = err[vis]
    return {"PCK": float((err <= alpha).float().mean()), "NME": float(err.mean())}
