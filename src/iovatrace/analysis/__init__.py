"""Analysis: polars frames (df_*) and matplotlib figures (plot_*) over parsed events and replayed state.

Every ``df_*`` function takes the event tables of a trace (``open_trace(path).read_tables()``) and returns a polars
frame; it declares the events it needs and raises :class:`~iovatrace.errors.MissingEventsError` naming them.
Every ``plot_*`` function draws one such frame into a :class:`matplotlib.figure.Figure` (Agg, no display).
:func:`~iovatrace.analysis.report.run_chart` writes them all with an HTML page.

The names below are imported on first use, so ``import iovatrace.analysis.leaks`` does not pay for matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    # frames
    "df_mappings", "df_live_mappings", "df_mapping_lifetimes", "df_outstanding",
    "df_rcache_allocs", "df_rcache_hit_rate", "df_iova_in_use", "df_iova_gaps", "df_magazines", "iovad_labels",
    "df_flush_queue", "df_flushes", "df_invalidations",
    "df_findings", "df_replay_timeline",
    # plots
    "plot_live_mappings", "plot_mapping_lifetimes", "plot_outstanding", "plot_iova_addresses", "plot_iova_in_use",
    "plot_iova_gaps", "plot_rcache_hit_rate", "plot_magazines", "plot_replay_state",
    "plot_flush_queue", "plot_flush_intervals", "plot_invalidations", "plot_findings",
    # report
    "run_chart", "write_report",
]

_HOME = {
    "frames": ("df_mappings", "df_live_mappings", "df_mapping_lifetimes", "df_outstanding"),
    "frames_iova": ("df_rcache_allocs", "df_rcache_hit_rate", "df_iova_in_use", "df_iova_gaps", "df_magazines",
                    "iovad_labels"),
    "frames_flush": ("df_flush_queue", "df_flushes", "df_invalidations"),
    "frames_replay": ("df_findings", "df_replay_timeline"),
    "plots": ("plot_live_mappings", "plot_mapping_lifetimes", "plot_outstanding", "plot_iova_addresses",
              "plot_iova_in_use", "plot_iova_gaps", "plot_rcache_hit_rate", "plot_magazines", "plot_replay_state"),
    "plots_flush": ("plot_flush_queue", "plot_flush_intervals", "plot_invalidations", "plot_findings"),
    "report": ("run_chart", "write_report"),
}
_WHERE = {name: mod for mod, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'iovatrace.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
