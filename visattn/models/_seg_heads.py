"""Segmentation heads on a list of backbone feature maps: FCN, DeepLabV3's ASPP and HRNetV2's concat head.

Each head takes the ``features_only`` maps (highest resolution first) and returns logits at the
resolution of the map it works on; ``pre_logits=True`` stops before the 1×1 classifier, which is the
attribute ``classifier`` (replaced by ``SegmentationModel.reset_classifier``). Used by, and re-exported
from, :mod:`visattn.models.segmentation`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ASPPHead", "ConcatHead", "FCNHead", "conv_bn_relu"]


def conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FCNHead(nn.Module):
    """FCN head on the last feature map: 3×3 conv-BN-ReLU (``in/4``), dropout, 1×1 classifier."""

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, channels: int | None = None, dropout: float = 0.1
    ):
        super().__init__()
        cin = in_channels[-1]
        channels = channels or cin // 4
        self.block = conv_bn_relu(cin, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1) if num_classes else nn.Identity()
        self.num_features = channels

    def forward(self, feats: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.block(feats[-1]))
        return x if pre_logits else self.classifier(x)


class ASPPHead(nn.Module):
    """DeepLabV3 head (ASPP with image pooling) on the last feature map."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        rates: Sequence[int] = (12, 24, 36),
        dropout: float = 0.1,
    ):
        super().__init__()
        cin = in_channels[-1]
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, channels, 1)] + [conv_bn_relu(cin, channels, 3, r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(cin, channels, 1))
        self.project = nn.Sequential(conv_bn_relu(channels * (len(rates) + 2), channels, 1), nn.Dropout(0.5))
        self.block = conv_bn_relu(channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1) if num_classes else nn.Identity()
        self.num_features = channels

    def forward(self, feats: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        x = feats[-1]
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))
        x = self.dropout(self.block(x))
        return x if pre_logits else self.classifier(x)


class ConcatHead(nn.Module):
    """HRNetV2 head: upsample every feature map to the first one, concatenate, 1×1 conv-BN-ReLU, classifier."""

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, channels: int | None = None, dropout: float = 0.0
    ):
        super().__init__()
        total = sum(in_channels)
        channels = channels or total
        self.block = conv_bn_relu(total, channels, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1) if num_classes else nn.Identity()
        self.num_features = channels

    def forward(self, feats: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]
        ]
        x = self.dropout(self.block(torch.cat(ups, 1)))
        return x if pre_logits else self.classifier(x)
