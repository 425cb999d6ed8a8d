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
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

__all__ = ["PALETTE", "RC", "TIME_LABEL", "style_context", "new_figure", "finish_axes", "color_for", "empty_note",
           "save_figure", "thin_steps"]

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
        subtitle: a small footer line at the bottom right (the trace's name).

    Returns:
        The figure and a flat list of its axes.
    """
    with style_context():
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
        fig.suptitle(title, fontsize=RC["axes.titlesize"] + 1, fontweight="bold")
        if subtitle:
            # A footer, kept clear of the axes by shrinking the area constrained layout may use.
            foot = 0.22 / size[1]
            engine = fig.get_layout_engine()
            if engine is not None:
                engine.set(rect=(0.0, foot, 1.0, 1.0 - foot))
            fig.text(0.995, 0.004, subtitle, ha="right", va="bottom", fontsize=8, color="#555555")
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
    # Trace time is absolute (seconds since the trace clock's zero): never "+1.393e1" offsets on the x axis.
    for axis in (ax.xaxis, ax.yaxis):
        fmt = axis.get_major_formatter()
        if isinstance(fmt, ScalarFormatter):
            fmt.set_useOffset(False)
    if title:
        ax.set_title(title, fontsize=RC["axes.titlesize"] - 1, fontweight="normal")
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            # A light frame keeps the legend readable where it has to sit on top of lines; long legends go
            # beside the axes instead of over the data.
            outside = len(handles) > 4
            ax.legend(handles, labels, title=legend_title, fontsize=RC["legend.fontsize"], frameon=True,
                      framealpha=0.85, edgecolor="none", loc="upper left" if outside else "best",
                      bbox_to_anchor=(1.01, 1.0) if outside else None)


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


def thin_steps(x: np.ndarray, y: np.ndarray, max_points: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Fewer points for a step series without losing its peaks and troughs.

    The series is cut into ``max_points // 4`` equal slices of the x range; each slice keeps its first, lowest,
    highest and last point (in x order), which is what a reader can see at chart resolution anyway.

    Args:
        x: sorted x values.
        y: values.
        max_points: leave series up to this long unchanged.

    Returns:
        The thinned ``(x, y)``.
    """
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max(max_points // 4, 1)
    xf = x.astype(float)
    edges = np.linspace(xf[0], xf[-1], buckets + 1)
    idx = np.clip(np.searchsorted(edges, xf, side="right") - 1, 0, buckets - 1)
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    ends = np.r_[starts[1:], n] - 1
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    # Position of the min/max inside each slice: first index where the slice reaches it.
    seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    is_lo = y == lo[seg]
    is_hi = y == hi[seg]
    pos = np.arange(n)
    first_lo = np.full(len(starts), n)
    first_hi = np.full(len(starts), n)
    np.minimum.at(first_lo, seg[is_lo], pos[is_lo])
    np.minimum.at(first_hi, seg[is_hi], pos[is_hi])
    keep = np.unique(np.concatenate([starts, ends, first_lo, first_hi]))
    return x[keep], y[keep]
