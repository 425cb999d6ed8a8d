"""Frames of replay output: findings now; state timelines as the replay exposes them.

Theory of operation: the replay returns :class:`~iovatrace.replay.findings.Finding` objects (a handful to a few
thousand, not one per event), so turning them into a frame row by row is cheap; the frame keeps the columns a
reader filters on (kind, severity, certainty, device, time) and the message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

__all__ = ["FINDINGS_SCHEMA", "df_findings"]

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
