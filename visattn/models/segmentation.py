"""Semantic-segmentation networks with and without Polarized Self-Attention (PSA) in the backbone.

A :class:`SegmentationModel` is a ``features_only`` backbone plus a head; ``forward(x)`` returns logits
``(B, num_classes, H, W)`` at the input resolution (bilinear upsampling, ``align_corners=False``). The
heads are defined in :mod:`visattn.models._seg_heads` and re-exported here.

* ``fcn_resnet{50,101}`` / ``deeplabv3_resnet{50,101}``: timm ResNet, dilated to output stride 8
  (``output_stride=8``, dilation 2/4 in the last two stages, as torchvision's FCN / DeepLabV3); head
  :class:`FCNHead` (3×3 conv-BN-ReLU to ``in/4`` channels, dropout 0.1, 1×1 classifier) resp.
  :class:`ASPPHead` (DeepLabV3: 1×1 + three 3×3 atrous branches with rates 12/24/36 + image pooling,
  256 channels, projection, 3×3 conv-BN-ReLU, classifier). No auxiliary head.
  ``psa_*``: the same on :mod:`visattn.models.psa`'s ResNets (PSA after the 3×3 conv-BN-ReLU of every
  Bottleneck by default — a library choice, see :mod:`visattn.models.insert`).
* ``seg_hrnet_w{18_small,18,32,48}``: timm HRNet features (stem and ``incre`` head left out: the four
  branch outputs of stage 4, ``feature_location=''``) with HRNetV2's concat head (:class:`ConcatHead`:
  upsample all branches to the stride-4 one, concatenate, 1×1 conv-BN-ReLU with as many channels, 1×1
  classifier). ``psa_seg_hrnet_*``: PSA in every BasicBlock of stages 2–4 (the official placement of
  ``DeLightCMU/PSA``; the official network is HRNetV2-**OCR** with hierarchical multi-scale attention,
  which is not reproduced: this is plain HRNetV2-W48 + PSA).
* ``seg_glyphnet`` / ``psa_seg_glyphnet``: the built-in canvases' trunk (:mod:`visattn.models.glyphnet`;
  levels at strides 2, 4, 8, 8) with a :class:`ConcatHead` of ``head_channels=64`` at stride 2. GlyphNet has
  no residual blocks, so PSA goes after the conv-BN-ReLU of the levels listed in ``psa_levels`` (default
  ``(2, 3, 4)``: strides 4, 8, 8 — the analogue of "after the first conv-BN-ReLU of a block") or, with
  ``psa_levels="trunk"``, once after the last level.

PSA options (every ``psa_*`` entrypoint): ``psa_layout="parallel"|"sequential"``,
``psa_variant="paper"|"official"``, ``psa_init="kaiming"|"hrnet_official"``, ``psa_bias``; ResNets also
``position``, HRNets ``psa_stage1`` (see :mod:`visattn.models.psa`). ``pretrained=True,
pretrained_file=...`` loads a *plain* ImageNet classification checkpoint of the backbone (before PSA is
inserted); ``checkpoint_path`` loads a whole segmentation checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs
from torch import nn

from ..layers.polarized import PolarizedSelfAttention
from . import glyphnet as _glyphnet  # noqa: F401 - registers glyphnet with timm
from . import psa as _psa_models  # noqa: F401 - registers the psa_* backbones with timm
from ._registry import register_model
from ._seg_heads import ASPPHead, ConcatHead, FCNHead, conv_bn_relu  # noqa: F401  (re-exported)
from .insert import AttentionAfter

__all__ = ["ASPPHead", "ConcatHead", "FCNHead", "SegmentationModel", "insert_glyphnet_psa", "segment"]

PSA_KEYS = ("psa_layout", "psa_variant", "psa_init", "psa_bias", "position", "psa_stage1")


_HEADS = {"fcn": FCNHead, "aspp": ASPPHead, "concat": ConcatHead}


class DenseModel(nn.Module):
    """``features_only`` backbone + per-pixel head with timm's model interface (shared by the segmentation
    and pose families; ``num_classes`` = classes or keypoints, ``head.classifier`` a 1×1 conv)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.num_features = head.num_features
        self.feature_info = backbone.feature_info

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        dev = next(self.head.parameters()).device
        self.head.classifier = (
            nn.Conv2d(self.num_features, num_classes, 1) if num_classes else nn.Identity()
        ).to(dev)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)

    def forward_head(self, feats: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        return self.head(feats, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SegmentationModel(DenseModel):
    """``features_only`` backbone + head; logits at input resolution (timm-style interface)."""

    def __init__(self, backbone: nn.Module, head: str, num_classes: int, **head_kwargs: Any) -> None:
        super().__init__(
            backbone, _HEADS[head](backbone.feature_info.channels(), num_classes, **head_kwargs), num_classes
        )
        self.head_name = head
        self.head_kwargs = head_kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward_head(self.forward_features(x))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def segment(
    model: nn.Module,
    images: torch.Tensor,
    mode: str = "whole",
    window: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    flip: bool = False,
) -> torch.Tensor:
    """Logits ``(B, C, H, W)`` of ``images``: ``"whole"`` (one pass) or ``"slide"`` (sliding window).

    Sliding window (mmseg's ``slide_inference``): windows of ``window = (h, w)`` every ``stride`` pixels, the
    last row/column aligned with the border; an image smaller than the window is padded with zeros
    (bottom/right) for the pass and cropped back; overlapping logits are averaged. ``flip`` adds the
    mirrored input's logits (mirrored back) and averages.
    """

    def run(x: torch.Tensor) -> torch.Tensor:
        out = model(x).float()
        if flip:
            out = 0.5 * (out + model(x.flip(-1)).float().flip(-1))
        return out

    if mode == "whole":
        return run(images)
    if mode != "slide":
        raise ValueError(f"inference mode must be 'whole' or 'slide', got {mode!r}")
    if window is None:
        raise ValueError("sliding-window inference needs window=(h, w)")
    wh, ww = (int(window), int(window)) if isinstance(window, int) else (int(window[0]), int(window[1]))
    stride = stride if stride is not None else (wh * 2 // 3, ww * 2 // 3)
    sh, sw = (int(stride), int(stride)) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
    B, _, H, W = images.shape
    ph, pw = max(wh - H, 0), max(ww - W, 0)
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    Hp, Wp = x.shape[-2:]
    rows = max((Hp - wh + sh - 1) // sh, 0) + 1
    cols = max((Wp - ww + sw - 1) // sw, 0) + 1
    logits = None
    count = x.new_zeros((1, 1, Hp, Wp))
    for r in range(rows):
        for c in range(cols):
            y0 = min(r * sh, Hp - wh)
            x0 = min(c * sw, Wp - ww)
            out = run(x[..., y0 : y0 + wh, x0 : x0 + ww])
            if logits is None:
                logits = x.new_zeros((B, out.shape[1], Hp, Wp))
            logits[..., y0 : y0 + wh, x0 : x0 + ww] += out
            count[..., y0 : y0 + wh, x0 : x0 + ww] += 1
    return (logits / count)[..., :H, :W]


# ------------------------------------------------------------------------------------------ backbones
def split_psa_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in PSA_KEYS if k in kwargs}


def backbone_kwargs(pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for the backbone's factory (pretrained file, input channels, drop path...)."""
    out: dict[str, Any] = {}
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("cache_dir", None)
    overlay = kwargs.pop("pretrained_cfg_overlay", None)
    if pretrained:
        out.update(pretrained=True, pretrained_cfg_overlay=overlay or {})
    for key in ("in_chans", "drop_path_rate", "drop_block_rate", "output_stride", "width"):
        if key in kwargs:
            out[key] = kwargs.pop(key)
    return out


def insert_glyphnet_psa(
    backbone: nn.Module, levels: Sequence[int] | str = (2, 3, 4), **psa_kwargs: Any
) -> nn.Module:
    """PSA after the conv-BN-ReLU of GlyphNet levels (0 = stem, 1..4 = stages) or once after the trunk."""
    from .glyphnet import ConvBnAct

    blocks = [m for _, m in backbone.named_modules() if isinstance(m, ConvBnAct)]  # stem, stages 0..3
    if levels != "trunk" and (isinstance(levels, str) or not all(0 <= int(i) < len(blocks) for i in levels)):
        raise ValueError(
            f"psa_levels must be 'trunk' or level indices in 0..{len(blocks) - 1}, got {levels!r}"
        )
    chosen = [blocks[-1]] if levels == "trunk" else [blocks[int(i)] for i in levels]
    kw = {
        "layout": psa_kwargs.get("psa_layout", "parallel"),
        "variant": psa_kwargs.get("psa_variant", "paper"),
        "init": psa_kwargs.get("psa_init", "kaiming"),
        "bias": psa_kwargs.get("psa_bias", False),
    }
    for block in chosen:
        block.act = AttentionAfter(block.act, PolarizedSelfAttention(block.conv.out_channels, **kw))
    return backbone


def _resnet_backbone(base: str, psa: bool, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    psa_kw = split_psa_kwargs(kwargs)
    bk = backbone_kwargs(pretrained, kwargs)
    bk.setdefault("output_stride", 8)
    common = dict(features_only=True, out_indices=(4,), **bk)
    if psa:
        return timm.create_model(f"psa_{base}", **common, **psa_kw)
    if psa_kw:
        raise TypeError(f"{sorted(psa_kw)} apply only to the psa_* models")
    return timm.create_model(base, **common)


def _hrnet_backbone(base: str, psa: bool, pretrained: bool, kwargs: dict[str, Any], out_indices) -> nn.Module:
    psa_kw = split_psa_kwargs(kwargs)
    bk = backbone_kwargs(pretrained, kwargs)
    bk.pop("output_stride", None)
    common = dict(features_only=True, feature_location="", out_indices=out_indices, **bk)
    if psa:
        return timm.create_model(f"psa_{base}", **common, **psa_kw)
    if psa_kw:
        raise TypeError(f"{sorted(psa_kw)} apply only to the psa_* models")
    return timm.create_model(base, **common)


def _glyph_backbone(psa: bool, kwargs: dict[str, Any]) -> nn.Module:
    levels = kwargs.pop("psa_levels", None)
    psa_kw = split_psa_kwargs(kwargs)
    if levels is not None:
        psa_kw["psa_levels"] = levels
    bk = backbone_kwargs(False, kwargs)
    bk.setdefault("in_chans", 1)
    backbone = timm.create_model("glyphnet", features_only=True, out_indices=(1, 2, 3, 4), **bk)
    if psa:
        levels = psa_kw.pop("psa_levels", (2, 3, 4))
        insert_glyphnet_psa(backbone, levels if isinstance(levels, str) else tuple(levels), **psa_kw)
    elif psa_kw:
        raise TypeError(f"{sorted(psa_kw)} apply only to the psa_* models")
    return backbone


def _finish(model: nn.Module, name: str) -> nn.Module:
    """Attach the model's timm configuration (input size, mean/std, classifier name)."""
    model.pretrained_cfg = model.default_cfg = timm.models.get_pretrained_cfg(name).to_dict()
    return model


def _build(
    name: str, backbone: nn.Module, head: str, num_classes: int, kwargs: dict[str, Any]
) -> SegmentationModel:
    head_kwargs = {k: kwargs.pop(k) for k in ("head_channels", "dropout", "rates") if k in kwargs}
    if "head_channels" in head_kwargs:
        head_kwargs["channels"] = head_kwargs.pop("head_channels")
    for key in ("global_pool", "drop_rate"):
        kwargs.pop(key, None)
    if kwargs:
        raise TypeError(f"{name}: unexpected keyword arguments {sorted(kwargs)}")
    return _finish(SegmentationModel(backbone, head, num_classes, **head_kwargs), name)


_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _seg_cfg(**kwargs: Any) -> dict[str, Any]:
    cfg = dict(
        num_classes=19,
        input_size=(3, 512, 1024),
        interpolation="bilinear",
        crop_pct=1.0,
        classifier="head.classifier",
    )
    cfg.update(_IMAGENET)
    cfg.update(kwargs)
    return cfg


_RESNET_NAMES = [f"{p}{h}_resnet{d}" for p in ("", "psa_") for h in ("fcn", "deeplabv3") for d in (50, 101)]
_HRNET_NAMES = [f"{p}seg_hrnet_{w}" for p in ("", "psa_") for w in ("w18_small", "w18", "w32", "w48")]
default_cfgs = generate_default_cfgs(
    {
        **{n: _seg_cfg(num_classes=21, input_size=(3, 512, 512)) for n in _RESNET_NAMES},
        **{n: _seg_cfg(first_conv="backbone.conv1") for n in _HRNET_NAMES},
        **{
            n: _seg_cfg(num_classes=11, input_size=(1, 64, 64), mean=(0.0,), std=(1.0,))
            for n in ("seg_glyphnet", "psa_seg_glyphnet")
        },
    }
)


def _resnet_entry(head: str, depth: int, psa: bool):
    name = f"{'psa_' if psa else ''}{'fcn' if head == 'fcn' else 'deeplabv3'}_resnet{depth}"

    def entry(pretrained: bool = False, num_classes: int = 21, **kwargs: Any) -> SegmentationModel:
        backbone = _resnet_backbone(f"resnet{depth}", psa, pretrained, kwargs)
        return _build(name, backbone, head, num_classes, kwargs)

    entry.__name__ = entry.__qualname__ = name
    kind = "FCN" if head == "fcn" else "DeepLabV3 (ASPP)"
    entry.__doc__ = f"{kind} on a dilated (output stride 8) ResNet-{depth}{' with PSA in every Bottleneck' if psa else ''}."
    return register_model(entry)


def _hrnet_entry(width: str, psa: bool):
    name = f"{'psa_' if psa else ''}seg_hrnet_{width}"

    def entry(pretrained: bool = False, num_classes: int = 19, **kwargs: Any) -> SegmentationModel:
        backbone = _hrnet_backbone(f"hrnet_{width}", psa, pretrained, kwargs, (1, 2, 3, 4))
        return _build(name, backbone, "concat", num_classes, kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"HRNetV2-{width.upper()} with the concat head{' and PSA in every branch BasicBlock' if psa else ''}."
    )
    return register_model(entry)


def _glyph_entry(psa: bool):
    name = f"{'psa_' if psa else ''}seg_glyphnet"

    def entry(pretrained: bool = False, num_classes: int = 11, **kwargs: Any) -> SegmentationModel:
        if pretrained:
            raise ValueError(f"{name} has no pretrained backbone file format; use checkpoint_path=")
        kwargs.setdefault("head_channels", 64)
        backbone = _glyph_backbone(psa, kwargs)
        return _build(name, backbone, "concat", num_classes, kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"GlyphNet levels 1-4 + concat head at stride 2{' with PSA (psa_levels)' if psa else ''}."
    return register_model(entry)


for _psa in (False, True):
    for _head in ("fcn", "aspp"):
        for _depth in (50, 101):
            _resnet_entry(_head, _depth, _psa)
    for _width in ("w18_small", "w18", "w32", "w48"):
        _hrnet_entry(_width, _psa)
    _glyph_entry(_psa)
