"""Attention overlays and contact sheets: one labelled PNG per image, every attention type of the model.

Everything a model's visattn layers record (:func:`visattn.record_attention`) becomes a panel:

=====================  ==============================================================================
layer                  panel
=====================  ==============================================================================
``CSRA`` (each head)   class score map ``S`` of each of the top-k predicted classes, peak marked ``+``
``AttentionAggregation``  VAA per-class spatial softmax ``M`` of the top-k classes, one per scale (branch)
``AttentionModule``    RAN soft mask ``M``, mean over channels, one per module (stage)
``SpatialOnlyAttention``  PSA spatial mask ``A_sp`` in (0, 1)
``ChannelOnlyAttention``  PSA channel weights ``A_ch`` as a bar chart
SAN pairwise/patchwise  aggregation weights (mean over the weight channels) of the footprint of chosen
                       pixels, drawn where they read on the image (reflect padding folded back)
other sources          the mean over channels of each 4-D map
=====================  ==============================================================================

Maps are stretched over the image (a map cell covers ``H/h × W/w`` pixels, as in
:func:`visattn.demo.peak_in_glyph_rate`); each panel has its own colour bar. Only matplotlib's object API is
used (``Figure`` + Agg canvas): no pyplot state, no backend switch, no OpenCV, safe in notebooks and
threads. For notebooks: ``fig = visualize(model, x, class_names=...)`` returns the figure.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from visattn.layers import (
    CSRA,
    AttentionAggregation,
    AttentionModule,
    ChannelOnlyAttention,
    SpatialOnlyAttention,
)
from visattn.recording import AttentionMapSource, record_attention

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

GROUP_ORDER = ("CSRA", "VAA", "RAN", "PSA", "SAN", "Grad-CAM", "other")


# ---------------------------------------------------------------------------------------------- recording
@dataclass
class AttentionRecord:
    """Output and attention maps of one forward pass.

    Attributes:
        output: the model output (usually logits ``(B, C)``).
        maps: ``{module name: {kind: tensor}}`` as yielded by :func:`visattn.record_attention`.
        input_sizes: spatial size ``(H, W)`` of each recorded layer's input.
        modules: the recorded modules by name.
        image_size: ``(H, W)`` of the model input.
    """

    output: Any
    maps: dict[str, dict[str, torch.Tensor]]
    input_sizes: dict[str, tuple[int, int]]
    modules: dict[str, nn.Module]
    image_size: tuple[int, int]


@torch.no_grad()
def collect_attention(model: nn.Module, images: torch.Tensor) -> AttentionRecord:
    """Run ``model`` on ``images (B, C, H, W)`` in eval mode and keep every recorded attention map."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    modules = {n: m for n, m in model.named_modules() if isinstance(m, AttentionMapSource)}
    sizes: dict[str, tuple[int, int]] = {}

    def hook(name: str):
        def pre(_module, args):
            if args and torch.is_tensor(args[0]) and args[0].dim() == 4:
                sizes[name] = tuple(int(s) for s in args[0].shape[-2:])

        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        with record_attention(model) as maps:
            output = model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    maps = {n: {k: v.float().cpu() for k, v in kinds.items()} for n, kinds in maps.items()}
    return AttentionRecord(
        output=output,
        maps=maps,
        input_sizes=sizes,
        modules={n: modules[n] for n in maps},
        image_size=(int(images.shape[-2]), int(images.shape[-1])),
    )


# ---------------------------------------------------------------------------------------------- panels
@dataclass
class Panel:
    """One cell of a contact sheet: a heat map over the image, or a bar chart.

    Attributes:
        title: label (module name, class, value range).
        group: attention type (``"CSRA"``, ``"VAA"``, ``"RAN"``, ``"PSA"``, ``"SAN"``, ``"Grad-CAM"``, ...);
            each group starts a new row of the sheet.
        heat: ``(h, w)`` map stretched over the whole image.
        bars: 1-D values drawn as a bar chart (PSA channel weights).
        points: ``(y, x)`` image pixels to mark (SAN query pixels, CSRA peaks).
        vrange: colour range (default: the map's min and max).
        nearest: nearest-neighbour display (SAN footprints) instead of bilinear (always for maps with a
            side of 4 cells or fewer, where smoothing would invent structure).
        class_name: the class the map belongs to (ground-truth boxes of that class are drawn).
        module, kind: where the map was recorded.
    """

    title: str
    group: str = "other"
    heat: np.ndarray | None = None
    bars: np.ndarray | None = None
    points: tuple[tuple[float, float], ...] = ()
    vrange: tuple[float, float] | None = None
    nearest: bool = False
    class_name: str | None = None
    module: str = ""
    kind: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _scores(output: Any, multilabel: bool) -> torch.Tensor | None:
    if isinstance(output, Mapping):
        output = output.get("logits", next(iter(output.values()), None))
    if isinstance(output, (tuple, list)):
        output = output[0] if output else None
    if not torch.is_tensor(output) or output.dim() != 2:
        return None
    output = output.float().cpu()
    return torch.sigmoid(output) if multilabel else torch.softmax(output, dim=1)


def _name(class_names: Sequence[str] | None, c: int) -> str:
    return str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)


def _top_classes(maps: torch.Tensor, probs: torch.Tensor | None, topk: int) -> list[tuple[int, float | None]]:
    """Top-k classes by predicted probability (or, if the map has other classes, by map peak)."""
    num = maps.shape[0]
    if probs is not None and probs.numel() == num:
        order = torch.argsort(probs, descending=True)[:topk]
        return [(int(c), float(probs[c])) for c in order]
    order = torch.argsort(maps.flatten(1).amax(1), descending=True)[:topk]
    return [(int(c), None) for c in order]


def _peak(heat: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float]:
    h, w = heat.shape
    i = int(np.argmax(heat))
    # Cell centre in pixel coordinates (pixel centres are integers, as in the boxes).
    return ((i // w + 0.5) * image_size[0] / h - 0.5, (i % w + 0.5) * image_size[1] / w - 0.5)


def _reflect(i: int, n: int) -> int | None:
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = abs(i) % period
    return i if i < n else period - i


def san_footprint(
    weights: torch.Tensor,
    in_size: tuple[int, int],
    out_cell: tuple[int, int],
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    padding: int | None = None,
    padding_mode: str = "reflect",
) -> np.ndarray:
    """Where the aggregation weights of one output position read, on the layer's input grid.

    Args:
        weights: ``(Cw, K², H_out, W_out)`` SAN aggregation weights of one image.
        in_size: ``(H, W)`` of the layer input.
        out_cell: output position ``(h, w)``.
    Returns:
        ``(H, W)`` map: the mean over the ``Cw`` weight channels of each neighbour's weight, at the
        neighbour's input position (``docs/ops.md`` geometry); reflect-padded neighbours are folded back
        onto the pixels they read, zero-padded ones are dropped.
    """
    K = kernel_size
    p = dilation * (K - 1) // 2 if padding is None else padding
    yo, xo = out_cell
    w = weights[:, :, yo, xo].float().mean(0).cpu().numpy()
    grid = np.zeros(in_size, dtype=np.float64)
    H, W = in_size
    for kh in range(K):
        for kw in range(K):
            iy, ix = -p + yo * stride + kh * dilation, -p + xo * stride + kw * dilation
            if padding_mode == "reflect":
                iy, ix = _reflect(iy, H), _reflect(ix, W)
            elif not (0 <= iy < H and 0 <= ix < W):
                continue
            grid[iy, ix] += w[kh * K + kw]
    return grid


def _matches(name: str, layers: Sequence[str] | None) -> bool:
    return not layers or any(fnmatch.fnmatchcase(name, pattern) for pattern in layers)


def _temperature(module: nn.Module) -> str:
    t = getattr(module, "temperature", None)
    return "" if t is None else ("T=inf" if math.isinf(t) else f"T={t:g}")


def attention_panels(
    record: AttentionRecord,
    index: int = 0,
    class_names: Sequence[str] | None = None,
    topk: int = 3,
    pixels: Sequence[tuple[float, float]] | None = None,
    layers: Sequence[str] | None = None,
    multilabel: bool = True,
) -> list[Panel]:
    """Panels of image ``index`` of ``record`` (see the module docstring for what each layer gives).

    Args:
        class_names: output names, for titles and ground-truth boxes.
        topk: classes shown per CSRA head / VAA scale: the ``topk`` most probable ones.
        pixels: ``(y, x)`` image pixels whose SAN aggregation weights are shown (default: the centre).
        layers: shell-style patterns of module names to keep (default: all), e.g. ``["layer4.*"]``.
        multilabel: probabilities are sigmoids (else softmax) of the model output.
    """
    H, W = record.image_size
    probs_all = _scores(record.output, multilabel)
    probs = probs_all[index] if probs_all is not None else None
    pixels = list(pixels) if pixels else [((H - 1) / 2, (W - 1) / 2)]
    panels: list[Panel] = []
    for name, kinds in record.maps.items():
        if not _matches(name, layers):
            continue
        module = record.modules.get(name)
        label = name or "<model>"
        if isinstance(module, CSRA) and "score" in kinds:
            score = kinds["score"][index]
            for c, p in _top_classes(score, probs, topk):
                heat = score[c].numpy()
                prob = "" if p is None else f" p={p:.2f}"
                panels.append(
                    Panel(
                        f"CSRA {label} {_temperature(module)}\nclass {_name(class_names, c)}{prob}",
                        "CSRA",
                        heat=heat,
                        points=(_peak(heat, (H, W)),),
                        class_name=_name(class_names, c),
                        module=name,
                        kind="score",
                    )
                )
        elif isinstance(module, AttentionAggregation) and "mask" in kinds:
            mask = kinds["mask"][index]
            for c, p in _top_classes(mask, probs, topk):
                heat = mask[c].numpy()
                prob = "" if p is None else f" p={p:.2f}"
                panels.append(
                    Panel(
                        f"VAA {label} {heat.shape[0]}x{heat.shape[1]}\nclass {_name(class_names, c)}{prob}",
                        "VAA",
                        heat=heat,
                        points=(_peak(heat, (H, W)),),
                        class_name=_name(class_names, c),
                        module=name,
                        kind="mask",
                    )
                )
        elif isinstance(module, AttentionModule) and "mask" in kinds:
            mask = kinds["mask"][index]
            panels.append(
                Panel(
                    f"RAN {label}\nsoft mask, mean of {mask.shape[0]} ch",
                    "RAN",
                    heat=mask.mean(0).numpy(),
                    module=name,
                    kind="mask",
                )
            )
        elif isinstance(module, SpatialOnlyAttention) and "spatial" in kinds:
            panels.append(
                Panel(
                    f"PSA {label}\nspatial mask",
                    "PSA",
                    heat=kinds["spatial"][index, 0].numpy(),
                    module=name,
                    kind="spatial",
                )
            )
        elif isinstance(module, ChannelOnlyAttention) and "channel" in kinds:
            values = kinds["channel"][index].flatten().numpy()
            panels.append(
                Panel(
                    f"PSA {label}\nchannel weights ({values.size} ch)",
                    "PSA",
                    bars=values,
                    module=name,
                    kind="channel",
                )
            )
        elif "weights" in kinds and kinds["weights"].dim() == 5 and hasattr(module, "kernel_size"):
            weights = kinds["weights"][index]
            ho, wo = weights.shape[-2:]
            in_size = record.input_sizes.get(name, (ho * module.stride, wo * module.stride))
            for y, x in pixels:
                cell = (min(ho - 1, max(0, int(y * ho / H))), min(wo - 1, max(0, int(x * wo / W))))
                grid = san_footprint(
                    weights,
                    in_size,
                    cell,
                    module.kernel_size,
                    module.stride,
                    module.dilation,
                    getattr(module, "padding", None),
                    module.padding_mode,
                )
                k = module.kernel_size
                panels.append(
                    Panel(
                        f"SAN {label} K={k}\nweights at ({y:.0f},{x:.0f}), grid {in_size[0]}x{in_size[1]}",
                        "SAN",
                        heat=np.ma.masked_equal(grid, 0.0),
                        points=((y, x),),
                        nearest=True,
                        module=name,
                        kind="weights",
                        extra={"cell": cell},
                    )
                )
        else:
            for kind, value in kinds.items():
                if value.dim() == 4:
                    panels.append(
                        Panel(
                            f"{type(module).__name__} {label}\n{kind}, mean of {value.shape[1]} ch",
                            "other",
                            heat=value[index].mean(0).numpy(),
                            module=name,
                            kind=kind,
                        )
                    )
    return panels


# ---------------------------------------------------------------------------------------------- rendering
def _display_image(image: Any) -> np.ndarray:
    if torch.is_tensor(image):
        image = image.detach().float().cpu()
        if image.dim() == 3:
            image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return np.clip(image, 0.0, 1.0)


def _layout(panels: Sequence[Panel], ncols: int) -> list[tuple[int, int]]:
    """Slot of each panel; slot (0, 0) is the input image. A new attention type starts a new row."""
    slots, row, col, previous = [], 0, 1, None
    for panel in panels:
        if previous is not None and panel.group != previous and col != 0:
            row, col = row + 1, 0
        if col == ncols:
            row, col = row + 1, 0
        slots.append((row, col))
        col += 1
        previous = panel.group
    return slots


def sheet_size(panels: Sequence[Panel], ncols: int = 4, cell: float = 2.5, dpi: int = 100) -> tuple[int, int]:
    """``(width, height)`` in pixels of the contact sheet of ``panels``."""
    rows = max((r for r, _ in _layout(panels, ncols)), default=0) + 1
    return round(ncols * cell * dpi), round((rows * cell + 0.5) * dpi)


def _draw_boxes(ax, boxes, class_name: str | None, label: bool) -> None:
    for box in boxes or ():
        name, y0, x0, y1, x1 = str(box[0]), *box[1:]
        if class_name is not None and name != class_name:
            continue
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", lw=0.8, ls="--")
        )
        if label:
            ax.text(x0, y0 - 1, name, color="yellow", fontsize=7, va="bottom")


def render_contact_sheet(
    image: Any,
    panels: Sequence[Panel],
    title: str = "",
    boxes: Sequence[Sequence[Any]] | None = None,
    ncols: int = 4,
    cell: float = 2.5,
    dpi: int = 100,
    path: str | Path | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> Figure:
    """Draw ``image`` followed by ``panels`` on one figure (and save it as PNG if ``path``).

    Args:
        image: displayable image: ``(C, H, W)`` tensor or ``(H, W[, 3])`` array in [0, 1].
        panels: from :func:`attention_panels` (and :func:`visattn.viz.gradcam.gradcam_panels`).
        title: figure title (image name, predictions).
        boxes: ground-truth ``(class name, y0, x0, y1, x1)`` boxes: all drawn on the input, and those of
            a panel's class on that panel (glyph canvases have them as ``dataset.boxes[i]``).
        ncols, cell, dpi: grid width, cell side in inches and resolution; the size is
            :func:`sheet_size`.
    """
    img = _display_image(image)
    H, W = img.shape[:2]
    slots = _layout(panels, ncols)
    rows = max((r for r, _ in slots), default=0) + 1
    fig = Figure(figsize=(ncols * cell, rows * cell + 0.5), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(rows, ncols)
    gray = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if img.ndim == 2 else {}
    extent = (-0.5, W - 0.5, H - 0.5, -0.5)

    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(img, extent=extent, **gray)
    _draw_boxes(ax, boxes, None, label=True)
    ax.set_title(f"input {H}x{W}", fontsize=8)
    ax.set_axis_off()

    for panel, (r, c) in zip(panels, slots, strict=True):
        ax = fig.add_subplot(grid[r, c])
        ax.set_title(panel.title, fontsize=7)
        if panel.bars is not None:
            values = np.asarray(panel.bars, dtype=np.float64)
            ax.bar(np.arange(values.size), values, width=1.0, color="tab:blue", linewidth=0)
            ax.set_xlim(-0.5, values.size - 0.5)
            ax.set_ylim(0.0, 1.0 if values.max(initial=0) <= 1 else float(values.max()))
            ax.set_xlabel("channel", fontsize=7)
            ax.tick_params(labelsize=6)
            continue
        ax.imshow(img, extent=extent, **gray)
        heat = panel.heat
        finite = np.asarray(np.ma.filled(heat, np.nan), dtype=np.float64)
        lo, hi = panel.vrange or (float(np.nanmin(finite)), float(np.nanmax(finite)))
        if hi <= lo:
            hi = lo + 1e-12
        im = ax.imshow(
            heat,
            cmap=cmap,
            alpha=alpha,
            extent=extent,
            vmin=lo,
            vmax=hi,
            interpolation="nearest" if panel.nearest or min(np.shape(heat)) <= 4 else "bilinear",
        )
        for y, x in panel.points:
            ax.plot([x], [y], marker="+", color="white", markersize=9, mew=1.5)
        if panel.class_name is not None:
            _draw_boxes(ax, boxes, panel.class_name, label=False)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_axis_off()
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    return fig


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
    return render_contact_sheet(display, panels, title=text, boxes=boxes, ncols=ncols, path=path)


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
    out_dir: str | Path,
    images: Sequence[str | Path] = (),
    checkpoint: str | Path | None = None,
    config: str | Path | None = None,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    samples: int = 0,
    topk: int = 3,
    pixels: Sequence[str | tuple[float, float]] | None = None,
    layers: Sequence[str] | None = None,
    img_size: int | None = None,
    gradcam: bool | str = False,
    ncols: int = 4,
) -> list[Path]:
    """``visattn visualize``: one contact sheet PNG per image file (and per validation sample).

    The model comes from :func:`visattn.export.load_trained_model` (checkpoint + its run's
    ``config.json``, a recipe, or a registered name). ``samples``: also draw the first ``samples`` items
    of the recipe's validation split, with their ground-truth boxes when the dataset has them (glyph
    canvases). Returns the written files (``<image stem>_attention.png``, ``sample_NNNN_attention.png``).
    """
    from visattn.export import load_trained_model
    from visattn.predict import load_image

    loaded = load_trained_model(
        checkpoint,
        config=config,
        model_name=model_name,
        model_kwargs=model_kwargs,
        overrides=overrides,
        img_size=img_size,
    )
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
    )
    written = []
    for image in images:
        x = loaded.transform(load_image(image, loaded.input_size[0]))
        path = out_dir / f"{Path(image).stem}_attention.png"
        visualize(loaded.model, x, title=f"{loaded.name}: {Path(image).name}", path=path, **common)
        written.append(path)
    if samples:
        if loaded.config is None:
            raise ValueError(
                "--samples needs a recipe (--config, or a checkpoint with its run's config.json)"
            )
        from visattn.engine.build import build_datasets

        dataset = build_datasets(loaded.config, ("val",))["val"]
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
                title=f"{loaded.name}: validation item {i}{truth}",
                boxes=all_boxes[i] if all_boxes is not None else None,
                path=path,
                **common,
            )
            written.append(path)
    return written
