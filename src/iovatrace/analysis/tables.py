"""From Arrow event tables to the polars frames the analyses join.

Theory of operation:

* :func:`event_frame` turns one ``system:name`` Arrow table into a polars frame with the common columns
  (``ts_ns`` as Int64, ``cpu``, ``seq``, ``pid``) and the payload columns asked for, ordered by
  ``(ts_ns, cpu, seq)`` -- the same merge order as :func:`iovatrace.schema.iter_events`. Payload integers are
  cast to Int64/UInt64 once here so the analyses do not care whether a field was recorded as ``x64`` or ``u32``.
* :func:`pair_calls` pairs a kprobe with its kretprobe (``alloc_iova_fast`` with ``alloc_iova_fast_ret``) in
  whole columns. Calls nest on one CPU (an interrupt can call ``alloc_iova_fast`` inside another call), so a
  return belongs to the newest unanswered entry at the same nesting level. Per CPU a running depth
  (+1 entry, -1 return) gives each entry and return a level; within ``(cpu, level)`` entries and returns
  alternate, so the k-th entry pairs with the k-th return. A lost entry or return (a missed kprobe hit) shifts the
  levels after it; such pairs are caught by the ``ret_ts >= ts`` check and left unpaired, and the caller sees them
  as nulls rather than as wrong pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EventTables", "FrameCache", "cached", "event_frame", "hex_column", "pair_calls", "trace_span_ns",
           "PAGE_SHIFT"]

#: Event tables keyed by ``system:name``, as :meth:`read_tables` of a parsed trace returns them.
EventTables = Mapping[str, pa.Table]

#: The IOVA granule of every domain in the lab traces (4 KiB pages); init_iova_domain reports it per domain.
PAGE_SHIFT = 12

_COMMON = ("ts_ns", "cpu", "seq", "pid")


class FrameCache(Mapping[str, pa.Table]):
    """Event tables that also keep derived frames, so several charts share one ``df_mappings``.

    Args:
        tables: the event tables (read-only; the frames derived from them are immutable polars frames).
    """

    def __init__(self, tables: Mapping[str, pa.Table]) -> None:
        self._tables = tables
        self.frames: dict[str, pl.DataFrame] = {}

    def __getitem__(self, key: str) -> pa.Table:
        return self._tables[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)


def cached(tables: Mapping[str, pa.Table], key: str, build: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    """``build()``, remembered on a :class:`FrameCache` (plain mappings just build).

    Args:
        tables: the event tables, possibly a :class:`FrameCache`.
        key: name of the derived frame.
        build: computes it.

    Returns:
        The frame.
    """
    store = getattr(tables, "frames", None)
    if store is None:
        return build()
    if key not in store:
        store[key] = build()
    return store[key]


def _as_int(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return col.cast(dtype, strict=False)


def event_frame(
    tables: EventTables,
    key: str,
    columns: Sequence[str] = (),
    *,
    unsigned: Sequence[str] = (),
    strings: Sequence[str] = (),
) -> pl.DataFrame:
    """One event table as a polars frame in merge order.

    Args:
        tables: event tables keyed by ``system:name``.
        key: which table.
        columns: payload columns to keep (signed integers; cast to Int64).
        unsigned: payload columns to keep as UInt64 (addresses, pfns, cookies).
        strings: payload columns to keep as strings (device names).

    Returns:
        ``ts_ns`` (Int64), ``cpu``, ``seq``, ``pid`` then the asked columns, sorted by ``(ts_ns, cpu, seq)``. An
        absent table gives an empty frame with the same columns; an absent column is all nulls.
    """
    schema: dict[str, pl.DataType] = {"ts_ns": pl.Int64(), "cpu": pl.Int64(), "seq": pl.Int64(), "pid": pl.Int64()}
    for c in columns:
        schema[c] = pl.Int64()
    for c in unsigned:
        schema[c] = pl.UInt64()
    for c in strings:
        schema[c] = pl.String()
    table = tables.get(key)
    if table is None or table.num_rows == 0:
        return pl.DataFrame(schema=schema)
    have = set(table.column_names)
    # Only the wanted columns cross into polars: the dictionary-typed `event` column and the payload
    # columns nobody asked for stay behind.
    df = pl.from_arrow(table.select([c for c in schema if c in have]))
    assert isinstance(df, pl.DataFrame)
    exprs = []
    for name, dtype in schema.items():
        if name in have:
            src = pl.col(name)
            if dtype == pl.String() and df.schema[name] != pl.String():
                exprs.append(src.cast(pl.String).alias(name))
            else:
                exprs.append(_as_int(src, dtype).alias(name) if dtype != pl.String() else src.alias(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs).sort(["ts_ns", "cpu", "seq"])


def hex_column(df: pl.DataFrame, column: str) -> pl.DataFrame:
    """Replace an integer column (kernel pointers) by ``0x...`` strings.

    Args:
        df: any frame.
        column: an integer column of ``df``.

    Returns:
        ``df`` with ``column`` as strings (nulls stay null). Only the distinct values are formatted in Python
        (a handful of domains or devices), the rows are mapped in one ``replace_strict``.
    """
    values = [v for v in df.get_column(column).unique().to_list() if v is not None]
    mapping = {v: f"0x{int(v):x}" for v in values}
    return df.with_columns(pl.col(column).replace_strict(mapping, default=None, return_dtype=pl.String).alias(column))


def trace_span_ns(tables: EventTables) -> tuple[int, int] | None:
    """First and last timestamp over all tables, or ``None`` for an empty trace."""
    lo: int | None = None
    hi: int | None = None
    for t in tables.values():
        if t.num_rows == 0 or "ts_ns" not in t.column_names:
            continue
        col = t.column("ts_ns")
        a, b = pc.min(col).as_py(), pc.max(col).as_py()
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return None if lo is None or hi is None else (int(lo), int(hi))


def pair_calls(entry: pl.DataFrame, ret: pl.DataFrame, *, ret_columns: Sequence[str]) -> pl.DataFrame:
    """Pair each entry probe with its return probe on the same CPU, honouring nesting.

    Args:
        entry: the entry events (``event_frame`` output).
        ret: the return events.
        ret_columns: payload columns of ``ret`` to carry over (renamed only if they clash, with ``ret_``).

    Returns:
        ``entry`` with ``ret_ts_ns``, ``ret_seq`` and the ``ret_columns`` appended (nulls where no return was
        found), in ``entry``'s order.
    """
    keep = list(ret_columns)
    rename = {c: (f"ret_{c}" if c in entry.columns else c) for c in keep}
    e = entry.with_row_index("_row").select("_row", "ts_ns", "cpu", "seq", pl.lit(1, pl.Int64).alias("_d"))
    r = ret.select("ts_ns", "cpu", "seq", *keep).with_row_index("_rrow")
    both = pl.concat(
        [
            e.with_columns(pl.lit(None, pl.UInt32).alias("_rrow")),
            r.select("_rrow", "ts_ns", "cpu", "seq").with_columns(
                pl.lit(None, pl.UInt32).alias("_row"), pl.lit(-1, pl.Int64).alias("_d")
            ),
        ],
        how="diagonal",
    ).sort(["cpu", "ts_ns", "seq"])
    both = both.with_columns(pl.col("_d").cum_sum().over("cpu").alias("_depth"))
    # An entry's level is its depth after the +1; a return's level is its depth before the -1.
    both = both.with_columns(
        pl.when(pl.col("_d") == 1).then(pl.col("_depth")).otherwise(pl.col("_depth") + 1).alias("_level")
    )
    both = both.with_columns(pl.int_range(pl.len()).over(["cpu", "_level", "_d"]).alias("_k"))
    ents = both.filter(pl.col("_d") == 1).select("_row", "cpu", "_level", "_k", pl.col("ts_ns").alias("_ets"))
    rets = both.filter(pl.col("_d") == -1).select("_rrow", "cpu", "_level", "_k", pl.col("ts_ns").alias("ret_ts_ns"),
                                                  pl.col("seq").alias("ret_seq"))
    ents = ents.join(e.select("_row", pl.col("seq").alias("_eseq")), on="_row")
    pairs = ents.join(rets, on=["cpu", "_level", "_k"], how="inner").filter(
        (pl.col("ret_ts_ns") >= pl.col("_ets")) & (pl.col("ret_seq") > pl.col("_eseq")))
    pairs = pairs.join(r.select("_rrow", *keep).rename(rename), on="_rrow", how="left")
    out = entry.with_row_index("_row").join(
        pairs.select("_row", "ret_ts_ns", "ret_seq", *rename.values()), on="_row", how="left", maintain_order="left"
    )
    return out.drop("_row")
