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
  the parsers themselves never re-sort a CPU's stream.
* **Report tables** (kernel logs), **finding** and **state** tables are declared further down, one block per
  producer; each declares its columns once, here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
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


def _iter_table(name: str, table: pa.Table) -> Iterator[tuple[int, int, int, str, int, dict[str, Any]]]:
    payload = [c for c in table.column_names if c not in _COMMON_NAMES]
    ts = table.column("ts_ns").to_pylist()
    cpu = table.column("cpu").to_pylist()
    seq = table.column("seq").to_pylist()
    pid = table.column("pid").to_pylist()
    cols = [table.column(c).to_pylist() for c in payload]
    for i in range(table.num_rows):
        yield ts[i], cpu[i], seq[i], name, pid[i], {c: col[i] for c, col in zip(payload, cols)}


def iter_events(tables: Mapping[str, pa.Table], names: Iterable[str] | None = None) -> Iterator[Event]:
    """Merge event tables into one stream ordered by ``(ts_ns, cpu, seq)``.

    Args:
        tables: event tables keyed by ``"system:name"`` (as the parsers return them).
        names: if given, only these events are merged (filtering happens before any per-row Python work).

    Yields:
        :class:`Event` objects in merged order. Each table must already be ordered by ``(cpu, seq)`` within
        each CPU, which the parsers guarantee; the merge never re-sorts one CPU's stream.
    """
    wanted = set(names) if names is not None else None
    iters = []
    for key, table in tables.items():
        if (wanted is not None and key not in wanted) or table.num_rows == 0:
            continue
        # Sorting one table by (ts, cpu, seq) is an explicit merge of its per-CPU streams, each already ordered.
        t = table.sort_by([("ts_ns", "ascending"), ("cpu", "ascending"), ("seq", "ascending")])
        iters.append(_iter_table(key, t))
    for ts, cpu, seq, name, pid, fields in heapq.merge(*iters, key=lambda r: (r[0], r[1], r[2])):
        yield Event(ts, cpu, seq, name, pid, fields)


# ---------------------------------------------------------------------------------------------------------------
# Kernel log report tables (owned by parsers/ logs: oops, kmemleak, dma-debug). Declared below this line.
# ---------------------------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------------------------
# Replay findings and state tables (owned by replay/). Declared below this line.
# ---------------------------------------------------------------------------------------------------------------
