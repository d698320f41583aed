"""Parameter and operation counts, with the conventions papers use.

Two conventions are offered; every figure visattn prints names the one it used:

* ``"macs"`` — multiply-accumulates of convolutions and linear layers only (bias not counted), the
  usual "FLOPs" of classification tables (e.g. the Residual Attention Network deploy-file counts).
* ``"san"`` — the convention of SAN's ``util/complexity.py`` (a ptflops fork) that reproduces the SAN
  README: conv MACs **plus** ``C_out`` per output position when the conv has a bias; linear ``in·out``;
  BatchNorm ``2·numel(input)``; ReLU ``numel(output)`` per call; max/avg pooling ``numel(input)``; the
  SAN ``subtraction``/``subtraction2`` ops ``numel(output)``, ``aggregation`` ``numel(output)·K²``;
  softmax, unfold, padding, additions and copies are free.

Counts are per image (the model is run on a batch of one, in eval mode, without gradients). Layers that
can evaluate part of themselves in a fused form (``fold_norm`` of SAN's pairwise layer) are counted in
their literal form, so the count does not depend on that implementation choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visattn.ops import observe_calls

__all__ = ["CONVENTIONS", "count_macs", "count_parameters", "default_flop_convention", "model_info"]

CONVENTIONS = ("macs", "san")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (buffers such as BN running statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(module: nn.Conv2d, out: torch.Tensor, with_bias: bool) -> int:
    positions = out.numel() // out.shape[1]
    k_h, k_w = module.kernel_size
    macs = positions * out.shape[1] * k_h * k_w * module.in_channels // module.groups
    if with_bias and module.bias is not None:
        macs += out.numel()
    return macs


@torch.no_grad()
def count_macs(
    model: nn.Module,
    input_size: Sequence[int] = (3, 224, 224),
    convention: str = "macs",
    input_tensor: torch.Tensor | None = None,
) -> int:
    """Operation count of one forward pass for one image.

    Args:
        model: the network (switched to eval mode for the count, then restored).
        input_size: ``(C, H, W)`` of the image.
        convention: ``"macs"`` or ``"san"`` (see the module docstring).
        input_tensor: optional explicit input of batch size 1 instead of zeros of ``input_size``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    san = convention == "san"
    total = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += _conv_macs(module, output, with_bias=san)
        elif isinstance(module, nn.Linear):
            total += output.numel() // output.shape[-1] * module.in_features * module.out_features
        elif not san:
            return
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            total += 2 * inputs[0].numel()
        elif isinstance(module, nn.ReLU):
            total += output.numel()
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            total += inputs[0].numel()

    def op_observer(op: str, out: torch.Tensor, geometry) -> None:
        nonlocal total
        if san:
            total += out.numel() * (geometry.num_taps if op == "aggregation" else 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    folded = [m for m in model.modules() if getattr(m, "fold_norm", False) is True]
    for m in folded:
        m.fold_norm = False
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        x = input_tensor
        if x is None:
            x = torch.zeros(1, *input_size)
            if param is not None:
                x = x.to(param.device, param.dtype)
        if x.shape[0] != 1:
            raise ValueError(f"count_macs counts one image: input batch size must be 1, got {x.shape[0]}")
        with observe_calls(op_observer):
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m in folded:
            m.fold_norm = True
        model.train(was_training)
    return total


def default_flop_convention(name: str, model: nn.Module | None = None) -> str:
    """The convention the model's paper uses for its published operation counts."""
    return getattr(model, "flop_convention", "san" if name.startswith("san") else "macs")


def model_info(
    name: str, img_size: int | None = None, convention: str = "auto", **kwargs: Any
) -> dict[str, Any]:
    """Parameters, operation count, feature info and input configuration of a registered model
    (``visattn info``)."""
    from ._registry import create_model, input_config

    model = create_model(name, **kwargs)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    input_size = input_config(model, img_size)["input_size"]
    if convention == "auto":
        convention = default_flop_convention(name, model)
    return {
        "model": name,
        "params": count_parameters(model),
        "input_size": list(input_size),
        "ops": count_macs(model, input_size, convention=convention),
        "ops_convention": convention,
        "feature_info": [
            {k: v for k, v in d.items() if k in ("num_chs", "reduction", "module")}
            for d in getattr(model, "feature_info", [])
        ],
        "input_config": {
            k: cfg[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct") if k in cfg
        },
    }
