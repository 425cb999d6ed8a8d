"""The single source of truth for every table iovatrace produces.

Theory of operation:

* **Event tables.** One Arrow table per event type (``"system:name"``). Every event table starts with
  :data:`COMMON_COLUMNS`; the payload columns follow, derived from the event's format file by
  :func:`event_schema` (integers keep their width and signedness, arrays become lists, char arrays and
  ``__data_loc char[]`` become strings, u8 arrays binary). Both the trace.dat reader and the text readers build
  their tables from :func:`event_schema`, so the two can be compared column by column.
* **Lost events** are data: :data:`LOST_EVENTS` has one row per CPU and time where the ring buffer (or the
  kernel's missed-events page flag) says events were lost.
* **Merged iteration.** ftrace orders events only within one CPU. :func:`iter_events` merges tables explicitly
  by ``(ts_ns, cpu, seq)`` (``seq`` is the record's index in its CPU stream) and yields :class:`Event` objects;
  the parsers themselves never re-sort a CPU's stream. :func:`iter_stream_events` gives the same order from
  per-CPU streams of record batches (trace.dat, one page block at a time) with a watermark, so memory follows
  the blocks, not the trace. Both build events column-wise, a chunk at a time.
* **Report tables** (kernel logs), **finding** and **state** tables are declared further down, one block per
  producer; each declares its columns once, here.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import pyarrow as pa

from .event import Event
from .parsers.formats import EventFormat, Field

__all__ = [
    "SCHEMA_VERSION",
    "COMMON_COLUMNS",
    "COMMON_DOCS",
    "LOST_EVENTS",
    "Event",
    "arrow_type",
    "event_schema",
    "iter_events",
    "iter_stream_events",
    "prefilter_replay_batch",
]

SCHEMA_VERSION = "1"

# ---------------------------------------------------------------------------------------------------------------
# Event tables
# ---------------------------------------------------------------------------------------------------------------

#: Columns every event table starts with, in this order.
COMMON_COLUMNS: list[pa.Field] = [
    pa.field("ts_ns", pa.uint64(), nullable=False),
    pa.field("cpu", pa.uint32(), nullable=False),
    pa.field("seq", pa.uint64(), nullable=False),
    pa.field("pid", pa.int32(), nullable=False),
    pa.field("comm", pa.string()),
    pa.field("flags", pa.uint8(), nullable=False),
    pa.field("preempt", pa.uint8(), nullable=False),
    pa.field("event", pa.dictionary(pa.int32(), pa.string()), nullable=False),
]

COMMON_DOCS: dict[str, str] = {
    "ts_ns": "timestamp in nanoseconds of the trace clock (ns clocks), after the file's offset options",
    "cpu": "CPU whose ring buffer held the record",
    "seq": "index of the record in its CPU's stream (per buffer/instance), the tie-breaker of the merge",
    "pid": "common_pid: the task that was running",
    "comm": "command name of pid from the saved cmdlines (null when unknown)",
    "flags": "common_flags (irqs-off 0x01, need-resched 0x04, hardirq 0x08, softirq 0x10, ...)",
    "preempt": "common_preempt_count (low nibble preempt depth, high nibble migrate-disable depth)",
    "event": "'system:name' of the event",
}


def _int_type(size: int, signed: bool) -> pa.DataType:
    return {
        (1, True): pa.int8(), (1, False): pa.uint8(),
        (2, True): pa.int16(), (2, False): pa.uint16(),
        (4, True): pa.int32(), (4, False): pa.uint32(),
        (8, True): pa.int64(), (8, False): pa.uint64(),
    }[(size, signed)]


def arrow_type(f: Field) -> pa.DataType:
    """The Arrow type of one payload field.

    Args:
        f: a parsed format field.

    Returns:
        integers for scalars; ``string`` for char arrays and ``__data_loc char[]``; ``binary`` for u8 arrays
        and tail arrays; ``list<int>`` for other arrays.
    """
    if f.kind == "scalar":
        return _int_type(f.size, f.signed)
    if f.is_string:
        return pa.string()
    if f.kind == "tail":
        return pa.binary()
    elem = f.elem_size if f.elem_size in (1, 2, 4, 8) else 1
    if elem == 1:
        return pa.binary()
    return pa.list_(_int_type(elem, f.signed))


def event_schema(fmt: EventFormat, *, fetch_types: Mapping[str, str] | None = None) -> pa.Schema:
    """The Arrow schema of one event table: :data:`COMMON_COLUMNS` then the payload fields.

    Args:
        fmt: the event's parsed format.
        fetch_types: for probe events, the declared fetch-arg type of each field (``x64``, ``u8``, ``s32``,
            ``string``...), kept as field metadata ``fetch_type``.

    Returns:
        A schema with metadata ``iovatrace.schema_version`` and ``iovatrace.event``; each payload field carries
        ``c_type`` (and ``fetch_type`` where known) metadata.
    """
    cols = list(COMMON_COLUMNS)
    names = {c.name for c in cols}
    for f in fmt.payload_fields:
        meta = {"c_type": f.type, "kind": f.kind}
        if fetch_types and f.name in fetch_types:
            meta["fetch_type"] = fetch_types[f.name]
        name = f.name if f.name not in names else f"field_{f.name}"
        names.add(name)
        cols.append(pa.field(name, arrow_type(f), metadata=meta))
    return pa.schema(cols, metadata={"iovatrace.schema_version": SCHEMA_VERSION, "iovatrace.event": fmt.key})


#: One row per loss the trace admits to.
LOST_EVENTS = pa.schema(
    [
        pa.field("ts_ns", pa.uint64(), nullable=False),
        pa.field("cpu", pa.uint32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),  # -1: lost, number unknown
        pa.field("source", pa.string(), nullable=False),  # 'missed_events_page', 'overrun', 'text_marker', ...
        pa.field("offset", pa.int64()),  # byte offset of the page in the file, when from trace.dat
        pa.field("buffer", pa.string()),  # instance name ('' = top)
    ],
    metadata={"iovatrace.schema_version": SCHEMA_VERSION},
)


_COMMON_NAMES = frozenset(c.name for c in COMMON_COLUMNS)


_MERGE_CHUNK = 65536  # events materialised at a time: memory follows the chunk, not the trace

# Event is a frozen slotted dataclass: its __init__ goes through object.__setattr__ once per field (~2 µs an
# event). Events are built in bulk instead: object.__new__ for each, then one C-level map per attribute calling
# that slot's descriptor (~0.2 µs an event for all six); the object is the same, immutable afterwards.
_new_event = object.__new__
_EVENT_SLOTS = tuple(Event.__dict__[k].__set__ for k in ("ts_ns", "cpu", "seq", "name", "pid", "fields"))
_KEY_COLUMNS = ("ts_ns", "cpu", "seq", "pid")


def _pylist(col: Any) -> list[Any]:
    """One Arrow column as a Python list. Integer columns without nulls go through numpy: ``tolist`` gives the
    same Python ints ~5x faster than pyarrow's ``to_pylist`` (strings, lists and nullable columns keep it)."""
    if pa.types.is_integer(col.type) and col.null_count == 0:
        return col.to_numpy().tolist()  # type: ignore[no-any-return]
    return col.to_pylist()  # type: ignore[no-any-return]


@lru_cache(maxsize=None)
def _fields_builder(payload: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """A function ``(v0, v1, ...) -> {payload[0]: v0, payload[1]: v1, ...}``, made once per payload layout.

    A dict display builds an event's field dict ~2.5x faster than ``dict(zip(names, values))``, and the field
    dicts are most of what building an event costs. The names enter the source only as ``repr`` literals.
    """
    args = ", ".join(f"v{i}" for i in range(len(payload)))
    body = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(payload))
    return eval(f"lambda {args}: {{{body}}}", {"__builtins__": {}})  # type: ignore[no-any-return]


def _table_rows(name: str, table: Any, payload: list[str]) -> list[Event]:
    """``Event`` objects of the rows of ``table`` (a Table or RecordBatch, usually a zero-copy slice), in row
    order. Columns become Python lists once; events and field dicts are built by ``map``, with no Python loop of
    our own."""
    n = table.num_rows
    ts, cpu, seq, pid = (_pylist(table.column(c)) for c in _KEY_COLUMNS)
    if payload:
        fields: Iterator[dict[str, Any]] = map(_fields_builder(tuple(payload)),
                                                *[_pylist(table.column(c)) for c in payload])
    else:
        fields = map(dict, repeat((), n))
    out = list(map(_new_event, repeat(Event, n)))
    for set_slot, values in zip(_EVENT_SLOTS, (ts, cpu, seq, repeat(name, n), pid, fields)):
        deque(map(set_slot, out, values), maxlen=0)  # runs the map in C, keeps nothing
    return out


def _gather(sources: list[tuple[str, Any, list[str]]], src: Any, rows: Any) -> list[Event]:
    """Events in merged order: position ``k`` is row ``rows[k]`` of ``sources[src[k]]`` (name, table, payload).

    One CPU's rows of one table take a contiguous, ascending range of any merged chunk (a CPU stream is in time
    order), so each such range is built from a zero-copy slice; the built lists are concatenated and put in
    merged order by one C-level ``itemgetter`` (no per-event Python scatter loop, no ``Table.take``). Rows that
    are not in contiguous runs (timestamps going backwards within a CPU) fall back to one ``take`` per source.
    """
    import numpy as np

    n = len(src)
    if n == 0:
        return []
    first = int(src[0])
    if bool(np.all(src == first)) and bool(np.all(np.diff(rows) > 0)):
        by_src = None  # one source, rows ascending: merged order is row order
        s_src, s_rows = src, rows
    else:
        # in (source, row) order, each CPU's rows of one source are one contiguous range
        by_src = np.argsort(src.astype(np.int64) << 40 | rows.astype(np.int64))
        s_src, s_rows = src[by_src], rows[by_src]
    cuts = np.flatnonzero((np.diff(s_src) != 0) | (np.diff(s_rows) != 1)) + 1
    bounds = [0, *cuts.tolist(), n]
    # Every event is a new GC-tracked object and all survive the chunk: the collector would run a full pass every
    # few ten thousand of them (half the build time) though they form no cycles. Paused for the chunk only.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _gather_runs(sources, s_src, s_rows, bounds, by_src)
    finally:
        if gc_was_on:
            gc.enable()


def _gather_runs(sources: list[tuple[str, Any, list[str]]], s_src: Any, s_rows: Any, bounds: list[int],
                 by_src: Any) -> list[Event]:
    """The build step of :func:`_gather`: rows in (source, row) order, ``bounds`` cutting them into runs."""
    import numpy as np

    n = bounds[-1]
    out: list[Event] = []
    if len(bounds) - 1 <= 4 + n // 64:
        for lo, hi in zip(bounds, bounds[1:]):
            name, t, payload = sources[int(s_src[lo])]
            out += _table_rows(name, t.slice(int(s_rows[lo]), hi - lo), payload)
    else:  # fragmented (time going backwards within a CPU): one take per source
        scuts = [0, *(np.flatnonzero(np.diff(s_src)) + 1).tolist(), n]
        for lo, hi in zip(scuts, scuts[1:]):
            name, t, payload = sources[int(s_src[lo])]
            out += _table_rows(name, t.take(pa.array(s_rows[lo:hi])), payload)
    if by_src is None:
        return out
    inv = np.empty(n, dtype=np.int64)
    inv[by_src] = np.arange(n)
    return list(itemgetter(*inv.tolist())(out)) if n > 1 else out


def iter_events(tables: Mapping[str, pa.Table], names: Iterable[str] | None = None) -> Iterator[Event]:
    """Merge event tables into one stream ordered by ``(ts_ns, cpu, seq)``.

    Args:
        tables: event tables keyed by ``"system:name"`` (as the parsers return them).
        names: if given, only these events are merged (filtering happens before any per-row Python work).

    Yields:
        :class:`Event` objects in merged order. Each table must already be ordered by ``(cpu, seq)`` within
        each CPU, which the parsers guarantee; the merge never re-sorts one CPU's stream. Rows with equal keys
        come in table order, then row order (a stable merge).
    """
    # The generator yields whole chunks and chain() flattens them in C: no generator resume per event.
    return chain.from_iterable(_event_chunks(tables, names))


def _event_chunks(tables: Mapping[str, pa.Table], names: Iterable[str] | None) -> Iterator[list[Event]]:
    """:func:`iter_events`, one merged chunk (a list of events) at a time."""
    import numpy as np

    wanted = set(names) if names is not None else None
    keep = [(key, t) for key, t in tables.items()
            if (wanted is None or key in wanted) and t.num_rows]
    if not keep:
        return
    # One stable lexsort over the concatenated keys replaces a heap merge of per-row tuples; only the key columns
    # are copied whole (≈ 30 bytes an event), rows become Python objects one chunk at a time.
    def key(name: str, dtype: type) -> Any:
        return np.concatenate([t.column(name).to_numpy().astype(dtype, copy=False) for _, t in keep])

    ts = key("ts_ns", np.int64)
    cpu = key("cpu", np.int64)
    seq = key("seq", np.int64)
    tid = np.repeat(np.arange(len(keep), dtype=np.int32), [t.num_rows for _, t in keep])
    starts = np.cumsum([0] + [t.num_rows for _, t in keep])
    order = np.lexsort((seq, cpu, ts)) if len(keep) > 1 or not _is_sorted(ts, cpu, seq) else None
    del ts, cpu, seq
    sources = [(k, t, [c for c in t.column_names if c not in _COMMON_NAMES]) for k, t in keep]
    n = int(starts[-1])
    for lo in range(0, n, _MERGE_CHUNK):
        idx = order[lo:lo + _MERGE_CHUNK] if order is not None else np.arange(lo, min(n, lo + _MERGE_CHUNK))
        which = tid[idx]
        yield _gather(sources, which, idx - starts[which])


def _is_sorted(ts: Any, cpu: Any, seq: Any) -> bool:
    """Whether the (ts, cpu, seq) rows are already in merge order (one table, one CPU: the common case)."""
    import numpy as np

    if len(ts) < 2:
        return True
    dt = np.diff(ts)
    if bool(np.all(dt > 0)):
        return True
    same = dt == 0
    dc = np.diff(cpu)
    ok = (dt > 0) | (same & ((dc > 0) | ((dc == 0) & (np.diff(seq) >= 0))))
    return bool(np.all(ok))


# -- streaming merge: one iterator of record batches per CPU, a watermark, one page block per CPU in memory -----

class _Run:
    """Rows of one batch of one CPU stream not yet handed out (``pos`` onwards), with their merge keys."""

    __slots__ = ("name", "batch", "payload", "ts", "cpu", "seq", "pos", "ordered")

    def __init__(self, name: str, batch: Any, payload: list[str]) -> None:
        import numpy as np

        self.name, self.batch, self.payload = name, batch, payload
        # uint64 columns viewed as int64 (timestamps and seq stay below 2**63): no copy
        self.ts = batch.column("ts_ns").to_numpy().view(np.int64)
        self.cpu = batch.column("cpu").to_numpy()
        self.seq = batch.column("seq").to_numpy().view(np.int64)
        self.pos = 0
        self.ordered = bool(np.all(np.diff(self.ts) >= 0))

    def cut(self, watermark: int | None, at_mark: bool) -> int:
        """Index of the first row not final: at or after ``watermark`` (after it if ``at_mark``: rows *at* the
        watermark are final too); None: no limit. Never before ``pos``."""
        import numpy as np

        if watermark is None:
            return len(self.ts)
        if self.ordered:
            return max(self.pos, int(np.searchsorted(self.ts, watermark, side="right" if at_mark else "left")))
        ts = self.ts[self.pos:]  # time went backwards: hand out a prefix only
        late = np.flatnonzero(ts > watermark if at_mark else ts >= watermark)
        return self.pos + int(late[0]) if late.size else len(self.ts)


class _CpuStream:
    """One CPU's batch iterator, split into *groups*: runs of batches that hold whole page blocks."""

    __slots__ = ("it", "rank", "open", "last_rank", "held", "bound", "cpu", "done", "max_held")

    def __init__(self, it: Iterator[tuple[str, Any]], rank: Mapping[str, int] | None) -> None:
        self.it = it
        self.rank = rank
        self.open: list[tuple[str, Any]] = []
        self.last_rank = -1
        self.held: list[_Run] = []  # rows of closed groups not handed out yet
        self.bound: int | None = None  # newest ts of the closed groups: later rows of this CPU are not older
        self.cpu = -1  # the stream's CPU (from its rows), which orders rows of equal ts
        self.done = False
        self.max_held = 0  # most batches held at once (open + closed), for the memory tests


def iter_stream_events(streams: Iterable[Iterable[tuple[str, Any]]], block_rank: Mapping[str, int] | None = None,
                       *, batch_filter: Any = None, stats: dict[str, Any] | None = None) -> Iterator[Event]:
    """Merge per-CPU streams of record batches by ``(ts_ns, cpu, seq)`` in memory bounded by a few batches each.

    Each stream is one CPU's ``(key, batch)`` pairs in that CPU's order, as ``TraceDat.iter_batches(cpus=[c])``
    yields them: page block after page block, and within a block one batch per event type, in increasing
    ``block_rank[key]`` (the event id), so a batch whose rank is not above its predecessor's starts a new block.
    A block's batches interleave in time, so a CPU's rows become final only when its *group* of batches is
    closed by the next block's first batch; ``bound`` is then the group's newest timestamp, and later rows of
    that CPU are not older (a CPU stream is in time order). A row is handed out once its ts is below the
    watermark, the least ``bound`` over the CPUs not yet at their end (or at it, when no CPU below its own has
    that bound); the CPU with the least ``(bound, cpu)`` is always the one read next, and by then all its rows are
    out. A CPU thus holds at most one group (at most one batch per event type) and the next block's first batch.
    Without ``block_rank`` (or from a key it lacks on) a stream is one group: the whole stream is held, which is
    correct but not bounded.

    The order equals :func:`iter_events` over the same rows: rows are handed out window by window, each
    window sorted by ``(ts_ns, cpu, seq)`` with ties in event-key order, then CPU order, then stream order (the
    tables' order). If a CPU's time went backwards across a window, the older row comes late (``stats["late"]``).

    Args:
        streams: one iterable of ``(key, batch)`` per CPU (each stream's rows all of one CPU).
        block_rank: each key's position within a page block (``EventFormat.id``).
        batch_filter: ``f(key, batch) -> batch`` applied to each batch before any row becomes Python
            (e.g. :func:`prefilter_replay_batch`).
        stats: if given, receives ``max_held`` (most batches one CPU held at once), ``windows`` and ``late``.

    Yields:
        :class:`Event` objects in merged order.
    """
    return chain.from_iterable(_stream_chunks(streams, block_rank, batch_filter, stats))


def _stream_chunks(streams: Iterable[Iterable[tuple[str, Any]]], block_rank: Mapping[str, int] | None,
                   batch_filter: Any, stats: dict[str, Any] | None) -> Iterator[list[Event]]:
    """:func:`iter_stream_events`, one merged chunk (a list of events) at a time."""
    import numpy as np

    cpus = [_CpuStream(iter(s), block_rank) for s in streams]
    windows = late = 0
    newest: int | None = None  # newest ts handed out so far

    def close(s: _CpuStream) -> None:
        for key, batch in s.open:
            if not batch.num_rows:
                continue
            # the bound counts every row read, also those the filter drops
            top = int(batch.column("ts_ns").to_numpy().max())
            s.bound = top if s.bound is None else max(s.bound, top)
            s.cpu = int(batch.column("cpu")[0].as_py())
            if batch_filter is not None:
                batch = batch_filter(key, batch)
                if not batch.num_rows:
                    continue
            s.held.append(_Run(key, batch, [c for c in batch.schema.names if c not in _COMMON_NAMES]))
        s.open = []

    def advance(s: _CpuStream) -> None:
        """Read ``s`` until one more group is closed (or the stream ends)."""
        for key, batch in s.it:
            r = s.rank.get(key) if s.rank is not None else None
            if r is None:
                s.rank = None  # a key without a rank: this stream can no longer be split into blocks
            elif s.open and r <= s.last_rank:
                close(s)
                s.open.append((key, batch))
                s.last_rank = r
                s.max_held = max(s.max_held, len(s.held) + 1)
                return
            s.open.append((key, batch))
            s.last_rank = -1 if r is None else r
            s.max_held = max(s.max_held, len(s.held) + len(s.open))
        close(s)
        s.done = True

    while True:
        live = [s for s in cpus if not s.done]
        if live:
            # the CPU that holds the watermark back (no closed group yet counts as the oldest; ties: lowest CPU)
            advance(min(live, key=lambda s: (-1 if s.bound is None else s.bound, s.cpu)))
            live = [s for s in cpus if not s.done]
            if any(s.bound is None for s in live):
                continue
        wm = min(s.bound for s in live) if live else None  # type: ignore[type-var]
        # rows at the watermark are final too on CPUs not above the lowest CPU whose bound it is: those CPUs' later
        # rows sort after them (higher CPU, or same CPU and higher seq)
        wm_cpu = min((s.cpu for s in live if s.bound == wm), default=-1)
        parts: list[tuple[_Run, int, int]] = []
        for s in cpus:
            for run in s.held:
                hi = run.cut(wm, int(run.cpu[0]) <= wm_cpu)
                if hi > run.pos:
                    parts.append((run, run.pos, hi))
                    run.pos = hi
            s.held = [r for r in s.held if r.pos < len(r.ts)]
        if parts:
            windows += 1
            # ties keep event-key order, then CPU order, then stream order: what iter_events does over tables
            parts.sort(key=lambda p: (p[0].name, int(p[0].cpu[0])))
            ts = np.concatenate([r.ts[lo:hi] for r, lo, hi in parts])
            if newest is not None:
                late += int(np.count_nonzero(ts < newest))
            cpu = np.concatenate([r.cpu[lo:hi] for r, lo, hi in parts]).astype(np.int64, copy=False)
            seq = np.concatenate([r.seq[lo:hi] for r, lo, hi in parts])
            src = np.repeat(np.arange(len(parts), dtype=np.int32), [hi - lo for _, lo, hi in parts])
            rows = np.concatenate([np.arange(lo, hi) for _, lo, hi in parts])
            order = np.lexsort((seq, cpu, ts)) if len(parts) > 1 or not _is_sorted(ts, cpu, seq) else None
            top = int(ts.max())
            newest = top if newest is None else max(newest, top)
            del ts, cpu, seq
            sources = [(r.name, r.batch, r.payload) for r, _, _ in parts]
            n = len(src)
            for lo in range(0, n, _MERGE_CHUNK):
                idx = order[lo:lo + _MERGE_CHUNK] if order is not None else np.arange(lo, min(n, lo + _MERGE_CHUNK))
                yield _gather(sources, src[idx], rows[idx])
        if not live:
            break
    if stats is not None:
        stats["max_held"] = max((s.max_held for s in cpus), default=0)
        stats["windows"] = windows
        stats["late"] = late


# ---------------------------------------------------------------------------------------------------------------
# Kernel log report tables (owned by parsers/ logs: oops, kmemleak, dma-debug). Declared below this line.
# ---------------------------------------------------------------------------------------------------------------

# -- kmemleak, dma-debug, page_pool (parsers/logs/kmemleak.py, dmadebug.py) and leak diagnosis (analysis/leaks.py)


def _report_schema(name: str, cols: list[tuple[str, pa.DataType, bool, str]]) -> pa.Schema:
    # One place declares each column's type, nullability and one-line doc (kept as field metadata "doc").
    return pa.schema(
        [pa.field(n, t, nullable=nullable, metadata={"doc": doc}) for n, t, nullable, doc in cols],
        metadata={"iovatrace.schema_version": SCHEMA_VERSION, "iovatrace.table": name},
    )


#: One row per kmemleak ``unreferenced object`` record.
KMEMLEAK_OBJECTS = _report_schema("kmemleak_objects", [
    ("object_id", pa.int32(), False, "index of the record in the report (joins kmemleak_frames)"),
    ("line", pa.int32(), False, "1-based line of the 'unreferenced object' header in the input"),
    ("address", pa.uint64(), False, "object address"),
    ("size", pa.uint64(), False, "object size in bytes as kmemleak recorded it"),
    ("comm", pa.string(), True, "comm of the allocating task ('softirq'/'hardirq' with pid 0 in IRQ context)"),
    ("pid", pa.int32(), True, "pid of the allocating task"),
    ("jiffies", pa.uint64(), True, "jiffies at allocation (HZ unknown)"),
    ("age_ms", pa.int64(), True, "'(age s.mss)' in milliseconds (kernels up to 6.7)"),
    ("crc", pa.uint32(), True, "'backtrace (crc …)': kmemleak's checksum of the object contents (6.8+)"),
    ("hexdump_len", pa.int32(), True, "bytes the 'hex dump (first N bytes)' header promised"),
    ("hexdump", pa.binary(), True, "hex dump bytes in memory order"),
    ("n_frames", pa.int32(), False, "number of backtrace frames"),
    ("format", pa.string(), False, "print format: '2.6.31', '<=6.7', '6.8-6.12', '>=6.13', 'unknown'"),
    ("prefixed", pa.bool_(), False, "record came through the console with the 'kmemleak:' prefix"),
])

#: One row per backtrace frame of a kmemleak record.
KMEMLEAK_FRAMES = _report_schema("kmemleak_frames", [
    ("object_id", pa.int32(), False, "kmemleak_objects.object_id"),
    ("frame", pa.int32(), False, "0 = innermost (the allocator)"),
    ("symbol", pa.string(), True, "function name (null for a bare address)"),
    ("offset", pa.uint64(), True, "offset into the function"),
    ("size", pa.uint64(), True, "size of the function"),
    ("module", pa.string(), True, "module name, if printed"),
    ("address", pa.uint64(), True, "real kernel address of the '[<addr>]' column (null if hashed/hidden/absent)"),
    ("address_kind", pa.string(), False, "'real', 'hashed' (%p, cannot be symbolised), 'hidden' (zeros), 'none'"),
    ("file", pa.string(), True, "source file of a symbolised frame"),
    ("src_line", pa.int32(), True, "source line of a symbolised frame"),
    ("inline", pa.bool_(), False, "frame printed with [inline]"),
])

#: One row per dma-debug warning or page_pool stalled-shutdown warning.
DMA_DEBUG_REPORTS = _report_schema("dma_debug_reports", [
    ("line", pa.int32(), False, "1-based line of the warning in the input"),
    ("kind", pa.string(), False, "'pending_at_release', 'page_pool_stalled', or 'dma_api' (other DMA-API errors)"),
    ("message", pa.string(), False, "the warning text without driver/device and bracketed details"),
    ("driver", pa.string(), True, "driver name (dev_driver_string)"),
    ("device", pa.string(), True, "device name (dev_name)"),
    ("count", pa.int64(), True, "[count=N]: entries still held by the device"),
    ("device_address", pa.uint64(), True, "[device address=…] of the entry shown"),
    ("size", pa.uint64(), True, "[size=N bytes] of the entry shown"),
    ("direction", pa.string(), True, "DMA direction of the entry shown: to_device, from_device, bidirectional, none"),
    ("mapped_with", pa.string(), True, "[mapped with …] exactly as printed"),
    ("mapped_as", pa.string(), True, "[mapped as …]: single, page, scatter-gather, coherent, resource"),
    ("pool_id", pa.int64(), True, "page_pool id (6.8+ stall message)"),
    ("inflight", pa.int64(), True, "page_pool pages still in flight"),
    ("stalled_s", pa.int64(), True, "page_pool seconds since shutdown started"),
    ("warn_location", pa.string(), True, "'kernel/dma/debug.c:853' from the WARNING line that followed"),
    ("mapped_at", pa.list_(pa.string()), True, "functions of the entry's 'DMA-API: Mapped at:' stack, innermost first"),
])

#: Leak diagnosis: one row per reported object with its classification and decoding.
LEAK_OBJECTS = _report_schema("leak_objects", [
    ("object_id", pa.int32(), False, "kmemleak_objects.object_id"),
    ("address", pa.uint64(), False, "object address"),
    ("size", pa.uint64(), False, "object size"),
    ("kind", pa.string(), False, "'iova_magazine', 'iova', 'rcache_array', 'other'"),
    ("chain_id", pa.int32(), True, "leak_chains.chain_id of the chain holding the object"),
    ("first_word", pa.uint64(), True, "first little-endian 64-bit word of the dump"),
    ("first_word_role", pa.string(), True, "'next', 'size', 'null_or_empty', 'rb_parent', or null"),
    ("mag_size", pa.int32(), True, "magazine: pfn count held (size word), when the first word is a size"),
    ("pfns", pa.list_(pa.uint64()), True, "magazine: pfns visible in the dump"),
    ("pfn_lo", pa.uint64(), True, "struct iova: pfn_lo (offset 32)"),
    ("pfn_hi", pa.uint64(), True, "struct iova: pfn_hi (offset 24)"),
    ("verdict", pa.string(), False, "verdict code of the object"),
])

#: Leak diagnosis: one row per chain (or lone object) with its verdict.
LEAK_CHAINS = _report_schema("leak_chains", [
    ("chain_id", pa.int32(), False, "chain number"),
    ("objects", pa.list_(pa.uint64()), False, "object addresses from head to tail"),
    ("shape", pa.string(), False, "'list' (ends in NULL), 'open' (ends in an unreported object), 'lone', "
                                   "'fork', 'cycle'"),
    ("terminal", pa.string(), True, "'NULL', '0x… (not reported)', 'size N (not a link)', or null"),
    ("what", pa.string(), False, "what the chain is, in words"),
    ("verdict", pa.string(), False, "verdict code: transient_false_positive, real_leak, uninitialised_iova, ..."),
    ("verdict_text", pa.string(), False, "the verdict in words"),
    ("reasoning", pa.list_(pa.string()), False, "the steps that led to the verdict"),
    ("evidence_lines", pa.list_(pa.int32()), False, "input lines that support the verdict"),
    ("next_steps", pa.list_(pa.string()), False, "what to do next"),
])

#: Leak diagnosis with --trace: where the replay holds each reported magazine at the end of the trace.
LEAK_TRACE_MAGAZINES = _report_schema("leak_trace_magazines", [
    ("address", pa.uint64(), False, "reported magazine address"),
    ("state", pa.string(), False, "'loaded', 'prev', 'depot', 'freed' or 'unknown'"),
    ("domain", pa.string(), True, "iova_domain address (hex) holding or last freeing it"),
    ("bin", pa.int32(), True, "rcache size bin"),
    ("slot", pa.int32(), True, "CPU (loaded/prev) or depot position"),
    ("size", pa.int32(), True, "pfns the replay holds in it"),
    ("meaning", pa.string(), False, "what that says about the report"),
])

#: Leak diagnosis with --trace: per device, dma-debug's pending count beside the replay's mappings.
LEAK_TRACE_DEVICES = _report_schema("leak_trace_devices", [
    ("device", pa.string(), False, "device name"),
    ("dma_debug_count", pa.int64(), True, "[count=N] of dma-debug's pending-at-release warning"),
    ("dma_debug_line", pa.int32(), True, "line of that warning"),
    ("replay_outstanding", pa.int64(), True, "mappings the replay found live at unbind/release/domain free"),
    ("replay_when", pa.string(), True, "which of those moments"),
    ("live_at_end", pa.int64(), True, "mappings live at the end of the trace"),
    ("live_at_end_bytes", pa.int64(), True, "their bytes"),
    ("entry_in_replay", pa.bool_(), True, "dma-debug's example entry is among the replay's live mappings"),
])

# -- oops family: BUG/Oops/WARNING/KASAN/lockups/stalls/lockdep/panic (parsers/logs/oops.py, logs/tables.py)

#: One row per crash report found in a kernel log.
OOPS_REPORTS = _report_schema("oops_reports", [
    ("report_id", pa.int32(), False, "index of the report in the log (joins the other oops_* tables)"),
    ("kind", pa.string(), False, "family: null_deref, paging_fault, gpf, warning, kasan, soft_lockup, hard_lockup, "
                                 "rcu_stall, hung_task, lockdep, kernel_bug, panic, ..."),
    ("title", pa.string(), False, "syzkaller-style title ('BUG: unable to handle kernel NULL pointer dereference in f')"),
    ("alt_titles", pa.list_(pa.string()), False, "alternative titles for deduplication ('bad-access in f', ...)"),
    ("type", pa.string(), False, "syzkaller crash type (NULL-POINTER-DEREFERENCE, HANG, LOCKDEP, DoS, ...)"),
    ("corrupted", pa.bool_(), False, "the report looks truncated or interleaved with other output"),
    ("corrupted_reason", pa.string(), True, "why it looks corrupted (null when it does not)"),
    ("header", pa.string(), False, "the line that started the report, transport prefixes stripped"),
    ("kernel_release", pa.string(), True, "kernel release from the 'CPU: … Not tainted <release>' line"),
    ("taint", pa.string(), True, "taint flags as letters ('' = not tainted)"),
    ("hardware", pa.string(), True, "'Hardware name:' line"),
    ("cpu", pa.int32(), True, "CPU that reported"),
    ("pid", pa.int32(), True, "PID of the current task"),
    ("comm", pa.string(), True, "comm of the current task"),
    ("address", pa.uint64(), True, "faulting data address named by the report"),
    ("rip_symbol", pa.string(), True, "function of the faulting PC (RIP:/pc :/NIP/PC is at)"),
    ("rip_offset", pa.uint64(), True, "offset of the PC into rip_symbol"),
    ("rip_size", pa.uint64(), True, "size of rip_symbol"),
    ("rip_module", pa.string(), True, "module of rip_symbol (null = vmlinux)"),
    ("first_line", pa.int32(), False, "1-based input line of the report's first line"),
    ("last_line", pa.int32(), False, "1-based input line of the report's last line"),
    ("context", pa.string(), False, "printk caller tag of the report (T123/C4), 'console' or ''"),
])

#: One row per stack frame of a crash report.
OOPS_FRAMES = _report_schema("oops_frames", [
    ("report_id", pa.int32(), False, "oops_reports.report_id"),
    ("section", pa.string(), False, "stack it belongs to: 'Call Trace', 'IRQ', 'NMI', 'TASK', 'Allocated by', "
                                    "'Freed by', lockdep '-> #1', ..."),
    ("position", pa.int32(), False, "index of the frame within the report (print order)"),
    ("symbol", pa.string(), False, "function name as printed"),
    ("offset", pa.uint64(), True, "offset into the function (null for inline frames)"),
    ("size", pa.uint64(), True, "size of the function"),
    ("module", pa.string(), True, "module name (null = vmlinux)"),
    ("address", pa.uint64(), True, "'[<addr>]' value when printed"),
    ("reliable", pa.bool_(), False, "false for '?' (x86) and '(unreliable)' (powerpc) frames"),
    ("line", pa.int32(), False, "1-based input line"),
])

#: One row per register value of a crash report's register dump(s).
OOPS_REGISTERS = _report_schema("oops_registers", [
    ("report_id", pa.int32(), False, "oops_reports.report_id"),
    ("dump", pa.int32(), False, "0 = first register dump of the report, 1 = next (e.g. user-mode registers)"),
    ("name", pa.string(), False, "register name as printed (RAX, x29, pc, GPR03, CR2)"),
    ("value", pa.uint64(), False, "register value"),
    ("line", pa.int32(), False, "1-based input line"),
])

#: One row per module of a crash report's 'Modules linked in:' list.
OOPS_MODULES = _report_schema("oops_modules", [
    ("report_id", pa.int32(), False, "oops_reports.report_id"),
    ("position", pa.int32(), False, "index in the list"),
    ("name", pa.string(), False, "module name"),
    ("flags", pa.string(), False, "taint flags printed in parentheses ('OE', 'POE'; '' = none)"),
    ("last_unloaded", pa.bool_(), False, "the '[last unloaded: x]' entry"),
])

#: One row per 'Code:' line of a crash report.
OOPS_CODE = _report_schema("oops_code", [
    ("report_id", pa.int32(), False, "oops_reports.report_id"),
    ("line", pa.int32(), False, "1-based input line"),
    ("data", pa.binary(), False, "instruction bytes in print order"),
    ("fault_offset", pa.int32(), True, "offset in data of the faulting unit ('<..>' or '(..)')"),
    ("unit", pa.int8(), False, "bytes per printed unit: 1 (x86), 2 (thumb), 4 (arm64, riscv, arm)"),
])

# ---------------------------------------------------------------------------------------------------------------
# Replay findings and state tables (owned by replay/). Declared below this line.
# ---------------------------------------------------------------------------------------------------------------

#: One row per replay finding (iovatrace.replay.findings.Finding).
REPLAY_FINDINGS = pa.schema(
    [
        pa.field("ts_ns", pa.uint64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("certainty", pa.string(), nullable=False),
        pa.field("domain", pa.string()),
        pa.field("device", pa.string()),
        pa.field("message", pa.string(), nullable=False),
        pa.field("gap", pa.string()),
        pa.field("events", pa.list_(pa.list_(pa.uint64()))),
        pa.field("details_json", pa.string()),
    ],
    metadata={"iovatrace.schema_version": SCHEMA_VERSION, "iovatrace.table": "replay_findings"},
)

#: Per-domain state samples taken during the replay (at most one per domain per sampling period).
REPLAY_STATE = pa.schema(
    [
        pa.field("ts_ns", pa.uint64(), nullable=False),
        pa.field("iovad", pa.string(), nullable=False),
        pa.field("live_iovas", pa.int64(), nullable=False),  # allocated ranges not cached, reserved excluded
        pa.field("cached_pfns", pa.int64(), nullable=False),  # pfns held by magazines
        pa.field("depot_magazines", pa.int64(), nullable=False),
        pa.field("allocs", pa.int64(), nullable=False),  # cumulative alloc_iova_fast returns
        pa.field("frees", pa.int64(), nullable=False),  # cumulative free_iova_fast calls
    ],
    metadata={"iovatrace.schema_version": SCHEMA_VERSION, "iovatrace.table": "replay_state"},
)

#: One row per domain at the end of the replay.
REPLAY_DOMAINS = pa.schema(
    [
        pa.field("iovad", pa.string(), nullable=False),
        pa.field("observed", pa.string(), nullable=False),  # full | partial
        pa.field("created_ns", pa.uint64()),
        pa.field("destroyed_ns", pa.uint64()),
        pa.field("devices", pa.list_(pa.string())),
        pa.field("allocs", pa.int64(), nullable=False),
        pa.field("frees", pa.int64(), nullable=False),
        pa.field("alloc_failures", pa.int64(), nullable=False),
        pa.field("rcache_hits", pa.list_(pa.int64())),  # per bin, index 6 = uncached sizes
        pa.field("rcache_misses", pa.list_(pa.int64())),
        pa.field("depot_sizes", pa.list_(pa.int64())),
        pa.field("live_iovas", pa.int64(), nullable=False),
        pa.field("live_iovas_certainty", pa.string(), nullable=False),  # exact | lower_bound
        pa.field("predicted_exact", pa.int64(), nullable=False),
        pa.field("predicted_uncertain", pa.int64(), nullable=False),
        pa.field("predicted_mismatched", pa.int64(), nullable=False),
        pa.field("gap", pa.string()),
    ],
    metadata={"iovatrace.schema_version": SCHEMA_VERSION, "iovatrace.table": "replay_domains"},
)


def findings_table(findings: Iterable[Any]) -> pa.Table:
    """Replay findings as a :data:`REPLAY_FINDINGS` table.

    Args:
        findings: :class:`iovatrace.replay.findings.Finding` objects.

    Returns:
        The table (empty with the schema when there are none).
    """
    import json

    rows = [f.to_dict() for f in findings]
    cols = {
        "ts_ns": [r["ts_ns"] for r in rows],
        "kind": [r["kind"] for r in rows],
        "severity": [r["severity"] for r in rows],
        "certainty": [r["certainty"] for r in rows],
        "domain": [r["domain"] for r in rows],
        "device": [r["device"] for r in rows],
        "message": [r["message"] for r in rows],
        "gap": [r["gap"] for r in rows],
        "events": [r["events"] for r in rows],
        "details_json": [json.dumps(r["details"], default=str) for r in rows],
    }
    return pa.table(cols, schema=REPLAY_FINDINGS)


def replay_state_table(timeline: Iterable[tuple[int, int, int, int, int, int, int]]) -> pa.Table:
    """The replay's state samples ``(ts_ns, iovad, live, cached, depot, allocs, frees)`` as :data:`REPLAY_STATE`."""
    rows = list(timeline)
    names = [f.name for f in REPLAY_STATE]
    cols: dict[str, list[Any]] = {n: [] for n in names}
    for r in rows:
        for n, v in zip(names, r):
            cols[n].append(v)
    cols["iovad"] = [f"{v:#x}" for v in cols["iovad"]]
    return pa.table(cols, schema=REPLAY_STATE)


def replay_domains_table(domains: Iterable[Any]) -> pa.Table:
    """Per-domain end state (``DomainState.summary()`` dicts or objects with ``summary()``) as :data:`REPLAY_DOMAINS`."""
    sums = [d.summary() if hasattr(d, "summary") else d for d in domains]
    cols = {
        "iovad": [s["iovad"] for s in sums],
        "observed": [s["observed"] for s in sums],
        "created_ns": [s["created_ns"] for s in sums],
        "destroyed_ns": [s["destroyed_ns"] for s in sums],
        "devices": [list(s["devices"]) for s in sums],
        "allocs": [s["allocs"] for s in sums],
        "frees": [s["frees"] for s in sums],
        "alloc_failures": [s["alloc_failures"] for s in sums],
        "rcache_hits": [s["rcache_hits"] for s in sums],
        "rcache_misses": [s["rcache_misses"] for s in sums],
        "depot_sizes": [s["depot_sizes"] for s in sums],
        "live_iovas": [s["live_iovas"] for s in sums],
        "live_iovas_certainty": [s["live_iovas_certainty"] for s in sums],
        "predicted_exact": [s["predictions"]["exact"] for s in sums],
        "predicted_uncertain": [s["predictions"]["uncertain"] for s in sums],
        "predicted_mismatched": [s["predictions"]["mismatched"] for s in sums],
        "gap": [s["gap"] for s in sums],
    }
    return pa.table(cols, schema=REPLAY_DOMAINS)


def write_replay_tables(result: Any, out_dir: str) -> list[str]:
    """Write a replay result's findings, state timeline and domains as Parquet files in ``out_dir``.

    Args:
        result: an :class:`iovatrace.replay.driver.ReplayResult`.
        out_dir: an existing directory.

    Returns:
        The paths written (``findings.parquet``, ``state.parquet``, ``domains.parquet``).
    """
    import os

    import pyarrow.parquet as pq

    out = []
    for name, table in (("findings", findings_table(result.findings)),
                        ("state", replay_state_table(result.timeline)),
                        ("domains", replay_domains_table(result.domains))):
        path = os.path.join(out_dir, f"{name}.parquet")
        pq.write_table(table, path)
        out.append(path)
    return out


_MAGAZINE_CACHE = "iommu_iova_magazine"


def prefilter_replay_batch(key: str, batch: Any) -> Any:
    """Drop what the IOVA replay ignores from one event table or batch, before any per-event Python:
    kmem_cache_free rows of caches other than ``iommu_iova_magazine`` (the 6.12 lab filters allocations by size,
    frees only by call site), and the probe bookkeeping columns (``__probe_ip``, ``__probe_func``,
    ``__probe_ret_ip``: no model reads them, and each would cost a Python value per event).

    Args:
        key: the batch's ``"system:name"``.
        batch: a ``pa.RecordBatch`` or ``pa.Table`` of that event.

    Returns:
        ``batch``, filtered (the same object when nothing applies).
    """
    names = batch.schema.names
    if any(n.startswith(_PROBE_PREFIX) for n in names):
        batch = batch.select([n for n in names if not n.startswith(_PROBE_PREFIX)])
    if key == "kmem:kmem_cache_free" and "name" in names:
        import pyarrow.compute as pc

        return batch.filter(pc.equal(batch.column("name"), _MAGAZINE_CACHE))
    return batch


_PROBE_PREFIX = "__probe_"


def prefilter_replay_tables(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """:func:`prefilter_replay_batch` on every table of ``tables``.

    Args:
        tables: event tables by ``"system:name"``.

    Returns:
        The same dict, filtered in place.
    """
    for key, t in tables.items():
        tables[key] = prefilter_replay_batch(key, t)
    return tables


def lost_event_tuples(table: pa.Table | None) -> list[tuple[int, int, int]]:
    """A :data:`LOST_EVENTS` table as ``(ts_ns, cpu, count)`` tuples for the replay (count -1: unknown)."""
    if table is None or table.num_rows == 0:
        return []
    return list(zip(table.column("ts_ns").to_pylist(), table.column("cpu").to_pylist(),
                    table.column("count").to_pylist()))
