"""Event tables without formats: columns inferred from ``key=value`` text.

Theory of operation: without the event's format we cannot know its fields or types, so we take what the text
shows. A probe head ``(ip)`` / ``(a <- b)`` becomes ``__probe_ip`` or ``__probe_func``/``__probe_ret_ip`` (hex, or a
symbol resolved through kallsyms; unresolved symbols are kept in ``__probe_sym``). Every ``key=value`` pair
(values: ``"quoted"``, ``{list}``, ``ARRAY[...]`` or a run of non-blanks) becomes a column typed by inspection of
all its values: all decimal → int64 (uint64 if a value exceeds it), all ``0x`` hex → uint64, else string. The raw
body stays in ``_body``. The pairs are extracted for all rows at once (polars ``extract_all`` + explode).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
import pyarrow as pa

from ..schema import COMMON_COLUMNS, SCHEMA_VERSION
from .text_decode import resolve_symbol

__all__ = ["inferred_table"]

_PAIR_RE = r'([A-Za-z_][\w.]*)=("[^"]*"|\{[^}]*\}|ARRAY\[[^\]]*\]|\S*)'


def inferred_table(key: str, bodies: pl.Series, common: list[pa.Array], kallsyms: Mapping[str, int] | None,
                   extra: dict[str, str]) -> pa.Table:
    """One event's table with inferred payload columns.

    Args:
        key: the event key (``unknown:<name>``).
        bodies: the event bodies.
        common: the common columns (:data:`iovatrace.schema.COMMON_COLUMNS` order), already built.
        kallsyms: name → address for symbolic probe heads, or ``None``.
        extra: schema metadata to add (precision, flags provenance).

    Returns:
        The table; its schema metadata says ``iovatrace.typing = inferred``.
    """
    n = len(bodies)
    fields: list[pa.Field] = list(COMMON_COLUMNS)
    arrays = list(common)
    head = bodies.str.extract_groups(r"^\((?P<a>[^()<]+?)(?: <- (?P<b>[^()]+?))?\)").struct.unnest()
    if head["a"].is_not_null().any():
        a, b = head["a"], head["b"]
        bare = a.str.contains(r"^[0-9a-f]+$").fill_null(False).to_numpy()
        va, vb = _resolve_column(a, kallsyms), _resolve_column(b, kallsyms)
        if b.is_not_null().any():
            cand = {"__probe_func": [x if bb else y for x, bb, y in zip(va, bare, vb)],
                    "__probe_ret_ip": [y if bb else x for x, bb, y in zip(va, bare, vb)]}
        else:
            cand = {"__probe_ip": va}
        for nm, vals in cand.items():
            fields.append(pa.field(nm, pa.uint64()))
            arrays.append(pa.array(vals, pa.uint64()))
        if any(v is None for v, t in zip(va, a.to_list()) if t is not None):
            fields.append(pa.field("__probe_sym", pa.string()))
            arrays.append(a.to_arrow().cast(pa.string()))
    pairs = bodies.str.extract_all(_PAIR_RE)
    exploded = pl.DataFrame({"row": pl.int_range(n, eager=True), "kv": pairs}).explode("kv").drop_nulls("kv")
    if len(exploded):
        kv = exploded.with_columns(k=pl.col("kv").str.extract(r"^([^=]+)=", 1),
                                   v=pl.col("kv").str.extract(r"^[^=]+=(.*)$", 1))
        for k in kv["k"].unique(maintain_order=True).to_list():
            if k in {f.name for f in fields}:
                continue
            part = kv.filter(pl.col("k") == k).unique("row", keep="first")
            col = pl.DataFrame({"row": pl.int_range(n, eager=True)}).join(part, on="row", how="left")["v"]
            arr, typ = _infer_column(col)
            fields.append(pa.field(k, typ, metadata={"inferred": "1"}))
            arrays.append(arr)
    fields.append(pa.field("_body", pa.string()))
    arrays.append(bodies.to_arrow().cast(pa.string()))
    md = {"iovatrace.schema_version": SCHEMA_VERSION, "iovatrace.event": key, "iovatrace.typing": "inferred",
          **extra}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=md))


def _resolve_column(s: pl.Series, kallsyms: Mapping[str, int] | None) -> list[int | None]:
    table = {u: resolve_symbol(u, kallsyms) for u in s.unique().drop_nulls().to_list()}
    return [None if v is None else table[v] for v in s.to_list()]


def _infer_column(col: pl.Series) -> tuple[pa.Array, pa.DataType]:
    """Type a column of printed values: all decimal → int64 (uint64 if too big), all 0x-hex → uint64, else
    string (surrounding double quotes removed)."""
    nn = col.drop_nulls()
    if len(nn) and nn.str.contains(r"^-?\d+$").all():
        v = col.str.to_integer(base=10, dtype=pl.Int64, strict=False)
        if v.null_count() == col.null_count():
            return v.to_arrow().cast(pa.int64()), pa.int64()
        return col.str.to_integer(base=10, dtype=pl.UInt64, strict=False).to_arrow().cast(pa.uint64()), pa.uint64()
    if len(nn) and nn.str.contains(r"^0x[0-9a-fA-F]+$").all():
        v = col.str.strip_prefix("0x").str.to_integer(base=16, dtype=pl.UInt64, strict=False)
        return v.to_arrow().cast(pa.uint64()), pa.uint64()
    s = col.str.strip_prefix('"').str.strip_suffix('"')
    return s.to_arrow().cast(pa.string()), pa.string()
