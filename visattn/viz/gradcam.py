"""Optional comparison with gradient-based class activation maps (pytorch-grad-cam).

``pip install 'visattn[gradcam]'`` (the PyPI package ``grad-cam``, import name ``pytorch_grad_cam``; it
pulls ``opencv-python-headless``, which only this optional module needs). ``visattn visualize --gradcam``
adds one Grad-CAM panel per top-k class after the module's own maps, so that a CSRA class score map and the
Grad-CAM of the same class sit on the same sheet.

Each (image, class) pair is computed in its own call with a single target: this sidesteps the multi-label
pitfall of passing one target list for a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from visattn.recording import AttentionMapSource

from ._panels import Panel

__all__ = ["METHODS", "default_target_layer", "gradcam_maps", "gradcam_panels"]

#: ``method`` name → pytorch_grad_cam class name.
METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
}
_HEAD_WORDS = ("classifier", "head", "fc")


def _import():
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise ImportError(
            "the Grad-CAM comparison needs pytorch-grad-cam: pip install 'visattn[gradcam]' (PyPI: grad-cam)"
        ) from err
    return pytorch_grad_cam, ClassifierOutputTarget


def default_target_layer(model: nn.Module) -> str:
    """The usual CAM layer: the block holding the last ``Conv2d`` outside attention layers and heads.

    The block (the conv's parent module, e.g. a ResNet ``BasicBlock`` or GlyphNet stage) is taken so that
    the map is read after its normalisation, activation and residual sum; the conv itself when its parent
    is the whole model.
    """
    inside = [n for n, m in model.named_modules() if isinstance(m, AttentionMapSource) and n]
    chosen = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if any(name == p or name.startswith(p + ".") for p in inside):
            continue
        if any(word in part for part in name.split(".") for word in _HEAD_WORDS):
            continue
        chosen = name
    if chosen is None:
        raise ValueError("no Conv2d outside attention layers and heads: pass target_layer=<module name>")
    parent = chosen.rpartition(".")[0]
    return parent or chosen


def gradcam_maps(
    model: nn.Module,
    x: torch.Tensor,
    classes: Sequence[int],
    target_layer: str | None = None,
    method: str = "gradcam",
) -> np.ndarray:
    """CAMs ``(len(classes), H, W)`` in [0, 1] of one input ``x (C, H, W)`` for each class.

    Args:
        target_layer: module name (default: :func:`default_target_layer`).
        method: a key of :data:`METHODS`.
    """
    cam_lib, ClassifierOutputTarget = _import()
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    name = target_layer or default_target_layer(model)
    layer = dict(model.named_modules()).get(name)
    if layer is None:
        raise ValueError(f"target_layer {name!r} is not a module of the model")
    was_training = model.training
    model.eval()
    maps = []
    try:
        with getattr(cam_lib, METHODS[method])(model=model, target_layers=[layer]) as cam:
            for c in classes:
                out = cam(input_tensor=x.float(), targets=[ClassifierOutputTarget(int(c))])
                maps.append(np.asarray(out[0], dtype=np.float64))
    finally:
        model.train(was_training)
    return np.stack(maps) if maps else np.zeros((0, *x.shape[-2:]))


def gradcam_panels(
    model: nn.Module,
    x: torch.Tensor,
    classes: Sequence[int],
    class_names: Sequence[str] | None = None,
    target_layer: str | None = None,
    method: str = "gradcam",
) -> list[Panel]:
    """Contact-sheet panels (group ``"Grad-CAM"``) of :func:`gradcam_maps`."""
    name = target_layer or default_target_layer(model)
    maps = gradcam_maps(model, x, classes, name, method)
    panels = []
    for c, heat in zip(classes, maps, strict=True):
        cls = str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)
        h, w = heat.shape
        i = int(np.argmax(heat))
        panels.append(
            Panel(
                f"{METHODS[method]} @ {name}\nclass {cls}",
                "Grad-CAM",
                heat=heat,
                points=((i // w, i % w),),
                # pytorch-grad-cam already rescales each map to [0, 1]: it carries no class evidence.
                vrange=(0.0, 1.0),
                label="Grad-CAM (per-map norm.), 0–1",
                class_name=cls,
                module=name,
                kind=method,
            )
        )
    return panels
