"""Top-down human-pose networks (heatmap regression) with and without Polarized Self-Attention (PSA).

``forward(x)`` returns ``K`` heatmaps ``(B, K, H/4, W/4)`` (``num_classes`` = number of keypoints ``K``,
so recipes get it from the dataset's keypoint names; 17 for COCO).

* ``simplebaseline_resnet{18,50,101}`` — SimpleBaseline (Xiao, Wu & Wei, ECCV 2018,
  ``microsoft/human-pose-estimation.pytorch``): timm ResNet (stride 32) + :class:`DeconvHead` (three
  4×4 stride-2 transposed convs with 256 channels, BN, ReLU; final 1×1 conv; deconvs and the final conv
  drawn from ``N(0, 0.001)``, biases 0, as the reference ``init_weights``). ``psa_*``: the ResNets of
  :mod:`visattn.models.psa` (PSA after the 3×3 conv-BN-ReLU of every Bottleneck / the first conv-BN-ReLU of
  every BasicBlock): the paper's SimpleBaseline-PSA code is unreleased, so this placement is **UNVERIFIED**
  (a library choice; ``position="after_conv1"`` moves it).
* ``pose_hrnet_w{18_small,32,48}`` — HRNet pose (Sun et al., CVPR 2019, ``HRNet/deep-high-resolution-net``)
  on timm's HRNet: the stride-4 branch after stage 4 (its final fusion includes the lower-resolution
  branches) and a 1×1 conv to ``K`` heatmaps. ``psa_pose_hrnet_*`` — PSA in every BasicBlock of stages
  2–4, the placement of the official PSA HRNet code; published PSA pose results are UDP-Pose-PSA (UDP's
  data processing, not reproduced beyond the unbiased coordinates of :mod:`visattn.data.heatmaps`).
  As in the reference (``multi_scale_output=False``), the last module of stage 4 fuses only into the stride-4
  branch: 28,536,113 (W32) / 63,595,745 (W48) parameters with 17 keypoints, the published 28.5 M / 63.6 M.
* ``pose_glyphnet`` / ``psa_pose_glyphnet`` — the built-in canvases' trunk (stride 8) + a
  :class:`DeconvHead` with ``num_deconv=2`` and 32 channels (stride 2); PSA after the conv-BN-ReLU of the
  GlyphNet levels ``psa_levels`` (default ``(2, 3, 4)``) or once after the trunk (``"trunk"``), as for
  ``psa_seg_glyphnet``.

PSA options as in :mod:`visattn.models.segmentation`. ``pretrained=True, pretrained_file=`` loads a plain
ImageNet classification checkpoint of the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from timm.models import generate_default_cfgs
from torch import nn

from . import glyphnet as _glyphnet  # noqa: F401 - registers glyphnet with timm
from . import psa as _psa_models  # noqa: F401 - registers the psa_* backbones with timm
from ._registry import register_model
from .segmentation import (
    DenseModel,
    _finish,
    _glyph_backbone,
    _hrnet_backbone,
    backbone_kwargs,
    split_psa_kwargs,
)

__all__ = ["DeconvHead", "HeatmapHead", "PoseModel"]


class DeconvHead(nn.Module):
    """SimpleBaseline head: ``num_deconv`` × (4×4 stride-2 transposed conv, BN, ReLU), then a 1×1 conv."""

    def __init__(
        self, in_channels: int, num_keypoints: int, num_deconv: int = 3, channels: int = 256, kernel: int = 4
    ):
        super().__init__()
        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel]
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(cin, channels, kernel, 2, padding, output_padding, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            cin = channels
        self.deconv = nn.Sequential(*layers)
        self.num_features = cin
        self.classifier = nn.Conv2d(cin, num_keypoints, 1) if num_keypoints else nn.Identity()
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        x = self.deconv(feats[-1])
        return x if pre_logits else self.classifier(x)


class HeatmapHead(nn.Module):
    """HRNet pose head: a 1×1 conv from the highest-resolution branch to ``K`` heatmaps."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        self.num_features = in_channels
        self.classifier = nn.Conv2d(in_channels, num_keypoints, 1) if num_keypoints else nn.Identity()
        if num_keypoints:
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, feats: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        return feats[0] if pre_logits else self.classifier(feats[0])


class PoseModel(DenseModel):
    """``features_only`` backbone + heatmap head (timm-style interface; ``num_classes`` = keypoints)."""


def _check_left(name: str, kwargs: dict[str, Any]) -> None:
    for key in ("global_pool", "drop_rate"):
        kwargs.pop(key, None)
    if kwargs:
        raise TypeError(f"{name}: unexpected keyword arguments {sorted(kwargs)}")


def _pose_cfg(**kwargs: Any) -> dict[str, Any]:
    cfg = dict(
        num_classes=17,
        input_size=(3, 256, 192),
        interpolation="bilinear",
        crop_pct=1.0,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        classifier="head.classifier",
    )
    cfg.update(kwargs)
    return cfg


_SB = [f"{p}simplebaseline_resnet{d}" for p in ("", "psa_") for d in (18, 50, 101)]
_HR = [f"{p}pose_hrnet_{w}" for p in ("", "psa_") for w in ("w18_small", "w32", "w48")]
default_cfgs = generate_default_cfgs(
    {
        **{n: _pose_cfg() for n in _SB + _HR},
        **{
            n: _pose_cfg(num_classes=5, input_size=(1, 32, 32), mean=(0.0,), std=(1.0,))
            for n in ("pose_glyphnet", "psa_pose_glyphnet")
        },
    }
)


def _head_kwargs(kwargs: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key in ("num_deconv", "head_channels"):
        if key in kwargs:
            out["channels" if key == "head_channels" else key] = kwargs.pop(key)
    return out


def _sb_entry(depth: int, psa: bool):
    name = f"{'psa_' if psa else ''}simplebaseline_resnet{depth}"

    def entry(pretrained: bool = False, num_classes: int = 17, **kwargs: Any) -> PoseModel:
        psa_kw = split_psa_kwargs(kwargs)
        head_kw = _head_kwargs(kwargs, {"num_deconv": 3, "channels": 256})
        bk = backbone_kwargs(pretrained, kwargs)
        base = f"{'psa_' if psa else ''}resnet{depth}"
        if psa_kw and not psa:
            raise TypeError(f"{sorted(psa_kw)} apply only to the psa_* models")
        backbone = timm.create_model(base, features_only=True, out_indices=(4,), **bk, **psa_kw)
        _check_left(name, kwargs)
        head = DeconvHead(backbone.feature_info.channels()[-1], num_classes, **head_kw)
        return _finish(PoseModel(backbone, head, num_classes), name)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"SimpleBaseline-ResNet-{depth} (3 deconvs){' with PSA (UNVERIFIED placement)' if psa else ''}."
    )
    return register_model(entry)


def _hr_entry(width: str, psa: bool):
    name = f"{'psa_' if psa else ''}pose_hrnet_{width}"

    def entry(pretrained: bool = False, num_classes: int = 17, **kwargs: Any) -> PoseModel:
        backbone = _hrnet_backbone(f"hrnet_{width}", psa, pretrained, kwargs, (1,))
        # The reference's last module fuses only into the stride-4 branch (multi_scale_output=False); dropping
        # the other fuse layers gives the published parameter counts and leaves no unused parameter (DDP).
        last = backbone.stage4[-1]
        last.fuse_layers = last.fuse_layers[:1]
        last.multi_scale_output = False
        _check_left(name, kwargs)
        head = HeatmapHead(backbone.feature_info.channels()[0], num_classes)
        return _finish(PoseModel(backbone, head, num_classes), name)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"HRNet-{width.upper()} pose (stride-4 branch, 1×1 head){' with PSA in every BasicBlock' if psa else ''}."
    return register_model(entry)


def _glyph_entry(psa: bool):
    name = f"{'psa_' if psa else ''}pose_glyphnet"

    def entry(pretrained: bool = False, num_classes: int = 5, **kwargs: Any) -> PoseModel:
        if pretrained:
            raise ValueError(f"{name} has no pretrained backbone file format; use checkpoint_path=")
        head_kw = _head_kwargs(kwargs, {"num_deconv": 2, "channels": 32})
        backbone = _glyph_backbone(psa, kwargs)
        _check_left(name, kwargs)
        head = DeconvHead(backbone.feature_info.channels()[-1], num_classes, **head_kw)
        return _finish(PoseModel(backbone, head, num_classes), name)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"GlyphNet + 2 deconvs (stride 2){' with PSA (psa_levels)' if psa else ''}."
    return register_model(entry)


def _register(
    depths: Sequence[int] = (18, 50, 101), widths: Sequence[str] = ("w18_small", "w32", "w48")
) -> None:
    for psa in (False, True):
        for depth in depths:
            _sb_entry(depth, psa)
        for width in widths:
            _hr_entry(width, psa)
        _glyph_entry(psa)


_register()
