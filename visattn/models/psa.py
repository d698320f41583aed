"""ResNets and HRNets with Polarized Self-Attention (PSA) in their residual blocks.

Paper: Liu, Liu, Fan & Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise Regression",
arXiv 2107.00782 (2021). Official code: ``DeLightCMU/PSA`` (``semantic-segmentation/network/PSA.py``,
``network/hrnetv2.py``); only the HRNetV2-OCR segmentation code was released — the pose code
(SimpleBaseline / UDP-Pose) and all weights were not.

The networks are timm's own ``ResNet`` / ``HighResolutionNet`` (classification variants, same
definitions, state-dict keys and ``features_only`` handling) with
:class:`visattn.layers.PolarizedSelfAttention` inserted by :func:`visattn.models.insert.insert_attention`:

* HRNet (``psa_hrnet_w18_small``, ``psa_hrnet_w18``, ``psa_hrnet_w32``, ``psa_hrnet_w48``): one PSA after
  the first 3×3 conv-BN-ReLU of every BasicBlock of stages 2–4 — the official placement
  (``out = ReLU(BN2(Conv2(PSA(ReLU(BN1(Conv1 x))))) + shortcut)``). The stage-1 Bottlenecks get none
  (``psa_stage1=True`` adds them; ``position`` then applies to them), nor do the Bottlenecks of timm's
  classification head (``incre_modules``), which the official HRNetV2 backbone does not have.
* ResNet (``psa_resnet18/34`` BasicBlocks: after the first conv-BN-ReLU, as HRNet; ``psa_resnet50/101``
  Bottlenecks: after the 3×3 conv-BN-ReLU by default, ``position="after_conv1"`` after the first 1×1
  conv-BN-ReLU): **UNVERIFIED** library choice, since the paper's SimpleBaseline-ResNet code is unreleased.

Options (keyword arguments of every entrypoint, besides timm's ``num_classes``, ``features_only``,
``out_indices``, ``drop_rate``... and visattn's ``pretrained_file``):

* ``psa_layout="parallel"|"sequential"`` and ``psa_variant="paper"|"official"`` (defaults
  ``"parallel"``, ``"paper"``). The released HRNet file hard-codes the official sequential ``PSA_s``; the
  published pose results (UDP-Pose-PSA(p)) and the +6.5 M parameters they report correspond to the
  parallel layout, hence the default here.
* ``psa_init="kaiming"|"hrnet_official"`` (see :mod:`visattn.layers.polarized`; the official HRNet
  pipeline re-draws every conv, PSA included, from ``N(0, 0.001)``) and ``psa_bias`` (paper variant only).
* ``position=None|"after_conv1"|"after_conv2"`` (Bottlenecks; see :mod:`visattn.models.insert`).

Differences from the official code: timm's HRNet classification network (with its head) instead of
HRNetV2-OCR segmentation; PSA's own layer deviations are listed in :mod:`visattn.layers.polarized`.
``pretrained=True, pretrained_file=...`` loads a *plain* timm ResNet / HRNet checkpoint (no PSA keys)
before the PSA layers are inserted, which keep their fresh initialisation; ``checkpoint_path=`` loads a
full PSA checkpoint afterwards. The ``pretrained_cfg`` is timm's default one of the base model (data
settings) without any weight location: visattn never downloads.

Parameter overhead [spec §5, checked in the tests]: official ``PSA_p`` (no bias, no LN) adds
``2C² + C`` per block, the paper variant ``2C² + 3C`` (``C`` from the LN affine); on HRNet-W48 (104
BasicBlocks, ``Σ C² = 3,170,304``, ``Σ C = 14,592``) that is +6,355,200 resp. +6,384,384 parameters.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models import hrnet as timm_hrnet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ._registry import register_model
from .insert import insert_attention

__all__: list[str] = []

_RESNETS = {
    "resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    "resnet34": dict(block=BasicBlock, layers=(3, 4, 6, 3)),
    "resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3)),
    "resnet101": dict(block=Bottleneck, layers=(3, 4, 23, 3)),
}
_HRNETS = ("hrnet_w18_small", "hrnet_w18", "hrnet_w32", "hrnet_w48")

# timm's data / head settings of the base model's default weights; weight locations and provenance dropped.
_KEEP = (
    "input_size", "test_input_size", "min_input_size", "fixed_input_size", "interpolation", "crop_pct",
    "test_crop_pct", "crop_mode", "mean", "std", "num_classes", "pool_size", "test_pool_size", "first_conv",
    "classifier",
)  # fmt: skip


def _base_cfg(base: str) -> dict[str, Any]:
    cfg = timm.models.get_pretrained_cfg(base).to_dict()
    out = {k: cfg[k] for k in _KEEP if k in cfg}
    out.update(paper_ids="arXiv:2107.00782", origin_url="https://github.com/DeLightCMU/PSA")
    return out


default_cfgs = generate_default_cfgs({f"psa_{base}": _base_cfg(base) for base in (*_RESNETS, *_HRNETS)})


def _pop_psa_args(kwargs: dict[str, Any], hrnet: bool) -> dict[str, Any]:
    args = dict(
        position=kwargs.pop("position", None),
        layout=kwargs.pop("psa_layout", "parallel"),
        variant=kwargs.pop("psa_variant", "paper"),
        init=kwargs.pop("psa_init", "kaiming"),
        bias=kwargs.pop("psa_bias", False),
    )
    if hrnet:
        args["hrnet_stage1"] = kwargs.pop("psa_stage1", False)
    return args


def _create_psa_resnet(base: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    psa_args = _pop_psa_args(kwargs, hrnet=False)
    model = build_model_with_cfg(ResNet, f"psa_{base}", pretrained, **dict(_RESNETS[base], **kwargs))
    return insert_attention(model, "psa", **psa_args)  # after any pretrained (plain ResNet) weights


def _create_psa_hrnet(base: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    psa_args = _pop_psa_args(kwargs, hrnet=True)
    # timm's HRNet factory picks HighResolutionNetFeatures for features_only (or the generic wrapper for a
    # feature_cls) and loads any pretrained file into the plain network; PSA goes in afterwards.
    model = timm_hrnet._create_hrnet(f"psa_{base}", pretrained, cfg_variant=base, **kwargs)
    return insert_attention(model, "psa", **psa_args)


@register_model
def psa_resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-18 with PSA after the first conv-BN-ReLU of every BasicBlock (library choice)."""
    return _create_psa_resnet("resnet18", pretrained, **kwargs)


@register_model
def psa_resnet34(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-34 with PSA after the first conv-BN-ReLU of every BasicBlock (library choice)."""
    return _create_psa_resnet("resnet34", pretrained, **kwargs)


@register_model
def psa_resnet50(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-50 with PSA after the 3×3 conv-BN-ReLU of every Bottleneck (library choice; see ``position``)."""
    return _create_psa_resnet("resnet50", pretrained, **kwargs)


@register_model
def psa_resnet101(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-101 with PSA after the 3×3 conv-BN-ReLU of every Bottleneck (library choice; see ``position``)."""
    return _create_psa_resnet("resnet101", pretrained, **kwargs)


@register_model
def psa_hrnet_w18_small(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """HRNet-W18-small (timm) with PSA in every BasicBlock of stages 2–4 (official placement)."""
    return _create_psa_hrnet("hrnet_w18_small", pretrained, **kwargs)


@register_model
def psa_hrnet_w18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """HRNet-W18 (timm) with PSA in every BasicBlock of stages 2–4 (official placement)."""
    return _create_psa_hrnet("hrnet_w18", pretrained, **kwargs)


@register_model
def psa_hrnet_w32(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """HRNet-W32 (timm) with PSA in every BasicBlock of stages 2–4 (official placement)."""
    return _create_psa_hrnet("hrnet_w32", pretrained, **kwargs)


@register_model
def psa_hrnet_w48(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """HRNet-W48 (timm) with PSA in every BasicBlock of stages 2–4 (official placement)."""
    return _create_psa_hrnet("hrnet_w48", pretrained, **kwargs)
