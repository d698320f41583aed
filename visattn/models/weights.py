"""Reading and writing weights safely: safetensors, or ``torch.load(weights_only=True)``; never pickles."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_model
from torch import nn

__all__ = ["read_state_dict", "save_weights", "load_weights"]

_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def read_state_dict(
    path: str | Path, wrapper_keys: tuple[str, ...] = _WRAPPER_KEYS
) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch file (loaded with ``weights_only=True``).

    A torch checkpoint dict is unwrapped at the first of ``wrapper_keys`` it holds (training
    checkpoints keep weights under ``"state_dict"``); non-tensor entries are rejected with the key named.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:  # truncated, not safetensors, bad header: one message naming the file
            raise ValueError(
                f"{path}: not a readable safetensors file ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with arbitrary objects, or not a torch file at all
        raise ValueError(f"{path}: not a tensor checkpoint loadable with weights_only=True ({err})") from err
    if isinstance(obj, Mapping):
        for key in wrapper_keys:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}"
        )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries {bad[:5]} are not tensors; expected a state dict")
    return dict(obj)


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s state dict as safetensors (shared tensors handled)."""
    save_model(model, str(path))


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a safetensors/torch weights file into ``model`` (strict by default) and return it."""
    model.load_state_dict(read_state_dict(path), strict=strict)
    return model
