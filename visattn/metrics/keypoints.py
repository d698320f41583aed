"""Keypoint metrics: OKS, OKS-NMS, COCOeval keypoint AP/AR and the accumulating :class:`KeypointMetrics`.

* :func:`oks`, :func:`oks_nms` — object keypoint similarity (COCO definition) and OKS-based NMS (HRNet's
  ``oks_nms``, used after rescoring when boxes come from a detector).
* :class:`KeypointMetrics` — accumulates per-instance predictions in original-image coordinates and
  computes COCO keypoint AP/AR with ``pycocotools.cocoeval.COCOeval`` (optional extra
  ``visattn[keypoints]``, imported only inside :func:`require_cocoeval`) plus PCK and the mean normalised
  error against the instances' own annotations (no pycocotools needed).

The heatmap codec (encode/decode, flip test, COCO constants; coordinate conventions in its docstring) lives
in :mod:`visattn.data.heatmaps` and is re-exported here.
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

from visattn.data.heatmaps import (
    COCO_FLIP_PAIRS,
    COCO_KEYPOINT_NAMES,
    COCO_SIGMAS,
    decode_heatmaps,
    encode_heatmaps,
    flip_back,
    flip_pairs_from_names,
    heatmap_to_input,
    input_to_heatmap,
)
from visattn.utils.distributed import all_gather_variable

__all__ = [
    "COCO_FLIP_PAIRS",
    "COCO_KEYPOINT_NAMES",
    "COCO_SIGMAS",
    "STATS_NAMES",
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

STATS_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


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
