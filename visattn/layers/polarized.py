"""Polarized Self-Attention (PSA): channel-only and spatial-only branches and their compositions.

Liu, Liu, Fan & Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", arXiv
2107.00782 (2021). Official code: ``DeLightCMU/PSA``, ``semantic-segmentation/network/PSA.py`` (classes
``PSA_p`` and ``PSA_s``). Not to be confused with PSANet (point-wise spatial attention, ECCV 2018; mmseg's
``PSAHead``) nor with Pyramid Split Attention (EPSANet) — different methods that share the acronym.

With ``X`` of shape ``(B, C, H, W)``, ``L = H·W`` and ``C' = C // 2`` (1×1 convolutions ``W_*``):

* channel-only branch ``A_ch = sigmoid(LN(W_z(W_v(X) × softmax_L(W_q(X)))))`` of shape ``(B, C, 1, 1)``,
  ``W_q: C→1``, ``W_v: C→C'``, ``W_z: C'→C``, LN over the ``C`` channels; output ``A_ch ⊙ X``;
* spatial-only branch ``A_sp = sigmoid(softmax_C'(GAP(W_q(X))) × W_v(X))`` of shape ``(B, 1, H, W)``,
  ``W_q, W_v: C→C'``; output ``A_sp ⊙ X``;
* ``layout="parallel"``: ``A_ch ⊙ X + A_sp ⊙ X``; ``layout="sequential"``: ``Y = A_ch ⊙ X``, then
  ``A_sp(Y) ⊙ Y`` (the spatial convolutions see ``Y``).

``variant="paper"`` (default) follows the paper's formulas; ``variant="official"`` reproduces the released
code, whose two classes differ from the paper and from each other:

=====================  ==============================  ======================  ===========================
element                paper                           official ``PSA_p``      official ``PSA_s``
=====================  ==============================  ======================  ===========================
channel ``W_z``        ``C'→C``, LN over C, sigmoid    ``conv_up`` ``C'→C``,   ``conv_up`` = Conv(C'→C'/4,
                                                       no bias, **no LN**      bias) → LN over (C'/4,1,1)
                                                                               → ReLU → Conv(C'/4→C, bias)
spatial query          GAP, **softmax over C'**        GAP, no softmax         GAP, no softmax
spatial value          ``W_v(X)``                      ``W_v(X)``              **softmax over L** of v
spatial mask           ``sigmoid(q̂ × v)``             ``sigmoid(softmax_L(    ``sigmoid(q × softmax_L(v))``
                                                       q × v))``
biases of W_q / W_v    none (``bias=True`` adds them)  none                    none
=====================  ==============================  ======================  ===========================

In the branch classes the official form is chosen with ``official_form="parallel"|"sequential"`` (the
channel and spatial branches of ``PSA_p`` resp. ``PSA_s``); :class:`PolarizedSelfAttention` derives it
from ``layout``. Further notes and deviations:

* The official method names are swapped relative to the paper: ``spatial_pool`` is the *channel-only*
  branch and ``channel_pool`` the *spatial-only* branch. Here the names follow the paper: submodule
  ``channel`` holds ``conv_q_right``/``conv_v_right``/``conv_up`` and ``spatial`` holds
  ``conv_q_left``/``conv_v_left`` (see :meth:`PolarizedSelfAttention.load_official_state_dict`).
* Official ``PSA_p``'s spatial mask is the sigmoid of a softmax over ``L`` positions, so it stays close to
  ``sigmoid(1/L) ≈ 0.5``; reproduced as released.
* ``C' = channels // 2`` as in the official code (odd ``channels`` are accepted); the official
  sequential bottleneck ``C'/4`` is ``C' // 4`` and needs ``channels >= 8``. Only ``inplanes == planes``,
  ``kernel_size = stride = 1`` of the official signature are supported (the masks multiply the input).
* ``bias=True`` (paper variant only; default ``False`` as in the official code) adds biases to every
  paper convolution except the channel branch's ``W_q``: a constant added before the softmax over ``L``
  cancels, so that bias could never learn anything.
* The official ReLU is in-place; here it is not (same values).
* Computation order differs from the code but not the maths: the channel branch pools ``X`` with the
  softmax weights before applying ``W_v`` (exact, as the weights sum to 1), the spatial query applies
  ``W_q`` to ``GAP(X)``, and the spatial mask of the paper and ``PSA_p`` forms contracts ``X`` with
  ``W_vᵀ q`` instead of materialising ``v`` — same results up to rounding, about half the MACs.
* ``init="kaiming"`` (default) is the official ``kaiming_normal_(mode="fan_in", nonlinearity="relu")`` on
  the four ``W_q``/``W_v`` convolutions (their biases zero) and PyTorch's default elsewhere.
  ``init="hrnet_official"`` is what the released HRNet pipeline effectively trains from: its
  ``init_weights`` re-draws every ``Conv2d`` weight from ``N(0, 0.001)`` (biases and LayerNorms untouched).
* ``norm_layer`` (paper variant only) replaces the LayerNorm of the channel branch; it is built as
  ``norm_layer(C)`` and applied to the ``(B, C)`` vector.

Recorded maps (:func:`visattn.record_attention`): ``ChannelOnlyAttention`` records ``"channel"``
``(B, C, 1, 1)``, ``SpatialOnlyAttention`` records ``"spatial"`` ``(B, 1, H, W)``; the composite records
nothing itself, its maps appear under ``<name>.channel`` and ``<name>.spatial``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..recording import AttentionMapSource
from ._official import export_mapped_state_dict, load_mapped_state_dict, select_prefix

__all__ = ["ChannelOnlyAttention", "SpatialOnlyAttention", "PolarizedSelfAttention"]

_VARIANTS = ("paper", "official")
_LAYOUTS = ("parallel", "sequential")
_INITS = ("kaiming", "hrnet_official")
_OFFICIAL_RATIO = 4  # hard-coded bottleneck of the official PSA_s conv_up


def _choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def _resolve_form(
    channels: int, variant: str, official_form: str | None, bias: bool, norm_layer: object, init: str
) -> str:
    """Validate the shared branch arguments; return ``"paper"``, ``"parallel"`` or ``"sequential"``."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 2:
        raise ValueError(f"channels must be an int >= 2 (C' = channels // 2 >= 1), got {channels!r}")
    _choice(variant, "variant", _VARIANTS)
    _choice(init, "init", _INITS)
    if variant == "paper":
        if official_form is not None:
            raise ValueError(f"official_form applies only to variant='official', got {official_form!r}")
        return "paper"
    form = _choice("parallel" if official_form is None else official_form, "official_form", _LAYOUTS)
    if bias:
        raise ValueError("variant='official' fixes the biases as in the released code; got bias=True")
    if norm_layer is not None:
        raise ValueError(f"norm_layer applies only to variant='paper', got {norm_layer!r}")
    if form == "sequential" and channels // 2 // _OFFICIAL_RATIO < 1:
        raise ValueError(
            "the official sequential form (PSA_s) has a C'/4 = channels // 8 bottleneck and needs "
            f"channels >= 8, got {channels}"
        )
    return form


def _init_weights(module: nn.Module, qv: tuple[nn.Conv2d, ...], init: str) -> None:
    if init == "kaiming":
        for conv in qv:
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
    else:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)


class ChannelOnlyAttention(AttentionMapSource, nn.Module):
    """Channel-only branch: returns ``A_ch ⊙ X`` and records ``"channel"`` ``A_ch`` ``(B, C, 1, 1)``.

    Args:
        channels: input channels ``C`` (``>= 2``; ``>= 8`` for ``official_form="sequential"``).
        variant: ``"paper"`` (``W_z`` then LN over C) or ``"official"``.
        official_form: for ``variant="official"`` only: ``"parallel"`` (default; ``PSA_p``'s plain
            ``conv_up``) or ``"sequential"`` (``PSA_s``'s Conv–LN–ReLU–Conv bottleneck).
        bias: paper variant only: biases on ``W_v`` and ``W_z``.
        norm_layer: paper variant only: ``norm_layer(C)`` replaces ``nn.LayerNorm(C)``.
        init: ``"kaiming"`` or ``"hrnet_official"`` (see the module docstring).
    """

    def __init__(
        self,
        channels: int,
        variant: str = "paper",
        official_form: str | None = None,
        bias: bool = False,
        norm_layer: Callable[[int], nn.Module] | None = None,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        self.form = _resolve_form(channels, variant, official_form, bias, norm_layer, init)
        self.channels, self.variant = channels, variant
        inter = channels // 2
        self.query = nn.Conv2d(channels, 1, 1, bias=False)
        self.value = nn.Conv2d(channels, inter, 1, bias=bias)
        if self.form == "sequential":
            hidden = inter // _OFFICIAL_RATIO
            self.up: nn.Module = nn.Sequential(
                nn.Conv2d(inter, hidden, 1),
                nn.LayerNorm([hidden, 1, 1]),
                nn.ReLU(),
                nn.Conv2d(hidden, channels, 1),
            )
        else:
            self.up = nn.Conv2d(inter, channels, 1, bias=bias)
        if self.form == "paper":
            self.norm: nn.Module = (norm_layer or nn.LayerNorm)(channels)
        else:
            self.norm = nn.Identity()
        _init_weights(self, (self.query, self.value), init)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, variant={self.variant!r}, form={self.form!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.query(x).flatten(2).softmax(dim=-1)  # (B, 1, L)
        # W_v(X) × q̂ == W_v(X × q̂) because q̂ sums to 1: pool first, then a 1×1 conv on a 1×1 map.
        pooled = torch.matmul(x.flatten(2), weights.transpose(1, 2)).unsqueeze(-1)  # (B, C, 1, 1)
        logits = self.up(self.value(pooled))
        logits = self.norm(logits.flatten(1)).reshape(logits.shape)
        attn = torch.sigmoid(logits)
        self._record("channel", attn)
        return x * attn


class SpatialOnlyAttention(AttentionMapSource, nn.Module):
    """Spatial-only branch: returns ``A_sp ⊙ X`` and records ``"spatial"`` ``A_sp`` ``(B, 1, H, W)``.

    Args:
        channels: input channels ``C`` (``>= 2``).
        variant: ``"paper"`` (softmax over the C' pooled query channels) or ``"official"``.
        official_form: for ``variant="official"`` only: ``"parallel"`` (default; ``PSA_p``:
            ``sigmoid(softmax_L(q × v))``) or ``"sequential"`` (``PSA_s``: ``sigmoid(q × softmax_L(v))``).
        bias: paper variant only: biases on ``W_q`` and ``W_v``.
        init: ``"kaiming"`` or ``"hrnet_official"``.
    """

    def __init__(
        self,
        channels: int,
        variant: str = "paper",
        official_form: str | None = None,
        bias: bool = False,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        self.form = _resolve_form(channels, variant, official_form, bias, None, init)
        self.channels, self.variant = channels, variant
        inter = channels // 2
        self.query = nn.Conv2d(channels, inter, 1, bias=bias)
        self.value = nn.Conv2d(channels, inter, 1, bias=bias)
        _init_weights(self, (self.query, self.value), init)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, variant={self.variant!r}, form={self.form!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        # GAP commutes with a 1×1 conv: pool first instead of convolving every position.
        query = self.query(F.adaptive_avg_pool2d(x, 1)).flatten(1)  # (B, C')
        if self.form == "paper":
            query = query.softmax(dim=-1)
        if self.form == "sequential":
            value = self.value(x).flatten(2).softmax(dim=-1)  # (B, C', L)
            logits = torch.matmul(query.unsqueeze(1), value)
        else:
            # q × (W_v X + b) == (W_vᵀ q) × X + q·b: avoids materialising the C' value maps.
            mixed = torch.matmul(query, self.value.weight.flatten(1))  # (B, C)
            logits = torch.matmul(mixed.unsqueeze(1), x.flatten(2))  # (B, 1, L)
            if self.value.bias is not None:
                logits = logits + torch.matmul(query, self.value.bias).reshape(batch, 1, 1)
            if self.form == "parallel":
                logits = logits.softmax(dim=-1)
        attn = torch.sigmoid(logits).reshape(batch, 1, height, width)
        self._record("spatial", attn)
        return x * attn


class PolarizedSelfAttention(AttentionMapSource, nn.Module):
    """Polarized Self-Attention block (output has the input's shape).

    Args:
        channels: input channels ``C``.
        layout: ``"parallel"`` (``Z_ch + Z_sp``) or ``"sequential"`` (spatial branch on ``A_ch ⊙ X``).
        variant: ``"paper"`` or ``"official"`` (``PSA_p`` for parallel, ``PSA_s`` for sequential).
        bias: paper variant only, see :class:`ChannelOnlyAttention` / :class:`SpatialOnlyAttention`.
        init: ``"kaiming"`` (official module init) or ``"hrnet_official"`` (``N(0, 0.001)`` conv weights).
        norm_layer: paper variant only: replaces the channel branch's LayerNorm.

    Submodules ``channel`` and ``spatial`` record the maps (``<name>.channel`` / ``<name>.spatial``).
    """

    def __init__(
        self,
        channels: int,
        layout: str = "parallel",
        variant: str = "paper",
        bias: bool = False,
        init: str = "kaiming",
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.layout = _choice(layout, "layout", _LAYOUTS)
        _choice(variant, "variant", _VARIANTS)
        self.variant = variant
        form = layout if variant == "official" else None
        self.channel = ChannelOnlyAttention(channels, variant, form, bias, norm_layer, init)
        self.spatial = SpatialOnlyAttention(channels, variant, form, bias, init)

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, variant={self.variant!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "sequential":
            return self.spatial(self.channel(x))
        return self.channel(x) + self.spatial(x)

    @property
    def official_name(self) -> str:
        return "PSA_p" if self.layout == "parallel" else "PSA_s"

    def _official_key_map(self) -> dict[str, str]:
        if self.variant != "official":
            raise ValueError(
                "official checkpoints exist only for variant='official' (PSA_p / PSA_s); this layer has "
                f"variant={self.variant!r}"
            )
        key_map = {
            "conv_q_right.weight": "channel.query.weight",
            "conv_v_right.weight": "channel.value.weight",
            "conv_q_left.weight": "spatial.query.weight",
            "conv_v_left.weight": "spatial.value.weight",
        }
        if self.layout == "parallel":
            key_map["conv_up.weight"] = "channel.up.weight"
        else:  # conv_up = Sequential(Conv2d, LayerNorm, ReLU, Conv2d): indices 0, 1 and 3 hold tensors
            for idx in ("0", "1", "3"):
                for kind in ("weight", "bias"):
                    key_map[f"conv_up.{idx}.{kind}"] = f"channel.up.{idx}.{kind}"
        return key_map

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> None:
        """Load a ``DeLightCMU/PSA`` ``PSA_p`` (parallel) or ``PSA_s`` (sequential) state dict.

        Args:
            state_dict: official keys (``conv_q_right.weight``, ``conv_v_right.weight``, ``conv_up...``,
                ``conv_q_left.weight``, ``conv_v_left.weight``); ``module.`` wrappers are stripped.
            prefix: if given, only keys starting with it (after ``module.`` stripping) are used, with the
                prefix removed — e.g. ``"stage2.0.branches.0.0.deattn."`` to pick one block of a network.

        Raises:
            ValueError: ``variant="paper"``, or a tensor of the wrong shape.
            KeyError: missing or unexpected keys (all listed).
        """
        key_map = self._official_key_map()
        load_mapped_state_dict(
            self, select_prefix(state_dict, prefix), key_map, source=f"DeLightCMU/PSA {self.official_name}"
        )

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """This layer's tensors under the official ``PSA_p`` / ``PSA_s`` keys (inverse of loading)."""
        return export_mapped_state_dict(self, self._official_key_map())
