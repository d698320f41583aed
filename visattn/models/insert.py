"""Insert attention layers into the residual blocks of existing ResNet / HRNet models, in place.

:func:`insert_attention` walks a timm ``ResNet`` / ``HighResolutionNet`` (also their ``features_only``
forms) or a torchvision ``ResNet`` and adds one attention layer (default: Polarized Self-Attention,
:class:`visattn.layers.PolarizedSelfAttention`) to every eligible residual block. The block's ``forward``
code is never changed: a module that the block calls exactly once is wrapped instead (see below).

Placement (spec ``psa.md`` §5; ``position=None`` picks the default of each block type):

* **BasicBlock** — after the first 3×3 conv-BN-ReLU, before the second 3×3 conv. This is the official
  HRNet placement of ``DeLightCMU/PSA`` (``network/hrnetv2.py``):
  ``out = ReLU(BN2(Conv2(PSA(ReLU(BN1(Conv1(x)))))) + shortcut(x))``. ``"after_conv1"`` is the only
  position a BasicBlock has (its second conv-BN is followed by the residual sum); asking for
  ``"after_conv2"`` when BasicBlocks are selected raises ``ValueError``.
* **Bottleneck** — ``"after_conv2"`` (default): after the 3×3 conv-BN-ReLU, before the last 1×1 conv;
  ``"after_conv1"``: after the first 1×1 conv-BN-ReLU (the attention then sees the block's input
  resolution, since timm and torchvision put the stride on the 3×3 conv). The PSA pose code
  (SimpleBaseline-ResNet) was never released, so this placement is **UNVERIFIED** — a library choice.
* **HRNet** — by default only the BasicBlocks of the multi-resolution branches (stages 2–4), as in the
  official code; ``hrnet_stage1=True`` adds the stage-1 (``layer1``) Bottlenecks. The Bottlenecks of the
  timm classification head (``incre_modules``, absent from the official HRNetV2) never get one.

How the layer is wired (module names are what :func:`visattn.record_attention` reports):

* timm blocks (``timm.models.resnet.BasicBlock`` / ``Bottleneck``, also used by timm's HRNet): the
  activation after the chosen BN (``act1`` resp. ``act2``) becomes ``AttentionAfter(act, attn)``, so maps
  appear as e.g. ``layer1.0.act2.attn.channel`` and all original state-dict keys are unchanged (the
  activation has no tensors). timm's optional ``drop_block`` runs before the activation and anti-aliasing
  (``aa``) after it, i.e. the attention sees the activation's output, before any blur-pool downsampling.
* torchvision blocks share one ``relu`` module between several call sites, so the consumer convolution is
  wrapped instead: ``conv2`` (resp. ``conv3``) becomes ``AttentionBefore(attn, conv)``; the maps appear as
  ``layer1.0.conv3.attn.channel`` and that conv's weight key moves from ``...conv3.weight`` to
  ``...conv3.module.weight``. Load torchvision weights *before* inserting.

The model is modified in place and returned; the new layers are in the model's current mode, device and
dtype. Inserting twice into the same block raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from timm.models.hrnet import HighResolutionModule
from timm.models.resnet import BasicBlock as TimmBasicBlock
from timm.models.resnet import Bottleneck as TimmBottleneck
from torch import nn
from torchvision.models.resnet import BasicBlock as TvBasicBlock
from torchvision.models.resnet import Bottleneck as TvBottleneck

from ..layers.polarized import PolarizedSelfAttention

__all__ = [
    "ATTENTION_KINDS",
    "AttentionAfter",
    "AttentionBefore",
    "insert_attention",
    "register_attention_kind",
]

POSITIONS = ("after_conv1", "after_conv2")
BLOCK_TYPES = ("basic", "bottleneck")

#: Attention factories by ``kind``: ``factory(channels, **layer_kwargs) -> nn.Module`` (shape-preserving).
ATTENTION_KINDS: dict[str, Callable[..., nn.Module]] = {"psa": PolarizedSelfAttention}

# block class -> (block type, wiring style)
_BLOCKS: dict[type, tuple[str, str]] = {
    TimmBasicBlock: ("basic", "timm"),
    TimmBottleneck: ("bottleneck", "timm"),
    TvBasicBlock: ("basic", "torchvision"),
    TvBottleneck: ("bottleneck", "torchvision"),
}

# (wiring style, position) -> (attribute to wrap, wrap after it?, conv whose output channels the attention sees)
_SITES = {
    ("timm", "after_conv1"): ("act1", True, "conv1"),
    ("timm", "after_conv2"): ("act2", True, "conv2"),
    ("torchvision", "after_conv1"): ("conv2", False, "conv1"),
    ("torchvision", "after_conv2"): ("conv3", False, "conv2"),
}


class AttentionAfter(nn.Module):
    """``attn(module(x))``: runs ``module`` (e.g. a block's activation), then the attention layer."""

    def __init__(self, module: nn.Module, attn: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.module(x))


class AttentionBefore(nn.Module):
    """``module(attn(x))``: the attention layer on the input of ``module`` (e.g. a block's convolution)."""

    def __init__(self, attn: nn.Module, module: nn.Module) -> None:
        super().__init__()
        self.attn = attn
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.attn(x))


def register_attention_kind(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``insert_attention(model, kind=name)`` build ``factory(channels, **layer_kwargs)``."""
    if name in ATTENTION_KINDS:
        raise ValueError(f"attention kind {name!r} is already registered")
    ATTENTION_KINDS[name] = factory


def _hrnet_role(name: str, hrnet_modules: list[str]) -> str:
    """``"branch"`` (inside a HighResolutionModule), ``"stage1"`` (``layer1``) or ``"head"``."""
    if any(name.startswith(prefix + ".") for prefix in hrnet_modules):
        return "branch"
    return "head" if "incre_modules" in name.split(".") else "stage1"


def _eligible_blocks(
    model: nn.Module, block_types: tuple[str, ...], hrnet_stage1: bool
) -> list[tuple[str, nn.Module, str, str]]:
    named = list(model.named_modules())
    hrnet_modules = [n for n, m in named if isinstance(m, HighResolutionModule)]
    found = []
    for name, module in named:
        spec = _BLOCKS.get(type(module))
        if spec is None:
            continue
        block_type, style = spec
        if block_type not in block_types:
            continue
        if hrnet_modules:
            role = _hrnet_role(name, hrnet_modules)
            if role == "head" or (role == "stage1" and not hrnet_stage1):
                continue
        found.append((name, module, block_type, style))
    return found


def insert_attention(
    model: nn.Module,
    kind: str = "psa",
    position: str | None = None,
    block_types: Iterable[str] | None = None,
    *,
    hrnet_stage1: bool = False,
    **layer_kwargs: Any,
) -> nn.Module:
    """Add an attention layer to every eligible residual block of ``model`` (in place) and return it.

    Args:
        model: a timm ``ResNet`` / ``HighResolutionNet`` (classifier or ``features_only``) or a torchvision
            ``ResNet``; any module containing their blocks works.
        kind: a key of :data:`ATTENTION_KINDS` (``"psa"``: :class:`PolarizedSelfAttention`).
        position: ``None`` (default of each block: BasicBlock ``"after_conv1"``, Bottleneck
            ``"after_conv2"``), ``"after_conv1"`` or ``"after_conv2"`` (Bottlenecks only) — see the
            module docstring.
        block_types: subset of ``("basic", "bottleneck")`` to modify (default: both).
        hrnet_stage1: HRNet only: also modify the stage-1 Bottlenecks (not done in the official code).
        **layer_kwargs: passed to the layer, e.g. ``layout="sequential"``, ``variant="official"``,
            ``init="hrnet_official"`` for PSA.

    Returns:
        ``model`` itself, modified.

    Raises:
        ValueError: unknown ``kind`` / ``position`` / block type, ``"after_conv2"`` with BasicBlocks
            selected, no eligible block in ``model``, or a block that already holds an inserted layer.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; registered: {sorted(ATTENTION_KINDS)}")
    if position is not None and position not in POSITIONS:
        raise ValueError(f"position must be None or one of {POSITIONS}, got {position!r}")
    types = BLOCK_TYPES if block_types is None else tuple(block_types)
    if isinstance(block_types, str) or not types or set(types) - set(BLOCK_TYPES):
        raise ValueError(f"block_types must be a non-empty collection of {BLOCK_TYPES}, got {block_types!r}")

    blocks = _eligible_blocks(model, types, hrnet_stage1)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no eligible residual block (block_types={types}, "
            f"hrnet_stage1={hrnet_stage1}); supported blocks: timm/torchvision BasicBlock and Bottleneck"
        )
    if position == "after_conv2" and any(t == "basic" for _, _, t, _ in blocks):
        raise ValueError(
            "position='after_conv2' applies only to Bottlenecks: a BasicBlock's second conv-BN is followed by "
            "the residual sum; use position=None/'after_conv1' or block_types=('bottleneck',)"
        )
    factory = ATTENTION_KINDS[kind]
    for name, block, block_type, style in blocks:
        pos = position or ("after_conv1" if block_type == "basic" else "after_conv2")
        attr, after, source = _SITES[(style, pos)]
        target = getattr(block, attr)
        if isinstance(target, (AttentionAfter, AttentionBefore)):
            raise ValueError(f"block {name!r} already has an inserted layer at {attr!r}")
        channels = getattr(block, source).out_channels
        ref = getattr(block, source).weight
        attn = factory(channels, **layer_kwargs).to(device=ref.device, dtype=ref.dtype).train(block.training)
        setattr(block, attr, AttentionAfter(target, attn) if after else AttentionBefore(attn, target))
    return model
