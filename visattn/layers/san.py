"""SAN: pairwise and patchwise local vector self-attention, and SAN's pre-activation bottleneck.

Paper: Hengshuang Zhao, Jiaya Jia, Vladlen Koltun, "Exploring Self-attention for Image Recognition",
CVPR 2020, arXiv:2004.13621. Official code: https://github.com/hszhao/SAN (``model/san.py``: ``SAM``,
``Bottleneck``; operators in ``lib/sa/functions``).

Output ``y_i = Σ_{j∈R(i)} α_ij ⊙ β(x_j)`` over a ``K×K`` footprint ``R(i)``; the ``Cw = out/share_planes``
weight channels are shared **interleaved** (channel ``c`` uses weight ``c mod Cw``), as in the official code.

* :class:`PairwiseSelfAttention` (official ``sa_type=0``):
  ``α_ij = softmax_j γ([δ(φ(x_i), ψ(x_j)) ; p_i − p_j])`` with δ one of (widths into γ, +2 with the
  position encoding):
  ``subtraction`` φ_i − ψ_j (rel, official), ``summation`` φ_i + ψ_j (rel), ``concatenation``
  ``[φ_i ; ψ_j]`` (2·rel), ``hadamard`` φ_i ⊙ ψ_j (rel), ``dot`` φ_iᵀψ_j (1). γ = BN, act, 1×1 conv
  (→ rel, no bias), BN, act, 1×1 conv (→ Cw, bias), run on ``(B, width, K², L)`` tensors.
* :class:`PatchwiseSelfAttention` (official ``sa_type=1``): ``α_i = γ(δ(x_{R(i)}))``, reshaped to
  ``(B, Cw, K², L)`` from channel ``g·K² + k``, **not normalised**; δ one of ``concatenation``
  ``[φ_i ; ψ_j ∀j]`` (rel·(K²+1), channel order ``φ`` first then ``c·K² + k``, official), ``star``
  ``[φ_iᵀψ_j ∀j]`` (K²), ``clique`` ``[φ_jᵀψ_k ∀j,k]`` (K⁴, channel ``j·K² + k``). γ = BN, act, 1×1 conv
  (→ Cw, no bias), BN, act, 1×1 conv (→ K²·Cw, bias).
* :class:`SelfAttentionBottleneck`: ``out = x + conv(act(bn2(attention(act(bn1(x))))))``.

Both attention layers record ``weights`` ``(B, Cw, K*K, H_out, W_out)`` (see :mod:`visattn.recording`);
the bottleneck records nothing itself, its maps appear under ``<block>.attention``.

Differences from the official code:

* Runs on any device and dtype (the operators of :mod:`visattn.ops`; official: CuPy, CUDA, fp32/fp64).
  The position map is rebuilt for every input in its dtype/device (official: float32 via ``.cuda()``).
* ``padding_mode="reflect"`` (official) or ``"zeros"``; reflect padding ``d·(K−1)/2`` must be smaller than
  the input height and width, else ``ValueError`` (the official kernels read out of bounds).
* Attribute names: φ ``phi``, ψ ``psi``, β ``beta``, γ ``gamma``, position projection ``pos_proj``, the
  bottleneck's attention ``attention`` (official ``conv1``, ``conv2``, ``conv3``, ``conv_w``, ``conv_p``,
  ``sam``). ``load_official_state_dict`` / ``official_state_dict`` translate
  (:mod:`visattn.layers._san_official`); tensor layouts are identical (no permutation), and only the
  official relations (pairwise ``subtraction`` with position encoding, patchwise ``concatenation``) have
  an official layout.
* Patchwise: the official code pads ψ with ``ReflectionPad2d(K//2)`` whatever the dilation and reshapes φ
  to the full-resolution ``L`` (so dilation > 1 and stride > 1 fail there); visattn pads ``d·(K−1)/2``
  and takes φ at the strided centres, identical for ``d = s = 1``. ``padding_mode`` governs both the ψ
  neighbourhood and the aggregation (official: reflect for both).
* γ's 1×1 convolutions are :class:`~visattn.layers._san_gamma.PointwiseConv` (an ``nn.Conv2d`` computed as a
  batched matrix product; same keys), and with the ``subtraction`` relation and a plain ``BatchNorm2d``
  γ's first BN is folded into the subtraction (``fold_norm=True``; same result up to rounding, running
  statistics included). Both only change the evaluation order, for speed and memory.
* Non-official relations follow the paper's definitions; no reference code exists, so their channel
  orders (above) are visattn's choice.
* The bottleneck uses separate activation modules (official: one shared in-place ReLU) and supports only
  the identity shortcut (``in_channels == out_channels``, stride 1), as every official block does.

Position encoding note: coordinates are ``linspace(−1, 1)`` per feature map, so the step ``2/(W−1)`` (the
encoding's scale) changes with the input resolution; with reflect padding border differences are
reflected offsets and ``pos_proj.bias`` cancels in ``p_i − p_j`` (zero gradient), as in the official code.
"""

from __future__ import annotations

import torch
from torch import nn

from visattn.layers import _san_relations as rel_fns
from visattn.layers._san_gamma import can_fold_norm, folded_gamma_input, make_gamma
from visattn.layers._san_official import SAM_NAMES, OfficialLayoutMixin, rename_keys
from visattn.layers._san_relations import check_input, coordinates, pairwise_relation, patchwise_relation
from visattn.ops import local_aggregation, local_subtraction
from visattn.recording import AttentionMapSource

__all__ = ["PairwiseSelfAttention", "PatchwiseSelfAttention", "SelfAttentionBottleneck"]

_PAD_MODES = ("reflect", "zeros")


# Opaque to torch.fx.symbolic_trace: they branch on shapes (the operators validate their arguments).
for _fn in (
    "local_aggregation",
    "local_subtraction",
    "pairwise_relation",
    "patchwise_relation",
    "check_input",
    "coordinates",
    "folded_gamma_input",
):
    torch.fx.wrap(_fn)


class _LocalSelfAttention(OfficialLayoutMixin, AttentionMapSource, nn.Module):
    """Shared construction, validation and aggregation of the pairwise and patchwise layers."""

    _relations: tuple[str, ...] = ()
    _official_relation = ""

    def __init__(
        self,
        in_channels: int,
        rel_channels: int,
        out_channels: int,
        kernel_size: int,
        share_planes: int,
        relation: str,
        stride: int,
        dilation: int,
        padding_mode: str,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        sizes = dict(in_channels=in_channels, rel_channels=rel_channels, out_channels=out_channels)
        sizes.update(share_planes=share_planes, stride=stride, dilation=dilation)
        for arg, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")
        if out_channels % share_planes != 0:
            raise ValueError(
                f"{name}: out_channels ({out_channels}) must be divisible by share_planes ({share_planes})"
            )
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"{name}: kernel_size must be a positive odd int (footprint centre), got {kernel_size!r}"
            )
        if relation not in self._relations:
            raise ValueError(f"{name}: relation must be one of {self._relations}, got {relation!r}")
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {_PAD_MODES}, got {padding_mode!r}")
        self.in_channels, self.rel_channels, self.out_channels = in_channels, rel_channels, out_channels
        self.kernel_size, self.share_planes, self.relation = kernel_size, share_planes, relation
        self.stride, self.dilation, self.padding_mode = stride, dilation, padding_mode
        self.weight_channels = out_channels // share_planes
        self.padding = dilation * (kernel_size - 1) // 2
        self.phi = nn.Conv2d(in_channels, rel_channels, 1)
        self.psi = nn.Conv2d(in_channels, rel_channels, 1)
        self.beta = nn.Conv2d(in_channels, out_channels, 1)

    @property
    def _geometry(self) -> dict:
        return dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            dilation=self.dilation,
            padding_mode=self.padding_mode,
        )

    def _check_input(self, x: torch.Tensor) -> None:
        name = f"{type(self).__name__}(kernel_size={self.kernel_size}, dilation={self.dilation})"
        check_input(x, name, self.in_channels, self.padding if self.padding_mode == "reflect" else -1)

    def _aggregate(self, x3: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``w`` ``(B, Cw, K², L)`` -> output; records the weights."""
        y = local_aggregation(x3, w, **self._geometry)
        if self.is_recording:
            self._record("weights", w.reshape(w.shape[0], w.shape[1], w.shape[2], y.shape[-2], y.shape[-1]))
        return y

    def _require_official_layout(self) -> None:
        if self.relation != self._official_relation:
            raise ValueError(
                f"{type(self).__name__}: only relation={self._official_relation!r} has an official "
                f"hszhao/SAN layout, this layer uses relation={self.relation!r}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.rel_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"share_planes={self.share_planes}, relation={self.relation!r}, stride={self.stride}, "
            f"dilation={self.dilation}, padding_mode={self.padding_mode!r}"
        )


class PairwiseSelfAttention(_LocalSelfAttention):
    """SAN pairwise self-attention (official ``SAM`` with ``sa_type=0`` for ``relation="subtraction"``).

    Args:
        in_channels: input channels ``C``.
        rel_channels: width of φ and ψ (official ``rel_planes = C/16``).
        out_channels: output channels (β's width, official ``mid_planes``).
        kernel_size: odd footprint size ``K``.
        share_planes: channels sharing one weight; ``Cw = out_channels // share_planes``.
        relation: ``"subtraction"`` (official), ``"summation"``, ``"concatenation"``, ``"hadamard"``,
            ``"dot"``.
        stride: output at every ``stride``-th position (footprints centred there).
        dilation: footprint dilation.
        padding_mode: ``"reflect"`` (official) or ``"zeros"``.
        position_encoding: concatenate ``pos_proj(p_i) − pos_proj(p_j)`` to δ (official: on).
        act_layer / norm_layer: γ's activation and norm (official ReLU / BatchNorm2d).
        fold_norm: with the ``subtraction`` relation and a plain ``BatchNorm2d``, evaluate γ's first
            BN + act + conv without building the normalised relation (same result up to rounding, running
            statistics included; on CPU a SAN10 training step is 5 % faster and needs 11 % less peak
            memory, docs/benchmarks.md §2). ``False``: the literal order.
    """

    _relations = rel_fns.PAIRWISE_RELATIONS
    _official_relation = "subtraction"

    def __init__(
        self,
        in_channels: int,
        rel_channels: int,
        out_channels: int,
        kernel_size: int = 7,
        share_planes: int = 8,
        relation: str = "subtraction",
        stride: int = 1,
        dilation: int = 1,
        padding_mode: str = "reflect",
        position_encoding: bool = True,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        fold_norm: bool = True,
    ) -> None:
        sizes = (in_channels, rel_channels, out_channels, kernel_size, share_planes)
        super().__init__(*sizes, relation, stride, dilation, padding_mode)
        self.position_encoding = bool(position_encoding)
        self.fold_norm = bool(fold_norm)
        width = rel_fns.pairwise_width(relation, rel_channels) + (2 if self.position_encoding else 0)
        self.gamma = make_gamma(width, rel_channels, self.weight_channels, act_layer, norm_layer)
        self.pos_proj = nn.Conv2d(2, 2, 1) if self.position_encoding else None

    def _position(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, 2, K², L)`` differences ``P'_i − P'_j`` of the projected coordinate map."""
        return local_subtraction(self.pos_proj(coordinates(x)), **self._geometry)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x1, x2, x3 = self.phi(x), self.psi(x), self.beta(x)
        pos = self._position(x) if self.pos_proj is not None else None
        if self.fold_norm and self.relation == "subtraction" and can_fold_norm(self.gamma):
            # Same maths, γ's first BN folded into the subtraction (see visattn.layers._san_gamma).
            h = folded_gamma_input(self.gamma, x1, x2, pos, self._geometry)
            w = self.gamma[5](self.gamma[4](self.gamma[3](h)))
        else:
            r = pairwise_relation(self.relation, x1, x2, self._geometry)
            if pos is not None:
                r = torch.cat([r, pos.expand(r.shape[0], -1, -1, -1)], dim=1)
            w = self.gamma(r)
        return self._aggregate(x3, w.softmax(dim=2))

    def _official_key_map(self) -> dict[str, str]:
        self._require_official_layout()
        if not self.position_encoding:
            raise ValueError(
                "PairwiseSelfAttention: the official hszhao/SAN layout needs position_encoding=True"
            )
        return rename_keys(self, SAM_NAMES + (("conv_p", "pos_proj"),))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", position_encoding={self.position_encoding}"


class PatchwiseSelfAttention(_LocalSelfAttention):
    """SAN patchwise self-attention (official ``SAM`` with ``sa_type=1`` for ``relation="concatenation"``).

    Arguments as :class:`PairwiseSelfAttention` (no position encoding); ``relation`` is
    ``"concatenation"`` (official), ``"star"`` or ``"clique"``. The weights are not normalised.
    """

    _relations = rel_fns.PATCHWISE_RELATIONS
    _official_relation = "concatenation"

    def __init__(
        self,
        in_channels: int,
        rel_channels: int,
        out_channels: int,
        kernel_size: int = 7,
        share_planes: int = 8,
        relation: str = "concatenation",
        stride: int = 1,
        dilation: int = 1,
        padding_mode: str = "reflect",
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        sizes = (in_channels, rel_channels, out_channels, kernel_size, share_planes)
        super().__init__(*sizes, relation, stride, dilation, padding_mode)
        width = rel_fns.patchwise_width(relation, rel_channels, kernel_size)
        cw = self.weight_channels
        self.gamma = make_gamma(width, cw, kernel_size * kernel_size * cw, act_layer, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x1, x2, x3 = self.phi(x), self.psi(x), self.beta(x)
        r = patchwise_relation(self.relation, x1, x2, self._geometry)
        w = self.gamma(r).reshape(r.shape[0], self.weight_channels, self.kernel_size**2, -1)
        return self._aggregate(x3, w)

    def _official_key_map(self) -> dict[str, str]:
        self._require_official_layout()
        return rename_keys(self, SAM_NAMES)


class SelfAttentionBottleneck(OfficialLayoutMixin, nn.Module):
    """SAN's pre-activation residual block: ``x + conv(act(bn2(attention(act(bn1(x))))))``.

    Args:
        in_channels: block input ``C`` (= ``out_channels``: identity shortcut).
        rel_channels: φ/ψ width (official ``C/16``).
        mid_channels: attention output width (official ``C/4``).
        out_channels: block output; must equal ``in_channels``.
        sa_type: ``"pairwise"`` or ``"patchwise"``.
        relation: defaults to the official one of ``sa_type``.
        position_encoding: pairwise only (default on); ``True`` with patchwise is an error.
        Other arguments go to the attention layer; ``norm_layer`` / ``act_layer`` also build
        ``bn1``, ``bn2`` and the activations.
    """

    def __init__(
        self,
        in_channels: int,
        rel_channels: int,
        mid_channels: int,
        out_channels: int,
        sa_type: str = "pairwise",
        kernel_size: int = 7,
        share_planes: int = 8,
        relation: str | None = None,
        dilation: int = 1,
        padding_mode: str = "reflect",
        position_encoding: bool | None = None,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if out_channels != in_channels:
            raise ValueError(
                "SelfAttentionBottleneck: the identity shortcut needs out_channels == in_channels, got "
                f"{in_channels} -> {out_channels}"
            )
        common = dict(kernel_size=kernel_size, share_planes=share_planes, dilation=dilation)
        common.update(padding_mode=padding_mode, act_layer=act_layer, norm_layer=norm_layer)
        if sa_type == "pairwise":
            attention: _LocalSelfAttention = PairwiseSelfAttention(
                in_channels,
                rel_channels,
                mid_channels,
                relation=relation or "subtraction",
                position_encoding=True if position_encoding is None else position_encoding,
                **common,
            )
        elif sa_type == "patchwise":
            if position_encoding:
                raise ValueError("SelfAttentionBottleneck: patchwise attention has no position encoding")
            attention = PatchwiseSelfAttention(
                in_channels, rel_channels, mid_channels, relation=relation or "concatenation", **common
            )
        else:
            raise ValueError(
                f"SelfAttentionBottleneck: sa_type must be 'pairwise' or 'patchwise', got {sa_type!r}"
            )
        self.sa_type = sa_type
        self.bn1 = norm_layer(in_channels)
        self.act1 = act_layer()
        self.attention = attention
        self.bn2 = norm_layer(mid_channels)
        self.act2 = act_layer()
        self.conv = nn.Conv2d(mid_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act2(self.bn2(self.attention(self.act1(self.bn1(x)))))
        return x + self.conv(out)

    def _official_key_map(self) -> dict[str, str]:
        key_map = {"sam." + k: "attention." + v for k, v in self.attention._official_key_map().items()}
        key_map.update(rename_keys(self, (("bn1", "bn1"), ("bn2", "bn2"), ("conv", "conv"))))
        return key_map
