"""Residual Attention Network: pre-activation bottleneck and the attention module.

Paper: Fei Wang, Mengqing Jiang, Chen Qian, Shuo Yang, Cheng Li, Honggang Zhang, Xiaogang Wang,
Xiaoou Tang, "Residual Attention Network for Image Classification", CVPR 2017, arXiv 1704.06904.
Official code: https://github.com/fwang91/residual-attention-network -- Caffe *deploy* prototxts
only (Attention-56/92, AttentionNeXt-56/92); no training code and no released weights, so there is
no official-weight loader here.

An attention module with hyper-parameters ``(p, t, r)`` computes, as wired in the prototxt::

    u = pre(x)                 # p units
    T = trunk(u)               # t units
    M = mask(u)                # soft mask branch, starts from u (not from x)
    F = (1 + M) * T            # attention residual learning ("residual"); M * T for "naive"
    out = post(F)              # p units

Every unit is a pre-activation bottleneck whose first BN-ReLU belongs to the unit, so the identity
path carries the raw sum (in Caffe the BN-ReLU is a separate layer on the previous sum; same graph).

Soft mask branch for ``num_pools = n`` (ImageNet: n = 3 / 2 / 1 at 56² / 28² / 14²)::

    down level i (i = 1..n):  MaxPool(3, 2, ceil) -> r units      (the deepest level: 2r units)
    skip at level i < n:      one unit on the level-i down feature
    up to level i (i = n-1..1): interpolate to level i's size + skip_i -> r units
    last:                     interpolate to the trunk size -> BN-ReLU-Conv1x1-BN-ReLU-Conv1x1 -> act

With r = 1 this gives 8 / 5 / 2 mask units per stage and, with the stem/transition units built from
:class:`PreActBottleneck`, exactly the prototxt's Attention-56 / -92 (31.81 M / 52.47 M parameters,
110 / 179 convolutions, 107 / 176 BN layers; checked in the tests). ``num_pools = 0`` is allowed: the
mask branch is then 2r units at full resolution followed by the head (no pooling, no interpolation),
the design used for the smallest CIFAR stage.

Where visattn differs from, or extends, the paper / official prototxt:

- Interpolation targets the *runtime* size of the reference tensor (the skip feature, or the trunk
  output for the last step), so any input size works; the deploy files fix 224 px.
- Caffe's ``Interp`` layer is taken to be bilinear with corner alignment (``align_corners=True``,
  the default). This is inferred: the layer source (a git submodule) was not inspected.
- Unit counts for r > 1 (deeper CIFAR nets) are not in any official file: visattn uses r units per
  level, 2r at the deepest level, r units after each merge, and a single unit per skip connection.
- The two head convolutions are bias-free, as in the prototxt (``linear_1``, ``linear_2``).
- Mask activations other than the sigmoid (``"channel"``, ``"spatial"``, paper Sec. 4.1) exist
  only as formulas in the paper; the epsilons are ours. ``learning="naive"`` is the paper's
  naive-attention-learning ablation.
- The network-level head (global average pooling instead of the fixed 7×7 pool) lives in the models.
- The popular PyTorch port (tengshaofeng/ResidualAttentionNetwork-pytorch) is *not* followed: it adds
  the down-path feature and the trunk output inside the mask branch, pads its max-pools, instantiates
  unused shortcut convs and hard-codes interpolation sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visattn.recording import AttentionMapSource

__all__ = ["AttentionModule", "PreActBottleneck"]

MASK_ACTIVATIONS = ("mixed", "channel", "spatial")
LEARNING_MODES = ("residual", "naive")


def _check_count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck residual unit (the RAN prototxt's residual unit).

    ``y = shortcut + conv1x1(a(bn(conv3x3(a(bn(conv1x1(a(bn(x)))))))))`` with bias-free convolutions,
    bottleneck width ``out_channels // bottleneck_ratio`` and the stride on the 3×3 convolution.
    The shortcut is the identity, or -- only when the channel count or the stride changes -- a 1×1
    projection (same stride) applied to the BN-activated input, like the residual branch.

    Args:
        in_channels: input channels.
        out_channels: output channels; must be divisible by ``bottleneck_ratio``.
        stride: stride of the 3×3 convolution and of the projection.
        bottleneck_ratio: ``out_channels / width`` of the bottleneck (4 in the paper).
        act_layer: activation class, instantiated without arguments.
        norm_layer: normalisation class, called as ``norm_layer(channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        bottleneck_ratio: int = 4,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        _check_count("in_channels", in_channels, 1)
        _check_count("out_channels", out_channels, 1)
        _check_count("stride", stride, 1)
        _check_count("bottleneck_ratio", bottleneck_ratio, 1)
        if out_channels % bottleneck_ratio:
            raise ValueError(
                f"out_channels must be divisible by bottleneck_ratio={bottleneck_ratio}, got {out_channels}"
            )
        width = out_channels // bottleneck_ratio
        self.norm1 = norm_layer(in_channels)
        self.act1 = act_layer()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = norm_layer(width)
        self.act2 = act_layer()
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.norm3 = norm_layer(width)
        self.act3 = act_layer()
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        if in_channels != out_channels or stride != 1:
            self.shortcut: nn.Module | None = nn.Conv2d(
                in_channels, out_channels, 1, stride=stride, bias=False
            )
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.norm2(out)))
        out = self.conv3(self.act3(self.norm3(out)))
        return out + shortcut


class AttentionModule(AttentionMapSource, nn.Module):
    """Residual Attention Network attention module (trunk branch + bottom-up top-down soft mask).

    Args:
        channels: input = output channels ``C`` (bottleneck width ``C / 4``).
        num_pools: max-pools in the mask branch (ImageNet: 3 / 2 / 1 at 56² / 28² / 14²); skip
            connections = ``num_pools - 1``. ``0``: no pooling, the mask branch is ``2r`` units at
            full resolution plus the head.
        p: units before the trunk/mask split and after the merge (>= 0; 0 = none, the mask then
            starts from the module input).
        t: trunk units (>= 0; 0 = identity trunk).
        r: units between adjacent poolings (>= 0; ``2r`` at the deepest level).
        mask_activation: ``"mixed"`` -- sigmoid per channel and position (default);
            ``"channel"`` -- L2-normalisation over channels at each position (``x / max(‖x‖, eps)``,
            so the mask may be negative and is not bounded to (0, 1));
            ``"spatial"`` -- sigmoid of ``(x - mean_c) / (std_c + eps)``, with mean and *population*
            standard deviation (divisor H·W, so a 1×1 map gives 0.5) over the positions of each channel.
        learning: ``"residual"`` -- attention residual learning ``F = (1 + M) * T`` (default);
            ``"naive"`` -- naive attention learning ``F = M * T`` (the paper's ablation).
        align_corners: corner alignment of the bilinear up-sampling (True ≙ Caffe ``Interp``).
        act_layer: activation class, instantiated without arguments.
        norm_layer: normalisation class, called as ``norm_layer(channels)``.

    Records ``mask``: ``(B, C, H, W)`` soft mask ``M`` (after the mask activation).
    """

    channel_eps = 1e-12
    spatial_eps = 1e-5

    def __init__(
        self,
        channels: int,
        num_pools: int,
        p: int = 1,
        t: int = 2,
        r: int = 1,
        mask_activation: str = "mixed",
        learning: str = "residual",
        align_corners: bool = True,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        _check_count("channels", channels, 1)
        _check_count("num_pools", num_pools)
        _check_count("p", p)
        _check_count("t", t)
        _check_count("r", r)
        if mask_activation not in MASK_ACTIVATIONS:
            raise ValueError(f"mask_activation must be one of {MASK_ACTIVATIONS}, got {mask_activation!r}")
        if learning not in LEARNING_MODES:
            raise ValueError(f"learning must be one of {LEARNING_MODES}, got {learning!r}")
        self.channels = channels
        self.num_pools = num_pools
        self.mask_activation = mask_activation
        self.learning = learning
        self.align_corners = bool(align_corners)

        def units(n: int) -> nn.Sequential:
            return nn.Sequential(
                *[
                    PreActBottleneck(channels, channels, act_layer=act_layer, norm_layer=norm_layer)
                    for _ in range(n)
                ]
            )

        self.pre = units(p)
        self.trunk = units(t)
        # down[i]: pool + units of level i+1; the deepest level has 2r units. With no pooling the
        # single "level" is the full-resolution local branch.
        self.down = nn.ModuleList()
        for level in range(max(num_pools, 1)):
            deepest = level == max(num_pools, 1) - 1
            body = units(2 * r if deepest else r)
            if num_pools:
                body.insert(0, nn.MaxPool2d(3, 2, padding=0, ceil_mode=True))
            self.down.append(body)
        # skips[i] / up[i] belong to down level i (finest first); merged coarse-to-fine in forward.
        self.skips = nn.ModuleList([units(1) for _ in range(num_pools - 1)])
        self.up = nn.ModuleList([units(r) for _ in range(num_pools - 1)])
        self.mask_head = nn.Sequential(
            norm_layer(channels),
            act_layer(),
            nn.Conv2d(channels, channels, 1, bias=False),
            norm_layer(channels),
            act_layer(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.post = units(p)

    def _upsample(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask_activation == "mixed":
            return torch.sigmoid(x)
        if self.mask_activation == "channel":
            return F.normalize(x, p=2.0, dim=1, eps=self.channel_eps)
        std, mean = torch.std_mean(x, dim=(2, 3), correction=0, keepdim=True)
        return torch.sigmoid((x - mean) / (std + self.spatial_eps))

    def soft_mask(self, u: torch.Tensor, trunk: torch.Tensor) -> torch.Tensor:
        """Soft mask ``M`` computed from the pre-unit output ``u``, at the size of ``trunk``."""
        feats = []
        h = u
        for level in self.down:
            h = level(h)
            feats.append(h)
        for i in range(self.num_pools - 2, -1, -1):
            h = self._upsample(h, feats[i]) + self.skips[i](feats[i])
            h = self.up[i](h)
        if self.num_pools:
            h = self._upsample(h, trunk)
        return self._activate(self.mask_head(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.pre(x)
        trunk = self.trunk(u)
        mask = self.soft_mask(u, trunk)
        self._record("mask", mask)
        # Caffe order: PROD then SUM, i.e. T * M + T.
        fused = trunk * mask + trunk if self.learning == "residual" else trunk * mask
        return self.post(fused)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_pools={self.num_pools}, "
            f"mask_activation={self.mask_activation!r}, learning={self.learning!r}, "
            f"align_corners={self.align_corners}"
        )
