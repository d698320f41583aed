"""Drawing a contact sheet: the input image, then one heat map or bar chart per :class:`Panel`.

Colour scales (``scale=``): ``"fixed"`` (default) draws each panel's ``shown`` map on its ``vrange`` —
[0, 1] for the probabilities and masks, so that colours compare across panels and a class the model
rejects stays cold; ``"per-map"`` stretches each raw map to its own min and max (the former default: every
map looks equally "hot", useful only to see the shape of a flat map). The colour bar says which.

Images keep the input's aspect ratio (``aspect="equal"``, whatever the rcParams say): a 32×64 input is
drawn twice as wide as high, letterboxed inside its square cell.

Only matplotlib's object API (``Figure`` + Agg canvas): no pyplot state, no backend switch. Private part of
:mod:`visattn.viz.overlay` (import from there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._panels import Panel
from ._text import TITLE_MARGIN_IN, wrap_to_width

#: Values of ``render_contact_sheet(scale=...)``.
SCALES = ("fixed", "per-map")
#: Width of a cell not available to a panel title (colour bar, its ticks), in inches.
_TITLE_INSET_IN = 0.6


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


def _colour_scale(panel: Panel, scale: str) -> tuple[Any, float, float, str]:
    """``(values, vmin, vmax, colour-bar label)`` of a heat-map panel under ``scale``."""
    fixed = scale == "fixed" and (panel.shown is not None or panel.vrange is not None)
    values = panel.shown if fixed and panel.shown is not None else panel.heat
    if fixed and panel.vrange is not None:
        lo, hi = (float(v) for v in panel.vrange)
    else:
        finite = np.asarray(np.ma.filled(values, np.nan), dtype=np.float64)
        lo, hi = float(np.nanmin(finite)), float(np.nanmax(finite))
    if hi <= lo:
        hi = lo + 1e-12
    if fixed:
        label = panel.label or f"{lo:.3g}–{hi:.3g}"
    else:
        label = "raw, per-map min–max" if scale == "per-map" else (panel.label or "per-map min–max")
    return values, lo, hi, label


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
    scale: str = "fixed",
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
        scale: ``"fixed"``: each panel on its own documented scale (CSRA ``sigmoid(S)``, masks and VAA
            ``p · M / max M`` on [0, 1]; see the module docstring); ``"per-map"``: every raw map stretched
            to its own min and max (the old look). The colour bar label names the scale.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    img = _display_image(image)
    H, W = img.shape[:2]
    slots = _layout(panels, ncols)
    rows = max((r for r, _ in slots), default=0) + 1
    fig = Figure(figsize=(ncols * cell, rows * cell + 0.5), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(rows, ncols)
    gray = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if img.ndim == 2 else {}
    extent = (-0.5, W - 0.5, H - 0.5, -0.5)

    ax = fig.add_subplot(grid[0, 0])
    # aspect="equal" explicitly: with a style's image.aspect="auto" the input would fill the square cell.
    ax.imshow(img, extent=extent, aspect="equal", **gray)
    _draw_boxes(ax, boxes, None, label=True)
    ax.set_title(f"input {H}x{W}", fontsize=8)
    ax.set_axis_off()

    title_width = (cell - _TITLE_INSET_IN) * dpi
    for panel, (r, c) in zip(panels, slots, strict=True):
        ax = fig.add_subplot(grid[r, c])
        ax.set_title(wrap_to_width(panel.title, title_width, 7, dpi), fontsize=7)
        if panel.bars is not None:
            values = np.asarray(panel.bars, dtype=np.float64)
            ax.bar(np.arange(values.size), values, width=1.0, color="tab:blue", linewidth=0)
            ax.set_xlim(-0.5, values.size - 0.5)
            ax.set_ylim(0.0, 1.0 if values.max(initial=0) <= 1 else float(values.max()))
            ax.set_xlabel("channel", fontsize=7)
            ax.tick_params(labelsize=6)
            continue
        ax.imshow(img, extent=extent, aspect="equal", **gray)
        values, lo, hi, label = _colour_scale(panel, scale)
        im = ax.imshow(
            values,
            cmap=cmap,
            alpha=alpha,
            extent=extent,  # the map covers the whole image, whatever its own grid: H/h x W/w pixels a cell
            aspect="equal",
            vmin=lo,
            vmax=hi,
            interpolation="nearest" if panel.nearest or min(np.shape(values)) <= 4 else "bilinear",
        )
        for y, x in panel.points:
            ax.plot([x], [y], marker="+", color="white", markersize=9, mew=1.5)
        if panel.class_name is not None:
            _draw_boxes(ax, boxes, panel.class_name, label=False)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_axis_off()
        # As long as the image is high (a wide input is letterboxed inside the square cell).
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, shrink=min(1.0, H / W))
        bar.set_label(label, fontsize=6, labelpad=2)
        bar.ax.tick_params(labelsize=6)
    if title:
        width = ncols * cell * dpi - 2 * TITLE_MARGIN_IN * dpi
        fig.suptitle(wrap_to_width(title, width, 9, dpi), fontsize=9)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    return fig
