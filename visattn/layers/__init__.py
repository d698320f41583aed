"""Plug-in attention layers, one file per mechanism.

* :mod:`~visattn.layers.csra` — CSRA head, multi-head CSRA, training-free residual-attention scoring.
* :mod:`~visattn.layers.san` — SAN pairwise / patchwise self-attention and the SAN bottleneck.
* :mod:`~visattn.layers.residual_attention` — the Residual Attention Network module and its unit.
* :mod:`~visattn.layers.polarized` — Polarized Self-Attention (channel-only, spatial-only, both layouts).
* :mod:`~visattn.layers.aggregation` — the VAA multi-scale attention aggregation branch.
"""

from .aggregation import AttentionAggregation
from .csra import CSRA, CSRA_TEMPERATURES, MultiHeadCSRA, residual_attention_logits
from .polarized import ChannelOnlyAttention, PolarizedSelfAttention, SpatialOnlyAttention
from .residual_attention import AttentionModule, PreActBottleneck
from .san import PairwiseSelfAttention, PatchwiseSelfAttention, SelfAttentionBottleneck

__all__ = [
    "CSRA",
    "CSRA_TEMPERATURES",
    "AttentionAggregation",
    "AttentionModule",
    "ChannelOnlyAttention",
    "MultiHeadCSRA",
    "PairwiseSelfAttention",
    "PatchwiseSelfAttention",
    "PolarizedSelfAttention",
    "PreActBottleneck",
    "SelfAttentionBottleneck",
    "SpatialOnlyAttention",
    "residual_attention_logits",
]
