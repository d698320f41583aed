"""Text that fits the figure: titles wrapped to the width they are drawn in.

Matplotlib never wraps text, and constrained layout makes room for a title's height but not for its
width: a title wider than its axes or the figure (a long run name, a model name and a metric) is simply cut
off at the figure edge. Titles are therefore wrapped (:mod:`textwrap`) to the width measured with the Agg
renderer's own font metrics, i.e. the width the PNG will have. Private part of :mod:`visattn.viz`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

#: Space kept free on each side of a figure title, in inches.
TITLE_MARGIN_IN = 0.1


def _measure(fontsize: float, dpi: float) -> Callable[[str], float]:
    """Width in pixels of one line of text as Agg draws it (the renderer that writes the PNGs)."""
    renderer = RendererAgg(1, 1, dpi)
    prop = FontProperties(size=fontsize)

    def width(line: str) -> float:
        if not line:
            return 0.0
        return float(renderer.get_text_width_height_descent(line, prop, ismath=False)[0])

    return width


def wrap_to_width(text: str, width_px: float, fontsize: float, dpi: float) -> str:
    """``text`` with every line wrapped so that it is at most ``width_px`` pixels wide at ``fontsize``.

    Lines are broken at spaces where possible; a word longer than the width (a run name without spaces)
    is broken inside, since a cut word still reads better than a clipped one. Existing line breaks are
    kept.
    """
    if width_px <= 0:
        return text
    width = _measure(fontsize, dpi)
    out: list[str] = []
    for line in text.split("\n"):
        full = width(line)
        if full <= width_px:
            out.append(line)
            continue
        # Start from the proportional guess and shorten until every wrapped line fits.
        chars = max(1, min(len(line) - 1, int(len(line) * width_px / full)))
        while True:
            wrapped = textwrap.wrap(line, chars, break_long_words=True, break_on_hyphens=False)
            if chars == 1 or max(width(w) for w in wrapped) <= width_px:
                break
            chars -= 1
        out.extend(wrapped)
    return "\n".join(out)


def fit_titles(
    fig: Figure,
    titles: Sequence[tuple[Axes, str, float]] = (),
    suptitle: str = "",
    suptitle_size: float = 10.0,
) -> None:
    """Set axes titles and a figure title, each wrapped to the width it has after layout.

    Args:
        fig: a figure with ``layout="constrained"`` whose axes are in place (titles not yet set).
        titles: ``(axes, text, fontsize)``: the title of each axes, wrapped to the width of the axes as
            drawn (for an axes with a fixed aspect, the box its aspect leaves: the title is centred on it).
        suptitle, suptitle_size: figure title, wrapped to the figure width less
            :data:`TITLE_MARGIN_IN` on each side.
    """
    fig.draw_without_rendering()  # constrained layout places the axes; their widths do not depend on titles
    fig_width = fig.bbox.width
    for ax, text, size in titles:
        width = ax.get_position().width * fig_width
        ax.set_title(wrap_to_width(text, width, size, fig.dpi), fontsize=size)
    if suptitle:
        width = fig_width - 2 * TITLE_MARGIN_IN * fig.dpi
        fig.suptitle(wrap_to_width(suptitle, width, suptitle_size, fig.dpi), fontsize=suptitle_size)
    # Lay out once more with the wrapped titles: an axes with a fixed aspect (a confusion matrix) is
    # centred in its box, and constrained layout needs a second pass to move a tall title inside the figure.
    fig.draw_without_rendering()
