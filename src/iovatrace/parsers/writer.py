"""A trace.dat writer (v6, v7 uncompressed or zstd) for tests, examples and benchmarks.

Theory of operation: the file layout is the one :mod:`tracedat_meta` reads (docs: tracedat_spec.md §1–§9), written
in the simplest order a reader accepts:

* v6: header, header_page/header_event, ftrace formats, event formats by system, kallsyms, printk, cmdlines, CPU
  count, ``options`` (UNAME, CPUCOUNT, VERSION), ``flyrecord`` offset table, then each CPU's pages, page aligned.
* v7: header (compression name and version, offset of the OPTIONS section), one section per metadata block
  (compressed when asked), one BUFFER section per buffer (the top one, then each instance) holding page-aligned
  per-CPU data (chunk-compressed, 10 pages per chunk, as trace-cmd does), then the OPTIONS section pointing at
  everything.

Two entry points. :func:`write_pages` takes ready ring-buffer pages per CPU (e.g. real pages repeated by the parse
benchmark) plus the metadata texts. :func:`write_events` takes event formats and typed rows, encodes each payload
from its format (common fields, scalars of any width and sign, char arrays, ``__data_loc`` strings and arrays, tail
arrays), packs records into 4 KiB pages with correct record headers (type_len 1..28 for payloads up to 112 bytes,
0 with a length word above that, a TIME_EXTEND record when a delta does not fit in 27 bits) and calls
:func:`write_pages`. Format text is regenerated from :class:`EventFormat` (:func:`format_text`), so anything the
format parser understood can be written back. Everything is little-endian with an 8-byte kernel long.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .formats import EventFormat, Field, parse_format

__all__ = ["Row", "write_events", "write_pages", "encode_pages", "format_text", "make_format",
           "HEADER_PAGE", "HEADER_EVENT", "rows_from_tables"]

MAGIC = b"\x17\x08\x44tracing"
TS_BITS = 27
MAX_SMALL = 28 * 4  # RB_MAX_SMALL_DATA: payloads up to 112 bytes use type_len 1..28
PAGE_HEADER = 16  # u64 timestamp + 8-byte commit
PAGES_IN_CHUNK = 10

#: events/header_page of a 64-bit kernel with 4 KiB sub-buffers.
HEADER_PAGE = (
    "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
    "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
    "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
    "\tfield: char data;\toffset:16;\tsize:{data};\tsigned:0;\n"
)
#: events/header_event (informational; readers ignore it).
HEADER_EVENT = (
    "# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n\tarray       :   32 bits\n\n"
    "\tpadding     : type == 29\n\ttime_extend : type == 30\n\ttime_stamp : type == 31\n\tdata max type_len  == 28\n"
)
_COMMON = [("unsigned short", "common_type", 2, False), ("unsigned char", "common_flags", 1, False),
           ("unsigned char", "common_preempt_count", 1, False), ("int", "common_pid", 4, True)]


@dataclass(frozen=True, slots=True)
class Row:
    """One event to write.

    Attributes:
        ts_ns: timestamp (clock units, ns for the default ``local`` clock); must not decrease within a CPU.
        cpu: the ring buffer it goes to.
        key: ``"system:name"`` of its format.
        pid: ``common_pid``.
        flags: ``common_flags``.
        preempt: ``common_preempt_count``.
        fields: payload values by field name (ints, str for char arrays and ``__data_loc char[]``, bytes or lists
            of ints for other arrays); missing fields are written as zero / empty.
        buffer: the ftrace instance (``""`` = top buffer).
    """

    ts_ns: int
    cpu: int
    key: str
    pid: int = 0
    flags: int = 0
    preempt: int = 0
    fields: Mapping[str, Any] = field(default_factory=dict)
    buffer: str = ""


def _decl(f: Field) -> str:
    if f.kind == "dynamic":
        return f"__data_loc {f.type}[] {f.name}"
    if f.kind == "relative":
        return f"__rel_loc {f.type}[] {f.name}"
    if f.kind == "tail":
        return f"{f.type} {f.name}[]"
    if f.kind == "array":
        return f"{f.type} {f.name}[{f.array_len}]"
    return f"{f.type} {f.name}"


def format_text(fmt: EventFormat) -> str:
    """The ``events/<system>/<name>/format`` text of ``fmt`` (what :func:`parse_format` reads back)."""
    lines = [f"name: {fmt.name}", f"ID: {fmt.id}", "format:"]
    common = [f for f in fmt.fields if f.is_common]
    payload = [f for f in fmt.fields if not f.is_common]
    for group in (common, payload):
        for f in group:
            lines.append(f"\tfield:{_decl(f)};\toffset:{f.offset};\tsize:{f.size};\tsigned:{int(f.signed)};")
        lines.append("")
    lines.append(f"print fmt: {fmt.print_fmt}")
    return "\n".join(lines) + "\n"


def make_format(system: str, name: str, ev_id: int, fields: Sequence[tuple[str, str, int, bool]],
                print_fmt: str | None = None) -> EventFormat:
    """Build an event format from field declarations, laying out offsets like the kernel (natural alignment).

    Args:
        system: the event system.
        name: the event name.
        ev_id: its ID.
        fields: ``(decl_type, name, size, signed)``; ``decl_type`` such as ``u64``, ``char[16]`` (a char
            array), ``__data_loc char[]``, ``__data_loc u32[]``, ``u8[]`` (tail).
        print_fmt: the print fmt; by default ``"a=%d b=%s ..."`` over all fields.

    Returns:
        The parsed :class:`EventFormat`.
    """
    off = 8
    out = []
    conv = []
    for ctype, fname, size, signed in fields:
        align = 4 if ctype.startswith("__data_loc") else (1 if "[" in ctype else min(size, 8) or 1)
        off = (off + align - 1) // align * align
        if ctype.startswith("__data_loc"):
            decl = f"{ctype} {fname}"
            conv.append((f"{fname}=%s", f"__get_str({fname})") if "char" in ctype else None)
        elif ctype.endswith("[]"):
            decl = f"{ctype[:-2]} {fname}[]"
            size = 0
            conv.append(None)
        elif "[" in ctype:
            base, n = ctype.split("[", 1)
            decl = f"{base} {fname}[{n}"
            conv.append((f"{fname}=%s", f"REC->{fname}") if base.strip() == "char" else None)
        else:
            decl = f"{ctype} {fname}"
            spec = {1: "%d" if signed else "%u", 2: "%d" if signed else "%u", 4: "%d" if signed else "%u",
                    8: "%lld" if signed else "%llu"}[size]
            conv.append((f"{fname}={spec}", f"REC->{fname}"))
        out.append(f"\tfield:{decl};\toffset:{off};\tsize:{size};\tsigned:{int(signed)};")
        off += size
    if print_fmt is None:
        used = [c for c in conv if c]
        print_fmt = '"' + " ".join(c[0] for c in used) + '"' + "".join(f", {c[1]}" for c in used)
    common = "\n".join(f"\tfield:{t} {n};\toffset:{o};\tsize:{s};\tsigned:{int(sg)};"
                       for (t, n, s, sg), o in zip(_COMMON, (0, 2, 3, 4)))
    text = f"name: {name}\nID: {ev_id}\nformat:\n{common}\n\n" + "\n".join(out) + f"\n\nprint fmt: {print_fmt}\n"
    return parse_format(text, system)


def _pack_int(v: int, size: int) -> bytes:
    return (int(v) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _array_bytes(f: Field, v: Any) -> bytes:
    if v is None:
        return b""
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    esz = f.elem_size if f.elem_size in (1, 2, 4, 8) else 1
    return b"".join(_pack_int(x, esz) for x in v)


def encode_payload(fmt: EventFormat, row: Row) -> bytes:
    """The binary payload of one event (common fields, fixed fields, then dynamic data).

    Args:
        fmt: its format.
        row: the values.

    Returns:
        The payload bytes (not yet padded to 4).

    Raises:
        ValueError: if a fixed-size value does not fit its field or dynamic data exceeds 64 KiB.
    """
    fixed = max((f.offset + f.size for f in fmt.fields), default=8)
    buf = bytearray(fixed)
    tail = bytearray()
    vals = row.fields
    common = {"common_type": fmt.id, "common_flags": row.flags, "common_preempt_count": row.preempt,
              "common_pid": row.pid}
    for f in fmt.fields:
        v = common[f.name] if f.name in common else vals.get(f.name)
        if f.kind == "scalar":
            buf[f.offset:f.offset + f.size] = _pack_int(v or 0, f.size)
        elif f.kind == "array":
            data = _array_bytes(f, v)
            if len(data) > f.size:
                raise ValueError(f"{fmt.key}.{f.name}: {len(data)} bytes do not fit {f.size}")
            buf[f.offset:f.offset + len(data)] = data
        elif f.kind in ("dynamic", "relative"):
            data = _array_bytes(f, v)
            if f.is_string:
                data += b"\0"
            start = fixed + len(tail)
            if f.kind == "relative":
                start -= f.offset + f.size
            if start > 0xFFFF or len(data) > 0xFFFF:
                raise ValueError(f"{fmt.key}.{f.name}: dynamic data beyond 64 KiB")
            buf[f.offset:f.offset + 4] = ((len(data) << 16) | start).to_bytes(4, "little")
            tail += data
        elif f.kind == "tail":
            tail += _array_bytes(f, v)
    return bytes(buf + tail)


def _record(payload: bytes, delta: int) -> bytes:
    n = len(payload)
    padded = payload + b"\0" * (-n % 4 if n else 4)
    if len(padded) <= MAX_SMALL:
        return struct.pack("<I", (delta << 5) | (len(padded) // 4)) + padded
    return struct.pack("<II", delta << 5, len(padded) + 4) + padded


def encode_pages(events: Iterable[tuple[int, bytes]], page_size: int = 4096) -> list[bytes]:
    """Pack ``(ts, payload)`` pairs of one CPU, in time order, into ring-buffer pages.

    Args:
        events: timestamps (non-decreasing) and payloads.
        page_size: sub-buffer size (16-byte header + data).

    Returns:
        Full pages (``page_size`` bytes each; unused tail zeroed, ``commit`` = used data bytes).

    Raises:
        ValueError: if timestamps go backwards or one record does not fit a page.
    """
    cap = page_size - PAGE_HEADER
    pages: list[bytes] = []
    data = bytearray()
    page_ts = last = None
    for ts, payload in events:
        if last is not None and ts < last:
            raise ValueError(f"timestamps go backwards within a CPU: {ts} after {last}")
        rec = _record(payload, 0)
        if page_ts is None or len(data) + len(rec) + 8 > cap:
            if page_ts is not None:
                pages.append(_page(page_ts, data, page_size))
            page_ts, last, data = ts, ts, bytearray()
        delta = ts - last
        if delta >= 1 << TS_BITS:
            # TIME_EXTEND (type_len 30): low 27 bits in the header, the rest in array[0].
            data += struct.pack("<II", ((delta & ((1 << TS_BITS) - 1)) << 5) | 30, delta >> TS_BITS)
            delta = 0
        rec = _record(payload, delta)
        if len(rec) > cap:
            raise ValueError(f"a {len(payload)}-byte event does not fit a {page_size}-byte page")
        data += rec
        last = ts
    if page_ts is not None:
        pages.append(_page(page_ts, data, page_size))
    return pages


def _page(ts: int, data: bytes | bytearray, page_size: int) -> bytes:
    return struct.pack("<QQ", ts, len(data)) + bytes(data) + b"\0" * (page_size - PAGE_HEADER - len(data))


def _sized(width: str, text: bytes) -> bytes:
    return struct.pack("<" + width, len(text)) + text


def _meta_blocks(header_page: str, header_event: str, ftrace_formats: Sequence[str],
                 event_formats: Mapping[str, Sequence[str]], kallsyms: str, printk: str,
                 cmdlines: str) -> dict[int, bytes]:
    hp, he = header_page.encode(), header_event.encode()
    blocks = {
        16: b"header_page\0" + _sized("Q", hp) + b"header_event\0" + _sized("Q", he),
        17: struct.pack("<I", len(ftrace_formats)) + b"".join(_sized("Q", t.encode()) for t in ftrace_formats),
        18: struct.pack("<I", len(event_formats)) + b"".join(
            s.encode() + b"\0" + struct.pack("<I", len(ts)) + b"".join(_sized("Q", t.encode()) for t in ts)
            for s, ts in event_formats.items()),
        19: _sized("I", kallsyms.encode()),
        20: _sized("I", printk.encode()),
        21: _sized("Q", cmdlines.encode()),
    }
    return blocks


def _opt(oid: int, payload: bytes) -> bytes:
    return struct.pack("<HI", oid, len(payload)) + payload


def write_pages(
    path: str | Path,
    pages: Mapping[int, Sequence[bytes]],
    *,
    event_formats: Mapping[str, Sequence[str]],
    ftrace_formats: Sequence[str] = (),
    header_page: str | None = None,
    header_event: str = HEADER_EVENT,
    kallsyms: str = "",
    printk: str = "",
    cmdlines: str = "",
    version: int = 7,
    compression: str = "zstd",
    page_size: int = 4096,
    cpus: int | None = None,
    clock: str = "local",
    uname: str = "Linux iovatrace-writer 6.1.0 x86_64",
    instances: Mapping[str, Mapping[int, Sequence[bytes]]] | None = None,
) -> Path:
    """Write a trace.dat from raw ring-buffer pages.

    Args:
        path: output file.
        pages: CPU → its pages (each ``page_size`` bytes), in order.
        event_formats: system → format texts.
        ftrace_formats: format texts of the ``ftrace`` system (may be empty).
        header_page: ``events/header_page`` text; default: 8-byte long, ``page_size`` sub-buffers.
        header_event: ``events/header_event`` text.
        kallsyms: ``/proc/kallsyms`` text (optional).
        printk: ``printk_formats`` text (optional).
        cmdlines: saved cmdlines text (``"<pid> <comm>\\n"`` lines).
        version: 6 or 7.
        compression: ``none`` or ``zstd`` (v7 only).
        page_size: sub-buffer size.
        cpus: number of CPUs; default ``max(pages) + 1``.
        clock: trace clock name (v7 BUFFER option and TRACECLOCK option).
        uname: UNAME option text.
        instances: instance name → its pages per CPU (v7 only), each written as its own BUFFER section.

    Returns:
        The path written.

    Raises:
        ValueError: for an unsupported version/compression, a page of the wrong size, or instances in v6.
    """
    if version not in (6, 7) or compression not in ("none", "zstd") or (version == 6 and compression != "none"):
        raise ValueError(f"unsupported: version {version} with compression {compression!r}")
    if instances and version == 6:
        raise ValueError("instances are written in v7 files only")
    all_pages = [pages, *(instances or {}).values()]
    ncpu = cpus if cpus is not None else max((max(p) + 1 for p in all_pages if p), default=1)
    for bp in all_pages:
        for cpu, pl_ in bp.items():
            for p in pl_:
                if len(p) != page_size:
                    raise ValueError(f"CPU {cpu}: a page of {len(p)} bytes, expected {page_size}")
    hp = header_page if header_page is not None else HEADER_PAGE.format(data=page_size - PAGE_HEADER)
    blocks = _meta_blocks(hp, header_event, ftrace_formats, event_formats, kallsyms, printk, cmdlines)
    out = bytearray(MAGIC + f"{version}\0".encode() + struct.pack("<BBI", 0, 8, page_size))
    common_opts = _opt(5, uname.encode() + b"\0") + _opt(8, struct.pack("<I", ncpu)) + \
        _opt(9, b"iovatrace-writer\0")
    if version == 6:
        for sid in (16, 17, 18, 19, 20, 21):
            out += blocks[sid]
        out += struct.pack("<I", ncpu) + b"options  \0" + common_opts + struct.pack("<H", 0) + b"flyrecord\0"
        table_pos = len(out)
        out += b"\0" * (16 * ncpu)
        offsets = []
        for cpu in range(ncpu):
            out += b"\0" * (-len(out) % page_size)
            data = b"".join(pages.get(cpu, ()))
            offsets.append((len(out) if data else 0, len(data)))
            out += data
        out[table_pos:table_pos + 16 * ncpu] = b"".join(struct.pack("<QQ", o, s) for o, s in offsets)
        return _save(path, out)
    comp = _Compressor(compression)
    out += compression.encode() + b"\0" + comp.version.encode() + b"\0"
    opt_ptr = len(out)
    out += b"\0" * 8
    sec_off: dict[int, int] = {}
    for sid in (16, 17, 18, 19, 20, 21):
        sec_off[sid] = len(out)
        body = blocks[sid]
        if comp.enabled:
            c = comp.compress(body)
            out += _section(sid, 1, struct.pack("<II", len(c), len(body)) + c)
        else:
            out += _section(sid, 0, body)
    buffer_opts = bytearray()
    for name, bpages in [("", pages), *sorted((instances or {}).items())]:
        off, table = _buffer_section(out, bpages, ncpu, page_size, comp)
        bopt = struct.pack("<Q", off) + name.encode() + b"\0" + clock.encode() + b"\0"
        bopt += struct.pack("<II", page_size, len(table)) + b"".join(struct.pack("<IQQ", *t) for t in table)
        buffer_opts += _opt(3, bopt)
    opts = bytearray()
    for sid in (16, 17, 18, 19, 20, 21):
        opts += _opt(sid, struct.pack("<Q", sec_off[sid]))
    opts += buffer_opts
    opts += common_opts + _opt(4, f"[{clock}]\0".encode())
    opts += _opt(0, struct.pack("<Q", 0))
    struct.pack_into("<Q", out, opt_ptr, len(out))
    out += _section(0, 0, bytes(opts))
    return _save(path, out)


def _buffer_section(out: bytearray, pages: Mapping[int, Sequence[bytes]], ncpu: int, page_size: int,
                    comp: _Compressor) -> tuple[int, list[tuple[int, int, int]]]:
    """Append one BUFFER section (page-aligned per-CPU data); return its offset and (cpu, offset, size) rows."""
    buf_off = len(out)
    data_start = buf_off + 16
    section = bytearray()
    table = []
    for cpu in range(ncpu):
        cp = list(pages.get(cpu, ()))
        if not cp:
            continue
        section += b"\0" * (-(data_start + len(section)) % page_size)
        start = data_start + len(section)
        if comp.enabled:
            chunks = [b"".join(cp[i:i + PAGES_IN_CHUNK]) for i in range(0, len(cp), PAGES_IN_CHUNK)]
            blob = struct.pack("<I", len(chunks))
            for ch in chunks:
                c = comp.compress(ch)
                blob += struct.pack("<II", len(c), len(ch)) + c
        else:
            blob = b"".join(cp)
        section += blob
        table.append((cpu, start, len(blob)))
    out += _section(3, 1 if comp.enabled else 0, bytes(section))
    return buf_off, table


def _section(sid: int, flags: int, payload: bytes) -> bytes:
    return struct.pack("<HHIQ", sid, flags, 0xFFFFFFFF, len(payload)) + payload


class _Compressor:
    def __init__(self, name: str) -> None:
        self.enabled = name == "zstd"
        self.version = ""
        if self.enabled:
            import zstandard

            self._c = zstandard.ZstdCompressor(write_content_size=False)
            self.version = zstandard.ZSTD_VERSION and ".".join(map(str, zstandard.ZSTD_VERSION))

    def compress(self, data: bytes) -> bytes:
        return self._c.compress(data)


def _save(path: str | Path, data: bytes | bytearray) -> Path:
    p = Path(path)
    p.write_bytes(bytes(data))
    return p


def write_events(
    path: str | Path,
    formats: Mapping[str, EventFormat] | Iterable[EventFormat],
    rows: Iterable[Row],
    *,
    cmdlines: Mapping[int, str] | None = None,
    version: int = 7,
    compression: str = "zstd",
    page_size: int = 4096,
    cpus: int | None = None,
    **kwargs: Any,
) -> Path:
    """Write typed events as a trace.dat that ``trace-cmd report`` and :func:`iovatrace.parsers.open_trace` read.

    Args:
        path: output file.
        formats: the event formats (``"system:name"`` → format, or an iterable); systems ``ftrace`` go to the
            ftrace block, the rest are grouped by system.
        rows: the events, any order across CPUs; within a CPU their order is kept (stable sort by ts); rows with
            a ``buffer`` go to that instance (v7).
        cmdlines: pid → comm.
        version: 6 or 7.
        compression: ``none`` or ``zstd`` (v7).
        page_size: sub-buffer size.
        cpus: number of CPUs (default: highest CPU used + 1).
        **kwargs: passed to :func:`write_pages` (``kallsyms``, ``printk``, ``clock``, ``uname``).

    Returns:
        The path written.

    Raises:
        KeyError: for a row whose key has no format.
        ValueError: for values that do not fit their fields.
    """
    fmts = dict(formats) if isinstance(formats, Mapping) else {f.key: f for f in formats}
    per_cpu: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
    for r in rows:
        fmt = fmts.get(r.key)
        if fmt is None:
            raise KeyError(f"no format for event {r.key!r}")
        per_cpu.setdefault((r.buffer, r.cpu), []).append((r.ts_ns, encode_payload(fmt, r)))
    buffers: dict[str, dict[int, list[bytes]]] = {}
    for (buf, cpu), evs in per_cpu.items():
        evs.sort(key=lambda e: e[0])
        buffers.setdefault(buf, {})[cpu] = encode_pages(evs, page_size)
    pages = buffers.pop("", {})
    if buffers:
        kwargs["instances"] = buffers
    systems: dict[str, list[str]] = {}
    ftrace: list[str] = []
    for f in fmts.values():
        (ftrace if f.system == "ftrace" else systems.setdefault(f.system, [])).append(format_text(f))
    cl = "".join(f"{pid} {comm}\n" for pid, comm in sorted((cmdlines or {}).items()))
    return write_pages(path, pages, event_formats=systems, ftrace_formats=ftrace, cmdlines=cl, version=version,
                       compression=compression, page_size=page_size, cpus=cpus, **kwargs)


def rows_from_tables(tables: Mapping[str, Any]) -> list[Row]:
    """Rows of event tables (as the readers return them), to write them back.

    Args:
        tables: ``{"system:name": pa.Table}`` with the common columns and payload columns.

    Returns:
        One :class:`Row` per table row (``field_<name>`` columns map back to ``<name>``; ``"inst/system:name"``
        keys go to instance ``inst``).
    """
    from ..schema import COMMON_COLUMNS

    common = {c.name for c in COMMON_COLUMNS}
    keyed: list[tuple[str, int, int, Row]] = []
    for key, t in tables.items():
        cols = {c: t.column(c).to_pylist() for c in t.column_names}
        payload = [c for c in t.column_names if c not in common]
        for i in range(t.num_rows):
            vals = {(c[6:] if c.startswith("field_") and c[6:] in common else c): cols[c][i] for c in payload}
            buf, _, ev = key.rpartition("/")
            keyed.append((buf, cols["cpu"][i], cols["seq"][i],
                          Row(cols["ts_ns"][i], cols["cpu"][i], ev, cols["pid"][i], cols["flags"][i],
                              cols["preempt"][i], vals, buf)))
    # Keep each CPU's stream order (seq): equal timestamps of different events must not swap.
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]
