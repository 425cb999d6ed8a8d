"""Charts of the mapping and allocator frames: each ``plot_*`` takes the frame of its ``df_*`` and returns a Figure.

Theory of operation: plotting is separate from computing. A ``plot_*`` function never reads a trace; it draws the
frame that the matching ``df_*`` function returned (so a notebook can filter a frame before plotting it), with the
house style of :mod:`iovatrace.analysis.style`: a title that says what is shown, axes labelled with units, time
in seconds of trace time (the trace's own clock, as ``trace-cmd report`` prints it), a legend when there is more
than one series, and a "no data" note instead of an empty canvas. Step series are drawn with ``where="post"``:
a value holds from its event until the next one.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from .style import TIME_LABEL, color_for, empty_note, finish_axes, new_figure, thin_steps

__all__ = [
    "SIZE_BIN_ORDER",
    "plot_live_mappings",
    "plot_mapping_lifetimes",
    "plot_outstanding",
    "plot_iova_addresses",
    "plot_iova_in_use",
    "plot_iova_gaps",
    "plot_rcache_hit_rate",
    "plot_magazines",
    "plot_replay_state",
]

#: Size bins in increasing order (labels of :func:`iovatrace.analysis.frames.size_bin_label`).
SIZE_BIN_ORDER = ["1 page", "2 pages", "3-4 pages", "5-8 pages", "9-16 pages", "17-32 pages", ">32 pages"]

_MIB = 1024 * 1024


def _groups(df: pl.DataFrame, col: str) -> list[str]:
    return sorted(str(g) for g in df.get_column(col).unique().to_list() if g is not None)


def plot_live_mappings(df: pl.DataFrame, *, by: str = "device", subtitle: str | None = None) -> Figure:
    """Live mappings and mapped bytes per device or domain over time.

    Args:
        df: :func:`~iovatrace.analysis.frames.df_live_mappings` output.
        by: what ``group`` holds (``device`` or ``domain``), for the title and legend.
        subtitle: optional second title line (trace name).

    Returns:
        A two-panel figure (count, MiB) sharing the time axis.
    """
    fig, (ax1, ax2) = new_figure(f"Live DMA mappings per {by}", nrows=2, sharex=True, size=(10, 6.4),
                                 subtitle=subtitle)
    groups = _groups(df, "group")
    for g in groups:
        s = df.filter(pl.col("group") == g)
        c = color_for(g, groups)
        ax1.step(*thin_steps(s["time_s"].to_numpy(), s["live"].to_numpy()), where="post", label=g, color=c)
        ax2.step(*thin_steps(s["time_s"].to_numpy(), s["live_bytes"].to_numpy() / _MIB), where="post", label=g,
                 color=c)
    if not groups:
        empty_note(ax1, "no mappings in this trace")
    finish_axes(ax1, xlabel="", ylabel="mappings", legend_title=by,
                title="mapped now (mappings from before the trace counted until their unmap)")
    finish_axes(ax2, xlabel=TIME_LABEL, ylabel="mapped IOVA space (MiB)", legend=False)
    return fig


def plot_mapping_lifetimes(df: pl.DataFrame, *, subtitle: str | None = None) -> Figure:
    """Map-to-unmap lifetime per size bin, one box per device and bin (log scale).

    Args:
        df: :func:`~iovatrace.analysis.frames.df_mapping_lifetimes` output.
        subtitle: optional second title line.

    Returns:
        A box-plot figure; each box is annotated with its number of mappings.
    """
    fig, (ax,) = new_figure("Mapping lifetime (map to unmap) by size", subtitle=subtitle)
    devices = _groups(df, "device")
    bins = [b for b in SIZE_BIN_ORDER if b in set(df.get_column("size_bin").to_list())]
    width = 0.8 / max(len(devices), 1)
    for i, dev in enumerate(devices):
        data, pos = [], []
        for j, b in enumerate(bins):
            v = df.filter((pl.col("device") == dev) & (pl.col("size_bin") == b))["lifetime_us"].to_numpy()
            v = v[v > 0]
            if v.size:
                data.append(v)
                pos.append(j + (i - (len(devices) - 1) / 2) * width)
        if not data:
            continue
        c = color_for(dev, devices)
        bp = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=True,
                        flierprops={"markersize": 2, "alpha": 0.4, "markeredgecolor": c},
                        medianprops={"color": "black"})
        for patch in bp["boxes"]:
            patch.set_facecolor(c)
            patch.set_alpha(0.6)
        bp["boxes"][0].set_label(dev)
        for p, v in zip(pos, data):
            ax.annotate(f"n={v.size}", (p, float(np.max(v))), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7, color="#444444")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 4)  # room for the n= labels under the title
    ax.set_xticks(range(len(bins)), bins)
    if not bins:
        empty_note(ax, "no mapping was both made and released inside the trace")
    finish_axes(ax, xlabel="mapping size (pages of 4 KiB)", ylabel="lifetime (µs, log scale)", legend_title="device")
    return fig


def plot_outstanding(df: pl.DataFrame, *, subtitle: str | None = None) -> Figure:
    """Mappings still in place at the end of the trace, per device.

    Args:
        df: :func:`~iovatrace.analysis.frames.df_outstanding` output.
        subtitle: optional second title line.

    Returns:
        A horizontal bar chart annotated with bytes and the age of the oldest mapping.
    """
    fig, (ax,) = new_figure("Outstanding mappings at the end of the trace", size=(10, 1.6 + 0.6 * max(df.height, 1)),
                            subtitle=subtitle)
    devices = df["device"].to_list()
    counts = df["outstanding"].to_numpy()
    ax.barh(range(len(devices)), counts, color=[color_for(d, sorted(devices)) for d in devices])
    ax.set_yticks(range(len(devices)), devices)
    ax.invert_yaxis()
    for i, row in enumerate(df.iter_rows(named=True)):
        if row["outstanding"]:
            note = (f"  {row['outstanding']} of {row['mapped']} mapped, {row['outstanding_bytes'] / 1024:.0f} KiB, "
                    f"oldest {row['oldest_age_s']:.2f} s old")
        else:
            note = f"  none of {row['mapped']} mapped"
        ax.text(row["outstanding"], i, note, va="center", fontsize=8.5)
    ax.set_xlim(0, max(float(counts.max()) if counts.size else 1.0, 1.0) * 1.6)
    if not devices:
        empty_note(ax, "no mappings in this trace")
    finish_axes(ax, xlabel="mappings made in the trace and not unmapped", ylabel="device", legend=False)
    return fig


def plot_iova_addresses(df: pl.DataFrame, *, subtitle: str | None = None, max_points: int = 60_000) -> Figure:
    """Where in the IOVA space each mapping landed, over time.

    Args:
        df: :func:`~iovatrace.analysis.frames.df_mappings` output.
        subtitle: optional second title line.
        max_points: plot at most this many mappings (evenly thinned) to keep files small.

    Returns:
        A scatter of IOVA (GiB) against allocation time, coloured by device.
    """
    fig, (ax,) = new_figure("IOVA chosen for each mapping", subtitle=subtitle)
    d = df.filter(pl.col("ts_ns").is_not_null()).with_columns((pl.col("iova").cast(pl.Float64) / _MIB).alias("_mib"))
    if d.height > max_points:
        d = d.gather_every(math.ceil(d.height / max_points))
    devices = _groups(d, "device")
    for dev in devices:
        s = d.filter(pl.col("device") == dev)
        ax.scatter(s["ts_ns"].to_numpy() / 1e9, s["_mib"].to_numpy(), s=6, alpha=0.6,
                   color=color_for(dev, devices), label=dev, linewidths=0, rasterized=True)
    if not devices:
        empty_note(ax, "no mappings in this trace")
    elif d.height > 200:
        # Allocation is top-down and dense; a few far-away IOVAs would squash the rest into one line.
        lo = float(d["_mib"].quantile(0.002) or 0.0)
        hi = float(d["_mib"].max() or 0.0)
        pad = max((hi - lo) * 0.05, 0.05)
        below = int((d["_mib"] < lo - pad).sum())
        if below:
            ax.set_ylim(lo - pad, hi + pad)
            ax.annotate(f"{below} mapping(s) lower, not shown", (0.99, 0.02), xycoords="axes fraction",
                        ha="right", fontsize=8, color="#555555")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.1f}"))
    finish_axes(ax, xlabel=TIME_LABEL, ylabel="IOVA (MiB; 4096 = the 4 GiB boundary)", legend_title="device")
    return fig


def plot_iova_in_use(df: pl.DataFrame, *, labels: dict[str, str] | None = None, subtitle: str | None = None) -> Figure:
    """IOVA space in use (mapped or waiting in a flush queue) per domain.

    Args:
        df: :func:`~iovatrace.analysis.frames_iova.df_iova_in_use` output.
        labels: readable domain names (:func:`~iovatrace.analysis.frames_iova.iovad_labels`).
        subtitle: optional second title line.

    Returns:
        A step chart in MiB per domain.
    """
    fig, (ax,) = new_figure("IOVA space in use per domain (mapped or queued; rcache not included)", subtitle=subtitle)
    doms = _groups(df, "iovad")
    for dom in doms:
        s = df.filter(pl.col("iovad") == dom)
        ax.step(*thin_steps(s["time_s"].to_numpy(), s["pages"].to_numpy() * 4096 / _MIB), where="post",
                label=(labels or {}).get(dom, dom), color=color_for(dom, doms))
    if not doms:
        empty_note(ax, "no IOVA allocations in this trace")
    finish_axes(ax, xlabel=TIME_LABEL, ylabel="IOVA space in use (MiB)", legend_title="IOVA domain (devices)")
    return fig


def plot_iova_gaps(df: pl.DataFrame, *, labels: dict[str, str] | None = None, subtitle: str | None = None) -> Figure:
    """Largest free IOVA gap below 4 GiB (and in the whole window, when a domain allocates above 4 GiB) per
    domain, and how many ranges are in use.

    Args:
        df: :func:`~iovatrace.analysis.frames_iova.df_iova_gaps` output.
        labels: readable domain names.
        subtitle: optional second title line.

    Returns:
        Two panels, largest gap below 4 GiB (MiB) and ranges in use, sampled over time; a third panel with the
        largest gap in each domain's whole window (GiB) when any domain was asked for IOVAs above 4 GiB.
    """
    above = bool(df.height) and bool((df["largest_gap_pages"] != df["largest_gap_below_4g_pages"]).any())
    fig, axes = new_figure("IOVA fragmentation: largest free gap" + (" below 4 GiB and overall" if above else
                                                                     " below 4 GiB"),
                           nrows=3 if above else 2, sharex=True, size=(10, 8.6 if above else 6.4), subtitle=subtitle)
    ax1, ax2 = axes[0], axes[-1]
    doms = _groups(df, "iovad")
    for dom in doms:
        s = df.filter(pl.col("iovad") == dom)
        c = color_for(dom, doms)
        lab = (labels or {}).get(dom, dom)
        ax1.plot(s["time_s"].to_numpy(), s["largest_gap_below_4g_pages"].to_numpy() * 4096 / _MIB, label=lab, color=c)
        ax2.plot(s["time_s"].to_numpy(), s["ranges"].to_numpy(), label=lab, color=c)
        if above:
            axes[1].plot(s["time_s"].to_numpy(), s["largest_gap_pages"].to_numpy() * 4096 / 2**30, label=lab,
                         color=c)
    if not doms:
        empty_note(ax1, "no IOVA allocations in this trace")
    ax1.axhline(4096, color="#999999", linestyle=":", linewidth=1)
    ax1.annotate("whole 4 GiB window", (0.0, 4096), xycoords=("axes fraction", "data"), fontsize=8, color="#666666",
                 xytext=(4, -12), textcoords="offset points")
    finish_axes(ax1, xlabel="", ylabel="largest free gap (MiB)", legend_title="IOVA domain (devices)",
                title="below 4 GiB, between ranges in use, sampled at 200 instants")
    if above:
        finish_axes(axes[1], xlabel="", ylabel="largest free gap (GiB)", legend=False,
                    title="in the whole window (up to the highest limit the domain was asked for)")
    finish_axes(ax2, xlabel=TIME_LABEL, ylabel="ranges in use", legend=False)
    return fig


def plot_rcache_hit_rate(df: pl.DataFrame, *, subtitle: str | None = None) -> Figure:
    """rcache hit rate per size bin over time, with the number of allocations per window.

    Args:
        df: :func:`~iovatrace.analysis.frames_iova.df_rcache_hit_rate` output.
        subtitle: optional second title line.

    Returns:
        A two-panel figure: hit rate (%) and allocations per window, per size bin.
    """
    fig, (ax1, ax2) = new_figure("IOVA rcache hit rate per size bin", nrows=2, sharex=True, size=(10, 6.4),
                                 subtitle=subtitle)
    present = set(df.get_column("size_bin").to_list())
    bins = [b for b in SIZE_BIN_ORDER if b in present]
    starts = np.unique(df["window_start_s"].to_numpy()) if df.height else np.array([0.0])
    step = float(np.diff(starts).min()) if len(starts) > 1 else 1.0
    for b in bins:
        s = df.filter(pl.col("size_bin") == b).sort("window_start_s")
        c = color_for(b, SIZE_BIN_ORDER)
        tot = int(s["allocs"].sum())
        rate = 100.0 * float(s["hits"].sum()) / tot if tot else float("nan")
        x = s["window_start_s"].to_numpy()
        # Windows without allocations of this size have no rate: break the line there instead of bridging.
        gaps = np.flatnonzero(np.diff(x) > step * 1.5) + 1
        xs = np.insert(x.astype(float), gaps, np.nan)
        ax1.plot(xs, np.insert(s["hit_rate"].to_numpy() * 100, gaps, np.nan), marker="o", markersize=3.5,
                 color=c, label=f"{b}: {rate:.1f}% of {tot}")
        ax2.plot(xs, np.insert(s["allocs"].to_numpy().astype(float), gaps, np.nan), marker="o", markersize=3,
                 color=c, label=b)
    if not bins:
        empty_note(ax1, "no cacheable allocations in this trace")
    ax1.set_ylim(-3, 103)
    ax1.yaxis.set_major_formatter(PercentFormatter())
    ax2.set_yscale("log")
    finish_axes(ax1, xlabel="", ylabel="served from rcache", legend_title="size bin: overall hit rate of allocations",
                title="alloc_iova_fast calls that needed no rbtree search (alloc_iova), per window")
    finish_axes(ax2, xlabel=TIME_LABEL + ", window start", ylabel="allocations per window (log)", legend=False)
    return fig


def plot_magazines(df: pl.DataFrame, *, subtitle: str | None = None) -> Figure:
    """Magazine activity: live magazine objects, depot size, pfns handed back to the rbtree.

    Args:
        df: :func:`~iovatrace.analysis.frames_iova.df_magazines` output.
        subtitle: optional second title line.

    Returns:
        One panel per series present, sharing the time axis.
    """
    series = [s for s in ("live magazine objects", "depot size (trim worker)", "pfns returned by magazine flushes")
              if s in set(df.get_column("series").to_list())]
    fig, axes = new_figure("rcache magazines", nrows=max(len(series), 1), sharex=True,
                           size=(10, 2.6 + 2.0 * max(len(series), 1)), subtitle=subtitle)
    units = {"live magazine objects": "magazines", "depot size (trim worker)": "magazines in depot",
             "pfns returned by magazine flushes": "pfns (cumulative)"}
    titles = {"live magazine objects": "live magazine objects, all domains (a lower bound: a magazine made before "
                                       "the trace shows only once it is freed)",
              "pfns returned by magazine flushes": "pfns handed back to the rbtree by iova_magazine_free_pfns"}
    for ax, name in zip(axes, series):
        s = df.filter(pl.col("series") == name)
        ax.step(*thin_steps(s["time_s"].to_numpy(), s["value"].to_numpy()), where="post", color=color_for(name, series),
                marker="o" if s.height < 100 else None, markersize=3, label=name)
        finish_axes(ax, xlabel="", ylabel=units[name], title=titles.get(name, name), legend=False)
    if not series:
        empty_note(axes[0], "no magazine events in this trace")
    axes[-1].set_xlabel(TIME_LABEL)
    return fig


def plot_replay_state(df: pl.DataFrame, *, labels: dict[str, str] | None = None, subtitle: str | None = None) -> Figure:
    """The replayed allocator state per domain: allocated ranges, rcache-held pfns, depot magazines.

    Args:
        df: :func:`~iovatrace.analysis.frames_replay.df_replay_timeline` output.
        labels: readable domain names.
        subtitle: optional footer line.

    Returns:
        A three-panel figure sharing the time axis.
    """
    fig, (ax1, ax2, ax3) = new_figure("Replayed IOVA allocator state per domain", nrows=3, sharex=True,
                                      size=(10, 7.6), subtitle=subtitle)
    doms = _groups(df, "iovad")
    for dom in doms:
        s = df.filter(pl.col("iovad") == dom)
        c = color_for(dom, doms)
        lab = (labels or {}).get(dom, dom)
        t = s["time_s"].to_numpy()
        ax1.step(t, s["live"].to_numpy(), where="post", color=c, label=lab)
        ax2.step(t, s["cached"].to_numpy(), where="post", color=c, label=lab)
        ax3.step(t, s["depot"].to_numpy(), where="post", color=c, label=lab)
    if not doms:
        empty_note(ax1, "no replay state")
    finish_axes(ax1, xlabel="", ylabel="ranges", legend_title="IOVA domain (devices)",
                title="allocated in the rbtree, not in a magazine (mapped or queued; lower bound for domains "
                      "created before the trace)")
    finish_axes(ax2, xlabel="", ylabel="pfns", legend=False, title="held by rcache magazines (loaded, prev, depot)")
    ax3.yaxis.set_major_locator(MaxNLocator(integer=True))
    finish_axes(ax3, xlabel=TIME_LABEL, ylabel="magazines", legend=False, title="magazines in the depot")
    return fig
