"""GlyphNet: a five-layer CNN sized for the built-in glyph canvases on a CPU.

Not from a paper: it is the small trunk of ``make demo`` and of the fast recipes, so that attention heads
(``create_model("csra", backbone="glyphnet")``, VAA, PSA insertion) can be trained in minutes on 2 cores.
Stem conv-BN-ReLU at full resolution, then four conv-BN-ReLU stages (three with stride 2): output
stride 8, ``4·width`` channels, global average pooling and a linear classifier (timm interface).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import ClassifierHead, get_norm_layer
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from ._registry import register_model

__all__ = ["GlyphNet"]


class ConvBnAct(nn.Module):
    """3×3 conv (no bias) → norm → activation; one feature level of GlyphNet."""

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, act_layer: type[nn.Module], norm_layer
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn = norm_layer(out_chs)
        self.act = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class GlyphNet(nn.Module):
    """Small CNN: ``(B, in_chans, H, W) -> (B, num_classes)``; feature map ``(B, 4·width, H/8, W/8)``."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        width: int = 32,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: str | type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm_layer)  # also accepts names: "groupnorm", "layernorm2d", ...
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        widths = (width, width, 2 * width, 4 * width, 4 * width)
        strides = (1, 2, 2, 2, 1)
        self.stem = ConvBnAct(in_chans, widths[0], strides[0], act_layer, norm_layer)
        self.stages = nn.Sequential(
            *[ConvBnAct(widths[i], widths[i + 1], strides[i + 1], act_layer, norm_layer) for i in range(4)]
        )
        self.num_features = self.head_hidden_size = widths[-1]
        reductions = (2, 4, 8, 8)
        self.feature_info = [{"num_chs": widths[0], "reduction": 1, "module": "stem"}] + [
            {"num_chs": widths[i + 1], "reduction": reductions[i], "module": f"stages.{i}"} for i in range(4)
        ]
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 10,
        "input_size": (1, 64, 64),
        "pool_size": (8, 8),
        "mean": (0.0,),
        "std": (1.0,),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "first_conv": "stem.conv",
        "classifier": "head.fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"glyphnet": _cfg()})


@register_model
def glyphnet(pretrained: bool = False, **kwargs: Any) -> GlyphNet:
    """GlyphNet, width 32 (≈0.25 M parameters): the built-in canvases' trunk."""
    return build_model_with_cfg(
        GlyphNet, "glyphnet", pretrained, feature_cfg={"flatten_sequential": True}, **kwargs
    )
