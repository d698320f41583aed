"""SAN relation functions δ (pairwise, patchwise) on the operators of ``visattn.ops``; input helpers.

Every function returns the tensor that SAN's γ consumes, laid out as ``(B, width, K², L)`` (pairwise) or
``(B, width, 1, L)`` (patchwise), ``L = H_out·W_out``. Widths and channel orders are documented in
:mod:`visattn.layers.san`.
"""

from __future__ import annotations

import torch

from visattn.ops import local_subtraction2

PAIRWISE_RELATIONS = ("subtraction", "summation", "concatenation", "hadamard", "dot")
PATCHWISE_RELATIONS = ("concatenation", "star", "clique")


def check_input(x: torch.Tensor, layer: str, in_channels: int, reflect_pad: int) -> None:
    """Input shape and reflect-padding checks (``reflect_pad < 0``: zero padding, nothing to check)."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{layer}: expected input (B, {in_channels}, H, W), got {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if reflect_pad >= H or reflect_pad >= W:
        raise ValueError(
            f"{layer}: padding_mode='reflect' pads {reflect_pad} pixels (dilation·(kernel_size−1)/2), which "
            f"needs an input larger than {reflect_pad} in height and width; got {H}x{W}. Use a smaller "
            "kernel, padding_mode='zeros', or a larger input"
        )


def coordinates(x: torch.Tensor) -> torch.Tensor:
    """``(1, 2, H, W)``: x-coordinate ``linspace(−1, 1, W)`` along width, then y along height."""
    H, W = x.shape[-2:]
    loc_w = torch.linspace(-1.0, 1.0, W, dtype=x.dtype, device=x.device).view(1, W).expand(H, W)
    loc_h = torch.linspace(-1.0, 1.0, H, dtype=x.dtype, device=x.device).view(H, 1).expand(H, W)
    return torch.stack([loc_w, loc_h]).unsqueeze(0)


def pairwise_width(relation: str, rel_channels: int) -> int:
    """Channels of ``δ(x_i, x_j)`` before the position encoding is appended."""
    return {"concatenation": 2 * rel_channels, "dot": 1}.get(relation, rel_channels)


def patchwise_width(relation: str, rel_channels: int, kernel_size: int) -> int:
    taps = kernel_size * kernel_size
    return {"concatenation": rel_channels * (taps + 1), "star": taps, "clique": taps * taps}[relation]


def centres(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, 1, L)``: the footprint centres ``(h·s, w·s)`` of every output position."""
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    return x.flatten(2).unsqueeze(2)


def neighbours(x: torch.Tensor, geometry: dict) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, K², L)``: ``x̃[nbr_k(l)]`` with the operators' padding semantics.

    ``subtraction2(0, x) = −x̃[nbr]`` exactly (no rounding, unlike ``centre − subtraction(x)``), so the
    negation recovers the neighbours bit for bit while reusing whichever implementation is registered.
    Hidden from :class:`visattn.ops.observe_calls`: a gather is an unfold, free in SAN's FLOP convention.
    """
    return -local_subtraction2(torch.zeros_like(x), x, **geometry, observe=False)


def pairwise_relation(relation: str, x1: torch.Tensor, x2: torch.Tensor, geometry: dict) -> torch.Tensor:
    """``δ(φ(x)_i, ψ(x)_j)`` for every output position ``i`` and footprint neighbour ``j``."""
    if relation == "subtraction":
        return local_subtraction2(x1, x2, **geometry)
    centre = centres(x1, geometry["stride"])
    nbr = neighbours(x2, geometry)
    if relation == "summation":
        return centre + nbr
    if relation == "hadamard":
        return centre * nbr
    if relation == "dot":
        return (centre * nbr).sum(dim=1, keepdim=True)
    if relation == "concatenation":
        return torch.cat([centre.expand_as(nbr), nbr], dim=1)
    raise ValueError(f"unknown pairwise relation {relation!r}; expected one of {PAIRWISE_RELATIONS}")


def patchwise_relation(relation: str, x1: torch.Tensor, x2: torch.Tensor, geometry: dict) -> torch.Tensor:
    """``δ(x_{R(i)})`` for every output position ``i``, as ``(B, width, 1, L)`` (the official layout)."""
    if relation == "concatenation":
        # Unfold order of the official code: channel c·K² + k, φ's centre channels first.
        nbr = neighbours(x2, geometry)
        return torch.cat([centres(x1, geometry["stride"]), nbr.flatten(1, 2).unsqueeze(2)], dim=1)
    if relation == "star":
        nbr = neighbours(x2, geometry)
        return (centres(x1, geometry["stride"]) * nbr).sum(dim=1).unsqueeze(2)
    if relation == "clique":
        # Channel j·K² + k holds φ(x_j)ᵀψ(x_k).
        gram = torch.einsum("bcjl,bckl->bjkl", neighbours(x1, geometry), neighbours(x2, geometry))
        return gram.flatten(1, 2).unsqueeze(2)
    raise ValueError(f"unknown patchwise relation {relation!r}; expected one of {PATCHWISE_RELATIONS}")
