"""Joint image / target transforms for dense tasks (torchvision transforms v2).

**Segmentation** — :func:`build_segmentation_transform` returns a callable ``(image, mask) -> (image, mask)``
taking a ``tv_tensors.Image`` (uint8 ``(C, H, W)``) and a ``tv_tensors.Mask`` (``(H, W)``) and returning a
float normalised image and an int64 mask. Geometric steps are v2 transforms that treat the two types
correctly (bilinear for the image, nearest for the mask; padding fills the image with 0 and the mask with
the ignore index):

* train: :class:`RandomScale` (factor in ``scale_range`` relative to the image, or to ``base_size`` as
  mmseg's ``RandomResize(scale, ratio_range, keep_ratio=True)``), ``v2.RandomCrop(crop_size,
  pad_if_needed=True)``, ``v2.RandomHorizontalFlip``, optional ``v2.ColorJitter`` (image only);
* eval: nothing geometric by default (the metric sees the original mask); :class:`PadTo` pads image and
  mask to a fixed size (ignored padding) so that images of different sizes form a batch;
  ``eval_scale`` resizes only the image (predictions are resized back to the mask by the task).

**Keypoints (top-down)** — :class:`TopDownTransform` turns a sample dict (full image, one instance's box
``(x, y, w, h)`` and keypoints ``(K, 3)``) into ``(input, heatmaps, weights, meta)``: the box is widened
to the input aspect ratio and padded (×1.25), random scale / rotation / flip in training (flip swaps the
left/right pairs), one affine warp (:func:`affine_matrix`, UDP convention: the box maps onto
``[0, W-1] × [0, H-1]``) applied to the image with ``grid_sample`` and to the keypoints
(``tv_tensors.KeyPoints``) with the same matrix, Gaussian heatmaps (:func:`visattn.data.heatmaps.encode_heatmaps`).
``meta`` holds what evaluation needs to map predictions back (centre, size, image id, area, box score,
index, original keypoints).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .heatmaps import encode_heatmaps, input_to_heatmap
from .transforms import convert_channels, match_channels

__all__ = [
    "PadTo",
    "RandomScale",
    "ResizeImage",
    "SegmentationTransform",
    "TopDownTransform",
    "affine_matrix",
    "box_to_center_size",
    "build_segmentation_transform",
    "transform_points",
    "warp_image",
]


def _pair(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value), int(value)
    if len(value) != 2:
        raise ValueError(f"expected a size (h, w) or an int, got {value!r}")
    return int(value[0]), int(value[1])


# ------------------------------------------------------------------------------------------ segmentation
class RandomScale(v2.Transform):
    """Resize by a random factor in ``scale_range`` (image bilinear + antialias, mask nearest).

    Without ``base_size`` the factor is relative to the input; with ``base_size = (h, w)`` the input is first
    fitted inside ``base_size`` keeping its aspect ratio (mmseg ``RandomResize(scale=(w, h),
    ratio_range, keep_ratio=True)``; Cityscapes ``(1024, 2048)``, VOC ``(512, 2048)``).
    """

    def __init__(self, scale_range: Sequence[float], base_size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.base_size = _pair(base_size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        s = random.uniform(*self.scale_range)
        if self.base_size is not None:
            s *= min(self.base_size[0] / h, self.base_size[1] / w)
        return {"size": [max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.resize, inpt, size=params["size"], antialias=True)


class ResizeImage(v2.Transform):
    """Resize only the image by ``scale`` (evaluation at a reduced scale; the mask keeps its size)."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        h, w = inpt.shape[-2:]
        size = [max(1, int(h * self.scale + 0.5)), max(1, int(w * self.scale + 0.5))]
        return TF.resize(inpt, size=size, antialias=True)


class PadTo(v2.Transform):
    """Pad bottom/right to at least ``size`` (image with 0, mask with ``ignore_index``)."""

    def __init__(self, size: int | Sequence[int], ignore_index: int = 255) -> None:
        super().__init__()
        self.size = _pair(size)
        self.ignore_index = ignore_index

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        return {"padding": [0, 0, max(0, self.size[1] - w), max(0, self.size[0] - h)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else 0
        return self._call_kernel(TF.pad, inpt, padding=params["padding"], fill=fill)


class SegmentationTransform:
    """``(image, mask) -> (float image (C, h, w), int64 mask (h, w))`` around a v2 pipeline."""

    def __init__(
        self, pipeline: v2.Transform, mean: Sequence[float], std: Sequence[float], channels: int | None = None
    ) -> None:
        self.pipeline = pipeline
        self.channels = channels
        self.normalize = not (all(m == 0 for m in mean) and all(s == 1 for s in std))
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = tv_tensors.Image(convert_channels(image.as_subclass(torch.Tensor), self.channels))
        if not isinstance(mask, tv_tensors.Mask):
            mask = tv_tensors.Mask(mask)
        image, mask = self.pipeline(image, mask)
        image = TF.to_dtype(image, torch.float32, scale=True)
        if self.normalize:
            channels = image.shape[0]
            mean, std = match_channels(self.mean, channels), match_channels(self.std, channels)
            image = TF.normalize(image, mean, std)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()

    def __repr__(self) -> str:
        return f"SegmentationTransform({self.pipeline}, mean={self.mean}, std={self.std})"


def build_segmentation_transform(
    train: bool,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    crop_size: int | Sequence[int] | None = None,
    scale_range: Sequence[float] | None = None,
    base_size: Sequence[int] | None = None,
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    ignore_index: int = 255,
    pad_to: int | Sequence[int] | None = None,
    eval_scale: float = 1.0,
    channels: int | None = None,
) -> SegmentationTransform:
    """The segmentation transform of a recipe (see the module docstring); ``channels``: convert images to
    this many channels first (:func:`~visattn.data.transforms.convert_channels`)."""
    steps: list[v2.Transform] = []
    if train:
        if scale_range is not None:
            steps.append(RandomScale(scale_range, base_size))
        if crop_size is not None:
            fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
            steps.append(v2.RandomCrop(_pair(crop_size), pad_if_needed=True, fill=fill))
        if hflip:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if color_jitter:
            steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    else:
        if eval_scale != 1.0:
            if pad_to is not None:
                raise ValueError("eval_scale and pad_to cannot be combined (the padded mask would not match)")
            steps.append(ResizeImage(eval_scale))
        if pad_to is not None:
            steps.append(PadTo(pad_to, ignore_index))
    return SegmentationTransform(v2.Compose(steps) if steps else v2.Identity(), mean, std, channels)


# --------------------------------------------------------------------------------------------- keypoints
def box_to_center_size(
    box: Sequence[float], aspect_ratio: float, padding: float = 1.25
) -> tuple[tuple[float, float], tuple[float, float]]:
    """COCO box ``(x, y, w, h)`` → centre and size ``(w', h')`` widened to ``w'/h' = aspect_ratio``, × padding."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + 0.5 * w, y + 0.5 * h
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return (cx, cy), (max(w, 1e-3) * padding, max(h, 1e-3) * padding)


def affine_matrix(
    center: Sequence[float], size: Sequence[float], rotation: float, output_size: Sequence[int]
) -> torch.Tensor:
    """3×3 (float64) map from original pixels to output pixels (``output_size = (H, W)``).

    The box of ``size = (w, h)`` centred at ``center`` maps onto ``[0, W-1] × [0, H-1]`` (UDP convention), after
    a rotation by ``rotation`` degrees about the centre.
    """
    H, W = output_size
    cx, cy = float(center[0]), float(center[1])
    sx = (W - 1) / float(size[0])
    sy = (H - 1) / float(size[1])
    t = math.radians(rotation)
    c, s = math.cos(t), math.sin(t)
    to_origin = torch.tensor([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=torch.float64)
    rot = torch.tensor([[c, s, 0], [-s, c, 0], [0, 0, 1]], dtype=torch.float64)
    scale = torch.tensor([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], dtype=torch.float64)
    to_out = torch.tensor([[1, 0, (W - 1) / 2], [0, 1, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    return to_out @ scale @ rot @ to_origin


def transform_points(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3×3 affine ``matrix`` (or a batch ``(B, 3, 3)`` to ``(B, K, 2)``) to ``(..., 2)`` points."""
    m = matrix.to(torch.float64)
    p = points.to(torch.float64)
    out = (
        p @ m[..., :2, :2].transpose(-1, -2) + m[..., None, :2, 2]
        if m.dim() == 3
        else p @ m[:2, :2].T + m[:2, 2]
    )
    return out.to(points.dtype)


def warp_image(image: torch.Tensor, matrix: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """Warp a float ``(C, H, W)`` image by ``matrix`` (original → output) to ``output_size``, bilinear, 0 fill."""
    H, W = output_size
    h, w = image.shape[-2:]
    inv = torch.linalg.inv(matrix)
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    src = transform_points(torch.stack([xs, ys], -1), inv)
    gx = 2 * src[..., 0] / max(w - 1, 1) - 1
    gy = 2 * src[..., 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], -1).to(image.dtype)[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]


class TopDownTransform:
    """Top-down keypoint transform: sample dict → ``(input, heatmaps, weights, meta)``.

    Args:
        train: random scale / rotation / flip.
        input_size: ``(H, W)`` of the network input (COCO: ``(256, 192)``).
        heatmap_size: ``(h, w)`` of the target heatmaps (COCO: ``(64, 48)``).
        sigma: Gaussian σ in heatmap pixels (2 for 64×48).
        mean, std: normalisation (per channel; a 1-channel value is repeated).
        padding: box enlargement (1.25 in SimpleBaseline / HRNet).
        scale_factor: training scale jitter ``s ~ clip(1 + N(0,1)·f, 1-f, 1+f)`` (0.35 HRNet, 0.3 SimpleBaseline).
        rotation_factor: training rotation ``clip(N(0,1)·r, -2r, 2r)`` degrees with probability ``rotation_prob``.
        flip: training flip probability; needs ``flip_pairs`` (given here or in the sample).
        quantize: encode at rounded heatmap positions (SimpleBaseline) instead of exact ones.
        channels: convert images to this many channels first (``None``: keep them).

    The sample dict holds ``image`` (uint8/float ``(C, H, W)`` or ``tv_tensors.Image``), ``keypoints``
    ``(K, 3)`` ``(x, y, v)`` in image pixels, ``box`` ``(x, y, w, h)``, and optionally ``image_id``,
    ``area``, ``score``, ``index``, ``flip_pairs``.
    """

    def __init__(
        self,
        train: bool,
        input_size: Sequence[int] = (256, 192),
        heatmap_size: Sequence[int] = (64, 48),
        sigma: float = 2.0,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        padding: float = 1.25,
        scale_factor: float = 0.35,
        rotation_factor: float = 45.0,
        rotation_prob: float = 0.6,
        flip: float = 0.5,
        flip_pairs: Sequence[Sequence[int]] | None = None,
        quantize: bool = False,
        channels: int | None = None,
    ) -> None:
        self.train = train
        self.channels = channels
        self.input_size = _pair(input_size)
        self.heatmap_size = _pair(heatmap_size)
        self.sigma = float(sigma)
        self.mean, self.std = list(mean), list(std)
        self.padding = padding
        self.scale_factor, self.rotation_factor, self.rotation_prob = (
            scale_factor,
            rotation_factor,
            rotation_prob,
        )
        self.flip = flip
        self.flip_pairs = tuple(tuple(p) for p in flip_pairs) if flip_pairs is not None else None
        self.quantize = quantize

    @property
    def aspect_ratio(self) -> float:
        return self.input_size[1] / self.input_size[0]

    def __call__(self, sample: dict[str, Any]):
        image = torch.as_tensor(sample["image"])
        image = TF.to_dtype(tv_tensors.Image(image), torch.float32, scale=True).as_subclass(torch.Tensor)
        image = convert_channels(image, self.channels)
        kpts = torch.as_tensor(sample["keypoints"], dtype=torch.float32).reshape(-1, 3)
        center, size = box_to_center_size(sample["box"], self.aspect_ratio, self.padding)
        rotation, flipped, scale = 0.0, False, 1.0
        if self.train:
            f, r = self.scale_factor, self.rotation_factor
            scale = min(max(1 + random.gauss(0, 1) * f, 1 - f), 1 + f) if f else 1.0
            if r and random.random() < self.rotation_prob:
                rotation = min(max(random.gauss(0, 1) * r, -2 * r), 2 * r)
            flipped = bool(self.flip) and random.random() < self.flip
        box_size = (size[0] * scale, size[1] * scale)
        matrix = affine_matrix(center, box_size, rotation, self.input_size)
        pairs = sample.get("flip_pairs", self.flip_pairs)
        if flipped:
            if pairs is None:
                raise ValueError("flip augmentation needs flip_pairs (in the transform or the sample)")
            W = self.input_size[1]
            mirror = torch.tensor([[-1, 0, W - 1], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
            matrix = mirror @ matrix
        out = warp_image(image, matrix, self.input_size)
        points = tv_tensors.KeyPoints(
            transform_points(kpts[:, :2], matrix), canvas_size=tuple(self.input_size)
        ).as_subclass(torch.Tensor)
        vis = kpts[:, 2].clone()
        if flipped:
            perm = list(range(len(vis)))
            for a, b in pairs:
                perm[a], perm[b] = perm[b], perm[a]
            points, vis = points[perm], vis[perm]
        heat, weight = encode_heatmaps(
            input_to_heatmap(points, self.input_size, self.heatmap_size),
            vis,
            self.heatmap_size,
            self.sigma,
            quantize=self.quantize,
        )
        if not (all(m == 0 for m in self.mean) and all(s == 1 for s in self.std)):
            c = out.shape[0]
            mean, std = match_channels(self.mean, c), match_channels(self.std, c)
            out = TF.normalize(out, mean, std)
        x, y, w, h = (float(v) for v in sample["box"])
        meta = {
            "center": torch.tensor(center, dtype=torch.float64),
            "size": torch.tensor(size, dtype=torch.float64),
            "image_id": torch.tensor(int(sample.get("image_id", -1))),
            "area": torch.tensor(float(sample.get("area", w * h))),
            "score": torch.tensor(float(sample.get("score", 1.0))),
            "index": torch.tensor(int(sample.get("index", -1))),
            "keypoints": kpts,
            "norm": torch.tensor(max(w, h, 1.0)),
        }
        return out, heat, weight, meta

    def __repr__(self) -> str:
        return (
            f"TopDownTransform(train={self.train}, input_size={self.input_size}, "
            f"heatmap_size={self.heatmap_size}, sigma={self.sigma})"
        )
