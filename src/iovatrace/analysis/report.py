"""The chart report: every chart a trace supports, as PNG and SVG, and an index.html that shows them.

Theory of operation: :data:`CHARTS` lists each chart once: its file stem, the ``df_*`` function that computes its
frame (whose declared needs say which events it reads) and the ``plot_*`` function that draws it. For one trace,
:func:`build_charts` checks every chart's needs against the trace's event tables; a chart whose events were not
recorded is *skipped* with the :class:`~iovatrace.errors.MissingEventsError` message (which names the events and
the recorder option), a chart whose events exist but hold nothing to draw (a strict-mode trace has no flush-queue
timer) is skipped with "no data", and every other chart is drawn. :func:`write_report` saves the figures and writes
``index.html`` with the replay summary, the findings table and the skipped charts and why.

Entry points: :func:`run_chart` is ``iovatrace chart TRACE -o DIR``; :func:`write_report` is what
``replay TRACE --report DIR`` calls (from :func:`iovatrace.replay.commands.run_replay`) with the replay result
(and, best, ``trace=`` so the event charts join the replay's). :func:`write_html` writes the files.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from matplotlib.figure import Figure

from ..errors import MissingEventsError
from . import frames, frames_flush, frames_iova, plots, plots_flush
from .frames_replay import df_findings, df_replay_timeline, replay_summary_rows
from .requires import requirements_of
from .style import save_figure
from .tables import EventTables, FrameCache

__all__ = ["Chart", "ChartResult", "CHARTS", "needed_events", "build_charts", "replay_charts", "write_html",
           "write_report", "run_chart"]


@dataclass(frozen=True)
class Chart:
    """One chart of the report.

    Attributes:
        name: file stem (``live_mappings_device`` → ``live_mappings_device.png``/``.svg``).
        compute: the ``df_*`` function (takes the event tables).
        draw: the ``plot_*`` function (takes the frame and ``subtitle=``).
        caption: one sentence under the chart: what it shows and how to read it.
        kwargs: extra keyword arguments for ``compute``.
        draw_kwargs: extra keyword arguments for ``draw``.
        domain_labels: pass ``labels=`` (IOVA-domain names) to ``draw``.
    """

    name: str
    compute: Callable[..., pl.DataFrame]
    draw: Callable[..., Figure]
    caption: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    draw_kwargs: Mapping[str, Any] = field(default_factory=dict)
    domain_labels: bool = False


CHARTS: list[Chart] = [
    Chart("live_mappings_device", frames.df_live_mappings, plots.plot_live_mappings,
          "DMA mappings each device holds over time (count and IOVA space). Mappings made before tracing started "
          "count from the first event until their unmap.", {"by": "device"}, {"by": "device"}),
    Chart("live_mappings_domain", frames.df_live_mappings, plots.plot_live_mappings,
          "The same per IOMMU domain; a domain re-created by a PCI rescan appears as a new line.",
          {"by": "domain"}, {"by": "domain"}),
    Chart("mapping_lifetimes", frames.df_mapping_lifetimes, plots.plot_mapping_lifetimes,
          "How long mappings live (map to unmap) per size, one box per device: receive buffers stay mapped until "
          "a packet arrives, transmit and block I/O mappings are short."),
    Chart("outstanding_mappings", frames.df_outstanding, plots.plot_outstanding,
          "Mappings made inside the trace and not unmapped by its end, per device (a ring of receive buffers is "
          "expected; growth without bound is a leak)."),
    Chart("iova_addresses", frames.df_mappings, plots.plot_iova_addresses,
          "The IOVA each mapping received: the allocator works top-down from the 32-bit limit; the rcache "
          "recycles recent addresses."),
    Chart("iova_in_use", frames_iova.df_iova_in_use, plots.plot_iova_in_use,
          "IOVA space between alloc_iova_fast and free_iova_fast per domain: mapped or waiting in a flush queue.",
          domain_labels=True),
    Chart("iova_gaps", frames_iova.df_iova_gaps, plots.plot_iova_gaps,
          "Largest free gap below 4 GiB between ranges in use, per domain: how fragmented the 32-bit window is.",
          domain_labels=True),
    Chart("rcache_hit_rate", frames_iova.df_rcache_hit_rate, plots.plot_rcache_hit_rate,
          "Share of alloc_iova_fast calls served by the per-CPU rcache (no rbtree search), per size bin and "
          "second; sizes above 32 pages are never cached and left out."),
    Chart("magazines", frames_iova.df_magazines, plots.plot_magazines,
          "Magazine objects (6.9+ kmem events), the depot size seen by the trim worker (6.7+), and pfns handed "
          "back to the rbtree when magazines are flushed."),
    Chart("flush_queue_depth", frames_flush.df_flush_queue, plots_flush.plot_flush_queue,
          "Entries waiting in each per-CPU flush queue (lazy mode) until an IOTLB flush makes them reusable."),
    Chart("flush_intervals", frames_flush.df_flushes, plots_flush.plot_flush_intervals,
          "When the flush-queue timer fires: delay from the first queued entry to the timer's flush (10 ms "
          "timeout plus timer slack), and intervals between flushes."),
    Chart("invalidations", frames_flush.df_invalidations, plots_flush.plot_invalidations,
          "VT-d queued invalidations (qi_submit, decoded) and flush-queue flushes per second."),
]


@dataclass
class ChartResult:
    """What became of one chart.

    Attributes:
        chart: the chart.
        figure: the drawn figure, or ``None`` when skipped.
        frame: the computed frame (``None`` when skipped for missing events).
        skipped: why it was not drawn, or ``None``.
        files: files written by :func:`write_report`.
    """

    chart: Chart
    figure: Figure | None = None
    frame: pl.DataFrame | None = None
    skipped: str | None = None
    files: list[str] = field(default_factory=list)


def needed_events(charts: Iterable[Chart] = CHARTS) -> set[str]:
    """Every event key any of ``charts`` can use (to read only those from a trace)."""
    keys: set[str] = set()
    for c in charts:
        for need in requirements_of(c.compute):
            keys.update(need.keys)
    # Optional inputs the frames use when present.
    keys.update(frames.OPTIONAL_EVENTS, frames_iova.OPTIONAL_EVENTS, frames_flush.OPTIONAL_EVENTS)
    return keys


def build_charts(tables: EventTables, *, subtitle: str | None = None,
                 charts: Sequence[Chart] = CHARTS) -> list[ChartResult]:
    """Compute and draw every chart the tables support.

    Args:
        tables: event tables keyed by ``system:name``.
        subtitle: second title line of every chart (the trace's name).
        charts: which charts.

    Returns:
        One :class:`ChartResult` per chart, drawn or skipped with a reason.
    """
    tables = FrameCache(tables)  # charts built on the same frames (df_mappings, ...) compute them once
    labels = frames_iova.iovad_labels(tables)
    out: list[ChartResult] = []
    for c in charts:
        res = ChartResult(c)
        try:
            df = c.compute(tables, **c.kwargs)
        except MissingEventsError as exc:
            res.skipped = str(exc)
            out.append(res)
            continue
        res.frame = df
        if df.is_empty():
            res.skipped = f"{c.compute.__name__}: the trace holds the events but nothing to draw (e.g. strict mode " \
                          f"has no flush queue)"
        else:
            kw = dict(c.draw_kwargs)
            if c.domain_labels:
                kw["labels"] = labels
            res.figure = c.draw(df, subtitle=subtitle, **kw)
        out.append(res)
    return out


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.45}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#444;font-size:.92em}
table{border-collapse:collapse;font-size:.88em} td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;
vertical-align:top} th{background:#f4f4f4} .sev-error{color:#b00} .sev-warning{color:#a60} code{font-size:.95em}
nav a{margin-right:.8em}
"""


def _summary_html(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "<p>No replay summary (the replay was not run or is not available for this trace).</p>"
    rows = []
    for k, v in summary.items():
        text = json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else str(v)
        if len(text) > 600:
            text = text[:600] + " …"
        rows.append(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(text)}</code></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _findings_html(findings: pl.DataFrame | None, limit: int = 200) -> str:
    if findings is None:
        return "<p>No replay findings available.</p>"
    if findings.is_empty():
        return "<p>The replay reported no findings.</p>"
    counts = findings.group_by(["kind", "severity"]).agg(pl.len().alias("n")).sort(["severity", "kind"])
    head = "".join(f"<tr><td>{html.escape(k)}</td><td class='sev-{s}'>{s}</td><td>{n}</td></tr>"
                   for k, s, n in counts.iter_rows())
    parts = [f"<table><tr><th>kind</th><th>severity</th><th>count</th></tr>{head}</table>"]
    rows = []
    for r in findings.head(limit).iter_rows(named=True):
        rows.append(
            f"<tr><td>{r['time_s']:.6f}</td><td class='sev-{r['severity']}'>{html.escape(r['severity'])}</td>"
            f"<td>{html.escape(r['kind'])}</td><td>{html.escape(r['certainty'])}</td>"
            f"<td>{html.escape(r['device'] or '')}</td><td>{html.escape(r['message'])}</td></tr>")
    more = f"<p>… and {findings.height - limit} more.</p>" if findings.height > limit else ""
    parts.append("<table><tr><th>time (s)</th><th>severity</th><th>kind</th><th>certainty</th><th>device</th>"
                 f"<th>message</th></tr>{''.join(rows)}</table>{more}")
    return "".join(parts)


def write_html(out_dir: str | os.PathLike[str], results: Sequence[ChartResult], *, title: str,
               summary: Mapping[str, Any] | None = None, findings: pl.DataFrame | None = None,
               notes: Sequence[str] = ()) -> Path:
    """Save drawn charts as PNG and SVG and write ``index.html``.

    Args:
        out_dir: directory (created if needed).
        results: :func:`build_charts` output.
        title: page heading (the trace).
        summary: the replay summary (shown as a table), if any.
        findings: :func:`~iovatrace.analysis.frames_replay.df_findings` output, if any.
        notes: extra lines for the top of the page (e.g. why the replay did not run).

    Returns:
        The path of ``index.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs, skipped = [], []
    for r in results:
        if r.figure is None:
            skipped.append(f"<li><b>{html.escape(r.chart.name)}</b>: {html.escape(r.skipped or '')}</li>")
            continue
        r.files = save_figure(r.figure, str(out / r.chart.name))
        figs.append(f"<figure id='{r.chart.name}'><img src='{r.chart.name}.png' alt='{html.escape(r.chart.name)}'>"
                    f"<figcaption>{html.escape(r.chart.caption)} "
                    f"(<a href='{r.chart.name}.svg'>SVG</a>)</figcaption></figure>")
    nav = " ".join(f"<a href='#{r.chart.name}'>{r.chart.name}</a>" for r in results if r.figure is not None)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>iovatrace report: {html.escape(title)}</h1>"
        + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
        + f"<nav>{nav}</nav>"
        + "<h2>Replay summary</h2>" + _summary_html(summary)
        + "<h2>Findings</h2>" + _findings_html(findings)
        + f"<h2>Charts ({len(figs)})</h2>" + "".join(figs)
        + (f"<h2>Charts this trace does not support ({len(skipped)})</h2><ul>{''.join(skipped)}</ul>"
           if skipped else "")
        + "</body></html>"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def replay_charts(result: Any, *, subtitle: str | None = None,
                  labels: Mapping[str, str] | None = None) -> list[ChartResult]:
    """The charts of a replay's own output: findings over time and the replayed allocator state.

    Args:
        result: a :class:`~iovatrace.replay.driver.ReplayResult`.
        subtitle: footer line of the charts.
        labels: readable IOVA-domain names.

    Returns:
        Chart results for ``findings`` and ``replay_state`` (skipped with a reason when there is nothing).
    """
    fdf = df_findings(getattr(result, "findings", []) or [])
    fchart = Chart("findings", lambda _t: fdf, plots_flush.plot_findings,
                   "Replay findings over trace time, one row per kind, marked by severity.")
    out = [ChartResult(fchart, frame=fdf)]
    if fdf.is_empty():
        out[0].skipped = "the replay reported no findings"
    else:
        out[0].figure = plots_flush.plot_findings(fdf, subtitle=subtitle)
    tl = df_replay_timeline(result)
    tchart = Chart("replay_state", lambda _t: tl, plots.plot_replay_state,
                   "The replayed allocator per domain: ranges allocated and not cached, pfns held in rcache "
                   "magazines, magazines in the depot (sampled every 10 ms of trace time).")
    res = ChartResult(tchart, frame=tl)
    if tl.is_empty():
        res.skipped = "the replay kept no state timeline (run it with a timeline, as `iovatrace chart` does)"
    else:
        res.figure = plots.plot_replay_state(tl, labels=labels, subtitle=subtitle)
    out.append(res)
    return out


def write_report(result: Any, report_dir: str | os.PathLike[str], *, trace: str | None = None,
                 tables: EventTables | None = None, notes: Sequence[str] = ()) -> Path:
    """The report of a replay: what ``replay TRACE --report DIR`` writes (and ``iovatrace chart``).

    :func:`iovatrace.replay.commands.run_replay` calls ``write_report(res, report_dir)``; passing
    ``trace=TRACE`` as well adds every chart of the trace's events (without it only the replay's own charts,
    summary and findings can be drawn, since a result does not keep the event tables).

    Args:
        result: the :class:`~iovatrace.replay.driver.ReplayResult`, or ``None`` when the replay could not run.
        report_dir: directory to write into.
        trace: the trace file, to chart its events too.
        tables: its event tables if already read (saves reading ``trace`` again).
        notes: extra lines for the top of the page.

    Returns:
        The path of ``index.html``.

    Raises:
        TraceFormatError: when ``trace`` cannot be read.
    """
    return _report(result, report_dir, trace=trace, tables=tables, notes=notes)[0]


def _report(result: Any, report_dir: str | os.PathLike[str], *, trace: str | None, tables: EventTables | None,
            notes: Sequence[str]) -> tuple[Path, list[ChartResult]]:
    notes = list(notes)
    if tables is None and trace is not None:
        from ..parsers import open_trace

        tables = open_trace(trace).read_tables(events=sorted(needed_events()))
    name = trace or (getattr(result, "extras", {}) or {}).get("trace") or "trace"
    title = _title(name)
    labels = frames_iova.iovad_labels(tables) if tables is not None else {}
    results: list[ChartResult] = []
    summary = None
    fdf = None
    if result is not None:
        from ..replay.summary import result_to_dict

        summary = replay_summary_rows(result_to_dict(result))
        results.extend(replay_charts(result, subtitle=title, labels=labels))
        fdf = results[0].frame
    if tables is not None:
        results.extend(build_charts(tables, subtitle=title))
    else:
        notes.append("Only the replay's own charts: the event charts need the trace (write_report(..., trace=...)).")
    return write_html(report_dir, results, title=title, summary=summary, findings=fdf, notes=notes), results


def _title(path: str) -> str:
    """``folder/file`` of a trace path: enough to tell the lab's traces apart."""
    ap = os.path.abspath(path)
    parent = os.path.basename(os.path.dirname(ap))
    return f"{parent}/{os.path.basename(ap)}" if os.path.exists(ap) and parent else os.path.basename(path)


def run_chart(trace: str, out_dir: str, *, kernel: str | None = None) -> Path:
    """``iovatrace chart TRACE -o DIR``: every chart TRACE supports (PNG, SVG) and ``DIR/index.html``.

    The trace is replayed first (with a 10 ms state timeline) for the summary, the findings and the replayed
    state; if the replay cannot run (an unknown kernel profile, say) the page says why and shows the event charts.

    Args:
        trace: trace.dat or ftrace text.
        out_dir: output directory.
        kernel: kernel profile for the replay (default: detected).

    Returns:
        The path of ``index.html``.

    Raises:
        TraceFormatError: when the trace cannot be read.
    """
    import click

    from ..errors import IovatraceError, InputError
    from ..parsers import open_trace

    tables = open_trace(trace).read_tables(events=sorted(needed_events()))
    result, notes = None, []
    try:
        from ..replay.commands import replay_trace

        result = replay_trace(trace, kernel=kernel, timeline_ns=10_000_000)
    except InputError:
        raise
    except (IovatraceError, ImportError) as exc:
        notes.append(f"The replay did not run: {exc}")
    except Exception as exc:  # a bug in the replay must not cost the user the event charts; say what it was
        notes.append(f"The replay failed ({type(exc).__name__}: {exc}); the charts below use the parsed events only. "
                     "Please report this with the trace.")
    index, results = _report(result, out_dir, trace=trace, tables=tables, notes=notes)
    drawn = [r for r in results if r.figure is not None]
    click.echo(f"{index}: {len(drawn)} charts (PNG and SVG)")
    for n in notes:
        click.echo(f"  {n}")
    for r in results:
        if r.figure is None:
            click.echo(f"  skipped {r.chart.name}: {r.skipped}")
    return index


# Older name kept for callers written against the first version of this module.
write_replay_report = write_report
