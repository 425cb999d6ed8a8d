"""Shared helpers of the text and writer tests (no tests here): compare event tables field by field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa

# Why a value may be null in text: the kernel hashes plain %p, and __print_symbolic tables keyed by enum names
# cannot be evaluated without BTF. Anything else that is null is a bug.
UNRECOVERABLE_REASONS = ("hashed %p", "name not in table")


def rounded(ts: int, precision: int) -> int:
    """A nanosecond timestamp as text prints it at ``precision`` ns (the kernel and trace-cmd round to nearest)."""
    return (ts + precision // 2) // precision * precision if precision > 1 else ts


def compare_tables(
    ref: Mapping[str, pa.Table],
    got: Mapping[str, pa.Table],
    *,
    precision: int = 1,
    skip: Iterable[str] = ("event",),
    comm_width: int | None = None,
    flags_mask: int | None = 0xFF,
    allow_null: Mapping[str, set[str]] | None = None,
    match_seq: bool = True,
) -> dict[str, int]:
    """Assert that every event of ``ref`` is in ``got`` with equal values; return rows compared per key.

    Args:
        ref: reference tables (the binary reader's, or the rows written).
        got: tables under test.
        precision: ns per printed unit of ``got``'s timestamps (1000 for µs text).
        skip: columns not compared.
        comm_width: compare only this many leading characters of ``comm`` (``report -l`` prints 8).
        flags_mask: bits of ``flags`` to compare (``None``: do not compare flags/preempt).
        allow_null: key → fields that may be null in ``got`` (values the text cannot carry).
        match_seq: rows pair up by ``(cpu, seq)``; otherwise by ``(cpu, ts)`` order within each table.
    """
    assert set(ref) == set(got), (sorted(set(ref) - set(got)), sorted(set(got) - set(ref)))
    counts = {}
    skip = set(skip)
    if flags_mask is None:
        skip |= {"flags", "preempt"}
    if not match_seq:
        skip |= {"seq"}
    for key in sorted(ref):
        r, g = ref[key], got[key]
        assert r.num_rows == g.num_rows, (key, r.num_rows, g.num_rows)
        order = [("cpu", "ascending"), ("seq", "ascending")] if match_seq else \
            [("cpu", "ascending"), ("ts_ns", "ascending"), ("seq", "ascending")]
        r, g = r.sort_by(order), g.sort_by(order)
        nullable = (allow_null or {}).get(key, set())
        for col in r.column_names:
            if col in skip:
                continue
            assert col in g.column_names, (key, col)
            rc, gc = r.column(col), g.column(col)
            if col not in ("ts_ns", "comm", "flags") and rc.type == gc.type and not gc.null_count \
                    and rc.equals(gc):
                continue  # fast path: identical columns
            rv, gv = rc.to_pylist(), gc.to_pylist()
            for i, (a, b) in enumerate(zip(rv, gv)):
                if col == "ts_ns":
                    a = rounded(a, precision)
                elif col == "comm" and comm_width and a is not None:
                    a = a[:comm_width]
                elif col == "flags" and flags_mask is not None:
                    a, b = a & flags_mask, b & flags_mask
                if b is None and col in nullable:
                    continue
                assert a == b, f"{key} row {i} column {col}: reference {a!r} != text {b!r}"
        counts[key] = r.num_rows
    return counts
