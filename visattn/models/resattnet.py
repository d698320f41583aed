"""Residual Attention Network (Attention-56/92 for ImageNet, Attention-92/236/452 for CIFAR).

Paper: Fei Wang, Mengqing Jiang, Chen Qian, Shuo Yang, Cheng Li, Honggang Zhang, Xiaogang Wang,
Xiaoou Tang, "Residual Attention Network for Image Classification", CVPR 2017, arXiv 1704.06904.
Official code: https://github.com/fwang91/residual-attention-network -- Caffe deploy prototxts of
Attention-56/92 only (no training code, no weights, no CIFAR network). The units are
:class:`visattn.layers.residual_attention.PreActBottleneck` and ``AttentionModule`` (see that module
for the attention module itself, the mask activations and ARL vs NAL).

ImageNet layout (the deploy prototxts)::

    stem     conv7×7/2 (64, no bias) -> BN -> ReLU -> max-pool 3×3/2 (ceil)       112² -> 56²
    stage 1  unit 64->256            + m1 modules (256 ch, mask with 3 pools)      56²
    stage 2  unit 256->512, stride 2 + m2 modules (512 ch, 2 pools)                28²
    stage 3  unit 512->1024, stride 2 + m3 modules (1024 ch, 1 pool)               14²
    stage 4  unit 1024->2048, stride 2 + 2 units (2048)   (post_res_4_1..3)        7²
    head     BN -> ReLU -> global average pool -> FC (with bias)

The prototxt's BN-ReLU after the stem pool is the first unit's own pre-activation (both of
pre_res_1's branches read it), so it is not a separate layer here. Attention-56: modules 1/1/1,
Attention-92: 1/2/3. Counts at 224 px (tests; conv + FC MACs, ``count_macs(convention="macs")``):

=============  ==============  =========  =====================
model          params (ours)   MACs       paper (via a note)
=============  ==============  =========  =====================
Attention-56   31,810,728      6.2708 G   31.9 M, 6.2 G
Attention-92   52,466,344      10.5338 G  51.3 M, 10.4 G
=============  ==============  =========  =====================

Ours equal the counts derived from the deploy files (110 / 179 convolutions, 107 / 176
BN layers); the gaps to the paper's figures (1.2 M for Attention-92) are unexplained.

CIFAR layout (reconstructed; the paper gives only depths, the (p, t, r) of Attention-452 and
parameter counts)::

    stem     conv3×3 3->16 (no bias)                                               32²
    stage 1  unit 16->64             + m1 modules (64 ch, mask with 2 pools)       32²
    stage 2  unit 64->128, stride 2  + m2 modules (128 ch, 1 pool)                 16²
    stage 3  unit 128->256, stride 2 + m3 modules (256 ch, no pooling) + 3 units   8²
    head     BN -> ReLU -> global average pool -> FC (with bias)

Derivation. (1) Widths: pre-activation ResNet-164 (16/64, 32/128, 64/256 bottleneck/out), the
paper's CIFAR baseline. (2) Mask depth: one pooling level less than ImageNet at each stage, as the
maps are 32/16/8 instead of 56/28/14 (so the coarsest mask level is 8² / 8² / 8², as on ImageNet's
7²). (3) Depth rule ``36m + 20``: a module adds ``3(2p + t) = 12`` weighted layers to the trunk
path, and the remaining 20 are the stem conv, the FC and six units -- on ImageNet pre_res_1..3 and
post_res_4_1..3. Three stages have only three transition units, so the three post units are kept,
at 8² / 256 channels (without them Attention-92 would have depth 83). (4) Modules per stage:
Attention-92 = 2/2/2 (m = 2 in the depth rule; the ImageNet deploy file's 1/2/3 has the same depth, but
only uniform modules reach the paper's 236/92 parameter ratio, see below), Attention-236 = 6/6/6
(p, t, r = 1, 2, 1; inferred),
Attention-452 = 6/6/6 with p, t, r = 2, 4, 3 (paper). Trunk depths 92 / 236 / 452 hold exactly
(tested). Parameters with 10 classes:

==================  ==========  ========  =====  =========================================================
model               ours        MACs      paper  alternatives (same units)
==================  ==========  ========  =====  =========================================================
resattnet92_cifar   1,825,690   0.2211 G  1.9 M  2,330,842 with ImageNet's 1/2/3 modules
resattnet236_cifar  4,801,178   0.5958 G  5.1 M  4,589,978 without post units
resattnet452_cifar  9,361,562   1.0838 G  8.6 M  9,150,362 without post units
==================  ==========  ========  =====  =========================================================

(MACs: conv + FC at 32 px.) No variant of these units matches all three paper figures (stage 3
dominates: one 256-wide module is 0.55 M). The paper's 236/92 ratio (2.7) is not reachable with
1/2/3 vs 6/6/6 modules (at most 2.24 for any size of the non-module part; ours 2.06), but is with
uniform modules: 2/2/2 for Attention-92 gives 1.83 M / 4.80 M (ratio 2.6), which is why visattn uses
2/2/2; the ImageNet-like variant is ``resattnet92_cifar(modules_per_stage=(1, 2, 3))``. Attention-452's r = 3 mask uses the layer's
r > 1 rule (r units per level, 2r at the deepest, one unit per skip), which is not published
either; it overshoots by 9 %.

Differences from the paper / official prototxt:

- Global average pooling instead of the fixed 7×7 average pool (any input size works; the paper
  evaluates Attention-92 at 320 px, recorded as ``test_input_size``); masks interpolate to runtime
  sizes (``align_corners=True`` assumed for Caffe's ``Interp``).
- The CIFAR structure above is a reconstruction; the paper's CIFAR counts are not matched exactly.
- Initialisation (Kaiming-normal convolutions, BN 1/0) is ours; the paper gives none.
- ``feature_info`` (ImageNet): the stem's BN-ReLU output (reduction 2, 64 ch) and the four stage
  outputs (4/8/16/32; raw residual sums, as in timm's ResNetV2). CIFAR: the three stage outputs
  (1/2/4; the 16-channel stem conv is not a feature, it shares stage 1's reduction).
- tengshaofeng/ResidualAttentionNetwork-pytorch is not followed (extra additions in the mask branch,
  4× CIFAR widths, padded pools, hard-coded sizes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models._manipulate import checkpoint_seq
from torch import nn

from visattn.layers.residual_attention import AttentionModule, PreActBottleneck
from visattn.models._registry import register_model

__all__ = ["ResidualAttentionNet"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# layout -> (stem width, stage widths, default mask pools per attention stage, identity units at the
# end of the last stage: ImageNet post_res_4_2..3 after the stride-2 post_res_4_1; CIFAR 3 post units)
_LAYOUTS = {
    "imagenet": (64, (256, 512, 1024, 2048), (3, 2, 1), 2),
    "cifar": (16, (64, 128, 256), (2, 1, 0), 3),
}


def _int_tuple(name: str, value: Sequence[int], length: int) -> tuple[int, ...]:
    value = tuple(value)
    if len(value) != length or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
        raise ValueError(f"{name} must be {length} ints >= 0, got {value!r}")
    return value


class ResidualAttentionNet(nn.Module):
    """Residual Attention Network with timm's classifier interface.

    Args:
        layout: ``"imagenet"`` (Attention-56/92, 4 stages, 224 px) or ``"cifar"`` (3 stages, 32 px).
        modules_per_stage: attention modules in each of the 3 attention stages (56: 1/1/1, 92: 1/2/3).
        num_pools: max-pools in the mask branch per attention stage (default 3/2/1 ImageNet, 2/1/0 CIFAR).
        p, t, r: attention-module hyper-parameters (pre/post units, trunk units, mask units per level).
        mask_activation: ``"mixed"`` (sigmoid), ``"channel"`` or ``"spatial"``, for every module.
        learning: ``"residual"`` (ARL, ``(1 + M) T``) or ``"naive"`` (NAL, ``M T``), for every module.
        align_corners: bilinear up-sampling corner alignment in the mask branches.
        num_classes: classifier size (0: no classifier, ``forward`` returns pooled features).
        in_chans: image channels.
        drop_rate: dropout before the classifier.
        global_pool: timm pool type of the head (``"avg"``; the paper's fixed 7×7 pool is GAP at 224 px).
    """

    def __init__(
        self,
        layout: str = "imagenet",
        modules_per_stage: Sequence[int] = (1, 1, 1),
        num_pools: Sequence[int] | None = None,
        p: int = 1,
        t: int = 2,
        r: int = 1,
        mask_activation: str = "mixed",
        learning: str = "residual",
        align_corners: bool = True,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(_LAYOUTS)}, got {layout!r}")
        stem_width, widths, default_pools, num_post = _LAYOUTS[layout]
        self.layout = layout
        self.modules_per_stage = _int_tuple("modules_per_stage", modules_per_stage, 3)
        self.num_pools = _int_tuple("num_pools", default_pools if num_pools is None else num_pools, 3)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        if layout == "imagenet":
            self.stem = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False),
                    norm=nn.BatchNorm2d(stem_width),
                    act=nn.ReLU(inplace=True),
                    pool=nn.MaxPool2d(3, 2, padding=0, ceil_mode=True),
                )
            )
            self.feature_info = [dict(num_chs=stem_width, reduction=2, module="stem.act")]
            reduction = 4
        else:
            self.stem = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False))
            )
            self.feature_info = []
            reduction = 1

        stages = []
        prev = stem_width
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks: list[nn.Module] = [PreActBottleneck(prev, width, stride=stride)]
            if i < 3:
                blocks += [
                    AttentionModule(
                        width,
                        self.num_pools[i],
                        p=p,
                        t=t,
                        r=r,
                        mask_activation=mask_activation,
                        learning=learning,
                        align_corners=align_corners,
                    )
                    for _ in range(self.modules_per_stage[i])
                ]
            if i == len(widths) - 1:
                blocks += [PreActBottleneck(width, width) for _ in range(num_post)]
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"stages.{i}"))
            prev = width
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = prev
        self.norm = nn.BatchNorm2d(prev)
        self.act = nn.ReLU(inplace=True)
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def attention_modules(self) -> list[AttentionModule]:
        """All attention modules, stage by stage."""
        return [m for m in self.modules() if isinstance(m, AttentionModule)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x, flatten=True)
        else:
            x = self.stages(x)
        return self.act(self.norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(variant: str, pretrained: bool = False, **kwargs) -> ResidualAttentionNet:
    # features_only: all feature levels by default (5 ImageNet incl. the stem, 3 CIFAR).
    num_levels = 5 if kwargs.get("layout", "imagenet") == "imagenet" else 3
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(num_levels)))
    return build_model_with_cfg(ResidualAttentionNet, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv",
        "classifier": "head.fc",
        "paper_ids": "arXiv:1704.06904",
        "paper_name": "Residual Attention Network for Image Classification",
        "origin_url": "https://github.com/fwang91/residual-attention-network",
        **kwargs,
    }


def _cifar_cfg(**kwargs) -> dict:
    return _cfg(
        num_classes=10,
        input_size=(3, 32, 32),
        pool_size=(8, 8),
        crop_pct=1.0,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        "resattnet56": _cfg(),
        "resattnet92": _cfg(test_input_size=(3, 320, 320), test_crop_pct=1.0),
        "resattnet92_cifar": _cifar_cfg(),
        "resattnet236_cifar": _cifar_cfg(),
        "resattnet452_cifar": _cifar_cfg(),
    }
)


@register_model
def resattnet56(pretrained: bool = False, **kwargs) -> ResidualAttentionNet:
    """Attention-56 (ImageNet): modules 1/1/1, p, t, r = 1, 2, 1; 31.81 M parameters."""
    model_args = dict(layout="imagenet", modules_per_stage=(1, 1, 1))
    return _create("resattnet56", pretrained, **dict(model_args, **kwargs))


@register_model
def resattnet92(pretrained: bool = False, **kwargs) -> ResidualAttentionNet:
    """Attention-92 (ImageNet): modules 1/2/3, p, t, r = 1, 2, 1; 52.47 M parameters."""
    model_args = dict(layout="imagenet", modules_per_stage=(1, 2, 3))
    return _create("resattnet92", pretrained, **dict(model_args, **kwargs))


@register_model
def resattnet92_cifar(pretrained: bool = False, **kwargs) -> ResidualAttentionNet:
    """Attention-92 (CIFAR, reconstructed): modules 2/2/2, p, t, r = 1, 2, 1; 1.83 M parameters."""
    model_args = dict(layout="cifar", modules_per_stage=(2, 2, 2))
    return _create("resattnet92_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resattnet236_cifar(pretrained: bool = False, **kwargs) -> ResidualAttentionNet:
    """Attention-236 (CIFAR, reconstructed): modules 6/6/6, p, t, r = 1, 2, 1; 4.80 M parameters."""
    model_args = dict(layout="cifar", modules_per_stage=(6, 6, 6))
    return _create("resattnet236_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resattnet452_cifar(pretrained: bool = False, **kwargs) -> ResidualAttentionNet:
    """Attention-452 (CIFAR, reconstructed): modules 6/6/6, p, t, r = 2, 4, 3; 9.36 M parameters."""
    model_args = dict(layout="cifar", modules_per_stage=(6, 6, 6), p=2, t=4, r=3)
    return _create("resattnet452_cifar", pretrained, **dict(model_args, **kwargs))
