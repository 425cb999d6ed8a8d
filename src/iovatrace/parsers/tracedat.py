"""The trace.dat reader: metadata, then Arrow record batches per event type, in bounded memory.

Theory of operation: :class:`TraceDat` opens the file, reads its metadata (``tracedat_meta``), and then streams
each buffer's CPUs block by block (``pages``): every block is walked in lock step (``decode.walk_pages``), the
records are grouped by event id, and each group becomes one ``pa.RecordBatch`` whose schema comes from
``schema.event_schema`` (common columns, then the format's fields). Batches follow each CPU stream's order;
``seq`` counts the records of one CPU stream of one buffer. Nothing is re-sorted.

Instances: events of the top buffer are keyed ``"system:name"``; events of an instance ``inst`` are keyed
``"inst/system:name"`` (``read_tables(buffer=...)`` selects one buffer; the lost-events table has a ``buffer``
column). Losses are data (``lost_events()``): pages flagged with missed events and the CPUSTAT overrun/dropped
counters. Damage (a truncated or corrupted file) is never silent: lenient mode (default) returns everything
readable and lists each damage in :attr:`TraceDat.damage` (offset, reason, expected, pages/bytes/records lost);
``strict=True`` raises :class:`TraceFormatError` at the first one.

Format files are parsed only for the event ids that occur, kallsyms and printk formats only when asked for, and
pyarrow is imported only when tables are built, so ``iovatrace info`` stays fast.
"""

from __future__ import annotations

import fnmatch
import mmap
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import TraceFormatError
from .decode import WalkResult, build_columns, np_to_arrow, read_u, walk_pages
from .formats import EventFormat, parse_format
from .pages import PageBlock, iter_page_blocks
from .tracedat_meta import SEC_KALLSYMS, SEC_PRINTK, BufferInfo, CpuData, TraceMeta, load_lazy, read_meta

__all__ = ["TraceDat", "sniff", "fetch_types", "RecordBlock"]

_ID_RE = re.compile(r"^ID:\s*(\d+)\s*$", re.M)
_NS_CLOCKS = {"local", "global", "perf", "mono", "mono_raw", "boot", "tai"}


def sniff(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) starts like a trace.dat."""
    return head[:10] == b"\x17\x08\x44tracing"


_SPEC_RE = re.compile(r"(\w+)=(\\?\"?)(0x)?%([-#0-9.]*)(hh|h|ll|l|L|z)?([a-zA-Z])")


def fetch_types(fmt: EventFormat) -> dict[str, str]:
    """Declared fetch-arg types of a probe event's fields, derived from its ``print fmt``.

    ``0x%Lx`` → ``x64``, ``%Lu`` → ``u64``, ``%d`` → ``s32``, ``%u`` → ``u8/u16/u32`` by the field size,
    ``"%s"`` → ``string``; the size always comes from the field.

    Args:
        fmt: an event format (any; non-probe events give ``{}``).

    Returns:
        field name → fetch type.
    """
    if not fmt.is_kprobe:
        return {}
    m = re.match(r'\s*"((?:[^"\\]|\\.)*)"', fmt.print_fmt)
    if not m:
        return {}
    out: dict[str, str] = {}
    for sm in _SPEC_RE.finditer(m.group(1)):
        name, conv = sm.group(1), sm.group(6)
        f = fmt.field(name)
        if f is None:
            continue
        bits = 8 * (f.size if f.kind == "scalar" else f.elem_size or 1)
        if conv == "s":
            out[name] = "string"
        elif conv in "xX":
            out[name] = f"x{bits}"
        elif conv in "di":
            out[name] = f"s{bits}"
        elif conv == "u":
            out[name] = f"u{bits}"
        elif conv == "p":
            out[name] = "symbol"
        elif conv == "c":
            out[name] = "char"
    return out


@dataclass(slots=True)
class RecordBlock:
    """One decoded page block of one CPU stream (internal, also used by tests).

    Attributes:
        buffer: instance name.
        cpu: CPU number.
        block: the pages.
        walk: the records found.
        ids: event id of each record.
        seq0: ``seq`` of the first record.
        groups: when asked for (``iter_record_blocks(group=True)``): per event id present, its records as
            ``(event id, record indices, payload starts, raw timestamps)``, each contiguous (lengths, which
            only formats with variable-size fields need, are ``walk.lengths[record indices]``).
    """

    buffer: str
    cpu: int
    block: PageBlock
    walk: WalkResult
    ids: np.ndarray
    seq0: int
    groups: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] | None = None

    def record_offsets(self) -> np.ndarray:
        """File offset of each record's payload (compressed data: of its chunk)."""
        pages = self.walk.pages
        if self.block.compressed:
            return self.block.src_offsets[pages]
        return self.block.src_offsets[pages] + (self.walk.starts - pages * self.block.page_size)


class TraceDat:
    """A trace.dat file (v6 or v7), opened for reading.

    Args:
        path: the file.
        strict: raise :class:`TraceFormatError` on the first damage instead of reporting it in :attr:`damage`.
        block_pages: pages decoded at once (memory ≈ block_pages × page size × a small factor).
        threads: decode the next page block in a worker thread while the current one becomes Arrow.

    Raises:
        TraceFormatError: if the file is not a trace.dat or its metadata is unreadable.
    """

    def __init__(self, path: str | os.PathLike[str], *, strict: bool = False, block_pages: int = 8192,
                 threads: bool = True) -> None:
        self.path = str(path)
        self.threads = threads
        self.strict = strict
        self.block_pages = block_pages
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise TraceFormatError(f"Cannot open trace: {exc.strerror}", path=self.path) from None
        self._size = os.fstat(self._fd).st_size
        self._mm: Any = b""
        if self._size:
            self._mm = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        try:
            self.meta: TraceMeta = read_meta(self._mm, self.path, strict=strict)
        except TraceFormatError:
            self.close()
            raise
        except (ValueError, OverflowError, struct.error) as exc:  # defensive: never leak a bare error
            self.close()
            raise TraceFormatError(f"Cannot read trace.dat metadata: {exc}", path=self.path) from None
        #: What could not be read: dicts with offset, reason, expected and pages/bytes/records lost.
        self.damage: list[dict[str, Any]] = list(self.meta.damage)
        self._id_text: dict[int, tuple[str, str]] | None = None
        self._fmt_cache: dict[int, EventFormat | None] = {}
        self._cmdlines: dict[int, str] | None = None
        self._kallsyms: Any = None
        self._printk: dict[int, str] | None = None
        self._summary: dict[str, Any] | None = None
        self._schemas: dict[int, Any] = {}
        self._common: tuple[int, int, int, int, int] | None = None
        self._progress = 0
        self._buffers: list[np.ndarray] = []  # block buffers _batches is done with (pages.iter_page_blocks pool)
        self._comm_table: tuple[np.ndarray, Any] | None = None  # pid lookup table, cmdlines strings

    # -- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the file."""
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._mm = b""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TraceDat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ----------------------------------------------------------------------------------------------
    @property
    def buffers(self) -> list[str]:
        """Instance names, ``""`` (the top buffer) first."""
        return [b.name for b in self.meta.buffers]

    def _index(self) -> dict[int, tuple[str, str]]:
        if self._id_text is None:
            idx: dict[int, tuple[str, str]] = {}
            texts = [("ftrace", t) for t in self.meta.ftrace_formats] + list(self.meta.event_formats)
            for system, text in texts:
                m = _ID_RE.search(text)
                if m:
                    idx.setdefault(int(m.group(1)), (system, text))
            self._id_text = idx
        return self._id_text

    def format_for_id(self, ev_id: int) -> EventFormat | None:
        """The format of event id ``ev_id`` (parsed on first use), or None if absent or unparsable."""
        if ev_id in self._fmt_cache:
            return self._fmt_cache[ev_id]
        ent = self._index().get(ev_id)
        fmt = None
        if ent is not None:
            try:
                fmt = parse_format(ent[1], ent[0], long_size=self.meta.kernel_long_size, path=self.path)
                bad = [f.name for f in fmt.fields if f.offset < 0 or f.offset + f.size > 1 << 16]
                if bad:
                    raise TraceFormatError(f"fields {bad} lie beyond any record", path=self.path)
            except TraceFormatError as exc:
                if self.strict:
                    raise
                self.damage.append({"offset": None, "reason": f"event format {ent[0]} id {ev_id}: {exc.message}",
                                    "expected": "a parsable format file"})
                fmt = None
        self._fmt_cache[ev_id] = fmt
        return fmt

    @property
    def formats(self) -> dict[str, EventFormat]:
        """Every parsable event format, ``"system:name"`` → :class:`EventFormat`."""
        out = {}
        for ev_id in sorted(self._index()):
            f = self.format_for_id(ev_id)
            if f is not None:
                out.setdefault(f.key, f)
        return out

    @property
    def cmdlines(self) -> dict[int, str]:
        """Saved cmdlines: pid → comm."""
        if self._cmdlines is None:
            cm: dict[int, str] = {}
            for line in self.meta.cmdlines_raw.decode("utf-8", "replace").splitlines():
                pid, _, comm = line.strip().partition(" ")
                if pid.lstrip("-").isdigit():
                    cm[int(pid)] = comm
            self._cmdlines = cm
        return self._cmdlines

    @property
    def kallsyms(self) -> Any:
        """The kernel symbol table (:class:`iovatrace.parsers.kallsyms.Kallsyms`), parsed on first use."""
        if self._kallsyms is None:
            from .kallsyms import Kallsyms

            self._kallsyms = Kallsyms.parse(load_lazy(self._mm, self.meta, SEC_KALLSYMS))
        return self._kallsyms

    @property
    def printk_formats(self) -> dict[int, str]:
        """printk formats: address → format string (for ``bprint``/``bputs``), parsed on first use."""
        if self._printk is None:
            from .kallsyms import parse_printk_formats

            self._printk = parse_printk_formats(load_lazy(self._mm, self.meta, SEC_PRINTK))
        return self._printk

    # -- records -----------------------------------------------------------------------------------------------
    def _sink(self, record: bool) -> Any:
        def sink(d: dict[str, Any]) -> None:
            if record:
                self.damage.append(d)
        return sink

    def _common_offsets(self) -> tuple[int, int, int, int, int]:
        if self._common is None:
            vals = (0, 2, 2, 3, 4)
            for ev_id in self._index():
                f = self.format_for_id(ev_id)
                if f is None:
                    continue
                t, fl, pc, pid = (f.field(n) for n in ("common_type", "common_flags", "common_preempt_count",
                                                        "common_pid"))
                if t and fl and pc and pid:
                    vals = (t.offset, t.size, fl.offset, pc.offset, pid.offset)
                    break
            self._common = vals
        return self._common

    def _selected_buffers(self, buffers: Iterable[str] | None) -> list[BufferInfo]:
        if buffers is None:
            return list(self.meta.buffers)
        want = set(buffers)
        return [b for b in self.meta.buffers if b.name in want]

    def iter_record_blocks(self, buffers: Iterable[str] | None = None,
                           cpus: Iterable[int] | None = None, group: bool = False) -> Iterator[RecordBlock]:
        """Walk every page of the selected buffers; yields one :class:`RecordBlock` per page block.

        Args:
            buffers: instance names; default all.
            cpus: CPUs to read; default all. One CPU at a time gives that CPU's stream in order, so several
                such iterators can be merged by time while each holds one page block.
            group: also split each block's records by event id (:attr:`RecordBlock.groups`), in the decode thread.

        Damage and losses are collected on the first complete pass (see :attr:`damage`, :meth:`lost_events`).
        """
        cpu_set = None if cpus is None else set(cpus)
        first = self._summary is None and cpu_set is None
        record = first
        sink = self._sink(record)
        big = self.meta.endian == "big"
        L = self.meta.kernel_long_size
        hdr = self.meta.header_data_offset
        t_off, t_size, fl_off, pc_off, pid_off = self._common_offsets()
        bo = ">" if big else "<"
        std = (t_off, t_size) == (0, 2)
        counts: dict[int, int] = {}
        lost: list[tuple[int, int, int, str, int, str]] = []

        def decoded() -> Iterator[tuple[BufferInfo, CpuData, int, PageBlock, WalkResult, np.ndarray, Any]]:
            # the heavy part (read, decompress, walk, event ids, grouping): runs one block ahead in a thread
            for b in self._selected_buffers(buffers):
                for cd in b.cpus:
                    if cpu_set is not None and cd.cpu not in cpu_set:
                        continue
                    for k, blk in enumerate(iter_page_blocks(self._fd, self._size, self.meta, b, cd,
                                                             block_pages=self.block_pages, sink=sink,
                                                             strict=self.strict,
                                                             pool=self._buffers if group else None)):
                        wr = walk_pages(blk.data, blk.npages, blk.page_size, L, big, blk.valid, hdr)
                        if std:  # common_type is the u16 at the (4-aligned) payload start: one 2-byte gather
                            ids = blk.data.view(bo + "u2")[wr.starts >> 1].astype(np.uint16)
                        else:
                            ids = read_u(blk.data, wr.starts + t_off, t_size, big)
                        yield b, cd, k, blk, wr, ids, _group_records(ids, wr) if group else None

        seq = 0
        for b, cd, k, blk, wr, ids, groups in _prefetch(decoded()) if self.threads else decoded():
            if k == 0:
                seq = 0
            for p, cnt in wr.missed:
                raw = blk.data[p * blk.page_size: p * blk.page_size + 8].view(">u8" if big else "<u8")
                pts = int(self._ts_ns(raw.astype(np.uint64))[0])  # the page timestamp, converted like events
                lost.append((pts, cd.cpu, cnt, "missed_events_page", int(blk.src_offsets[p]), b.name))
            for p, pos, why, nbytes in wr.damage:
                d = {"offset": int(blk.src_offsets[p]) + (pos if not b.compressed else 0),
                     "reason": f"CPU {cd.cpu} page {blk.first_page + p}: {why}", "cpu": cd.cpu,
                     "buffer": b.name, "bytes_lost": nbytes, "records_lost": None,
                     "expected": "records inside the page's committed size"}
                if self.strict:
                    raise TraceFormatError(d["reason"], path=self.path, offset=d["offset"])
                sink(d)
            if record and ids.size:
                if groups is not None:  # grouping counted them already
                    pairs = [(g[0], g[1].size) for g in groups]
                else:
                    u, c = np.unique(ids, return_counts=True)
                    pairs = list(zip(u.tolist(), c.tolist()))
                for i, k in pairs:
                    counts[(b.name, i)] = counts.get((b.name, i), 0) + k  # type: ignore[index]
            self._progress = max(self._progress, int(blk.src_offsets[-1]) + blk.page_size)
            yield RecordBlock(b.name, cd.cpu, blk, wr, ids, seq, groups)
            seq += wr.starts.size
        if first and buffers is None:
            self._finish_summary(counts, lost)

    def _finish_summary(self, counts: dict[Any, int], lost: list[Any]) -> None:
        ev: dict[str, int] = {}
        unknown: dict[int, int] = {}
        for (bname, i), k in counts.items():
            f = self.format_for_id(i)
            if f is None:
                unknown[i] = unknown.get(i, 0) + k
                continue
            key = f.key if not bname else f"{bname}/{f.key}"
            ev[key] = ev.get(key, 0) + k
        for i, k in sorted(unknown.items()):
            self.damage.append({"offset": None, "reason": f"{k} records with event id {i}, which no format declares",
                                "records_lost": k, "expected": "an event id listed in the formats"})
        for bname, stats in self.meta.cpustats.items():
            for cpu, s in stats.items():
                for key, src in (("overrun", "overrun"), ("dropped events", "dropped")):
                    v = s.get(key, "0").strip()
                    if v.isdigit() and int(v) > 0:
                        lost.append((self._stat_ts(s), cpu, int(v), src, None, bname))
        self._summary = {"counts": ev, "lost": lost, "unknown": unknown}

    @staticmethod
    def _stat_ts(s: dict[str, str]) -> int:
        # CPUSTAT's "now ts" is printed in seconds by the kernel, already converted from the clock
        try:
            return max(0, int(round(float(s.get("now ts", "0")) * 1e9)))
        except ValueError:
            return 0

    def _ensure_summary(self) -> dict[str, Any]:
        if self._summary is None:
            for _ in self.iter_record_blocks():
                pass
        assert self._summary is not None
        return self._summary

    def event_counts(self) -> dict[str, int]:
        """Records per event key (``"system:name"``, instances ``"inst/system:name"``), sorted by key."""
        return dict(sorted(self._ensure_summary()["counts"].items()))

    def progress_offset(self) -> int:
        """File offset up to which records have been decoded (for progress bars)."""
        return self._progress

    def lost_summary(self) -> list[dict[str, Any]]:
        """The rows of :meth:`lost_events` as dicts, without importing pyarrow."""
        keys = ("ts_ns", "cpu", "count", "source", "offset", "buffer")
        return [dict(zip(keys, r)) for r in self._ensure_summary()["lost"]]

    def lost_events(self) -> Any:
        """The losses the trace admits to, as a ``schema.LOST_EVENTS`` table (one row per CPU and time)."""
        import pyarrow as pa

        from ..schema import LOST_EVENTS

        rows = self._ensure_summary()["lost"]
        cols = list(zip(*rows)) if rows else [[] for _ in range(6)]
        return pa.table([pa.array(cols[0], pa.uint64()),
                         pa.array(cols[1], pa.uint32()), pa.array(cols[2], pa.int64()),
                         pa.array(cols[3], pa.string()), pa.array(cols[4], pa.int64()),
                         pa.array(cols[5], pa.string())], schema=LOST_EVENTS)

    # -- tables ------------------------------------------------------------------------------------------------
    def schema_for(self, fmt: EventFormat) -> Any:
        """The Arrow schema of ``fmt``'s table (``schema.event_schema`` with fetch types; bprint adds ``text``)."""
        import pyarrow as pa

        from ..schema import event_schema

        s = self._schemas.get(fmt.id)
        if s is None:
            s = event_schema(fmt, fetch_types=fetch_types(fmt) or None)
            if fmt.system == "ftrace" and fmt.name in ("bprint", "bputs"):
                s = s.append(pa.field("text", pa.string(), metadata={"c_type": "decoded", "kind": "text"}))
            self._schemas[fmt.id] = s
        return s

    def _ts_ns(self, raw: np.ndarray) -> np.ndarray:
        ts = raw
        if self.meta.tsc2nsec is not None:
            mult, shift, _ = self.meta.tsc2nsec
            m = np.uint64(mult)
            sh = np.uint64(shift)
            lo = ts & np.uint64((1 << shift) - 1)
            ts = (ts >> sh) * m + ((lo * m) >> sh)
        if self.meta.ts_offset_ns:
            ts = ts + np.uint64(self.meta.ts_offset_ns % (1 << 64))
        return ts

    def _comm(self, pid: np.ndarray) -> Any:
        """The comm column of these pids: Arrow's ``take`` from the cmdlines strings, null where a pid is unknown.

        One pid lookup table gives each pid its string's index; unknown, negative and out-of-range pids all
        map to a null entry at the end of the strings, so the take needs no validity mask. One C++ gather of
        short strings (≈ 30 ns an event), several times faster than any numpy formulation.
        """
        import pyarrow as pa

        if self._comm_table is None:
            cm = dict(self.cmdlines)
            cm.setdefault(0, "<idle>")
            keys = sorted(k for k in cm if 0 <= k < (1 << 22))  # PID_MAX_LIMIT is 2^22
            lut = np.full(max(keys) + 2, len(keys), dtype=np.int32)  # the last slot stands for every larger pid
            lut[keys] = np.arange(len(keys), dtype=np.int32)
            self._comm_table = (lut, pa.array([cm[k] for k in keys] + [None], pa.string()))
        lut, names = self._comm_table
        # as unsigned, a negative pid is larger than any real one: it lands on the last slot too
        k = lut[np.minimum(pid.astype(np.int32, copy=False).view(np.uint32), np.uint32(lut.size - 1))]
        return _call_function()("take", [names, pa.Array.from_buffers(pa.int32(), k.size, [None, pa.py_buffer(k)])])

    def iter_batches(self, events: Iterable[str] | None = None,
                     buffers: Iterable[str] | None = None,
                     cpus: Iterable[int] | None = None) -> Iterator[tuple[str, Any]]:
        """Stream the events as ``(key, pa.RecordBatch)`` pairs in bounded memory.

        Args:
            events: glob patterns on ``"system:name"`` (e.g. ``"iommu:*"``); default all.
            buffers: instance names to read; default all (instance keys are prefixed ``"inst/"``).
            cpus: CPUs to read; default all (see :meth:`iter_record_blocks`).

        Yields:
            One batch per event type per page block, in each CPU stream's order; within a block, batches come in
            increasing event id (``schema.iter_stream_events`` relies on it to see where a block ends).

        Raises:
            TraceFormatError: in strict mode, at the first damage.
        """
        gen = self._batches(events, buffers, cpus)
        # Batches are built in a second thread while the caller writes the previous one (the first thread reads
        # and walks pages): large numpy and Arrow steps release the GIL, so the three stages overlap.
        return _prefetch(gen) if self.threads else gen

    def _batches(self, events: Iterable[str] | None, buffers: Iterable[str] | None,
                 cpus: Iterable[int] | None) -> Iterator[tuple[str, Any]]:
        import pyarrow as pa

        pats = list(events) if events else None
        big = self.meta.endian == "big"
        L = self.meta.kernel_long_size
        _, _, fl_off, pc_off, pid_off = self._common_offsets()
        wanted: dict[int, bool] = {}
        for rb in self.iter_record_blocks(buffers, cpus, group=True):
            if rb.ids.size == 0:
                continue
            data = rb.block.data
            for ev_id, grp, starts, raw_ts in rb.groups or ():
                fmt = self.format_for_id(ev_id)
                if fmt is None:
                    continue
                if ev_id not in wanted:
                    wanted[ev_id] = pats is None or any(fnmatch.fnmatchcase(fmt.key, p) for p in pats)
                if not wanted[ev_id]:
                    continue
                schema = self.schema_for(fmt)
                n = grp.size
                lengths = rb.walk.lengths[grp] if fmt.variable_size else None
                payload = build_columns(fmt, data, starts, lengths, big, L, schema, (fl_off, pc_off, pid_off))
                flags, preempt, pid = payload[-3:]
                del payload[-3:]
                key = fmt.key if not rb.buffer else f"{rb.buffer}/{fmt.key}"
                cols = [
                    np_to_arrow(self._ts_ns(raw_ts)),
                    np_to_arrow(np.full(n, rb.cpu, dtype=np.uint32)),
                    np_to_arrow(np.add(grp, np.uint64(rb.seq0), dtype=np.uint64, casting="unsafe")),
                    np_to_arrow(pid),
                    self._comm(pid),
                    np_to_arrow(flags),
                    np_to_arrow(preempt),
                    pa.DictionaryArray.from_arrays(np_to_arrow(np.zeros(n, dtype=np.int32)), pa.array([fmt.key]),
                                                   safe=False),  # all indices 0: nothing to validate
                ]
                cols += payload
                if len(cols) < len(schema):  # bprint/bputs text
                    from .bprint import decode_text_column

                    cols.append(decode_text_column(self, fmt, cols, schema))
                yield key, pa.RecordBatch.from_arrays(cols, schema=schema)
            # every column above is a copy: the block's bytes can take the next block read
            if len(self._buffers) < 4:
                self._buffers.append(data)

    def read_tables(self, events: Iterable[str] | None = None, buffer: str | None = "") -> dict[str, Any]:
        """Every event type as one ``pa.Table``.

        Args:
            events: glob patterns on ``"system:name"``; default all.
            buffer: the instance to read (``""`` = top buffer, the default); ``None`` reads all, with instance
                keys prefixed ``"inst/"``.

        Returns:
            ``{key: table}``, keys sorted; each table ordered by (cpu, seq).
        """
        import pyarrow as pa

        parts: dict[str, list[Any]] = {}
        for key, batch in self.iter_batches(events, None if buffer is None else [buffer]):
            parts.setdefault(key, []).append(batch)
        out = {}
        for key in sorted(parts):
            t = pa.Table.from_batches(parts[key])
            # batches of one CPU come in order; CPUs come one after another: order by (cpu, seq) is already true
            out[key] = t
        return out


_END = object()


def _group_records(ids: np.ndarray, wr: WalkResult) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Split a block's records by event id (stream order kept inside each id): see :attr:`RecordBlock.groups`."""
    if ids.size == 0:
        return []
    order = np.argsort(ids, kind="stable")
    sids = ids[order]
    cuts = np.flatnonzero(sids[1:] != sids[:-1]) + 1
    starts, ts = wr.starts[order], wr.ts[order]
    bounds = [0, *cuts.tolist(), ids.size]
    return [(int(sids[lo]), order[lo:hi], starts[lo:hi], ts[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _call_function() -> Any:
    """Arrow's compute entry point, from the Cython module: ``pyarrow.compute`` itself takes ≈ 45 ms to import
    (it generates a Python wrapper for every kernel), ``pyarrow._compute`` 4 ms. Falls back to the public name."""
    try:
        from pyarrow._compute import call_function
    except ImportError:  # pragma: no cover - a pyarrow that moved it
        from pyarrow.compute import call_function
    return call_function


def _prefetch(gen: Iterator[Any]) -> Iterator[Any]:
    """Run ``gen`` one item ahead in a worker thread (numpy, zstd and file reads release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="iovatrace-decode") as ex:
        fut = ex.submit(next, gen, _END)
        while True:
            item = fut.result()
            if item is _END:
                return
            fut = ex.submit(next, gen, _END)
            yield item
