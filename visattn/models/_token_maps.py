"""Token sequences ↔ feature maps for timm models (ViT patch tokens, NHWC maps, position embeddings).

:func:`feature_map_from_timm` turns whatever a timm model's ``forward_features`` returns into
``(B, C, h, w)``: token outputs lose their prefix tokens (CLS, registers, distillation) and the patch
tokens are reshaped on the model's patch grid (:func:`tokens_to_map`). Used by
:mod:`visattn.models._backbone`, which re-exports these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

__all__ = ["feature_map_from_timm", "map_to_tokens", "resample_pos_embed", "tokens_to_map"]


def tokens_to_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Patch tokens ``(B, N, D)`` (no prefix tokens) to a map ``(B, D, h, w)``, row-major, ``N = h·w``."""
    h, w = int(grid[0]), int(grid[1])
    if tokens.dim() != 3 or tokens.shape[1] != h * w:
        raise ValueError(f"expected patch tokens of shape (B, {h}*{w}, D), got {tuple(tokens.shape)}")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`tokens_to_map`: ``(B, D, h, w) -> (B, h·w, D)``."""
    return feature_map.flatten(2).transpose(1, 2)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: Sequence[int],
    num_prefix_tokens: int = 1,
    old_grid: Sequence[int] | None = None,
) -> torch.Tensor:
    """Resample an absolute position embedding ``(1, prefix + h·w, D)`` to ``new_grid``.

    Bicubic 2-D interpolation of the patch part (timm's ``resample_abs_pos_embed``, which ViTs built with
    ``dynamic_img_size=True`` apply at every forward); the ``num_prefix_tokens`` leading entries (CLS, …)
    are kept unchanged, and the input is returned as is when the grid already matches.
    """
    return resample_abs_pos_embed(
        pos_embed,
        new_size=list(new_grid),
        old_size=None if old_grid is None else list(old_grid),
        num_prefix_tokens=num_prefix_tokens,
    )


def _token_grid(model: nn.Module, hw: Sequence[int], reduction: int) -> tuple[int, int]:
    embed = getattr(model, "patch_embed", None)
    if embed is not None:
        if getattr(model, "dynamic_img_size", False) and hasattr(embed, "dynamic_feat_size"):
            return tuple(embed.dynamic_feat_size(tuple(hw)))
        if getattr(embed, "grid_size", None) is not None:
            return tuple(embed.grid_size)
    return hw[0] // reduction, hw[1] // reduction


def feature_map_from_timm(model: nn.Module, features: torch.Tensor, input_hw: Sequence[int]) -> torch.Tensor:
    """Turn the output of a timm model's ``forward_features`` into ``(B, C, h, w)``.

    4-D outputs are returned as they are (permuted when the model declares ``output_fmt == "NHWC"``, as
    timm's Swin does); 3-D token outputs lose their ``model.num_prefix_tokens`` leading tokens and are
    reshaped on the model's patch grid for an input of spatial size ``input_hw``.
    """
    if features.dim() == 4:
        return features.permute(0, 3, 1, 2) if getattr(model, "output_fmt", "NCHW") == "NHWC" else features
    if features.dim() == 3:
        info = getattr(model, "feature_info", None) or [{"reduction": 16}]
        grid = _token_grid(model, input_hw, int(info[-1]["reduction"]))
        return tokens_to_map(features[:, getattr(model, "num_prefix_tokens", 0) :], grid)
    raise ValueError(
        f"forward_features returned a {features.dim()}-D tensor; expected (B, C, h, w) or (B, N, D)"
    )
