"""VAA networks: a timm CNN backbone with VAA attention branches on tapped feature maps.

Paper: Nikolaos Sarafianos, Xiang Xu, Ioannis A. Kakadiaris, "Deep Imbalanced Attribute
Classification using Visual Attention Aggregation", ECCV 2018, arXiv 1807.03903.
Official code: https://github.com/cvcode18/imbalanced_learning (MXNet Gluon, ``models.py`` and
``wider_training.py``; no weights were ever released). Spec: ``vaa.md`` §1 and §6. The losses (weighted
focal loss, history-weighted attention loss) are not in this module; tap selection and the backbone walk
up to the taps are in :mod:`visattn.models._vaa_taps`.

Structure (``C`` attributes)::

    image ─ backbone ─┬─ tap 1 ─ AttentionAggregation ─ y_a1
                      ├─ …
                      └─ tap n (= final stage) ─┬─ AttentionAggregation ─ y_an
                                                └─ GAP → Linear(C) ─────── y_p (primary)
    fused logits y = mean(y_p, y_a1, …, y_an)

=====================  =========================================  ==========================================
                       ``layout="paper"`` (default)                ``layout="released"`` (official code)
=====================  =========================================  ==========================================
taps (ResNet-101)      ``layer3``, ``layer4`` (14², 7² at 224 px)  ``layer3.19``, ``layer3.22``, ``layer4.2``
``f_att``              1×1 256 → 1×1 256 → 1×1 C                   1×1 512 → 3×3 512 → 1×1 C
``f_sr``               256 → 512 → k×k 512 → Linear C              256 → 512 → k×k 1024 → Linear C
fusion                 mean of 3 logits (UNVERIFIED: logits)       mean of 4 logits (code: ``0.25·Σ``)
=====================  =========================================  ==========================================

The branch (:class:`visattn.layers.AttentionAggregation`) documents its own choices (BN/ReLU placement,
biases, kernel sizes of the paper layout, MXNet init). Here, where visattn differs from or chooses for
the paper / official code:

- Backbone: timm's ``resnet101`` (torchvision-style v1.5, stride on the 3×3 conv); the official model is
  Gluon ``resnet101_v1`` (stride on the first 1×1 conv). Same parameter count, different features.
  ImageNet weights are a local file, ``pretrained_backbone=`` (loaded by timm into the backbone,
  its classifier dropped); the factory's ``pretrained_file=`` is a full VAA checkpoint.
- Normalisation: ``default_cfg`` holds ImageNet mean/std (on 0–1 inputs) for timm's backbone weights.
  The official code subtracts (R, G, B) = (104, 117, 123) from 0–255 pixels, no std; the same transform
  is ``mean=(104/255, 117/255, 123/255), std=(1/255,) * 3`` in a timm data config.
- Paper fusion averages logits (the paper text is unverified on logits vs probabilities);
  ``forward`` returns the fused **logits** — apply ``sigmoid`` for probabilities (the code's
  ``sigmoid(0.25·Σ logits)``). :meth:`VAANet.forward_branches` also returns every branch's logits, which
  the VAA loss needs.
- Primary ``Linear`` uses the same ``init`` as the branches (``"mxnet"``: N(0, 2/fan_in), zero bias).
  ``drop_rate`` (dropout before it, default 0) is a timm option, not in either source.
- The full-extent conv of ``f_sr`` fixes the input size: each branch's ``feature_size`` is the tap's grid
  at ``img_size`` (default 224 → 14×14 / 7×7), measured by a shape-only (meta-device) pass through the
  backbone. Other sizes raise the layer's ``ValueError``; ``sr_pool="adaptive"`` accepts any size
  (documented deviation of the layer).
- Other backbones (generic ``vaa``, any timm CNN whose ``forward_features`` runs its top-level children in
  order — the assumption of timm's ``features_only``): ``"paper"`` taps the outputs of the last two
  ``feature_info`` stages; ``"released"`` taps the last block of the last stage, the last block of the
  penultimate stage and, in that stage of ``n ≥ 2`` blocks, block ``min(round(20·n/23) − 1, n − 2)``
  (the code's relative depth, block 20 of 23; exactly ``layer3.19`` for ResNet-101). ``taps=`` names any
  modules instead (dotted paths in the backbone, in forward order, each reachable through
  ``nn.Sequential`` containers; the last must be the final stage output, which the primary branch
  pools). Backbone children after the final stage (classifier, and e.g. EfficientNet's ``conv_head``)
  are replaced by ``nn.Identity``: the primary branch pools the final *stage* output.

timm interface: ``forward_features(x)`` returns the **list of tapped maps** (one per branch, in tap
order; the last is the final stage map), ``forward_head(features, pre_logits)`` takes that list, so
``forward_head(forward_features(x)) == forward(x)``; ``pre_logits`` gives the pooled final map
``(B, num_features)``. ``get_classifier()`` is the primary ``Linear``; ``reset_classifier`` rebuilds it
and all branches (``f_att``'s last conv, ``f_conv``, ``f_sr``'s first conv and ``Linear`` depend on
``C``); with 0 classes there are no branches and ``forward`` returns pooled features. ``features_only=True`` returns the backbone's stage
maps (timm ``FeatureGetterNet`` over the backbone's ``forward_intermediates``).

Size at 224 px, 14 classes: ``vaa_resnet101`` paper 108,016,290 parameters, released 283,466,188 (each
stage-3 released branch alone 105,823,018: its 14×14 full-extent conv is 512·1024·196 weights).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from visattn.layers.aggregation import AttentionAggregation, _pair

from ._registry import register_model
from ._vaa_taps import LAYOUTS, default_taps, plan_taps, run_taps, stage_info, tap_shapes

__all__ = ["VAANet", "default_taps"]


def _fuse(primary: torch.Tensor, attention: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([primary, *attention]).mean(0) if attention else primary


class VAANet(nn.Module):
    """Visual Attention Aggregation network (see the module docstring).

    Args:
        backbone: timm CNN name (e.g. ``"resnet101"``), created without classifier.
        num_classes: attributes ``C`` (0: no classifier and no branches; ``forward`` gives pooled features).
        layout: ``"paper"`` or ``"released"``: the branch structure and the default taps.
        taps: module paths in the backbone to attach branches to (default: :func:`default_taps`).
        img_size: training input size; fixes each branch's full-extent ``f_sr`` kernel.
        sr_pool: ``None`` or ``"adaptive"`` (any input size; see ``AttentionAggregation``).
        att_channels, sr_channels, init: passed to every ``AttentionAggregation`` (``init`` also sets the
            primary ``Linear``'s initialisation).
        in_chans, drop_path_rate: passed to the backbone; ``backbone_kwargs``: further backbone options.
        global_pool, drop_rate: pooling type and dropout of the primary branch.
        pretrained_backbone: local ImageNet weights of ``backbone`` (timm loads them; never downloads) — the
            same key as CSRA's. ``backbone_pretrained_file``: its former name, still accepted (deprecated).
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        num_classes: int = 14,
        layout: str = "paper",
        taps: Sequence[str] | None = None,
        img_size: int | Sequence[int] = 224,
        sr_pool: str | None = None,
        att_channels: Sequence[int] | None = None,
        sr_channels: Sequence[int] | None = None,
        init: str = "mxnet",
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        pretrained_backbone: str | Path | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        backbone_pretrained_file: str | Path | None = None,
    ) -> None:
        super().__init__()
        if backbone_pretrained_file is not None:
            if pretrained_backbone is not None:
                raise ValueError(
                    "give pretrained_backbone (backbone_pretrained_file is its deprecated name), not both"
                )
            warnings.warn(
                "VAANet(backbone_pretrained_file=) is deprecated: use pretrained_backbone= (the key CSRA uses too)",
                DeprecationWarning,
                stacklevel=2,
            )
            pretrained_backbone = backbone_pretrained_file
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
        bb_kwargs = dict(backbone_kwargs or {}, in_chans=in_chans)
        if drop_path_rate is not None:
            bb_kwargs["drop_path_rate"] = drop_path_rate
        if pretrained_backbone is not None:
            if not Path(pretrained_backbone).is_file():
                raise FileNotFoundError(f"pretrained_backbone {str(pretrained_backbone)!r} does not exist")
            bb_kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_backbone)}
        self.backbone = timm.create_model(
            backbone, pretrained=pretrained_backbone is not None, num_classes=0, **bb_kwargs
        )
        info = stage_info(self.backbone)
        self.layout = layout
        self.taps = tuple(taps) if taps is not None else default_taps(self.backbone, layout)
        if not self.taps or not all(isinstance(t, str) for t in self.taps):
            raise ValueError(f"taps must be a non-empty sequence of module paths, got {taps!r}")
        self._steps, self._tap_steps = plan_taps(self.backbone, self.taps, info[-1]["module"])
        used = {s.split(".")[0] for s in self._steps}
        for name, _ in list(self.backbone.named_children()):
            if name not in used:  # after the final stage: classifier, head convs/norms
                setattr(self.backbone, name, nn.Identity())

        self.img_size = _pair("img_size", img_size)
        shapes = tap_shapes(self.backbone, self._steps, self._tap_steps, in_chans, self.img_size)
        self.tap_channels = tuple(s[0] for s in shapes)
        self.feature_sizes = tuple((s[1], s[2]) for s in shapes)
        self._branch_kwargs = dict(
            layout=layout, sr_pool=sr_pool, att_channels=att_channels, sr_channels=sr_channels, init=init
        )
        self.init = init
        self.num_features = self.head_hidden_size = self.tap_channels[-1]
        self.feature_info = [dict(d, module=f"backbone.{d['module']}") for d in info]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.global_pool_type = global_pool
        self.reset_classifier(num_classes, global_pool)

    def _make_branches(self, num_classes: int) -> nn.ModuleList:
        if num_classes == 0:
            return nn.ModuleList()
        return nn.ModuleList(
            AttentionAggregation(ch, num_classes, feature_size=size, **self._branch_kwargs)
            for ch, size in zip(self.tap_channels, self.feature_sizes, strict=True)
        )

    def get_classifier(self) -> nn.Module:
        """The primary branch's ``Linear`` (the attention branches in ``branches`` also classify)."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Rebuild the primary classifier and every attention branch for ``num_classes`` (0: none)."""
        if global_pool is not None:
            self.global_pool_type = global_pool
        ref = next(self.backbone.parameters(), None)
        factory = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(
            self.num_features, num_classes, pool_type=self.global_pool_type, **factory
        )
        if isinstance(self.fc, nn.Linear) and self.init == "mxnet":
            nn.init.kaiming_normal_(self.fc.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.fc.bias)
        self.branches = self._make_branches(num_classes).to(**factory)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped backbone maps, one per branch in tap order; the last is the final stage map."""
        return run_taps(
            self.backbone, self._steps, self._tap_steps, x, self.grad_checkpointing and self.training
        )

    def _pool(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(features, torch.Tensor) or len(features) != len(self.taps):
            raise TypeError(f"expected the list of {len(self.taps)} tapped maps returned by forward_features")
        x = self.global_pool(features[-1])
        return F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x

    def _logits(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        primary = self.fc(self._pool(features))
        return primary, [branch(f) for branch, f in zip(self.branches, features, strict=False)]

    def forward_head(self, features: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """Fused logits ``mean(y_p, y_a…)`` from :meth:`forward_features`' list (pooled map if ``pre_logits``)."""
        if pre_logits:
            return self._pool(features)
        primary, attention = self._logits(features)
        return _fuse(primary, attention)

    def forward_branches(self, x: torch.Tensor) -> dict[str, Any]:
        """``{"primary": y_p, "attention": [y_a1, …], "fused": y}``, all ``(B, C)`` logits."""
        if self.num_classes == 0:
            raise ValueError("forward_branches needs a classifier; the model has num_classes=0")
        primary, attention = self._logits(self.forward_features(x))
        return {"primary": primary, "attention": attention, "fused": _fuse(primary, attention)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices=None, **kwargs: Any):
        """The backbone's stage maps (timm ``forward_intermediates``; used by ``features_only=True``)."""
        return self.backbone.forward_intermediates(x, indices=indices, **kwargs)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        kept = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=True)
        if prune_head:
            self.reset_classifier(0, "")
        return kept

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, taps={self.taps}, feature_sizes={self.feature_sizes}"


# timm drops these when a full VAA checkpoint is loaded with a different num_classes.
_CLASSIFIERS = ("fc",) + tuple(
    f"branches.{i}.{name}" for i in range(4) for name in ("f_att.6", "f_conv", "f_sr.0", "f_sr.10")
)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 14,  # WIDER-Attribute
        "input_size": (3, 224, 224),
        "fixed_input_size": True,
        "pool_size": (7, 7),
        "crop_pct": 0.875,  # official test: centre 224 crop of 256×256 crops
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,  # official: mean subtraction (104, 117, 123) on 0-255, no std
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "backbone.conv1",
        "classifier": _CLASSIFIERS,
        "paper_ids": "arXiv:1807.03903",
        "origin_url": "https://github.com/cvcode18/imbalanced_learning",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"vaa_resnet101": _cfg(), "vaa_resnet50": _cfg(), "vaa": _cfg()})


def _create_vaa(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    feature_cfg = {"feature_cls": "getter", "out_indices": None}  # None: every backbone stage
    return build_model_with_cfg(VAANet, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


def _with_backbone(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.setdefault("backbone", name) != name:
        raise ValueError(f"this entrypoint fixes backbone={name!r}; use create_model('vaa', backbone=...)")
    return kwargs


@register_model
def vaa_resnet101(pretrained: bool = False, **kwargs: Any) -> VAANet:
    """VAA on ResNet-101 (``layout="paper"`` default, ``"released"`` for the official code's 3 taps)."""
    return _create_vaa("vaa_resnet101", pretrained, **_with_backbone("resnet101", kwargs))


@register_model
def vaa_resnet50(pretrained: bool = False, **kwargs: Any) -> VAANet:
    """VAA on ResNet-50 (not in the paper; ``"released"`` taps ``layer3.4``, ``layer3.5``, ``layer4.2``)."""
    return _create_vaa("vaa_resnet50", pretrained, **_with_backbone("resnet50", kwargs))


@register_model
def vaa(pretrained: bool = False, **kwargs: Any) -> VAANet:
    """VAA on any timm CNN: ``create_model("vaa", backbone="resnet50", layout=..., taps=...)``."""
    if "backbone" not in kwargs:
        raise ValueError("the generic 'vaa' model needs backbone=<timm CNN name>, e.g. backbone='resnet50'")
    return _create_vaa("vaa", pretrained, **kwargs)
