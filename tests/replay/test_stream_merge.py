"""``schema.iter_stream_events``: the per-CPU streaming merge the replay reads trace.dat with.

Three references: Python's stable ``sorted`` by ``(ts, cpu, seq)`` over generated streams shaped like the
trace.dat reader's (page blocks; within a block one batch per event type, in increasing event id; time
monotonic per CPU), ``schema.iter_events`` over the same rows as whole tables, and, on the lab traces,
``iter_events(read_tables(...))`` -- what the replay used before streaming -- event for event. Memory is checked
structurally: a CPU never holds more than ``event types + 1`` batches, however many blocks its stream has (also
when timestamps stand still across blocks).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace import schema
from iovatrace.event import Event
from iovatrace.replay.commands import open_event_stream

_TYPES = ("sys:a", "sys:b", "sys:c")  # event ids 0, 1, 2


def _batch(key: str, rows: list[tuple[int, int, int, int]]) -> pa.RecordBatch:
    ts, cpu, seq, val = zip(*rows)
    n = len(rows)
    return pa.RecordBatch.from_pydict({
        "ts_ns": pa.array(ts, pa.uint64()), "cpu": pa.array(cpu, pa.uint32()), "seq": pa.array(seq, pa.uint64()),
        "pid": pa.array([7] * n, pa.int32()), "comm": pa.array(["x"] * n), "val": pa.array(val, pa.uint64()),
        "name": pa.array(["keep" if v % 3 else "drop" for v in val]),
    })


@st.composite
def _cpu_streams(draw: st.DrawFn) -> list[list[tuple[str, pa.RecordBatch]]]:
    """Per CPU: blocks of records (ts non-decreasing, often equal across CPUs), batches per type in id order."""
    streams = []
    for cpu in range(draw(st.integers(1, 3))):
        ts, seq, out = draw(st.integers(0, 5)), 0, []
        for _ in range(draw(st.integers(0, 6))):
            recs = []
            for _ in range(draw(st.integers(1, 8))):
                ts += draw(st.integers(0, 3))
                recs.append((draw(st.integers(0, len(_TYPES) - 1)), (ts, cpu, seq, draw(st.integers(0, 9)))))
                seq += 1
            for t, key in enumerate(_TYPES):
                rows = [r for k, r in recs if k == t]
                if rows:
                    out.append((key, _batch(key, rows)))
        streams.append(out)
    return streams


def _filter(key: str, batch: Any) -> Any:
    return batch.filter(pc.equal(batch.column("name"), "keep")) if key == "sys:b" else batch


def _rows(key: str, batch: Any) -> list[Event]:
    return [Event(r["ts_ns"], r["cpu"], r["seq"], key, r["pid"], {"val": r["val"], "name": r["name"]})
            for r in batch.to_pylist()]


@settings(max_examples=150, deadline=None)
@given(streams=_cpu_streams(), chunk=st.sampled_from([1, 4, 65536]), filtered=st.booleans())
def test_stream_merge_matches_sorted(streams: list[list[tuple[str, pa.RecordBatch]]], chunk: int,
                                     filtered: bool) -> None:
    f = _filter if filtered else None
    rows = []  # stable tie order: event key, then CPU, then stream order (what iter_events does over tables)
    for cpu, s in enumerate(streams):
        for i, (key, b) in enumerate(s):
            for j, ev in enumerate(_rows(key, f(key, b) if f else b)):
                rows.append(((ev.ts_ns, ev.cpu, ev.seq, key, cpu, i, j), ev))
    want = [ev for _, ev in sorted(rows, key=lambda r: r[0])]
    old = schema._MERGE_CHUNK
    schema._MERGE_CHUNK = chunk
    stats: dict[str, Any] = {}
    try:
        got = list(schema.iter_stream_events(streams, {k: i for i, k in enumerate(_TYPES)}, batch_filter=f,
                                             stats=stats))
    finally:
        schema._MERGE_CHUNK = old
    assert got == want
    assert all(type(ev) is Event for ev in got)
    assert stats["late"] == 0
    # bounded: one group (at most one batch per event type) and the first batch of the next block
    assert stats["max_held"] <= len(_TYPES) + 1


@settings(max_examples=60, deadline=None)
@given(streams=_cpu_streams())
def test_stream_merge_matches_iter_events(streams: list[list[tuple[str, pa.RecordBatch]]]) -> None:
    parts: dict[str, list[pa.RecordBatch]] = {}
    for s in streams:  # the tables read_tables would build: per key, CPU after CPU, each in stream order
        for key, b in s:
            parts.setdefault(key, []).append(b)
    tables = {k: pa.Table.from_batches(parts[k]) for k in sorted(parts)}
    got = list(schema.iter_stream_events(streams, {k: i for i, k in enumerate(_TYPES)}))
    assert got == list(schema.iter_events(tables))


def test_stream_merge_without_ranks_holds_whole_stream() -> None:
    """No block rank: each CPU is one group (all held), the order is still right."""
    s0 = [("sys:a", _batch("sys:a", [(t, 0, t, t) for t in range(0, 40, 2)]))] * 1
    s1 = [("sys:a", _batch("sys:a", [(t, 1, i, t) for i, t in enumerate(range(1, 40, 2))]))]
    stats: dict[str, Any] = {}
    got = list(schema.iter_stream_events([s0, s1], None, stats=stats))
    assert [e.ts_ns for e in got] == list(range(40))
    assert stats["windows"] == 1


def test_stream_merge_bounded_on_long_streams() -> None:
    """200 blocks per CPU: held batches stay at the structural bound and are handed out in many windows."""
    streams = []
    for cpu in range(2):
        out = []
        for blk in range(200):
            base = blk * 100
            out.append(("sys:a", _batch("sys:a", [(base + 2 * i + cpu, cpu, blk * 20 + i, 1) for i in range(10)])))
            out.append(("sys:c", _batch("sys:c", [(base + 50 + 2 * i + cpu, cpu, blk * 20 + 10 + i, 2)
                                                  for i in range(10)])))
        streams.append(out)
    stats: dict[str, Any] = {}
    got = list(schema.iter_stream_events(streams, {"sys:a": 0, "sys:c": 2}, stats=stats))
    assert len(got) == 8000
    assert [(e.ts_ns, e.cpu) for e in got] == sorted((e.ts_ns, e.cpu) for e in got)
    assert stats["max_held"] <= 2 + 1
    assert stats["windows"] >= 100


def test_standing_time_stays_bounded() -> None:
    """Timestamps that do not move across 100 blocks: rows at the watermark go out in CPU order, none piles up."""
    streams = [[(k, _batch(k, [(0, cpu, 2 * blk + i, 1)]))
                for blk in range(100) for i, k in enumerate(("sys:a", "sys:b"))] for cpu in range(2)]
    stats: dict[str, Any] = {}
    got = list(schema.iter_stream_events(streams, {"sys:a": 0, "sys:b": 1}, stats=stats))
    assert [(e.cpu, e.seq) for e in got] == [(c, q) for c in range(2) for q in range(200)]
    assert stats["max_held"] <= 2 + 1


def test_time_going_back_is_counted_late() -> None:
    """A CPU whose time goes back across blocks: the older row comes late, and is counted."""
    s0 = [("sys:a", _batch("sys:a", [(10, 0, 0, 1)])), ("sys:a", _batch("sys:a", [(5, 0, 1, 1)]))]
    s1 = [("sys:a", _batch("sys:a", [(7, 1, 0, 1)])), ("sys:a", _batch("sys:a", [(20, 1, 1, 1)]))]
    stats: dict[str, Any] = {}
    got = list(schema.iter_stream_events([s0, s1], {"sys:a": 0}, stats=stats))
    assert sorted(e.ts_ns for e in got) == [5, 7, 10, 20]
    assert stats["late"] >= 1


def test_event_stays_a_keyword_built_immutable_record() -> None:
    """Hand-built events: keyword construction, attributes, immutability, equality."""
    ev = Event(ts_ns=1, cpu=0, seq=2, name="iova:free_iova_fast", pid=3, fields={"pfn": 4})
    assert (ev.ts_ns, ev.cpu, ev.seq, ev.name, ev.pid, ev.fields["pfn"]) == (1, 0, 2, "iova:free_iova_fast", 3, 4)
    with pytest.raises(AttributeError):
        ev.ts_ns = 5  # type: ignore[misc]
    assert ev == Event(1, 0, 2, "iova:free_iova_fast", 3, {"pfn": 4})


# -- the lab traces: the streamed replay input equals the whole-table merge, event for event -----------------------

def _wanted(tr: Any) -> list[str]:
    from iovatrace.replay.commands import _extensions
    from iovatrace.replay.driver import ReplayDriver
    from iovatrace.replay.profiles import detect_profile

    available = {k for k, n in tr.event_counts().items() if n}
    profile, _ = detect_profile(tr.meta.kernel_release, available)
    exts = _extensions(profile, (), tr.meta.cpus, available)
    drv = ReplayDriver(profile, tr.meta.cpus, available=available, extensions=exts)
    return sorted(drv.wanted_events() & available)


def _same_streams(a: Any, b: Any) -> int:
    n = 0
    for n, (x, y) in enumerate(zip(a, b, strict=True), 1):
        assert x == y, f"event {n - 1}: {x} != {y}"
    return n


@pytest.mark.parametrize(("name", "block_pages"), [
    ("lazy_v7", 64), ("strict_v7-6.12", 128), ("boot_strict", 8), ("lazy_v7-6.12", 0),
    pytest.param("stress_strict-6.1", 0, marks=pytest.mark.slow),
])
def test_stream_equals_read_tables_on_lab_traces(shared_data, name: str, block_pages: int) -> None:
    from iovatrace.parsers import open_trace

    path = shared_data / "traces-lab" / name / "trace.dat"
    tr = open_trace(path)
    if block_pages:  # small blocks: many per CPU, so groups close and windows move many times
        tr.block_pages = block_pages
    wanted = _wanted(tr)
    ref = schema.iter_events(schema.prefilter_replay_tables(tr.read_tables(wanted)))
    got, total = open_event_stream(tr, wanted)
    n = _same_streams(got, ref)
    assert n > 1000 and total >= n


def test_text_traces_fall_back_to_read_tables(shared_data) -> None:
    from iovatrace.parsers import open_trace

    path = shared_data / "traces-lab" / "strict_extract" / "trace.txt.gz"
    if not path.exists():
        pytest.skip(f"no text capture {path.name} in this data set")
    tr = open_trace(path)
    wanted = sorted(k for k, n in tr.event_counts().items() if n)
    got, _ = open_event_stream(tr, wanted)
    _same_streams(got, schema.iter_events(schema.prefilter_replay_tables(tr.read_tables(wanted))))


def test_bulk_built_events_are_frozen_dataclasses() -> None:
    import dataclasses

    t = pa.table({"ts_ns": pa.array([3], pa.uint64()), "cpu": pa.array([1], pa.uint32()),
                  "seq": pa.array([0], pa.uint64()), "pid": pa.array([9], pa.int32()), "pfn": pa.array([5])})
    (ev,) = schema.iter_events({"iova:free_iova_fast": t})
    assert ev == Event(ts_ns=3, cpu=1, seq=0, name="iova:free_iova_fast", pid=9, fields={"pfn": 5})
    assert dataclasses.is_dataclass(ev)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.pid = 1  # type: ignore[misc]


def test_prefilter_drops_probe_columns_and_nothing_else(shared_data) -> None:
    """The replay's Arrow prefilter removes the probe bookkeeping columns (no model reads them) and keeps every
    other column and row; kmem_cache_free keeps only the magazine cache's rows."""
    from iovatrace.parsers import open_trace

    tr = open_trace(shared_data / "traces-lab" / "lazy_v7" / "trace.dat")
    tables = tr.read_tables(["iova:alloc_iova_fast", "iova:alloc_iova_fast_ret", "iommu:map"])
    for key, t in tables.items():
        got = schema.prefilter_replay_batch(key, t)
        kept = [n for n in t.schema.names if not n.startswith("__probe_")]
        assert got.schema.names == kept, key
        assert got.equals(t.select(kept)), key
    assert "__probe_ip" in tables["iova:alloc_iova_fast"].schema.names  # the case is exercised
    ev = next(e for e in open_event_stream(tr, ["iova:alloc_iova_fast"])[0])
    assert not any(k.startswith("__probe_") for k in ev.fields)
    assert {"iovad", "size", "limit_pfn"} <= set(ev.fields)
