"""One look for every chart: Agg-rendered figures, a colour-blind-safe palette, labelled axes with units.

Theory of operation: charts are built on :class:`matplotlib.figure.Figure` objects attached to an Agg canvas, not
through ``pyplot``, so nothing opens a window, nothing lingers in pyplot's global figure list, and rendering works
on a machine without a display. :func:`new_figure` makes a figure with the house style applied (through
``rc_context`` so a user's own rcParams are left alone); :func:`finish_axes` gives every axes its labels and a
legend when it has labelled artists; :func:`empty_note` writes "no data" into an axes rather than leaving a
reader guessing. Colours are assigned per series name with :func:`color_for`, so the same device keeps its colour
across charts of one report.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["PALETTE", "RC", "TIME_LABEL", "style_context", "new_figure", "finish_axes", "color_for", "empty_note",
           "save_figure"]

#: Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), then a few extra.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#7F7F7F", "#8C564B"]

#: rcParams of the house style.
RC: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "lines.linewidth": 1.4,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
}

#: The x label of every time-series chart.
TIME_LABEL = "trace time (s)"


@contextmanager
def style_context() -> Iterator[None]:
    """Apply :data:`RC` for the duration of a ``with`` block."""
    with matplotlib.rc_context(RC):
        yield


def new_figure(title: str, *, nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (10.0, 4.8),
               sharex: bool = False, subtitle: str | None = None) -> tuple[Figure, list[Axes]]:
    """A styled figure on an Agg canvas with its axes.

    Args:
        title: the figure's title (also kept as ``fig._iovatrace_title`` for the report).
        nrows: rows of axes.
        ncols: columns of axes.
        size: figure size in inches.
        sharex: share the x axis between rows.
        subtitle: a smaller second line (the trace name, a caveat).

    Returns:
        The figure and a flat list of its axes.
    """
    with style_context():
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
        text = title if not subtitle else f"{title}\n"
        fig.suptitle(text, fontsize=RC["axes.titlesize"] + 1, fontweight="bold")
        if subtitle:
            fig.text(0.5, 0.995, "\n" + subtitle, ha="center", va="top", fontsize=9, color="#444444")
        flat = [ax for row in axes for ax in row]
        for ax in flat:
            ax.grid(True, alpha=RC["grid.alpha"], linewidth=RC["grid.linewidth"])
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
    return fig, flat


def finish_axes(ax: Axes, *, xlabel: str, ylabel: str, title: str | None = None, legend: bool = True,
                legend_title: str | None = None) -> None:
    """Label an axes and add a legend when any artist has a label.

    Args:
        ax: the axes.
        xlabel: x label with unit.
        ylabel: y label with unit.
        title: axes title (the panel's), optional.
        legend: add a legend if there is anything to show.
        legend_title: the legend's heading.
    """
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=RC["axes.titlesize"] - 1, fontweight="normal")
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, title=legend_title, fontsize=RC["legend.fontsize"], frameon=False,
                      loc="best")


def color_for(name: str, order: list[str] | None = None) -> str:
    """A stable colour for a series name.

    Args:
        name: the series (device, queue, size bin).
        order: if given and ``name`` is in it, its position picks the colour (consistent within a chart).

    Returns:
        A hex colour from :data:`PALETTE`.
    """
    if order is not None and name in order:
        return PALETTE[order.index(name) % len(PALETTE)]
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def empty_note(ax: Axes, text: str) -> None:
    """Write why an axes has no data into its middle."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666666", wrap=True)


def save_figure(fig: Figure, stem: str) -> list[str]:
    """Write ``stem.png`` and ``stem.svg``.

    Args:
        fig: the figure.
        stem: path without suffix.

    Returns:
        The two paths written.
    """
    paths = [f"{stem}.png", f"{stem}.svg"]
    with style_context():
        for p in paths:
            fig.savefig(p)
    return paths
