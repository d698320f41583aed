"""Checkpoints that never unpickle code: safetensors weights + a tensors-and-primitives training state.

Layout of a run directory (the names below are the constants of this module)::

    config.json                          the recipe as run
    class_names.json                     one name per model output (the training split's)
    log.csv                              one row per epoch
    checkpoints/epoch_0003.safetensors   model weights (and ``ema.``-prefixed EMA weights)
    checkpoints/epoch_0003.state.pt      optimizer, scheduler, scaler, loss state, epoch, best metric,
                                         RNG states (loaded with ``torch.load(weights_only=True)``)
    checkpoints/last.txt                 name of the newest complete checkpoint
    best.safetensors                     weights (and EMA weights) of the best epoch by ``eval.metric``
    test_metrics.json                    the test split's metrics with the best weights (data.test_split)

A checkpoint is written to temporary files and renamed, then ``last.txt`` is updated, so an
interrupted save never leaves a half-written "latest" checkpoint. ``train.keep_checkpoints`` keeps the
newest N epoch checkpoints (older ones are deleted after the new one is complete); ``best`` is separate.

Weights are read back by one function, :func:`load_model_weights`: EMA weights when the file holds them
(``ema=None``), or on request (``ema=True`` / ``False``), strictly, with errors naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_DIR",
    "CLASS_NAMES_FILE",
    "CONFIG_FILE",
    "LOG_FILE",
    "TEST_METRICS_FILE",
    "check_finite",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "load_strict",
    "model_state_for_saving",
    "prune_checkpoints",
    "remove_stale_temporaries",
    "save_best",
    "save_checkpoint",
    "split_ema",
    "unwrap_model",
    "write_atomic",
]

CONFIG_FILE = "config.json"
CLASS_NAMES_FILE = "class_names.json"
LOG_FILE = "log.csv"
CHECKPOINT_DIR = "checkpoints"
BEST_FILE = "best.safetensors"
TEST_METRICS_FILE = "test_metrics.json"
EMA_PREFIX = "ema."
TMP_SUFFIX = ".tmp"


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
        state.update(
            {f"{EMA_PREFIX}{k}": v.detach().cpu().contiguous() for k, v in ema_module.state_dict().items()}
        )
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


def split_ema(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(model weights, EMA weights)`` of a checkpoint's tensors (EMA keys lose their ``ema.`` prefix)."""
    n = len(EMA_PREFIX)
    ema = {k[n:]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    model = {k: v for k, v in state.items() if not k.startswith(EMA_PREFIX)}
    return model, ema


def load_strict(
    module: nn.Module, weights: dict[str, torch.Tensor], path: str | Path, what: str = ""
) -> None:
    """``module.load_state_dict(weights, strict=True)`` with one error naming the file, the missing or
    unexpected keys and the shape mismatches."""
    try:
        unwrap_model(module).load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = [line.strip() for line in str(err).strip().splitlines()[1:] if line.strip()]
        raise ValueError(
            f"{path}: the {what or 'weights'} do not fit the model {type(unwrap_model(module)).__name__}: "
            + ("; ".join(detail[:4]) or str(err).splitlines()[0])
        ) from None


def check_finite(weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """One error naming the file and the first tensors holding NaN or infinity."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"{path}: non-finite values (NaN or infinity) in {len(bad)} tensor(s), first {bad[:3]}; "
            "the weights come from a diverged run (pass allow_nonfinite=True / --allow-nonfinite to load anyway)"
        )


def load_model_weights(
    model: nn.Module, path: str | Path, ema: bool | None = None, allow_nonfinite: bool = False
) -> str:
    """Load a weights file into ``model`` strictly and say which weights were used (``"ema"``/``"model"``).

    Args:
        path: ``.safetensors`` (a visattn checkpoint or ``best``, with or without ``ema.*`` keys) or a torch
            file (read with ``weights_only=True``).
        ema: ``None``: the EMA weights when the file holds them, else the model's; ``True``: the EMA weights
            (an error if there are none); ``False``: the model's own (raw) weights.
        allow_nonfinite: load tensors holding NaN/infinity (refused by default: a diverged run's weights).
    """
    from visattn.models import read_state_dict

    path = Path(path)
    if path.name.endswith(".state.pt"):
        weights = path.with_name(path.name.replace(".state.pt", ".safetensors"))
        raise ValueError(
            f"{path} is a training-state file (optimizer, scheduler, RNG states), not weights; "
            f"the weights of that checkpoint are {weights}"
        )
    raw, averaged = split_ema(read_state_dict(path))
    if ema and not averaged:
        raise ValueError(f"{path}: no EMA weights ('ema.*' keys) in this file; load it without EMA")
    use_ema = bool(averaged) if ema is None else bool(ema)
    weights = averaged if use_ema else raw
    if not allow_nonfinite:
        check_finite(weights, path)
    load_strict(model, weights, path, "EMA weights" if use_ema else "weights")
    return "ema" if use_ema else "model"


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename over ``path``, and fsync the folder: a reader (or a resumed run) sees the
    old file or the new one, never half of one. A failure (a full disk) removes the temporary file and
    leaves the previous ``path`` intact."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the ``*.tmp`` files an interrupted :func:`write_atomic` left in ``directory`` (not below it)."""
    removed = []
    for path in Path(directory).glob(f"*{TMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def save_checkpoint(
    directory: str | Path, epoch: int, weights: dict[str, torch.Tensor], state: dict[str, Any]
) -> Path:
    """Write ``epoch_NNNN.safetensors`` + ``epoch_NNNN.state.pt`` and point ``last.txt`` at them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"epoch_{epoch:04d}"
    write_atomic(
        directory / f"{stem}.safetensors",
        lambda p: save_file(weights, str(p), metadata={"epoch": str(epoch)}),
    )
    write_atomic(directory / f"{stem}.state.pt", lambda p: torch.save(state, p))
    write_atomic(directory / "last.txt", lambda p: p.write_text(stem + "\n"))
    return directory / f"{stem}.safetensors"


def save_best(path: str | Path, weights: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write the best weights (model + ``ema.*`` when training with EMA) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda p: save_file(weights, str(p), metadata=metadata))
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Weights files of the epoch checkpoints in ``directory``, oldest first."""
    return sorted(Path(directory).glob("epoch_[0-9][0-9][0-9][0-9].safetensors"))


def prune_checkpoints(directory: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` epoch checkpoints (``None`` / 0: keep every one); never the one
    ``last.txt`` names. Returns the deleted weights files."""
    if not keep:
        return []
    latest = latest_checkpoint(directory)
    removed = []
    for weights in list_checkpoints(directory)[: -int(keep)]:
        if latest is not None and weights.name == latest.name:
            continue
        for path in (weights, weights.with_name(weights.name.replace(".safetensors", ".state.pt"))):
            path.unlink(missing_ok=True)
        removed.append(weights)
    return removed


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
    from visattn.models import read_state_dict

    weights = read_state_dict(weights_path)
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or a pickle with code: one message naming it
        raise ValueError(
            f"{state_path}: not a readable training state ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise ValueError(f"{state_path}: not a visattn training state (no 'epoch' entry)")
    return weights, state
