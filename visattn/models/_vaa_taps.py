"""VAA tap planning: which backbone modules feed the attention branches, and how to run up to them.

:func:`default_taps` picks the tapped module paths of a layout (``"paper"``: the last two
``feature_info`` stages; ``"released"``: the official code's relative block depths).
:func:`plan_taps` flattens the backbone into the module paths to run in order (containers of taps
expanded through ``nn.Sequential``), :func:`run_taps` runs them and collects the tapped maps, and
:func:`tap_shapes` measures each tap's ``(channels, h, w)`` with a shape-only meta-device pass.
Used by :class:`visattn.models.vaa.VAANet`; ``default_taps`` and ``LAYOUTS`` are re-exported there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["LAYOUTS", "default_taps", "plan_taps", "run_taps", "stage_info", "tap_shapes"]

LAYOUTS = ("paper", "released")


def default_taps(backbone: nn.Module, layout: str) -> tuple[str, ...]:
    """The tapped module paths of ``layout`` on a timm ``backbone`` (see :mod:`visattn.models.vaa`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    info = stage_info(backbone)
    if len(info) < 2:
        raise ValueError("VAA needs a backbone with at least two feature_info stages; pass taps=")
    s3, s4 = info[-2]["module"], info[-1]["module"]
    if layout == "paper":
        return (s3, s4)
    stage3, stage4 = backbone.get_submodule(s3), backbone.get_submodule(s4)
    if not isinstance(stage3, nn.Sequential) or len(stage3) < 2:
        raise ValueError(
            f"layout='released' taps a block inside stage {s3!r}, which is not an nn.Sequential of at least "
            "two blocks in this backbone; pass taps=('<module>', ..., '<final stage>')"
        )
    n = len(stage3)
    block = min(round(20 * n / 23) - 1, n - 2)
    last = f"{s4}.{len(stage4) - 1}" if isinstance(stage4, nn.Sequential) and len(stage4) else s4
    return (f"{s3}.{block}", f"{s3}.{n - 1}", last)


def stage_info(backbone: nn.Module) -> list[dict[str, Any]]:
    info = getattr(backbone, "feature_info", None)
    info = getattr(info, "info", info)  # a timm FeatureInfo or a list of dicts
    if not isinstance(info, (list, tuple)) or not info:
        raise ValueError(f"backbone {type(backbone).__name__} has no feature_info; VAA needs a timm CNN")
    return [dict(d) for d in info]


def plan_taps(
    backbone: nn.Module, taps: Sequence[str], final: str
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Module paths to run in order (containers of taps expanded) and the step producing each tap."""
    expand = {".".join(p.split(".")[:i]) for p in (*taps, final) for i in range(1, p.count(".") + 1)}
    steps: list[str] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = prefix + name
            if path not in expand:
                steps.append(path)
            elif isinstance(child, nn.Sequential):
                walk(path + ".", child)
            else:
                raise ValueError(
                    f"cannot tap inside {path!r} ({type(child).__name__}): taps must be reachable through "
                    "nn.Sequential containers of the backbone"
                )

    walk("", backbone)

    def end(path: str) -> int:
        hits = [i for i, s in enumerate(steps) if s == path or s.startswith(path + ".")]
        if not hits:
            raise ValueError(f"tap {path!r} is not a module of the backbone")
        return hits[-1]

    tap_steps = tuple(end(t) for t in taps)
    if any(b <= a for a, b in zip(tap_steps, tap_steps[1:], strict=False)):
        raise ValueError(f"taps must be distinct and in forward order, got {tuple(taps)}")
    if tap_steps[-1] != end(final):
        raise ValueError(
            f"the last tap must be the backbone's final stage output {final!r} (the primary branch pools it); "
            f"got {taps[-1]!r}"
        )
    return tuple(steps[: tap_steps[-1] + 1]), tap_steps


def run_taps(
    backbone: nn.Module, steps, tap_steps, x: torch.Tensor, use_checkpoint: bool
) -> list[torch.Tensor]:
    taps = set(tap_steps)
    features = []
    for i, path in enumerate(steps):
        module = backbone.get_submodule(path)
        x = checkpoint(module, x, use_reentrant=False) if use_checkpoint else module(x)
        if i in taps:
            features.append(x)
    return features


class _Probe(nn.Module):
    def __init__(self, backbone: nn.Module, steps, tap_steps) -> None:
        super().__init__()
        self.backbone, self.steps, self.tap_steps = backbone, steps, tap_steps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_taps(self.backbone, self.steps, self.tap_steps, x, False)


@torch.no_grad()
def tap_shapes(backbone, steps, tap_steps, in_chans: int, img_size: tuple[int, int]) -> list[tuple[int, ...]]:
    """``(channels, h, w)`` of each tap at ``img_size``: a shape-only pass on the meta device."""
    probe = _Probe(backbone, steps, tap_steps)
    state = dict(probe.named_parameters(remove_duplicate=False))
    state.update(probe.named_buffers(remove_duplicate=False))
    meta = {k: torch.empty_like(v, device="meta") for k, v in state.items()}
    x = torch.empty(2, in_chans, *img_size, device="meta")
    modes = [(m, m.training) for m in probe.modules()]
    probe.eval()  # eval-mode norms are cheaper to trace and leave no running-stat updates
    try:
        return [tuple(f.shape[1:]) for f in torch.func.functional_call(probe, meta, (x,))]
    finally:
        for m, mode in modes:
            m.training = mode
