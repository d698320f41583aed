"""Converters from official checkpoints to visattn models.

A converter takes an official state dict and returns a :class:`Converted`: the visattn model name, the
constructor arguments it needs (``num_classes``, ``num_heads``, …) and the state dict in visattn's
layout, which loads strictly into ``visattn.create_model(name, **kwargs)`` and gives the official
model's outputs. Families register theirs with :func:`register_converter`; the CLI exposes them as
``visattn convert --from NAME IN OUT.safetensors``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .weights import read_state_dict

__all__ = ["Converted", "register_converter", "list_converters", "convert_checkpoint", "convert_file"]


@dataclass
class Converted:
    model_name: str
    state_dict: dict[str, torch.Tensor]
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self):
        """The visattn model with the converted weights loaded strictly."""
        from ._registry import create_model

        model = create_model(self.model_name, **self.model_kwargs)
        model.load_state_dict(self.state_dict, strict=True)
        return model


ConverterFn = Callable[..., Converted]
_CONVERTERS: dict[str, ConverterFn] = {}


def register_converter(name: str) -> Callable[[ConverterFn], ConverterFn]:
    def decorator(fn: ConverterFn) -> ConverterFn:
        _CONVERTERS[name] = fn
        return fn

    return decorator


def list_converters() -> list[str]:
    return sorted(_CONVERTERS)


def convert_checkpoint(source: str, state_dict: Mapping[str, torch.Tensor], **options: Any) -> Converted:
    """Convert an in-memory official state dict with the converter registered as ``source``."""
    if source not in _CONVERTERS:
        raise ValueError(f"unknown converter {source!r}; available: {list_converters()}")
    return _CONVERTERS[source](state_dict, **options)


def convert_file(source: str, src: str | Path, dst: str | Path, **options: Any) -> Converted:
    """Read ``src`` (safely), convert, write ``dst`` as safetensors with the model name in its metadata."""
    converted = convert_checkpoint(source, read_state_dict(src), **options)
    metadata = {"visattn_model": converted.model_name, "converted_from": source}
    metadata.update({f"kwarg.{k}": repr(v) for k, v in converted.model_kwargs.items()})
    save_file({k: v.contiguous() for k, v in converted.state_dict.items()}, str(dst), metadata=metadata)
    return converted
