"""SAN10/15/19: the stand-alone self-attention networks of SAN, pairwise and patchwise.

Paper: Hengshuang Zhao, Jiaya Jia, Vladlen Koltun, "Exploring Self-attention for Image Recognition",
CVPR 2020, arXiv:2004.13621. Official code: https://github.com/hszhao/SAN (``model/san.py``).

Network: a 1×1 stem conv 3→64 (no bias) → BN → ReLU at full resolution, then five stages, each
``MaxPool(2, 2) → 1×1 transition conv (no bias) → L_i × SelfAttentionBottleneck → BN → ReLU`` with widths
64, 256, 512, 1024, 2048 and footprints ``kernels = (3, 7, 7, 7, 7)``; global average pool → Linear. Blocks
use ``rel = C/16``, ``mid = C/4`` and ``share_planes = 8`` (:class:`visattn.layers.SelfAttentionBottleneck`).
Published configurations ``layers``: SAN10 (2, 1, 2, 4, 1), SAN15 (3, 2, 3, 5, 2), SAN19 (3, 3, 4, 6, 3).

Module names follow the official ones (``conv_in``, ``bn_in``, ``conv0..4``, ``bn0..4``, ``layer0..4``,
``fc``) so that only the blocks' attention submodules are renamed; :meth:`SAN.load_official_state_dict`
and the ``"san-official"`` converter (``visattn convert --from san-official``) read official checkpoints.

Differences from the official code:

* The attention operators run on any device and dtype (:mod:`visattn.ops`; official: CuPy, CUDA only).
* Reflect padding (official) needs every stage's feature map to be larger than its padding ``(K−1)/2``:
  with the default kernels the input must be at least 128×128 (stage 4 sees ``⌊H/32⌋ ≥ 4``; the official
  kernels silently read out of bounds below that). ``forward`` raises a ``ValueError`` naming the minimum
  (``model.min_input_size``); ``padding_mode="zeros"`` only needs 32×32. The feature pyramid therefore
  needs ``H, W ≥ min_input_size`` too.
* Separate pooling/activation modules per stage (official: one shared ``pool`` and ``relu``), so that
  timm's ``features_only`` can walk the network; the feature maps are the stages' BN-ReLU outputs
  (``act0..act4``, strides 2–32).
* Options beyond the official code: ``relation`` (every relation of the SAN layers), ``position_encoding``,
  ``padding_mode``, ``share_planes``, ``in_chans``, ``drop_rate`` (dropout before ``fc``), ``global_pool``.
  Only the official relations with reflect padding reproduce the published networks.
* Complexity: ``count_macs(model, (3, 224, 224), convention="san")`` reproduces SAN's README figures
  (:mod:`visattn.models.complexity`): SAN10/15/19 pairwise 2.155/3.023/3.844 G, patchwise 1.865/2.583/3.259 G.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs
from torch import nn

from visattn.layers._official import strip_prefix
from visattn.layers.san import SelfAttentionBottleneck

from ._registry import register_model
from .convert import Converted, register_converter

__all__ = ["SAN", "SAN_LAYERS", "convert_san_official"]

WIDTHS = (64, 256, 512, 1024, 2048)
DEFAULT_KERNELS = (3, 7, 7, 7, 7)
SAN_LAYERS = {"san10": (2, 1, 2, 4, 1), "san15": (3, 2, 3, 5, 2), "san19": (3, 3, 4, 6, 3)}
_TOP_LEVEL = ("conv_in", "bn_in", *(f"{n}{s}" for s in range(5) for n in ("conv", "bn")), "fc")


def _check_size(x: torch.Tensor, min_size: int, padding_mode: str, kernels: tuple[int, ...]) -> None:
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(
            f"SAN(kernels={list(kernels)}, padding_mode={padding_mode!r}) needs inputs of at least "
            f"{min_size}x{min_size} (every stage must stay larger than its padding (K-1)/2), got {h}x{w}; "
            "use a larger input, smaller kernels or padding_mode='zeros'"
        )


torch.fx.wrap("_check_size")  # shape test: opaque to torch.fx.symbolic_trace


class SAN(nn.Module):
    """SAN network (timm interface).

    Args:
        layers: blocks per stage (five ints).
        sa_type: ``"pairwise"`` (official ``sa_type=0``) or ``"patchwise"`` (``sa_type=1``).
        kernels: footprint ``K`` per stage (odd).
        relation: relation function (default: the official ``subtraction`` / ``concatenation``).
        position_encoding: pairwise only (default on).
        padding_mode: ``"reflect"`` (official) or ``"zeros"``.
        share_planes: channels sharing one attention weight (official 8; must divide 16).
        num_classes: classifier size (0: no classifier, ``forward`` returns pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        global_pool: timm pooling type (``"avg"``, ``"max"``, ``"avgmax"``, ``""`` …).
    """

    def __init__(
        self,
        layers: Sequence[int] = SAN_LAYERS["san10"],
        sa_type: str = "pairwise",
        kernels: Sequence[int] = DEFAULT_KERNELS,
        relation: str | None = None,
        position_encoding: bool | None = None,
        padding_mode: str = "reflect",
        share_planes: int = 8,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        layers, kernels = tuple(int(n) for n in layers), tuple(int(k) for k in kernels)
        if len(layers) != 5 or min(layers) < 0:
            raise ValueError(f"SAN: layers must be five non-negative ints, got {layers}")
        if len(kernels) != 5:
            raise ValueError(f"SAN: kernels must be five odd ints, got {kernels}")
        if sa_type not in ("pairwise", "patchwise"):
            raise ValueError(f"SAN: sa_type must be 'pairwise' or 'patchwise', got {sa_type!r}")
        self.layers, self.kernels, self.sa_type, self.padding_mode = layers, kernels, sa_type, padding_mode
        self.num_classes, self.drop_rate, self.global_pool_type = num_classes, drop_rate, global_pool
        self.num_features = self.head_hidden_size = WIDTHS[-1]
        self.grad_checkpointing = False
        # Smallest input for which every stage's map is > 0 (max-pool) and > its reflect padding.
        pads = [
            (k - 1) // 2 if padding_mode == "reflect" and n else 0
            for k, n in zip(kernels, layers, strict=True)
        ]
        self.min_input_size = max(32, *((p + 1) * 2 ** (s + 1) for s, p in enumerate(pads)))

        c = WIDTHS[0]
        self.conv_in = nn.Conv2d(in_chans, c, 1, bias=False)
        self.bn_in = nn.BatchNorm2d(c)
        self.act_in = nn.ReLU(inplace=True)
        self.feature_info = []
        block_args = dict(sa_type=sa_type, share_planes=share_planes, relation=relation)
        block_args.update(padding_mode=padding_mode, position_encoding=position_encoding)
        # Registered in execution order (timm's FeatureListNet replays the children in this order).
        for s, (width, n, k) in enumerate(zip(WIDTHS, layers, kernels, strict=True)):
            blocks = [
                SelfAttentionBottleneck(width, width // 16, width // 4, width, kernel_size=k, **block_args)
                for _ in range(n)
            ]
            self.add_module(f"pool{s}", nn.MaxPool2d(2, 2))
            self.add_module(f"conv{s}", nn.Conv2d(c, width, 1, bias=False))
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
            self.add_module(f"bn{s}", nn.BatchNorm2d(width))
            self.add_module(f"act{s}", nn.ReLU(inplace=True))
            self.feature_info.append(dict(num_chs=width, reduction=2 ** (s + 1), module=f"act{s}"))
            c = width
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    # ------------------------------------------------------------------ timm interface
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^(?:conv_in|bn_in)", blocks=r"^(?:conv|bn|layer)(\d+)" if coarse else r"^layer(\d+)\.(\d+)"
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool_type = global_pool
        self.global_pool, self.fc = create_classifier(
            self.num_features, num_classes, pool_type=self.global_pool_type
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, self.min_input_size, self.padding_mode, self.kernels)
        x = self.act_in(self.bn_in(self.conv_in(x)))
        for s in range(5):
            x = getattr(self, f"conv{s}")(getattr(self, f"pool{s}")(x))
            layer = getattr(self, f"layer{s}")
            x = (
                checkpoint_seq(layer, x)
                if self.grad_checkpointing and len(layer) and not torch.jit.is_scripting()
                else layer(x)
            )
            x = getattr(self, f"act{s}")(getattr(self, f"bn{s}")(x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ official layout
    def _blocks(self):
        for s in range(5):
            for i, block in enumerate(getattr(self, f"layer{s}")):
                yield f"layer{s}.{i}.", block

    def official_state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """All tensors under the official ``hszhao/SAN`` keys (``prefix="module."`` mimics a DDP file)."""
        sd = {k: v.detach().clone() for k, v in self.state_dict().items() if k.split(".")[0] in _TOP_LEVEL}
        for block_prefix, block in self._blocks():
            sd.update(block.official_state_dict(block_prefix))
        return {prefix + k: v for k, v in sd.items()}

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load an official ``hszhao/SAN`` state dict (``module.`` prefixes allowed) strictly.

        Raises:
            KeyError: keys missing or unexpected (listed).
            ValueError: a tensor whose shape does not fit this configuration, or a configuration without
                an official layout (non-official relation, no position encoding).
        """
        sd = strip_prefix(state_dict)
        own = {k: v for k, v in self.state_dict().items() if k.split(".")[0] in _TOP_LEVEL}
        block_prefixes = tuple(p for p, _ in self._blocks())
        missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in sd if k not in own and not k.startswith(block_prefixes)]
        if missing or unexpected:
            raise KeyError(
                f"state dict does not match the hszhao/SAN layout of this SAN(layers={list(self.layers)}): "
                f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
            )
        bad = [
            f"{k}: {tuple(sd[k].shape)} != {tuple(v.shape)}"
            for k, v in own.items()
            if k in sd and sd[k].shape != v.shape
        ]
        if bad:
            raise ValueError(f"hszhao/SAN checkpoint tensors have the wrong shape for this SAN: {bad}")
        for block_prefix, block in self._blocks():
            try:
                block.load_official_state_dict(sd, prefix=block_prefix)
            except (KeyError, ValueError) as err:  # the block names keys relative to itself
                raise type(err)(f"block {block_prefix[:-1]!r}: {err.args[0]}") from err
        self.load_state_dict({k: sd[k] for k in own if k in sd}, strict=False)


# ---------------------------------------------------------------------- entrypoints
def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "min_input_size": (3, 128, 128),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv_in",
        "classifier": "fc",
        "license": "mit",
        "paper_ids": "arXiv:2004.13621",
        "origin_url": "https://github.com/hszhao/SAN",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {f"{family}_{sa}": _cfg() for family in SAN_LAYERS for sa in ("pairwise", "patchwise")}
)


def _create_san(variant: str, pretrained: bool = False, **kwargs: Any) -> SAN:
    return build_model_with_cfg(SAN, variant, pretrained, **kwargs)


def _args(family: str, sa_type: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"layers": SAN_LAYERS[family], "sa_type": sa_type, **kwargs}


@register_model
def san10_pairwise(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN10, pairwise (subtraction) attention: 10.5M parameters, 2.2 GFLOPs (SAN convention)."""
    return _create_san("san10_pairwise", pretrained, **_args("san10", "pairwise", kwargs))


@register_model
def san10_patchwise(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN10, patchwise (concatenation) attention: 11.8M parameters, 1.9 GFLOPs."""
    return _create_san("san10_patchwise", pretrained, **_args("san10", "patchwise", kwargs))


@register_model
def san15_pairwise(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN15, pairwise attention: 14.1M parameters, 3.0 GFLOPs."""
    return _create_san("san15_pairwise", pretrained, **_args("san15", "pairwise", kwargs))


@register_model
def san15_patchwise(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN15, patchwise attention: 16.2M parameters, 2.6 GFLOPs."""
    return _create_san("san15_patchwise", pretrained, **_args("san15", "patchwise", kwargs))


@register_model
def san19_pairwise(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN19, pairwise attention: 17.6M parameters, 3.8 GFLOPs."""
    return _create_san("san19_pairwise", pretrained, **_args("san19", "pairwise", kwargs))


@register_model
def san19_patchwise(pretrained: bool = False, **kwargs: Any) -> SAN:
    """SAN19, patchwise attention: 20.5M parameters, 3.3 GFLOPs."""
    return _create_san("san19_patchwise", pretrained, **_args("san19", "patchwise", kwargs))


# ---------------------------------------------------------------------- converter
def _infer_layers(keys: list[str]) -> tuple[int, ...]:
    layers = []
    for s in range(5):
        idx = {int(k.split(".")[1]) for k in keys if k.startswith(f"layer{s}.") and k.split(".")[1].isdigit()}
        if not idx:
            raise KeyError(f"hszhao/SAN checkpoint: no keys 'layer{s}.<i>.*' (is this a SAN state dict?)")
        if idx != set(range(len(idx))):
            raise KeyError(f"hszhao/SAN checkpoint: block indices of layer{s} are not 0..n-1: {sorted(idx)}")
        layers.append(len(idx))
    return tuple(layers)


def _infer_kernels(
    sd: Mapping[str, torch.Tensor], sa_type: str, kernels: Sequence[int] | None
) -> tuple[int, ...]:
    """Patchwise: K from γ's input width ``rel·(K²+1)``; pairwise: not in the shapes (default or given)."""
    if sa_type == "pairwise":
        return tuple(kernels) if kernels is not None else DEFAULT_KERNELS
    found = []
    for s, width in enumerate(WIDTHS):
        key = f"layer{s}.0.sam.conv_w.0.weight"
        if key not in sd:
            raise KeyError(f"hszhao/SAN patchwise checkpoint: missing {key!r}")
        n, rel = (sd[key].shape[0] if sd[key].dim() == 1 else -1), width // 16
        k = round(max(n // rel - 1, 0) ** 0.5)
        if n != rel * (k * k + 1) or k % 2 == 0:
            raise ValueError(
                f"hszhao/SAN checkpoint: {key!r} has shape {tuple(sd[key].shape)}, not (rel·(K²+1),) "
                f"with rel={rel} and an odd K (patchwise γ; pairwise checkpoints have 'sam.conv_p' keys)"
            )
        found.append(k)
    if kernels is not None and tuple(kernels) != tuple(found):
        raise ValueError(f"kernels={list(kernels)} contradicts the checkpoint's patchwise kernels {found}")
    return tuple(found)


@register_converter("san-official")
def convert_san_official(
    state_dict: Mapping[str, torch.Tensor], allow_custom: bool = False, kernels: Sequence[int] | None = None
) -> Converted:
    """Convert an official ``hszhao/SAN`` state dict (``module.`` prefix allowed) to a visattn SAN.

    ``sa_type`` comes from the attention keys (pairwise has ``sam.conv_p``), ``layers`` from the block
    indices, ``num_classes``/``in_chans`` from ``fc``/``conv_in``; patchwise kernels from γ's width. Pairwise
    kernels do not show in any shape: the published ``(3, 7, 7, 7, 7)`` unless ``kernels`` is given.

    Args:
        allow_custom: accept a ``layers``/``kernels`` configuration other than SAN10/15/19; the result then
            names the family with the closest ``layers`` and passes ``layers=``/``kernels=`` as kwargs.

    Raises:
        KeyError: keys missing, unexpected or not SAN keys (listed).
        ValueError: an unpublished configuration without ``allow_custom``, or mis-shaped tensors.
    """
    sd = strip_prefix(state_dict)
    keys = list(sd)
    for key in ("conv_in.weight", "fc.weight"):
        if key not in sd:
            raise KeyError(f"hszhao/SAN checkpoint: missing {key!r}; keys start with {keys[:5]}")
    attention = [k for k in keys if ".sam." in k]
    if not attention:
        raise KeyError(
            f"hszhao/SAN checkpoint: no attention keys 'layer<s>.<i>.sam.*'; keys start with {keys[:5]}"
        )
    sa_type = "pairwise" if any(".sam.conv_p." in k for k in attention) else "patchwise"
    layers = _infer_layers(keys)
    kernels = _infer_kernels(sd, sa_type, kernels)
    num_classes, in_chans = sd["fc.weight"].shape[0], sd["conv_in.weight"].shape[1]

    model_kwargs: dict[str, Any] = {"num_classes": num_classes}
    if in_chans != 3:
        model_kwargs["in_chans"] = in_chans
    family = next((f for f, cfg in SAN_LAYERS.items() if cfg == layers), None)
    if family is None or kernels != DEFAULT_KERNELS:
        if not allow_custom:
            raise ValueError(
                f"hszhao/SAN checkpoint with layers={list(layers)}, kernels={list(kernels)} is not a published "
                f"SAN10/15/19 configuration {dict(SAN_LAYERS)}; pass allow_custom=True to convert it anyway"
            )
        family = family or min(
            SAN_LAYERS, key=lambda f: sum(abs(a - b) for a, b in zip(SAN_LAYERS[f], layers, strict=True))
        )
        model_kwargs["layers"] = list(layers)
        if kernels != DEFAULT_KERNELS:
            model_kwargs["kernels"] = list(kernels)
    model = SAN(layers=layers, sa_type=sa_type, kernels=kernels, num_classes=num_classes, in_chans=in_chans)
    model.load_official_state_dict(sd)
    return Converted(f"{family}_{sa_type}", model.state_dict(), model_kwargs)
