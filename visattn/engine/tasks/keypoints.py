"""The ``keypoints`` task: top-down heatmap regression, OKS AP/AR (COCOeval), PCK.

Batches are ``(input (B, C, H, W), heatmaps (B, K, h, w), weights (B, K), meta)`` as made by
:class:`visattn.data.joint_transforms.TopDownTransform` from the samples of ``coco_keypoints`` or
``glyph_keypoints``; models return heatmaps (:mod:`visattn.models.pose`).

Training: HRNet's ``JointsMSELoss`` with target weights, ``0.5 · mean((w·(pred − target))²)``.
Evaluation: heatmaps of the input, averaged with those of the mirrored input mapped back (``flip_test``,
left/right pairs of the dataset), decoded with sub-pixel refinement (``decode``), mapped to the original
image through the inverse crop affine, then :class:`visattn.metrics.keypoints.KeypointMetrics` (rescoring,
OKS-NMS, COCOeval against the validation set's ``coco_gt()``; PCK/NME against the instances' own
keypoints). The ground truth comes from the validation dataset, built once more (without transform) the
first time a metric is made.

Recipe options (``task_kwargs``; every key optional):

======================  =====================================================================================
``input_size``          network input ``[H, W]`` (default ``[data.img_size, data.img_size]``; COCO ``[256, 192]``)
``heatmap_size``        ``[h, w]`` (default input / 4)
``sigma``               target Gaussian σ in heatmap pixels (default 2)
``padding``             box enlargement (1.25)
``scale_factor``        training scale jitter (0.35); ``rotation_factor`` (45°), ``rotation_prob`` (0.6)
``flip``                training flip probability (0.5)
``quantize``            encode at rounded positions (SimpleBaseline) instead of exact ones (false)
``use_target_weight``   weight the loss by visibility (true)
``flip_test``           average with the flipped input at evaluation (true)
``decode``              ``dark`` (default), ``quarter`` or ``argmax``; ``blur_kernel`` DARK modulation (11 for σ=2)
``in_vis_thresh``       rescoring threshold (0.2); ``oks_thresh`` OKS-NMS (0.9); ``use_nms`` (true)
``pck_alpha``           PCK threshold as a fraction of the box's longer side (0.1)
======================  =====================================================================================

``eval.metric``: ``AP`` (needs pycocotools, the ``keypoints`` extra; also ``AP50`` … ``AR``) or ``PCK``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from visattn.data.joint_transforms import TopDownTransform, affine_matrix, transform_points
from visattn.metrics.keypoints import (
    STATS_NAMES,
    KeypointMetrics,
    decode_heatmaps,
    flip_back,
    heatmap_to_input,
    require_cocoeval,
)

from .base import TaskSpec, build_split, check_metric_name, input_channels, register_task, task_options

__all__ = ["KeypointTask", "joints_mse_loss"]

KNOWN_KWARGS = (
    "input_size", "heatmap_size", "sigma", "padding", "scale_factor", "rotation_factor", "rotation_prob", "flip",
    "quantize", "use_target_weight", "flip_test", "decode", "blur_kernel", "in_vis_thresh", "oks_thresh",
    "use_nms", "pck_alpha",
)  # fmt: skip


def joints_mse_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``0.5 · mean over (B, K, h, w) of (w·(pred − target))²`` (HRNet's JointsMSELoss)."""
    diff = pred.float() - target.float()
    if weight is not None:
        diff = diff * weight.float()[..., None, None]
    return 0.5 * diff.square().mean()


def to_image_coords(
    coords: torch.Tensor,
    centers: torch.Tensor,
    sizes: torch.Tensor,
    input_size: Sequence[int],
    heatmap_size: Sequence[int],
) -> torch.Tensor:
    """Heatmap coordinates ``(B, K, 2)`` → original-image pixels via the inverse of each crop's affine map."""
    pts = heatmap_to_input(coords.double(), input_size, heatmap_size)
    inv = torch.stack(
        [
            torch.linalg.inv(affine_matrix(c.tolist(), s.tolist(), 0.0, input_size))
            for c, s in zip(centers, sizes, strict=True)
        ]
    )
    return transform_points(pts, inv).float()


class KeypointTask:
    """Top-down keypoint training and evaluation (see the module docstring for the options)."""

    def __init__(
        self,
        input_size: Sequence[int],
        heatmap_size: Sequence[int],
        reference=None,
        flip_pairs: Sequence[Sequence[int]] | None = None,
        use_target_weight: bool = True,
        flip_test: bool = True,
        decode: str = "dark",
        blur_kernel: int | None = None,
        in_vis_thresh: float = 0.2,
        oks_thresh: float = 0.9,
        use_nms: bool = True,
        pck_alpha: float = 0.1,
    ) -> None:
        self.input_size = tuple(int(v) for v in input_size)
        self.heatmap_size = tuple(int(v) for v in heatmap_size)
        self._reference = reference  # a dataset, or a zero-argument callable building it
        self.flip_pairs = tuple(tuple(p) for p in flip_pairs) if flip_pairs is not None else None
        self.use_target_weight = use_target_weight
        self.flip_test = flip_test
        if decode not in ("dark", "quarter", "argmax"):
            raise ValueError(f"task_kwargs.decode must be 'dark', 'quarter' or 'argmax', got {decode!r}")
        self.decode, self.blur_kernel = decode, blur_kernel
        self.in_vis_thresh, self.oks_thresh, self.use_nms, self.pck_alpha = (
            in_vis_thresh,
            oks_thresh,
            use_nms,
            pck_alpha,
        )
        self._gt: dict[int, Any] = {}  # COCO ground truth per evaluated dataset

    def reference(self):
        """The evaluation dataset (source of ``coco_gt()``, ``sigmas``, ``flip_pairs``), built on first use."""
        if callable(self._reference) and not hasattr(self._reference, "__getitem__"):
            self._reference = self._reference()
        return self._reference

    def train_module(self, model: nn.Module) -> nn.Module:
        return model

    def training_loss(self, model: nn.Module, batch, epoch: int) -> torch.Tensor:
        images, heatmaps, weights = batch[0], batch[1], batch[2]
        pred = model(images)
        if pred.shape != heatmaps.shape:
            raise ValueError(
                f"the model gives heatmaps of shape {tuple(pred.shape)}, the targets are {tuple(heatmaps.shape)}: "
                "set task_kwargs.heatmap_size to the model's output size (input / its stride)"
            )
        return joints_mse_loss(pred, heatmaps, weights if self.use_target_weight else None)

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Heatmaps ``(B, K, h, w)`` (flip-test averaged when enabled)."""
        heat = model(images).float()
        if self.flip_test:
            pairs = self.flip_pairs
            if pairs is None:
                pairs = getattr(self.reference(), "flip_pairs", None)
                if pairs is None:
                    raise ValueError(
                        "flip_test needs the dataset's flip_pairs (or task_kwargs.flip_test: false)"
                    )
                self.flip_pairs = pairs
            heat = 0.5 * (heat + flip_back(model(images.flip(-1)).float(), pairs))
        return heat

    @torch.no_grad()
    def evaluate_batch(self, model: nn.Module, batch, metric: KeypointMetrics) -> None:
        images, meta = batch[0], batch[3]
        heat = self.predict(model, images).cpu()
        coords, maxvals = decode_heatmaps(heat, self.decode, self.blur_kernel)
        points = to_image_coords(coords, meta["center"], meta["size"], self.input_size, self.heatmap_size)
        metric.update(
            meta["image_id"],
            points,
            maxvals,
            meta["score"],
            meta["area"],
            meta["index"],
            gt_keypoints=meta["keypoints"],
            norms=meta["norm"],
        )

    def metric_factory(self, dataset=None) -> KeypointMetrics:
        """A metric scored against ``dataset``'s ground truth (default: the validation split's)."""
        ref = dataset if dataset is not None else self.reference()
        if id(ref) not in self._gt and ref is not None and hasattr(ref, "coco_gt"):
            self._gt[id(ref)] = ref.coco_gt()
        sigmas = getattr(ref, "sigmas", None)
        kwargs = {"sigmas": sigmas} if sigmas is not None else {}
        return KeypointMetrics(
            self._gt.get(id(ref)),
            in_vis_thresh=self.in_vis_thresh,
            oks_thresh=self.oks_thresh,
            use_nms=self.use_nms,
            pck_alpha=self.pck_alpha,
            category_id=getattr(ref, "category_id", 1),
            **kwargs,
        )

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def _options(config: Mapping[str, Any]) -> dict[str, Any]:
    return task_options(config, "keypoints", KNOWN_KWARGS)


def _sizes(config: Mapping[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    tk = _options(config)
    size = config["data"]["img_size"]
    inp = tk.get("input_size", [size, size])
    inp = (int(inp), int(inp)) if isinstance(inp, int) else (int(inp[0]), int(inp[1]))
    hm = tk.get("heatmap_size", [inp[0] // 4, inp[1] // 4])
    hm = (int(hm), int(hm)) if isinstance(hm, int) else (int(hm[0]), int(hm[1]))
    return inp, hm


def keypoint_transform(config: Mapping[str, Any], train: bool) -> TopDownTransform:
    tk, d = _options(config), config["data"]
    inp, hm = _sizes(config)
    return TopDownTransform(
        train,
        input_size=inp,
        heatmap_size=hm,
        sigma=tk.get("sigma", 2.0),
        mean=d["mean"],
        std=d["std"],
        padding=tk.get("padding", 1.25),
        scale_factor=tk.get("scale_factor", 0.35),
        rotation_factor=tk.get("rotation_factor", 45.0),
        rotation_prob=tk.get("rotation_prob", 0.6),
        flip=tk.get("flip", 0.5),
        quantize=tk.get("quantize", False),
        channels=input_channels(config),
    )


def build_keypoint_task(config: Mapping[str, Any], model: nn.Module, train_set) -> KeypointTask:
    tk = _options(config)
    check_metric_name(config, (*STATS_NAMES, "PCK", "NME"))
    if config["eval"]["metric"] in STATS_NAMES:
        require_cocoeval()  # fail now, with the install hint, rather than after the first epoch
    inp, hm = _sizes(config)

    def reference():
        return build_split(config, "val", transform=None)

    return KeypointTask(
        inp,
        hm,
        reference=reference,
        flip_pairs=getattr(train_set, "flip_pairs", None),
        use_target_weight=tk.get("use_target_weight", True),
        flip_test=tk.get("flip_test", True),
        decode=tk.get("decode", "dark"),
        blur_kernel=tk.get("blur_kernel"),
        in_vis_thresh=tk.get("in_vis_thresh", 0.2),
        oks_thresh=tk.get("oks_thresh", 0.9),
        use_nms=tk.get("use_nms", True),
        pck_alpha=tk.get("pck_alpha", 0.1),
    )


def whole_image_sample(image: torch.Tensor) -> dict[str, Any]:
    """A top-down sample whose person box is the whole image (inference on image files without boxes).

    Pixel centres are integers (:mod:`visattn.data.heatmaps`), so the image covers ``[-0.5, W - 0.5]``: the box
    starts half a pixel before the first centre and the crop is centred on ``((W - 1) / 2, (H - 1) / 2)``.
    """
    h, w = image.shape[-2:]
    return {"image": image, "keypoints": torch.zeros(1, 3), "box": [-0.5, -0.5, float(w), float(h)]}


def keypoint_image_input(config: Mapping[str, Any]):
    """``f(uint8 image) -> model input``: the evaluation crop of the whole image (see :func:`whole_image_sample`)."""
    transform = keypoint_transform(config, False)
    return lambda image: transform(whole_image_sample(image))[0]


register_task("keypoints", TaskSpec(build_keypoint_task, keypoint_transform, keypoint_image_input))
