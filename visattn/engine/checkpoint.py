"""Checkpoints that never unpickle code: safetensors weights + a tensors-and-primitives training state.

Layout of a run directory::

    checkpoints/epoch_0003.safetensors   model weights (and ``ema.``-prefixed EMA weights)
    checkpoints/epoch_0003.state.pt      optimizer, scheduler, scaler, loss state, epoch, best metric,
                                         RNG states (loaded with ``torch.load(weights_only=True)``)
    checkpoints/last.txt                 name of the newest complete checkpoint
    best.safetensors                     weights of the best epoch by the chosen validation metric

A checkpoint is written to temporary files and renamed, then ``last.txt`` is updated, so an
interrupted save never leaves a half-written "latest" checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "model_state_for_saving",
    "unwrap_model",
]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying module of DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_state_for_saving(model: nn.Module, ema: nn.Module | None = None) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}
    if ema is not None:
        ema_module = getattr(ema, "module", ema)
        state.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_module.state_dict().items()})
    return _dedupe_shared(state)


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage; clone the later duplicates.
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    directory: str | Path, epoch: int, weights: dict[str, torch.Tensor], state: dict[str, Any]
) -> Path:
    """Write ``epoch_NNNN.safetensors`` + ``epoch_NNNN.state.pt`` and point ``last.txt`` at them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"epoch_{epoch:04d}"
    _atomic(
        directory / f"{stem}.safetensors",
        lambda p: save_file(weights, str(p), metadata={"epoch": str(epoch)}),
    )
    _atomic(directory / f"{stem}.state.pt", lambda p: torch.save(state, p))
    _atomic(directory / "last.txt", lambda p: p.write_text(stem + "\n"))
    return directory / f"{stem}.safetensors"


def latest_checkpoint(directory: str | Path) -> Path | None:
    """Weights file of the newest complete checkpoint in ``directory`` (or None)."""
    marker = Path(directory) / "last.txt"
    if not marker.is_file():
        return None
    weights = Path(directory) / f"{marker.read_text().strip()}.safetensors"
    return weights if weights.is_file() else None


def load_checkpoint(weights_path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and training state of a checkpoint written by :func:`save_checkpoint`."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"checkpoint {str(weights_path)!r} does not exist")
    state_path = weights_path.with_name(weights_path.name.replace(".safetensors", ".state.pt"))
    if not state_path.is_file():
        raise FileNotFoundError(
            f"training state {str(state_path)!r} for checkpoint {weights_path.name} is missing"
        )
    weights = load_file(str(weights_path))
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    return weights, state
