"""VAA attention branch: per-class spatial attention aggregated into attribute logits.

Paper: Nikolaos Sarafianos, Xiang Xu, Ioannis A. Kakadiaris, "Deep Imbalanced Attribute
Classification using Visual Attention Aggregation", ECCV 2018, arXiv 1807.03903.
Official code: https://github.com/cvcode18/imbalanced_learning (MXNet Gluon; ``models.py``
``get_fatt`` / ``get_conv2D`` / ``get_fsr`` and the loop in ``wider_training.py``). No weights were
released, so there is no official-weight loader.

One branch on a feature map ``F`` of shape ``(B, D, h, w)`` with ``C`` attributes::

    M     = softmax over the h·w positions of f_att(F)     # (B, C, h, w), each M[b, c] sums to 1
    conf  = sigmoid(conv1x1_{D->C}(F))                      # (B, C, h, w), f_conv
    A     = M ⊙ conf                                        # (B, C, h, w)
    y     = f_sr(A)                                         # (B, C) logits

The full VAA network (ResNet taps, primary classifier, fusion) and its losses are not in this module.

Two layouts (``layout=``); the author states that the paper's numbers come from the paper's
architecture, not from the released code (issue #7):

============  ===============================================  ==============================================
part          ``"paper"`` (paper / supplement, as described)    ``"released"`` (official MXNet code)
============  ===============================================  ==============================================
``f_att``     1×1 256 → 1×1 256 → 1×1 C                         1×1 512 → 3×3 512 (pad 1) → 1×1 C
``f_sr``      1×1 256 → 1×1 512 → k×k 512 → Linear C            1×1 256 → 1×1 512 → k×k 1024 → Linear C
============  ===============================================  ==============================================

``k×k`` is a full-extent convolution (``k = feature_size``, no padding) giving a 1×1 map, the code's
substitute for a fully connected layer. Each conv except the last of ``f_att`` is followed by
``norm_layer`` and ``act_layer``; every conv has a bias (Gluon's default).

Where visattn differs from, or chooses for, the paper / official code:

- Paper layout details the paper text leaves open (kernel sizes of ``f_sr``, BN/ReLU placement,
  biases, init) are taken from the released code; they could not be checked against the PDF or the
  supplementary material.
- ``att_channels`` / ``sr_channels`` override the hidden widths of either layout (not in either
  source; useful for small models and tests).
- ``sr_pool="adaptive"`` adaptive-average-pools ``A`` to ``feature_size`` before the full-extent conv
  so that any input size works (the official branch only accepts the training grid, 14×14 or 7×7 at
  224 px). Average pooling keeps the mean of ``A``, not its sum: on an ``n``-times larger grid the
  pooled ``A`` is about ``n`` times smaller than at the training size. With ``sr_pool=None`` (default)
  a different grid raises ``ValueError``.
- ``init="mxnet"`` (default, both layouts) reproduces the official Xavier-gaussian initialisation
  (``factor_type="in"``, ``magnitude=2``, i.e. ``N(0, 2 / fan_in)`` = Kaiming-normal with ReLU gain)
  for conv and linear weights, zero biases and default norm parameters; the paper's init is not known,
  so the code's is used for both. ``init="torch"`` keeps PyTorch's default initialisation.
- The official code keeps a ``strides`` argument on the last ``f_att`` conv and on ``f_conv`` but
  always passes 1; it is omitted here.
- Under :func:`visattn.record_attention` the branch records ``mask`` (``M``) and ``confidence``
  (``conf``), both ``(B, C, h, w)`` at the input grid (before any ``sr_pool``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.fx
from torch import nn

from visattn.recording import AttentionMapSource

__all__ = ["AttentionAggregation"]

# (f_att hidden widths, kernel of the second f_att conv, f_sr widths)
_LAYOUTS = {
    "paper": ((256, 256), 1, (256, 512, 512)),
    "released": ((512, 512), 3, (256, 512, 1024)),
}
_INITS = ("mxnet", "torch")
_SR_POOLS = (None, "adaptive")


def _check_grid(a: torch.Tensor, expected: tuple[int, int]) -> torch.Tensor:
    given = tuple(a.shape[-2:])
    if given != expected:
        raise ValueError(
            f"AttentionAggregation expects a {expected[0]}x{expected[1]} feature map (feature_size="
            f"{expected}), got {given[0]}x{given[1]}; build it with feature_size={given} or "
            "sr_pool='adaptive'"
        )
    return a


# A leaf for torch.fx, so that the shape check survives symbolic tracing instead of breaking it.
torch.fx.wrap("_check_grid")


def _pair(name: str, value: object) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else ()
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _widths(name: str, value: Sequence[int] | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if value is None:
        return default
    widths = tuple(value)
    if len(widths) != len(default) or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in widths
    ):
        raise ValueError(f"{name} must be {len(default)} positive ints, got {value!r}")
    return widths


def _conv_block(
    in_ch: int,
    out_ch: int,
    kernel_size: int | tuple[int, int],
    padding: int,
    act_layer: Callable[[], nn.Module],
    norm_layer: Callable[[int], nn.Module] | None,
) -> list[nn.Module]:
    norm = norm_layer(out_ch) if norm_layer is not None else nn.Identity()
    return [nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding), norm, act_layer()]


class AttentionAggregation(AttentionMapSource, nn.Module):
    """One VAA attention branch: ``(B, D, h, w)`` features -> ``(B, C)`` attribute logits.

    Args:
        in_channels: feature channels ``D``.
        num_classes: attributes ``C``.
        layout: ``"paper"`` (spec §1.2) or ``"released"`` (official MXNet code); see the module doc.
        feature_size: grid ``(h, w)`` of the features (int or pair): the kernel of the full-extent
            conv in ``f_sr``. 7 for ResNet stage 4 and 14 for stage 3 at 224 px.
        sr_pool: ``None`` (the input grid must equal ``feature_size``) or ``"adaptive"`` (documented
            deviation: adaptive average pooling of ``A`` to ``feature_size``, any input size).
        att_channels: the two hidden widths of ``f_att`` (default: 256, 256 paper; 512, 512 released).
        sr_channels: the three conv widths of ``f_sr`` (default: 256, 512, 512 paper; 256, 512, 1024
            released).
        act_layer: activation after each hidden conv.
        norm_layer: norm after each hidden conv (``None``: no norm).
        init: ``"mxnet"`` (official Xavier-gaussian, fan-in, magnitude 2; zero biases) or ``"torch"``.

    Sub-modules: ``f_att`` and ``f_sr`` (``nn.Sequential``), ``f_conv`` (the 1×1 conv before the
    sigmoid) and, with ``sr_pool="adaptive"``, ``pool``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        layout: str = "paper",
        feature_size: int | tuple[int, int] = 7,
        sr_pool: str | None = None,
        att_channels: Sequence[int] | None = None,
        sr_channels: Sequence[int] | None = None,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        init: str = "mxnet",
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(_LAYOUTS)}, got {layout!r}")
        if sr_pool not in _SR_POOLS:
            raise ValueError(f"sr_pool must be one of {list(_SR_POOLS)}, got {sr_pool!r}")
        if init not in _INITS:
            raise ValueError(f"init must be one of {list(_INITS)}, got {init!r}")
        att_default, att_kernel, sr_default = _LAYOUTS[layout]
        a1, a2 = _widths("att_channels", att_channels, att_default)
        s1, s2, s3 = _widths("sr_channels", sr_channels, sr_default)
        self.layout = layout
        self.feature_size = _pair("feature_size", feature_size)
        self.sr_pool = sr_pool

        self.f_att = nn.Sequential(
            *_conv_block(in_channels, a1, 1, 0, act_layer, norm_layer),
            *_conv_block(a1, a2, att_kernel, att_kernel // 2, act_layer, norm_layer),
            nn.Conv2d(a2, num_classes, 1),
        )
        self.f_conv = nn.Conv2d(in_channels, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(self.feature_size) if sr_pool == "adaptive" else None
        self.f_sr = nn.Sequential(
            *_conv_block(num_classes, s1, 1, 0, act_layer, norm_layer),
            *_conv_block(s1, s2, 1, 0, act_layer, norm_layer),
            *_conv_block(s2, s3, self.feature_size, 0, act_layer, norm_layer),
            nn.Flatten(1),
            nn.Linear(s3, num_classes),
        )
        if init == "mxnet":
            self._init_mxnet()

    def _init_mxnet(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                # mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2): std = sqrt(2 / fan_in).
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.f_att(x)
        mask = torch.softmax(att.flatten(2), dim=2).view_as(att)
        confidence = torch.sigmoid(self.f_conv(x))
        self._record("mask", mask)
        self._record("confidence", confidence)
        a = mask * confidence
        a = self.pool(a) if self.pool is not None else _check_grid(a, self.feature_size)
        return self.f_sr(a)

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, feature_size={self.feature_size}, sr_pool={self.sr_pool!r}"
