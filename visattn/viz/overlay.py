"""Attention overlays and contact sheets: one labelled PNG per image, every attention type of the model.

Everything a model's visattn layers record (:func:`visattn.record_attention`) becomes a panel:

=====================  ==============================================================================
layer                  panel
=====================  ==============================================================================
``CSRA`` (each head)   class score map ``S`` of each of the top-k predicted classes, peak marked ``+``,
                       drawn as ``sigmoid(S)`` (softmax over classes for single-label models) on [0, 1]
``AttentionAggregation``  VAA per-class spatial softmax ``M`` of the top-k classes, one per scale (branch),
                       drawn as ``p · M / max M`` on [0, 1] (``p``: the class probability)
``AttentionModule``    RAN soft mask ``M``, mean over channels, one per module (stage), on [0, 1]
``SpatialOnlyAttention``  PSA spatial mask ``A_sp`` in (0, 1), on [0, 1]
``ChannelOnlyAttention``  PSA channel weights ``A_ch`` as a bar chart
SAN pairwise/patchwise  aggregation weights (mean over the weight channels) of the footprint of chosen
                       pixels, drawn where they read on the image (reflect padding folded back), on
                       [0, max]
other sources          the mean over channels of each 4-D map, per-map min–max
=====================  ==============================================================================

Maps are stretched over the image (a map cell covers ``H/h × W/w`` pixels, as in
:func:`visattn.demo.peak_in_glyph_rate`), keeping the input's aspect ratio; each panel has a colour bar
whose label names its scale. The scales are fixed where the quantity has one, so that a class of
probability 0.03 is drawn cold and one of 0.97 hot; ``scale="per-map"`` stretches every raw map to its own
min and max instead (the former look). Only matplotlib's object API is used (``Figure`` + Agg canvas): no
pyplot state, no backend switch, no OpenCV, safe in notebooks and threads. For notebooks:
``fig = visualize(model, x, class_names=...)`` returns the figure.

Layout: this module holds the one-call entry points :func:`visualize` and :func:`visualize_run`
(``visattn visualize``) and re-exports the rest: recording and panels live in ``_panels.py``, drawing in
``_sheet.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from visattn.inference import TrainedModel

# ``x as x``: re-exports of public names outside ``__all__`` (importable from here before the split).
from ._panels import GROUP_ORDER as GROUP_ORDER
from ._panels import (
    AttentionRecord,
    Panel,
    _name,
    _scores,
    attention_panels,
    collect_attention,
    san_footprint,
)
from ._sheet import SCALES as SCALES
from ._sheet import render_contact_sheet
from ._sheet import sheet_size as sheet_size

__all__ = [
    "AttentionRecord",
    "Panel",
    "attention_panels",
    "collect_attention",
    "render_contact_sheet",
    "san_footprint",
    "visualize",
    "visualize_run",
]


# ---------------------------------------------------------------------------------------------- one call
def _prediction_text(probs: torch.Tensor | None, class_names, multilabel: bool, topk: int) -> str:
    if probs is None:
        return ""
    order = torch.argsort(probs, descending=True)[: max(1, topk)]
    top = ", ".join(f"{_name(class_names, int(c))} {float(probs[c]):.2f}" for c in order)
    return ("sigmoid" if multilabel else "softmax") + f" top: {top}"


def visualize(
    model: nn.Module,
    x: torch.Tensor,
    class_names: Sequence[str] | None = None,
    multilabel: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    topk: int = 3,
    pixels: Sequence[tuple[float, float]] | None = None,
    layers: Sequence[str] | None = None,
    boxes: Sequence[Sequence[Any]] | None = None,
    title: str = "",
    path: str | Path | None = None,
    ncols: int = 4,
    gradcam: bool | str = False,
    scale: str = "fixed",
) -> Figure:
    """Contact sheet of every attention map ``model`` computes on one input ``x (C, H, W)``.

    Args:
        model: any model holding visattn attention layers.
        x: the model input (normalised as the model expects); ``mean``/``std`` undo the normalisation
            for display.
        class_names, multilabel, topk, pixels, layers: see :func:`attention_panels`.
        boxes: ground-truth boxes ``(class name, y0, x0, y1, x1)`` to draw.
        title: first line of the figure title; the top predictions are added.
        path: also save the PNG here.
        gradcam: add Grad-CAM maps of the same top-k classes (needs ``pytorch-grad-cam``; a string names
            the target layer, ``True`` picks the last convolution before the head).
        scale: colour scales, ``"fixed"`` (default: probabilities and masks on [0, 1], CSRA maps as
            ``sigmoid(S)``) or ``"per-map"`` (each raw map stretched to its own min and max); see
            :func:`render_contact_sheet`.
    """
    if x.dim() == 4:
        x = x[0]
    record = collect_attention(model, x.unsqueeze(0))
    panels = attention_panels(record, 0, class_names, topk, pixels, layers, multilabel)
    probs_all = _scores(record.output, multilabel)
    probs = probs_all[0] if probs_all is not None else None
    if gradcam:
        from .gradcam import gradcam_panels

        classes = [int(c) for c in torch.argsort(probs, descending=True)[:topk]] if probs is not None else [0]
        target = gradcam if isinstance(gradcam, str) else None
        panels += gradcam_panels(model, x, classes, class_names=class_names, target_layer=target)
    display = x.detach().float().cpu()
    if mean is not None and std is not None:
        m = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        display = display * s + m
    if not panels:
        title = (title + "\n" if title else "") + "(no visattn attention layer ran)"
    text = "\n".join(t for t in (title, _prediction_text(probs, class_names, multilabel, topk)) if t)
    return render_contact_sheet(display, panels, title=text, boxes=boxes, ncols=ncols, path=path, scale=scale)


def _parse_pixels(pixels: Sequence[str | tuple[float, float]] | None) -> list[tuple[float, float]] | None:
    if not pixels:
        return None
    out = []
    for p in pixels:
        if isinstance(p, str):
            y, sep, x = p.partition(",")
            if not sep:
                raise ValueError(f"--pixels expects y,x pairs, got {p!r}")
            p = (float(y), float(x))
        out.append((float(p[0]), float(p[1])))
    return out


def visualize_run(
    loaded: TrainedModel,
    out_dir: str | Path,
    images: Sequence[str | Path] = (),
    samples: int = 0,
    topk: int = 3,
    pixels: Sequence[str | tuple[float, float]] | None = None,
    layers: Sequence[str] | None = None,
    gradcam: bool | str = False,
    ncols: int = 4,
    scale: str = "fixed",
) -> list[Path]:
    """``visattn visualize``: one contact sheet PNG per image file (and per validation sample).

    ``loaded``: from :func:`visattn.inference.load_trained_model` (checkpoint + its run's ``config.json``, a
    recipe, or a registered name); image files go through its evaluation pipeline
    (:meth:`~visattn.inference.TrainedModel.input_of`), so a map shows what ``visattn eval`` scores.
    ``samples``: also draw the first ``samples`` items of the recipe's test split (its selection split when it
    has none), with their
    ground-truth boxes when the dataset has them (glyph canvases). ``scale``: ``"fixed"`` or
    ``"per-map"`` colour scales (:func:`visualize`). Returns the written files
    (``<image stem>_attention.png``, ``sample_NNNN_attention.png``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pix = _parse_pixels(pixels)
    common = dict(
        class_names=loaded.class_names,
        multilabel=loaded.multilabel,
        mean=loaded.mean,
        std=loaded.std,
        topk=topk,
        pixels=pix,
        layers=layers,
        gradcam=gradcam,
        ncols=ncols,
        scale=scale,
    )
    written = []
    for image in images:
        x = loaded.input_of(image)
        path = out_dir / f"{Path(image).stem}_attention.png"
        visualize(loaded.model, x, title=f"{loaded.name}: {Path(image).name}", path=path, **common)
        written.append(path)
    if samples:
        if loaded.config is None:
            raise ValueError(
                "--samples needs a recipe (--config, or a checkpoint with its run's config.json)"
            )
        role = "test" if loaded.config["data"]["test_split"] else "val"
        dataset = loaded.dataset(role)
        all_boxes = getattr(dataset, "boxes", None)
        for i in range(min(samples, len(dataset))):
            item = dataset[i]
            x = item[0]
            truth = ""
            if len(item) > 1 and torch.is_tensor(item[1]) and item[1].dim() == 1 and loaded.multilabel:
                present = [_name(loaded.class_names, int(c)) for c in torch.nonzero(item[1] > 0.5).flatten()]
                truth = f" (labels: {', '.join(present) or 'none'})"
            path = out_dir / f"sample_{i:04d}_attention.png"
            visualize(
                loaded.model,
                x,
                title=f"{loaded.name}: {role} item {i}{truth}",
                boxes=all_boxes[i] if all_boxes is not None else None,
                path=path,
                **common,
            )
            written.append(path)
    return written
