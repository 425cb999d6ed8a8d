"""trace.dat headers, sections, options and metadata (v6 and v7), read from untrusted bytes.

Theory of operation: a trace.dat file is a small header, a block of metadata (header_page, event formats,
kallsyms, printk formats, saved cmdlines), options, and per-CPU ring-buffer pages (see docs: tracedat_spec.md).
v6 lays the metadata out back to back; v7 wraps each block in a section (optionally compressed) reached through
offsets in OPTIONS sections. This module reads everything *except* the ring-buffer pages and returns a
:class:`TraceMeta` plus one :class:`BufferInfo` per instance, each listing where every CPU's pages live.

Every read goes through :class:`Cursor`, which checks the requested size against the bytes that exist before
slicing, so a 100-byte file that claims a 1 TB section raises :class:`TraceFormatError` instead of allocating.
Decompression is bounded by the stored uncompressed size, itself capped. Format text is parsed by regular
expressions, never evaluated. kallsyms and printk formats are kept as raw bytes (or a section offset) and only
parsed on demand, so ``iovatrace info`` starts fast.
"""

from __future__ import annotations

import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import TraceFormatError

__all__ = ["Cursor", "TraceMeta", "BufferInfo", "CpuData", "read_meta", "decompress", "MAX_DECOMPRESSED"]

MAGIC = b"\x17\x08\x44tracing"
#: Cap on one decompressed metadata section or data chunk (trace-cmd writes 10 pages per chunk).
MAX_DECOMPRESSED = 1 << 28

OPT_DONE, OPT_DATE, OPT_CPUSTAT, OPT_BUFFER, OPT_TRACECLOCK, OPT_UNAME, OPT_HOOK, OPT_OFFSET = range(8)
OPT_CPUCOUNT, OPT_VERSION, OPT_PROCMAPS, OPT_TRACEID, OPT_TIME_SHIFT, OPT_GUEST, OPT_TSC2NSEC = range(8, 15)
SEC_STRINGS, SEC_HEADER_INFO, SEC_FTRACE_EVENTS, SEC_EVENT_FORMATS = 15, 16, 17, 18
SEC_KALLSYMS, SEC_PRINTK, SEC_CMDLINES, SEC_BUFFER_TEXT = 19, 20, 21, 22
_OPTION_NAMES = {
    1: "date", 2: "cpustat", 3: "buffer", 4: "traceclock", 5: "uname", 6: "hook", 7: "offset", 8: "cpucount",
    9: "version", 10: "procmaps", 11: "traceid", 12: "time_shift", 13: "guest", 14: "tsc2nsec", 22: "buffer_text",
    23: "btf_file", 24: "last_boot_info", 25: "modules_file",
}


class Cursor:
    """A bounds-checked reader over bytes, reporting errors with absolute file offsets.

    Args:
        buf: the bytes (a file mmap, or a decompressed section).
        path: file name for error messages.
        endian: ``"<"`` or ``">"``.
        pos: start position in ``buf``.
        base: file offset of ``buf[0]`` (for decompressed sections: the section's offset, approximately).
    """

    __slots__ = ("buf", "path", "endian", "pos", "base", "end")

    def __init__(self, buf: Any, path: str, endian: str = "<", pos: int = 0, base: int = 0, end: int | None = None):
        self.buf = buf
        self.path = path
        self.endian = endian
        self.pos = pos
        self.base = base
        self.end = len(buf) if end is None else min(end, len(buf))

    def error(self, what: str, pos: int | None = None) -> TraceFormatError:
        """A :class:`TraceFormatError` located at ``pos`` (default: the cursor)."""
        return TraceFormatError(what, path=self.path, offset=self.base + (self.pos if pos is None else pos))

    def need(self, n: int, what: str) -> None:
        """Raise unless ``n`` more bytes exist."""
        if n < 0 or self.pos + n > self.end:
            raise self.error(
                f"Cannot read {what}: expected {n} bytes, only {max(self.end - self.pos, 0)} remain (truncated?)"
            )

    def take(self, n: int, what: str) -> bytes:
        """The next ``n`` bytes."""
        self.need(n, what)
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return b

    def _num(self, fmt: str, n: int, what: str) -> int:
        self.need(n, what)
        (v,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        self.pos += n
        return int(v)

    def u8(self, what: str) -> int:
        return self._num("B", 1, what)

    def u16(self, what: str) -> int:
        return self._num("H", 2, what)

    def u32(self, what: str) -> int:
        return self._num("I", 4, what)

    def u64(self, what: str) -> int:
        return self._num("Q", 8, what)

    def cstr(self, what: str, limit: int = 1 << 20) -> str:
        """A NUL-terminated string (decoded leniently)."""
        end = min(self.end, self.pos + limit)
        i = bytes(self.buf[self.pos:end]).find(b"\0")
        if i < 0:
            raise self.error(f"Cannot read {what}: expected a NUL-terminated string")
        s = bytes(self.buf[self.pos:self.pos + i]).decode("utf-8", "replace")
        self.pos += i + 1
        return s


@dataclass(slots=True)
class CpuData:
    """Where one CPU's ring-buffer pages are: ``offset``/``size`` in the file (on-disk size if compressed)."""

    cpu: int
    offset: int
    size: int


@dataclass(slots=True)
class BufferInfo:
    """One ftrace instance (``name == ""`` for the top buffer).

    Attributes:
        name: instance name.
        clock: trace clock of this buffer.
        page_size: sub-buffer size in bytes.
        cpus: per-CPU page ranges, in CPU order.
        compressed: per-CPU data is chunk-compressed (v7 BUFFER section flag).
        section_offset: file offset of the v7 BUFFER section header (None for v6).
    """

    name: str
    clock: str
    page_size: int
    cpus: list[CpuData] = field(default_factory=list)
    compressed: bool = False
    section_offset: int | None = None


@dataclass(slots=True)
class TraceMeta:
    """Everything a trace.dat says about itself, except the events.

    Attributes mirror the file: ``version`` (6/7), ``compression`` (``none``/``zstd``/``zlib``), ``endian``
    (``little``/``big``), ``long_size`` (user space), ``kernel_long_size`` (from header_page), ``page_size``,
    ``cpus``, ``clock``, ``uname``, ``kernel_release``, ``tracecmd_version``, ``ts_offset_ns`` (DATE and OFFSET
    options, added to timestamps), ``tsc2nsec`` ((mult, shift, offset) or None), ``cpustats`` (buffer → cpu →
    stats dict), ``options`` (name → raw value, for what we do not interpret), ``buffers``.
    """

    path: str
    version: int
    compression: str = "none"
    compression_version: str = ""
    endian: str = "little"
    long_size: int = 8
    kernel_long_size: int = 8
    page_size: int = 4096
    header_data_offset: int = 16
    cpus: int = 0
    clock: str = "local"
    uname: str = ""
    kernel_release: str = ""
    tracecmd_version: str = ""
    ts_offset_ns: int = 0
    tsc2nsec: tuple[int, int, int] | None = None
    cpustats: dict[str, dict[int, dict[str, str]]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    buffers: list[BufferInfo] = field(default_factory=list)
    header_page: str = ""
    header_event: str = ""
    ftrace_formats: list[str] = field(default_factory=list)
    event_formats: list[tuple[str, str]] = field(default_factory=list)  # (system, text)
    kallsyms_raw: bytes | None = None
    printk_raw: bytes | None = None
    cmdlines_raw: bytes = b""
    # v7: lazily loaded sections (offset) for kallsyms/printk
    lazy_sections: dict[int, int] = field(default_factory=dict)
    damage: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (used by ``iovatrace info``)."""
        return {
            "version": self.version, "compression": self.compression, "endian": self.endian,
            "long_size": self.long_size, "kernel_long_size": self.kernel_long_size, "page_size": self.page_size,
            "cpus": self.cpus, "clock": self.clock, "uname": self.uname, "kernel_release": self.kernel_release,
            "tracecmd_version": self.tracecmd_version, "ts_offset_ns": self.ts_offset_ns,
            "buffers": [b.name for b in self.buffers],
        }


_ZSTD = threading.local()


def _zstd() -> Any:
    """This thread's zstd decompressor (a context costs more to create than a 40 KiB chunk to decompress)."""
    d = getattr(_ZSTD, "d", None)
    if d is None:
        import zstandard

        d = _ZSTD.d = zstandard.ZstdDecompressor()
    return d


def decompress(alg: str, data: bytes, usize: int, cur: Cursor) -> bytes:
    """Decompress ``data`` to exactly ``usize`` bytes with ``alg`` (``zstd``/``zlib``/``none``).

    Raises:
        TraceFormatError: on a size over :data:`MAX_DECOMPRESSED`, corrupt data, or a size mismatch.
    """
    # zstd/zlib output buffers are allocated up front: bound them by the stored size AND by what the
    # compressed bytes could plausibly expand to, so a forged size cannot make us allocate hundreds of MB.
    limit = min(MAX_DECOMPRESSED, max(len(data) * 4096, 1 << 22))
    if usize > limit:
        raise cur.error(f"Compressed block of {len(data)} bytes claims {usize} uncompressed bytes; "
                        f"expected at most {limit}")
    try:
        if alg == "zstd":
            out = _zstd().decompress(data, max_output_size=max(usize, 1))
        elif alg == "zlib":
            d = zlib.decompressobj()
            out = d.decompress(data, usize)
        elif alg == "none":
            out = data
        else:
            raise cur.error(f"Unknown compression {alg!r}; expected none, zstd or zlib")
    except TraceFormatError:
        raise
    except Exception as exc:  # zstd/zlib raise their own types on corrupt input
        raise cur.error(f"Cannot decompress {alg} block: {exc}") from None
    if len(out) != usize:
        raise cur.error(f"Decompressed {alg} block has {len(out)} bytes; expected {usize}")
    return out


_HP_RE = re.compile(r"field:\s*([^;]*?)\s*(\w+);\s*offset:(\d+);\s*size:(\d+);")


def _parse_header_page(text: str, meta: TraceMeta) -> None:
    fields = {m.group(2): (int(m.group(3)), int(m.group(4))) for m in _HP_RE.finditer(text)}
    if "commit" in fields:
        meta.kernel_long_size = fields["commit"][1]
    elif text.strip():
        meta.damage.append({"offset": None, "reason": "header_page has no commit field; assuming kernel long 8"})
    if meta.kernel_long_size not in (4, 8):
        raise TraceFormatError(
            f"header_page gives a commit size of {meta.kernel_long_size}; expected 4 or 8", path=meta.path
        )
    if "data" in fields:
        meta.header_data_offset = fields["data"][0]
    else:
        meta.header_data_offset = 8 + meta.kernel_long_size


def _read_header_info(c: Cursor, meta: TraceMeta) -> None:
    if c.take(12, "header_page tag") != b"header_page\0":
        raise c.error("Expected 'header_page' tag", c.pos - 12)
    n = c.u64("header_page size")
    meta.header_page = c.take(n, "header_page text").decode("utf-8", "replace")
    if c.take(13, "header_event tag") != b"header_event\0":
        raise c.error("Expected 'header_event' tag", c.pos - 13)
    n = c.u64("header_event size")
    meta.header_event = c.take(n, "header_event text").decode("utf-8", "replace")
    _parse_header_page(meta.header_page, meta)


def _read_ftrace_events(c: Cursor, meta: TraceMeta) -> None:
    count = c.u32("ftrace format count")
    if count > c.end - c.pos:  # each format costs at least 8 bytes; catches absurd counts early
        raise c.error(f"ftrace format count {count} exceeds the bytes available")
    for _ in range(count):
        n = c.u64("ftrace format size")
        meta.ftrace_formats.append(c.take(n, "ftrace format").decode("utf-8", "replace"))


def _read_event_formats(c: Cursor, meta: TraceMeta) -> None:
    nsys = c.u32("event system count")
    if nsys > c.end - c.pos:
        raise c.error(f"event system count {nsys} exceeds the bytes available")
    for _ in range(nsys):
        system = c.cstr("event system name")
        count = c.u32("event format count")
        if count > c.end - c.pos:
            raise c.error(f"event format count {count} exceeds the bytes available")
        for _ in range(count):
            n = c.u64("event format size")
            meta.event_formats.append((system, c.take(n, "event format").decode("utf-8", "replace")))


def _read_sized(c: Cursor, width: int, what: str) -> bytes:
    n = c.u32(what + " size") if width == 4 else c.u64(what + " size")
    return c.take(n, what)


def _parse_cpustat(text: str) -> tuple[str, dict[int, dict[str, str]]]:
    """One CPUSTAT option: ``CPU: n`` blocks of ``key: value`` lines, optionally after ``Buffer: name``."""
    buf = ""
    stats: dict[int, dict[str, str]] = {}
    cur: dict[str, str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        if k == "Buffer":
            buf = v
        elif k == "CPU" and v.isdigit():
            cur = stats.setdefault(int(v), {})
        elif cur is not None:
            cur[k] = v
    return buf, stats


class _OptionsState:
    def __init__(self) -> None:
        self.buffer_opts: list[tuple[int, str, str, int, list[CpuData]]] = []  # v7
        self.v6_buffers: list[tuple[int, str]] = []
        self.section_offsets: dict[int, int] = {}
        self.cpustat_buffer = ""


def _handle_option(oid: int, payload: bytes, meta: TraceMeta, st: _OptionsState, c: Cursor, popos: int) -> None:
    e = c.endian
    p = Cursor(payload, c.path, e, 0, c.base + popos)

    def text() -> str:
        return payload.split(b"\0", 1)[0].decode("utf-8", "replace")

    if oid == OPT_DATE:
        try:
            meta.ts_offset_ns += int(text().strip(), 0) * 1000
        except ValueError:
            meta.damage.append({"offset": c.base + popos, "reason": "DATE option is not a number"})
    elif oid == OPT_OFFSET:
        try:
            meta.ts_offset_ns += int(text().strip(), 0)
        except ValueError:
            meta.damage.append({"offset": c.base + popos, "reason": "OFFSET option is not a number"})
    elif oid == OPT_CPUSTAT:
        # CPUSTAT: one option per CPU; a "Buffer: <name>" option switches to an instance's stats.
        buf, stats = _parse_cpustat(text())
        if "Buffer:" in text():
            st.cpustat_buffer = buf
        for cpu, s in stats.items():
            meta.cpustats.setdefault(st.cpustat_buffer, {})[cpu] = s
    elif oid == OPT_TRACECLOCK:
        m = re.search(r"\[(\S+)\]", text())
        if m:
            meta.clock = m.group(1)
    elif oid == OPT_UNAME:
        meta.uname = text()
        parts = meta.uname.split()
        meta.kernel_release = parts[2] if len(parts) >= 3 else ""
    elif oid == OPT_VERSION:
        meta.tracecmd_version = text()
    elif oid == OPT_CPUCOUNT:
        meta.cpus = p.u32("CPUCOUNT")
    elif oid == OPT_TSC2NSEC:
        meta.tsc2nsec = (p.u32("tsc2nsec mult"), p.u32("tsc2nsec shift"), p.u64("tsc2nsec offset"))
    elif oid == OPT_BUFFER:
        off = p.u64("BUFFER offset")
        name = p.cstr("BUFFER name")
        if meta.version < 7:
            st.v6_buffers.append((off, name))
            return
        clock = p.cstr("BUFFER clock")
        psize = p.u32("BUFFER page size")
        n = p.u32("BUFFER cpu count")
        if n * 20 > p.end - p.pos:
            raise p.error(f"BUFFER option lists {n} CPUs but holds {p.end - p.pos} bytes")
        cpus = [CpuData(p.u32("cpu id"), p.u64("cpu offset"), p.u64("cpu size")) for _ in range(n)]
        st.buffer_opts.append((off, name, clock, psize, cpus))
    elif SEC_HEADER_INFO <= oid <= SEC_CMDLINES or oid in (23, 25):
        st.section_offsets[oid] = p.u64("section offset")
    elif oid in _OPTION_NAMES:
        meta.options[_OPTION_NAMES[oid]] = payload if oid in (OPT_TRACEID, OPT_TIME_SHIFT, OPT_GUEST) else text()
    else:
        meta.options.setdefault("unknown_ids", []).append(oid)


def _read_options_list(c: Cursor, meta: TraceMeta, st: _OptionsState) -> int:
    """Options until DONE. Returns the v7 next-options offset (0 for v6 or the last section)."""
    while True:
        oid = c.u16("option id")
        if oid == OPT_DONE and meta.version < 7:
            return 0
        size = c.u32("option size")
        start = c.pos
        payload = c.take(size, f"option {oid} payload")
        if oid == OPT_DONE:
            return struct.unpack(c.endian + "Q", payload[:8])[0] if size >= 8 else 0
        _handle_option(oid, payload, meta, st, c, start)


def _section(buf: Any, meta: TraceMeta, offset: int, want: int | None) -> tuple[int, int, Cursor]:
    """Read a v7 section header at ``offset``; return (id, flags, cursor over its payload)."""
    c = Cursor(buf, meta.path, "<" if meta.endian == "little" else ">", offset)
    sid = c.u16("section id")
    flags = c.u16("section flags")
    c.u32("section description")
    size = c.u64("section size")
    if want is not None and sid != want:
        raise c.error(f"Section at 0x{offset:x} has id {sid}; expected {want}", 0 + offset)
    c.need(size, f"section {sid} payload")
    if flags & 1 and sid != OPT_BUFFER and sid != SEC_BUFFER_TEXT:
        csize = c.u32("compressed size")
        usize = c.u32("uncompressed size")
        data = c.take(min(csize, max(size - 8, 0)), "compressed section")
        out = decompress(meta.compression, data, usize, c)
        return sid, flags, Cursor(out, meta.path, c.endian, 0, offset + 16)
    return sid, flags, Cursor(buf, meta.path, c.endian, c.pos, 0, c.pos + size)


def _read_v6_flyrecord(buf: Any, meta: TraceMeta, c: Cursor, name: str) -> BufferInfo:
    cpus = []
    if meta.cpus * 16 > c.end - c.pos:
        raise c.error(f"flyrecord table of {meta.cpus} CPUs does not fit in the file")
    for cpu in range(meta.cpus):
        cpus.append(CpuData(cpu, c.u64("cpu data offset"), c.u64("cpu data size")))
    return BufferInfo(name, meta.clock, meta.page_size, cpus)


def _read_v6_rest(buf: Any, meta: TraceMeta, c: Cursor) -> None:
    meta.cpus = c.u32("cpu count")
    if meta.cpus > 4096:
        raise c.error(f"File claims {meta.cpus} CPUs; expected at most 4096")
    st = _OptionsState()
    tag = c.take(10, "section tag")
    if tag == b"options  \0":
        _read_options_list(c, meta, st)
        tag = c.take(10, "section tag")
    if tag == b"latency  \0":
        meta.options["latency"] = True
        return
    if tag != b"flyrecord\0":
        raise c.error(f"Expected 'flyrecord' or 'latency' tag, found {tag!r}", c.pos - 10)
    meta.buffers.append(_read_v6_flyrecord(buf, meta, c, ""))
    for off, name in st.v6_buffers:
        bc = Cursor(buf, meta.path, c.endian, off)
        try:
            if bc.take(10, "instance flyrecord tag") != b"flyrecord\0":
                raise bc.error(f"Expected 'flyrecord' tag of instance {name!r}", off)
            meta.buffers.append(_read_v6_flyrecord(buf, meta, bc, name))
        except TraceFormatError as exc:
            meta.damage.append({"offset": off, "reason": str(exc), "buffer": name})


def _read_v7_rest(buf: Any, meta: TraceMeta, c: Cursor, strict: bool) -> None:
    meta.compression = c.cstr("compression name", 64)
    meta.compression_version = c.cstr("compression version", 64)
    if meta.compression not in ("none", "zstd", "zlib"):
        raise c.error(f"Unknown compression {meta.compression!r}; expected none, zstd or zlib")
    opt_off = c.u64("first options offset")
    st = _OptionsState()
    seen: set[int] = set()
    while opt_off:
        if opt_off in seen:
            raise c.error(f"Options sections loop back to 0x{opt_off:x}")
        seen.add(opt_off)
        try:
            _, _, oc = _section(buf, meta, opt_off, 0)
            opt_off = _read_options_list(oc, meta, st)
        except TraceFormatError as exc:
            # The first options section locates everything; a damaged later one (CPUSTAT...) is reported.
            if len(seen) == 1 or strict:
                raise
            meta.damage.append({"offset": opt_off, "reason": str(exc)})
            break
    so = st.section_offsets
    for sid in (SEC_HEADER_INFO, SEC_FTRACE_EVENTS, SEC_EVENT_FORMATS):
        if sid not in so:
            raise TraceFormatError(f"v7 file lacks the section {sid} option; expected it in OPTIONS", path=meta.path)
    _, _, sc = _section(buf, meta, so[SEC_HEADER_INFO], SEC_HEADER_INFO)
    _read_header_info(sc, meta)
    _, _, sc = _section(buf, meta, so[SEC_FTRACE_EVENTS], SEC_FTRACE_EVENTS)
    _read_ftrace_events(sc, meta)
    _, _, sc = _section(buf, meta, so[SEC_EVENT_FORMATS], SEC_EVENT_FORMATS)
    _read_event_formats(sc, meta)
    if SEC_CMDLINES in so:
        try:
            _, _, sc = _section(buf, meta, so[SEC_CMDLINES], SEC_CMDLINES)
            meta.cmdlines_raw = _read_sized(sc, 8, "cmdlines")
        except TraceFormatError as exc:
            if strict:
                raise
            meta.damage.append({"offset": so[SEC_CMDLINES], "reason": str(exc)})
    for sid in (SEC_KALLSYMS, SEC_PRINTK):
        if sid in so:
            meta.lazy_sections[sid] = so[sid]
    for off, name, clock, psize, cpus in st.buffer_opts:
        if psize <= 0 or psize > (1 << 24) or psize % 4:
            raise c.error(f"BUFFER {name!r} page size {psize}; expected a multiple of 4 up to 16 MiB")
        try:
            _, flags, _ = _section(buf, meta, off, OPT_BUFFER)
        except TraceFormatError as exc:
            if strict:
                raise
            meta.damage.append({"offset": off, "reason": str(exc), "buffer": name})
            flags = 1 if meta.compression != "none" else 0
        if name == "" and clock:
            meta.clock = clock
        meta.buffers.append(BufferInfo(name, clock or meta.clock, psize, cpus, bool(flags & 1), off))
    if not meta.buffers and not strict:
        _recover_buffers(buf, meta, c.pos)
    if not meta.cpus:
        meta.cpus = max((cd.cpu + 1 for b in meta.buffers for cd in b.cpus), default=0)


def _recover_buffers(buf: Any, meta: TraceMeta, first_section: int) -> None:
    """Find BUFFER sections whose option was lost (it is written after the data, so a cut file loses it).

    Walks the section headers from the first section, as trace-cmd does for STRINGS, and splits each
    chunk-compressed BUFFER section into per-CPU streams: each CPU starts page-aligned with a u32 chunk count.
    CPU numbers are assumed to be 0..n-1 and the instance name is unknown; both are stated in the damage entry.
    """
    e = "<" if meta.endian == "little" else ">"
    n = len(buf)
    pos = first_section
    found = 0
    while pos + 16 <= n:
        sid, flags, _desc, size = struct.unpack_from(e + "HHIQ", buf, pos)
        if sid > 64 or size > (1 << 48):
            break
        if sid == OPT_BUFFER:
            end = min(pos + 16 + size, n)
            ps = meta.page_size
            at = (pos + 16 + ps - 1) // ps * ps
            cpus: list[CpuData] = []
            if flags & 1:
                while at + 4 <= end:
                    (nch,) = struct.unpack_from(e + "I", buf, at)
                    if nch == 0 or nch > (1 << 24):
                        break
                    q = at + 4
                    for _ in range(nch):
                        if q + 8 > end:
                            q = end
                            break
                        cs, _us = struct.unpack_from(e + "II", buf, q)
                        q = min(q + 8 + cs, end) if q + 8 + cs <= end else end
                        if q == end:
                            break
                    cpus.append(CpuData(len(cpus), at, max(0, q - at - 4) if q < end else end - at - 4))
                    at = (q + ps - 1) // ps * ps
            name = "" if found == 0 else f"buffer{found}"
            meta.buffers.append(BufferInfo(name, meta.clock, ps, cpus, bool(flags & 1), pos))
            meta.damage.append({"offset": pos, "reason": f"BUFFER option of the section at 0x{pos:x} is missing "
                                f"(truncated file?); recovered {len(cpus)} CPU streams by scanning, assuming CPU "
                                f"numbers 0..{max(len(cpus) - 1, 0)}" + ("" if flags & 1 else
                                "; uncompressed data cannot be split into CPUs without it"),
                                "expected": "a BUFFER option locating each CPU's data"})
            found += 1
        pos += 16 + size


def load_lazy(buf: Any, meta: TraceMeta, sid: int) -> bytes:
    """The raw text of kallsyms (19) or printk formats (20), reading a v7 section on first use."""
    if sid == SEC_KALLSYMS and meta.kallsyms_raw is not None:
        return meta.kallsyms_raw
    if sid == SEC_PRINTK and meta.printk_raw is not None:
        return meta.printk_raw
    data = b""
    if sid in meta.lazy_sections:
        try:
            _, _, sc = _section(buf, meta, meta.lazy_sections[sid], sid)
            data = _read_sized(sc, 4, "kallsyms" if sid == SEC_KALLSYMS else "printk formats")
        except TraceFormatError as exc:
            meta.damage.append({"offset": meta.lazy_sections[sid], "reason": str(exc)})
    if sid == SEC_KALLSYMS:
        meta.kallsyms_raw = data
    else:
        meta.printk_raw = data
    return data


def read_meta(buf: Any, path: str, *, strict: bool = False) -> TraceMeta:
    """Read everything but the event pages.

    Args:
        buf: the whole file (an mmap or bytes).
        path: its name, for error messages.
        strict: raise on damage that lenient mode would only record in ``meta.damage``.

    Returns:
        The :class:`TraceMeta`.

    Raises:
        TraceFormatError: if the file is not a trace.dat v6/v7 or its metadata cannot be read.
    """
    c = Cursor(buf, path)
    if c.take(10, "magic") != MAGIC:
        raise c.error("Not a trace.dat file: expected the magic 17 08 44 'tracing'", 0)
    vs = c.cstr("version", 16)
    if not vs.isdigit() or int(vs) not in (6, 7):
        raise c.error(f"Unsupported trace.dat version {vs!r}; expected 6 or 7", 10)
    meta = TraceMeta(path, int(vs))
    e = c.u8("endianness")
    if e not in (0, 1):
        raise c.error(f"Endianness byte is {e}; expected 0 (little) or 1 (big)", c.pos - 1)
    meta.endian = "big" if e else "little"
    c.endian = ">" if e else "<"
    meta.long_size = c.u8("long size")
    meta.page_size = c.u32("page size")
    if meta.page_size <= 0 or meta.page_size > (1 << 24) or meta.page_size % 4:
        raise c.error(f"Page size {meta.page_size}; expected a multiple of 4 up to 16 MiB", c.pos - 4)
    if meta.version >= 7:
        _read_v7_rest(buf, meta, c, strict)
        return meta
    _read_header_info(c, meta)
    _read_ftrace_events(c, meta)
    _read_event_formats(c, meta)
    meta.kallsyms_raw = _read_sized(c, 4, "kallsyms")
    meta.printk_raw = _read_sized(c, 4, "printk formats")
    meta.cmdlines_raw = _read_sized(c, 8, "cmdlines")
    _read_v6_rest(buf, meta, c)
    return meta
