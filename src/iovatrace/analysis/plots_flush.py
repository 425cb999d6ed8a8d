"""Charts of flush queues, flushes, IOTLB invalidations and replay findings (see :mod:`.plots` for the rules).

Theory of operation: like :mod:`.plots`, each function draws one ``df_*`` frame and returns a Figure. The flush
charts mark the flush-queue timeout (``IOVA_FQ_TIMEOUT``, 10 ms) so a reader sees how late the timer fires.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from .style import TIME_LABEL, color_for, empty_note, finish_axes, new_figure, thin_steps

__all__ = ["FQ_TIMEOUT_MS", "plot_flush_queue", "plot_flush_intervals", "plot_invalidations", "plot_findings"]

#: The flush-queue timeout of dma-iommu (IOVA_FQ_TIMEOUT), in milliseconds.
FQ_TIMEOUT_MS = 10.0


def plot_flush_queue(df: pl.DataFrame, *, subtitle: str | None = None) -> Figure:
    """Depth of each per-CPU flush queue over time.

    Args:
        df: :func:`~iovatrace.analysis.frames_flush.df_flush_queue` output.
        subtitle: optional second title line.

    Returns:
        A step chart per queue (labelled with the CPU that fills it and the queue's address).
    """
    fig, (ax,) = new_figure("Flush-queue depth (IOVAs waiting for an IOTLB flush)", subtitle=subtitle)
    queues = sorted({(q, f) for q, f in df.select("queue", "fq").unique().iter_rows()})
    names = [f"{q} fq {f}" for q, f in queues]
    for (q, f), name in zip(queues, names):
        s = df.filter(pl.col("fq") == f)
        ax.step(*thin_steps(s["time_s"].to_numpy(), s["depth"].to_numpy()), where="post", label=name,
                color=color_for(name, names))
    if not queues:
        empty_note(ax, "no flush-queue activity (strict mode flushes on every unmap)")
    ax.axhline(256, color="#999999", linestyle=":", linewidth=1)
    ax.annotate("ring of 256 slots (holds 255 entries)", (0.0, 256), xycoords=("axes fraction", "data"), fontsize=8,
                color="#666666", xytext=(4, -12), textcoords="offset points")
    finish_axes(ax, xlabel=TIME_LABEL, ylabel="entries in queue", legend_title="queue (one per CPU and domain)")
    return fig


def plot_flush_intervals(df: pl.DataFrame, *, subtitle: str | None = None) -> Figure:
    """When flush-queue flushes happen: time from arming to the timer's flush, and between flushes.

    Args:
        df: :func:`~iovatrace.analysis.frames_flush.df_flushes` output.
        subtitle: optional second title line.

    Returns:
        A three-panel figure: histogram of the timer delay, histogram of flush intervals (log), and each flush's
        delay over time.
    """
    fig, axes = new_figure("Flush-queue flushes: when the timer fires", nrows=1, ncols=3, size=(13, 4.6),
                           subtitle=subtitle)
    ax1, ax2, ax3 = axes
    delay = df["timer_delay_ms"].drop_nulls().to_numpy()
    if delay.size:
        ax1.hist(delay, bins=np.arange(0, max(float(delay.max()), 2 * FQ_TIMEOUT_MS) + 1, 1.0), color=color_for("t"),
                 label=f"{delay.size} timer flushes, median {np.median(delay):.1f} ms")
    else:
        empty_note(ax1, "no timer-triggered flush")
    ax1.axvline(FQ_TIMEOUT_MS, color="black", linestyle="--", linewidth=1, label="fq_timeout 10 ms")
    finish_axes(ax1, xlabel="first queued entry → timer flush (ms)", ylabel="flushes",
                title="timer delay after arming")
    for trig in sorted(set(df["trigger"].to_list())):
        iv = df.filter((pl.col("trigger") == trig) & pl.col("interval_ms").is_not_null())["interval_ms"].to_numpy()
        iv = iv[iv > 0]
        if iv.size:
            ax2.hist(iv, bins=np.logspace(np.log10(iv.min()), np.log10(iv.max() * 1.01 + 1e-9), 30), alpha=0.7,
                     label=f"{trig} ({iv.size})", color=color_for(trig, ["timer", "queue full"]))
    ax2.set_xscale("log")
    ax2.axvline(FQ_TIMEOUT_MS, color="black", linestyle="--", linewidth=1)
    if df.is_empty():
        empty_note(ax2, "no flush-queue flush")
    finish_axes(ax2, xlabel="time since previous flush of the domain (ms, log)", ylabel="flushes",
                title="interval between flushes", legend_title="trigger")
    t = df.filter(pl.col("timer_delay_ms").is_not_null())
    ax3.scatter(t["time_s"].to_numpy(), t["timer_delay_ms"].to_numpy(), s=10, color=color_for("t"),
                label="timer flush")
    ax3.axhline(FQ_TIMEOUT_MS, color="black", linestyle="--", linewidth=1)
    finish_axes(ax3, xlabel=TIME_LABEL, ylabel="timer delay (ms)", title="each timer flush", legend=False)
    return fig


def plot_invalidations(df: pl.DataFrame, *, subtitle: str | None = None) -> Figure:
    """IOTLB invalidations and flush-queue flushes per second, by kind.

    Args:
        df: :func:`~iovatrace.analysis.frames_flush.df_invalidations` output.
        subtitle: optional second title line.

    Returns:
        One line per kind (log scale), with the total count in the legend.
    """
    fig, (ax,) = new_figure("IOTLB invalidations and flushes per second", subtitle=subtitle)
    kinds = sorted(set(df["kind"].to_list()))
    for i, k in enumerate(kinds):
        s = df.filter(pl.col("kind") == k).sort("window_start_s")
        y = s["per_s"].to_numpy().astype(float)
        # Zero windows are real (df_invalidations fills them) but cannot sit on a log axis: leave them blank.
        # Kinds that move together (each timeout makes one flush) would hide each other: vary the dash too.
        ax.step(s["window_start_s"].to_numpy(), np.where(y > 0, y, np.nan), where="post", marker="o", markersize=3,
                label=f"{k} ({int(s['count'].sum())})", color=color_for(k, kinds),
                linestyle=("-", "--", "-.", ":")[i % 4])
    if not kinds:
        empty_note(ax, "no invalidation events")
    ax.set_yscale("log")
    finish_axes(ax, xlabel=TIME_LABEL + ", window start", ylabel="events per second (log)",
                legend_title="kind (total)")
    return fig


def plot_findings(df: pl.DataFrame, *, subtitle: str | None = None) -> Figure:
    """Replay findings on a timeline, one row per kind, marked by severity.

    Args:
        df: :func:`~iovatrace.analysis.frames_replay.df_findings` output.
        subtitle: optional second title line.

    Returns:
        A timeline figure (count per kind in the tick labels).
    """
    kinds = sorted(set(df["kind"].to_list())) if df.height else []
    fig, (ax,) = new_figure("Replay findings over time", size=(10, 1.8 + 0.45 * max(len(kinds), 2)), subtitle=subtitle)
    marks = {"error": ("X", "#D55E00"), "warning": ("^", "#E69F00"), "info": ("o", "#0072B2")}
    for sev, (m, c) in marks.items():
        s = df.filter(pl.col("severity") == sev) if df.height else df
        if s.height:
            y = [kinds.index(k) for k in s["kind"].to_list()]
            ax.scatter(s["time_s"].to_numpy(), y, marker=m, color=c, s=28, label=f"{sev} ({s.height})", alpha=0.8)
    counts = {k: int(df.filter(pl.col("kind") == k).height) for k in kinds}
    ax.set_yticks(range(len(kinds)), [f"{k} ({counts[k]})" for k in kinds])
    if not kinds:
        empty_note(ax, "the replay reported no findings")
    finish_axes(ax, xlabel=TIME_LABEL, ylabel="finding kind", legend_title="severity")
    return fig
