"""Shared machinery for loading official checkpoints at layer level.

Each layer that supports official weights describes how an official key maps to its own key (and,
where the official tensor layout differs, how to convert it). This module does the rest: it strips
wrapper prefixes (``module.`` from DataParallel/DDP), checks that every expected key is present with
the right shape, and loads strictly, raising one error that lists what was missing, unexpected or
mis-shaped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def strip_prefix(
    state_dict: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.",)
) -> dict[str, torch.Tensor]:
    """Remove any of ``prefixes`` (repeatedly) from the start of every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if p and key.startswith(p):
                    key = key[len(p) :]
                    changed = True
        out[key] = value
    return out


def select_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Strip ``module.`` wrappers, then keep only the keys under ``prefix``, with ``prefix`` removed.

    Lets a layer-level loader take a whole-network checkpoint (e.g. ``prefix="layer1.0.sam."``).
    """
    sd = strip_prefix(state_dict)
    prefix = next(iter(strip_prefix({prefix: None}))) if prefix else ""
    if not prefix:
        return sd
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def load_mapped_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str],
    *,
    source: str,
    convert: Mapping[str, TensorFn] | None = None,
    optional: tuple[str, ...] = ("num_batches_tracked",),
) -> None:
    """Load ``state_dict`` written in an official layout into ``module``.

    Args:
        module: the visattn layer.
        state_dict: official tensors (``module.`` prefixes are stripped).
        key_map: official key -> visattn key, for every tensor the official layout holds.
        source: name of the official layout for error messages (e.g. ``"hszhao/SAN SAM"``).
        convert: optional per-official-key tensor conversion (e.g. a channel permutation).
        optional: official key suffixes that may be absent (older checkpoints lack BN counters).

    Raises:
        KeyError: keys missing or unexpected (all listed).
        ValueError: a tensor whose shape does not match the layer.
    """
    sd = strip_prefix(state_dict)
    convert = convert or {}
    missing = [k for k in key_map if k not in sd and not k.endswith(optional)]
    unexpected = [k for k in sd if k not in key_map]
    if missing or unexpected:
        raise KeyError(
            f"state dict does not match the {source} layout: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    own = module.state_dict()
    new_sd = {}
    for off_key, our_key in key_map.items():
        if off_key not in sd:
            continue
        tensor = sd[off_key]
        if off_key in convert:
            tensor = convert[off_key](tensor)
        if our_key not in own:
            raise KeyError(f"internal key map error: {our_key!r} is not a key of {type(module).__name__}")
        if tuple(tensor.shape) != tuple(own[our_key].shape):
            raise ValueError(
                f"{source}: tensor {off_key!r} has shape {tuple(tensor.shape)}, but this "
                f"{type(module).__name__} expects {tuple(own[our_key].shape)} for {our_key!r}"
            )
        new_sd[our_key] = tensor
    for key, value in own.items():  # keep our own values for optional keys the file lacks
        new_sd.setdefault(key, value)
    module.load_state_dict(new_sd, strict=True)


def export_mapped_state_dict(
    module: nn.Module,
    key_map: Mapping[str, str],
    *,
    convert: Mapping[str, TensorFn] | None = None,
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`load_mapped_state_dict`: write ``module``'s tensors under official keys.

    ``convert`` maps an official key to the conversion from *our* layout to the official one.
    """
    own = module.state_dict()
    convert = convert or {}
    out = {}
    for off_key, our_key in key_map.items():
        tensor = own[our_key].detach().clone()
        out[off_key] = convert[off_key](tensor) if off_key in convert else tensor
    return out
