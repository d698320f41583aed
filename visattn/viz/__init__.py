"""Seeing attention: contact sheets of attention maps, training reports, Grad-CAM comparison.

Needs matplotlib (``pip install 'visattn[viz]'``); the Grad-CAM comparison also needs pytorch-grad-cam
(``visattn[gradcam]``). Names are imported lazily, so ``import visattn.viz`` (and the ``visattn`` CLI, whose
``visualize`` and ``report`` live in :mod:`visattn.cli.viz`) work without them.

Notebook use::

    from visattn.inference import load_trained_model
    from visattn.viz import visualize, write_training_report

    loaded = load_trained_model("runs/demo/csra/best.safetensors")
    x = loaded.input_of("photo.png")  # exactly the input `visattn eval` would make of the file
    fig = visualize(loaded.model, x, class_names=loaded.class_names, mean=loaded.mean, std=loaded.std)
    write_training_report("runs/demo/csra")

See ``docs/visualization.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AttentionRecord",
    "Panel",
    "attention_panels",
    "collect_attention",
    "gradcam_maps",
    "gradcam_panels",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_per_class",
    "read_log",
    "render_contact_sheet",
    "san_footprint",
    "visualize",
    "visualize_run",
    "write_training_report",
]

_WHERE = {
    "AttentionRecord": "overlay",
    "Panel": "overlay",
    "attention_panels": "overlay",
    "collect_attention": "overlay",
    "render_contact_sheet": "overlay",
    "san_footprint": "overlay",
    "visualize": "overlay",
    "visualize_run": "overlay",
    "plot_confusion_matrix": "report",
    "plot_curves": "report",
    "plot_per_class": "report",
    "read_log": "report",
    "write_training_report": "report",
    "gradcam_maps": "gradcam",
    "gradcam_panels": "gradcam",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module = importlib.import_module(f"{__name__}.{_WHERE[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
