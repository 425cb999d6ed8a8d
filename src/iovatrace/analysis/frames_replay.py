"""Frames of replay output: findings now; state timelines as the replay exposes them.

Theory of operation: the replay returns :class:`~iovatrace.replay.findings.Finding` objects (a handful to a few
thousand, not one per event), so turning them into a frame row by row is cheap; the frame keeps the columns a
reader filters on (kind, severity, certainty, device, time) and the message. The replay's state timeline
(``ReplayResult.timeline``, sampled per domain at most every ``timeline_ns``) is a list of plain tuples that
becomes a frame in one constructor call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

__all__ = ["FINDINGS_SCHEMA", "df_findings", "df_replay_timeline", "replay_summary_rows"]

#: Columns of :func:`df_findings`.
FINDINGS_SCHEMA: dict[str, pl.DataType] = {
    "ts_ns": pl.Int64(), "time_s": pl.Float64(), "kind": pl.String(), "severity": pl.String(),
    "certainty": pl.String(), "device": pl.String(), "domain": pl.String(), "message": pl.String(),
    "gap": pl.String(), "events": pl.Int64(),
}


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def df_findings(findings: Iterable[Any]) -> pl.DataFrame:
    """Replay findings as a frame, in time order.

    Args:
        findings: :class:`~iovatrace.replay.findings.Finding` objects (or dicts of :meth:`Finding.to_dict`).

    Returns:
        ``ts_ns``, ``time_s``, ``kind``, ``severity`` (``info``/``warning``/``error``), ``certainty``,
        ``device``, ``domain``, ``message``, ``gap``, ``events`` (number of proving events).
    """
    rows = []
    for f in findings:
        d = f if isinstance(f, dict) else f.to_dict() if hasattr(f, "to_dict") else vars(f)
        rows.append({
            "ts_ns": int(d.get("ts_ns") or 0), "kind": str(d.get("kind")), "severity": str(_value(d.get("severity"))),
            "certainty": str(_value(d.get("certainty"))), "device": d.get("device"), "domain": d.get("domain"),
            "message": str(d.get("message", "")), "gap": d.get("gap"), "events": len(d.get("events") or ()),
        })
    if not rows:
        return pl.DataFrame(schema=FINDINGS_SCHEMA)
    df = pl.DataFrame(rows, schema={k: v for k, v in FINDINGS_SCHEMA.items() if k != "time_s"})
    return df.with_columns((pl.col("ts_ns") / 1e9).alias("time_s")).select(list(FINDINGS_SCHEMA)).sort("ts_ns")


#: Fields of one ``ReplayResult.timeline`` sample, in order (see :class:`iovatrace.replay.driver.ReplayResult`).
TIMELINE_FIELDS = ("ts_ns", "iovad", "live", "cached", "depot", "allocs", "frees")


def df_replay_timeline(result: Any) -> pl.DataFrame:
    """The replayed allocator state over time, per IOVA domain.

    Args:
        result: a :class:`~iovatrace.replay.driver.ReplayResult` replayed with ``timeline_ns > 0``.

    Returns:
        ``ts_ns``, ``time_s``, ``iovad`` (hex), ``live`` (ranges allocated in the rbtree and not in a magazine:
        in use or queued), ``cached`` (pfns held by rcache magazines, loaded/prev/depot), ``depot``
        (magazines in the depot), ``allocs``, ``frees`` (cumulative). Empty when the replay kept no timeline.
    """
    rows = list(getattr(result, "timeline", []) or [])
    schema = {"ts_ns": pl.Int64, "iovad": pl.UInt64, "live": pl.Int64, "cached": pl.Int64, "depot": pl.Int64,
              "allocs": pl.Int64, "frees": pl.Int64}
    df = pl.DataFrame(rows, schema=schema, orient="row")
    from .tables import hex_column

    return hex_column(df, "iovad").with_columns((pl.col("ts_ns") / 1e9).alias("time_s")).select(
        "ts_ns", "time_s", "iovad", "live", "cached", "depot", "allocs", "frees").sort(["iovad", "ts_ns"])


def replay_summary_rows(summary: dict[str, Any]) -> dict[str, Any]:
    """The parts of a replay summary (:func:`iovatrace.replay.summary.result_to_dict`) a report page shows.

    Args:
        summary: the summary dict.

    Returns:
        An ordered dict of short rows: trace, kernel, profile, events, each total, rcache hit rates, fidelity
        and gap counts (per-domain detail and the findings themselves are shown elsewhere).
    """
    out: dict[str, Any] = {}
    for k in ("trace", "kernel_release", "profile", "profile_how", "events", "devices"):
        if summary.get(k) not in (None, "", []):
            out[k] = summary[k]
    for k, v in (summary.get("totals") or {}).items():
        out[f"totals.{k}"] = v
    if summary.get("rcache_hit_rate"):
        out["rcache_hit_rate"] = summary["rcache_hit_rate"]
    fid = summary.get("fidelity") or {}
    for k, v in fid.items():
        if not isinstance(v, (dict, list)):
            out[f"fidelity.{k}"] = v
    gaps = summary.get("gaps") or {}
    if gaps:
        out["gaps.count"] = gaps.get("count")
        if gaps.get("kprobe_misses"):
            out["gaps.kprobe_misses"] = gaps["kprobe_misses"]
    out["findings"] = len(summary.get("findings") or [])
    return out
