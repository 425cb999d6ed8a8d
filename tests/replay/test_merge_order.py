"""``schema.iter_events`` (one numpy lexsort, events built per chunk) against an independent reference merge.

The reference is Python's stable ``sorted`` over ``(ts, cpu, seq, table index, row)`` -- the order the
contract defines (ties between tables keep table order, then row order). Small chunk sizes force every
path: chunks holding one table (sliced or taken) and chunks mixing tables.
"""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace import schema
from iovatrace.event import Event


# schema.COMMON_COLUMNS: carried as Event attributes or dropped, never in Event.fields
_COMMON = ("ts_ns", "cpu", "seq", "pid", "comm", "flags", "preempt", "event")


def _table(rows: list[tuple[int, int, int, int, int]], name: str) -> pa.Table:
    ts, cpu, seq, pid, val = zip(*rows) if rows else ((), (), (), (), ())
    return pa.table({
        "ts_ns": pa.array(ts, pa.uint64()), "cpu": pa.array(cpu, pa.uint32()), "seq": pa.array(seq, pa.uint64()),
        "pid": pa.array(pid, pa.int32()), "comm": pa.array(["x"] * len(ts), pa.string()),
        "val": pa.array(val, pa.uint64()), "tag": pa.array([name] * len(ts), pa.string()),
    })


@st.composite
def _tables(draw: st.DrawFn) -> dict[str, pa.Table]:
    out = {}
    for t in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 40))
        # per CPU, seq increases with row order (what the parsers guarantee); timestamps collide often
        cpus = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        rows = []
        for i, c in enumerate(sorted(cpus)):
            rows.append((draw(st.integers(0, 15)), c, i, draw(st.integers(0, 5)), draw(st.integers(0, 2**64 - 1))))
        out[f"sys:ev{t}"] = _table(rows, f"ev{t}")
    return out


def _reference(tables: dict[str, pa.Table]) -> list[Event]:
    rows = []
    for ti, (key, t) in enumerate(tables.items()):
        for ri, r in enumerate(t.to_pylist()):
            fields = {k: v for k, v in r.items() if k not in _COMMON}
            rows.append(((r["ts_ns"], r["cpu"], r["seq"], ti, ri), Event(r["ts_ns"], r["cpu"], r["seq"], key,
                                                                         r["pid"], fields)))
    return [ev for _, ev in sorted(rows, key=lambda x: x[0])]


@settings(max_examples=60, deadline=None)
@given(tables=_tables(), chunk=st.sampled_from([1, 3, 7, 65536]))
def test_iter_events_matches_reference_merge(tables: dict[str, pa.Table], chunk: int) -> None:
    old = schema._MERGE_CHUNK
    schema._MERGE_CHUNK = chunk
    try:
        got = list(schema.iter_events(tables))
    finally:
        schema._MERGE_CHUNK = old
    want = _reference(tables)
    assert got == want
    assert all(type(ev) is Event for ev in got)


def test_iter_events_names_filter() -> None:
    tables = {"a:x": _table([(5, 0, 0, 1, 7)], "x"), "a:y": _table([(1, 0, 1, 1, 8)], "y")}
    got = list(schema.iter_events(tables, ["a:x"]))
    assert [(e.name, e.ts_ns, e.fields["val"]) for e in got] == [("a:x", 5, 7)]
    assert list(schema.iter_events({"a:x": _table([], "x")})) == []
