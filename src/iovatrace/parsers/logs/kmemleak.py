"""kmemleak reports: every object of every block, in every format from 2.6.31 to 6.13+.

Theory of operation: kmemleak prints one record per unreferenced object (``print_unreferenced()`` in
mm/kmemleak.c), either to ``/sys/kernel/debug/kmemleak`` or, with ``kmemleak.verbose=1``, to the console, where
every line carries the ``kmemleak: `` pr_fmt prefix. A record is::

    unreferenced object 0x<addr> (size <N>):
      comm "<comm>", pid <pid>, jiffies <j>[ (age <s>.<ms>s)]       <- age up to 6.7
      hex dump (first <M> bytes):                                  <- absent in the 2.6.31 original
        xx xx ... xx  <ascii>                                      <- ceil(M/16) rows
      backtrace:  |  backtrace (crc <hex>):                        <- crc from 6.8
        [<addr>] sym+0xoff/0xsize [module]                         <- no [<addr>] column from 6.13

The parser is a small line state machine over :func:`~iovatrace.parsers.logs.lines.iter_log_lines` output
(transport prefixes already gone). A record starts at an ``unreferenced object`` header and ends at the next
header, a blank line, or a line that is not indented (``BUG: memory leak`` from syzkaller's executor, the
``N new suspected memory leaks`` summary, any other printk). When the header carried the ``kmemleak:`` prefix,
unprefixed lines inside the record are other CPUs' printk output interleaved with ours: they are skipped and
counted, not taken as the end. Nothing here knows what the objects mean; :mod:`iovatrace.analysis.leaks` does.

Damage policy: a record whose header or comm line cannot be read, or whose hex dump has fewer bytes than its
``first M bytes`` header promised, raises :class:`~iovatrace.errors.LogFormatError` naming the line, unless the
caller asks for ``lenient=True``; then the object is kept with ``issues`` filled and the skip is counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...errors import LogFormatError
from .lines import LogLine, iter_log_lines

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "KmemleakFrame",
    "KmemleakObject",
    "KmemleakReport",
    "UnusableReportError",
    "parse_frame",
    "parse_kmemleak",
    "iter_kmemleak_objects",
    "has_kmemleak_header",
    "kmemleak_tables",
    "render_kmemleak_object",
]


class UnusableReportError(LogFormatError):
    """A report that cannot be used at all (no objects, truncated dumps, garbage); the CLI exits with status 2."""

    exit_code = 2


_PREFIX_RE = re.compile(r"^kmemleak: ?")
# "(percpu)"/"(phys)" variants seen only in unconfirmed copies; accepted, never required.
_HEADER_RE = re.compile(
    r"^unreferenced object(?: \((?P<kind>percpu|phys)\))? 0x(?P<addr>[0-9a-fA-F]+) \(size (?P<size>\d+)\):\s*$"
)
_HEADER_LOOSE_RE = re.compile(r"^unreferenced object\b")
_COMM_RE = re.compile(
    r'^comm "(?P<comm>.*)", pid (?P<pid>-?\d+), jiffies (?P<jiffies>\d+)'
    r"(?: \(age (?P<age_s>\d+)\.(?P<age_ms>\d{1,3})s\))?\s*$"
)
_HEX_HEADER_RE = re.compile(r"^hex dump \(first (?P<n>\d+) bytes\):\s*$")
_BT_HEADER_RE = re.compile(r"^backtrace(?: \(crc (?P<crc>[0-9a-fA-F]+)\))?:\s*$")
# Hex rows end at the double space before the ASCII column; groups of 1, 2, 4 or 8 bytes.
_HEX_ROW_RE = re.compile(r"^(?P<hex>(?:[0-9a-fA-F]{2}){1,8}(?: (?:[0-9a-fA-F]{2}){1,8})*)(?:  .*)?$")
# One backtrace frame in any of its forms (see module docstring and the format notes).
_FRAME_RE = re.compile(
    r"^(?:\[<(?P<addr>[0-9a-fA-F]+|\(____ptrval____\))>\]\s+)?"
    r"(?:(?P<raw>0x[0-9a-fA-F]+)"
    r"|(?P<sym>[^\s\[\]+]+?)(?:\+0x(?P<off>[0-9a-fA-F]+)/0x(?P<size>[0-9a-fA-F]+))?)"
    r"(?: (?P<file>[\w./-]+):(?P<line>\d+))?"
    r"(?: \[(?P<bracket>[^\]]+)\])?"
    r"(?: \[(?P<bracket2>[^\]]+)\])?\s*$"
)


@dataclass(frozen=True, slots=True)
class KmemleakFrame:
    """One backtrace frame.

    Attributes:
        symbol: function name (``None`` for a bare address such as the ``0xffffffff`` end sentinel).
        offset: offset into the function (``+0x1e8``), if printed.
        size: size of the function (``/0x320``), if printed.
        module: ``[module]`` (or the module part of ``[module buildid]``), if printed.
        address: the ``[<addr>]`` column when it is a real kernel address; ``None`` when hashed, hidden or absent.
        address_kind: ``"real"``, ``"hashed"`` (``%p`` hash, 4.15-6.1), ``"hidden"`` (zeros from ``%pK``),
            ``"none"`` (6.13+: no column).
        address_text: the column exactly as printed (hex digits), or ``None``.
        file: source file of a symbolised (syzbot-style) frame.
        line: source line of a symbolised frame.
        inline: the frame was printed with ``[inline]``.
        text: the frame line as printed.
    """

    symbol: str | None
    offset: int | None
    size: int | None
    module: str | None
    address: int | None
    address_kind: str
    address_text: str | None
    file: str | None
    line: int | None
    inline: bool
    text: str


@dataclass(slots=True)
class KmemleakObject:
    """One ``unreferenced object`` record.

    Attributes:
        address: the object's address.
        size: its size in bytes as kmemleak recorded it (the slab's object size).
        comm: ``comm`` of the allocating task (``"softirq"``/``"hardirq"`` with pid 0 in interrupt context).
        pid: pid of the allocating task.
        jiffies: jiffies at allocation (HZ unknown).
        age_ms: ``(age s.mss)`` in milliseconds, up to 6.7; ``None`` from 6.8.
        crc: ``backtrace (crc …)`` value from 6.8 (kmemleak's checksum of the object's contents, not of the trace).
        hexdump_len: bytes the ``hex dump (first N bytes)`` header promised; ``None`` without a hex dump.
        hexdump: the bytes read from the dump rows.
        frames: backtrace frames, innermost first.
        line: 1-based line of the header in the input.
        end_line: last line that belonged to the record.
        prefixed: the record came through the console (``kmemleak:`` prefix).
        kind: ``"percpu"``/``"phys"`` for those (unconfirmed) header variants, else ``None``.
        lines: the record's lines as ``(line number, text)``, for evidence.
        issues: what was wrong with the record (lenient mode only).
        ts: printk timestamp (seconds) of the header line, when the record came through dmesg.
    """

    address: int
    size: int
    comm: str | None = None
    pid: int | None = None
    jiffies: int | None = None
    age_ms: int | None = None
    crc: int | None = None
    hexdump_len: int | None = None
    hexdump: bytes = b""
    frames: list[KmemleakFrame] = field(default_factory=list)
    line: int = 0
    end_line: int = 0
    prefixed: bool = False
    kind: str | None = None
    lines: list[tuple[int, str]] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    ts: float | None = None

    @property
    def format(self) -> str:
        """Which kmemleak print format the record follows (decides what the kernel can be).

        Returns:
            ``"2.6.31"`` (no hex dump, no age), ``"<=6.7"`` (age), ``"6.8-6.12"`` (crc and an address column),
            ``">=6.13"`` (crc, no address column), or ``"unknown"``.
        """
        if self.crc is not None:
            if self.frames and all(f.address_kind == "none" for f in self.frames):
                return ">=6.13"
            return "6.8-6.12"
        if self.age_ms is not None:
            return "<=6.7"
        if self.hexdump_len is None:
            return "2.6.31"
        return "unknown"

    @property
    def hexdump_complete(self) -> bool:
        """True when the dump holds every byte its header promised."""
        return self.hexdump_len is None or len(self.hexdump) >= self.hexdump_len

    def words(self, width: int = 8) -> list[int]:
        """The hex dump as little-endian words of ``width`` bytes (a trailing partial word is dropped)."""
        n = len(self.hexdump) // width
        return [int.from_bytes(self.hexdump[i * width:(i + 1) * width], "little") for i in range(n)]


@dataclass(slots=True)
class KmemleakReport:
    """Everything :func:`parse_kmemleak` found.

    Attributes:
        objects: the records in input order.
        skipped: counts of lines or records skipped, by reason.
        summary_counts: the ``N new suspected memory leaks`` numbers seen on the console.
        path: the input's name.
    """

    objects: list[KmemleakObject]
    skipped: Counter[str]
    summary_counts: list[int]
    path: str | None = None


_SUMMARY_RE = re.compile(r"^kmemleak: (\d+) new suspected memory leaks")


def _classify_address(text: str) -> tuple[int | None, str]:
    if text == "(____ptrval____)":
        return None, "hashed"
    value = int(text, 16)
    if value == 0:
        return None, "hidden"
    # %p hashes are 32-bit values zero-extended to the pointer width (4.15+): real 64-bit kernel text is never
    # below 2^32. 8-digit columns come from 32-bit kernels and are taken as real.
    if len(text) == 16 and value < (1 << 32):
        return None, "hashed"
    return value, "real"


def parse_frame(text: str) -> KmemleakFrame | None:
    """Parse one backtrace frame line (indentation and prefix already removed).

    Args:
        text: e.g. ``[<ffffffff819f5f08>] __kmem_cache_alloc_node+0x1e8/0x320`` or ``kfree+0x5/0x10 [mod]``.

    Returns:
        The frame, or ``None`` when the line is not a frame.
    """
    m = _FRAME_RE.match(text)
    if m is None:
        return None
    addr_text = m.group("addr")
    if addr_text is None:
        address, kind = None, "none"
    else:
        address, kind = _classify_address(addr_text)
    symbol = m.group("sym")
    raw = m.group("raw")
    if raw is not None and address is None and kind == "none":
        address, kind = int(raw, 16), "real"
    module = None
    inline = False
    for b in (m.group("bracket"), m.group("bracket2")):
        if b is None:
            continue
        if b == "inline":
            inline = True
        else:
            module = b.split()[0]
    if symbol is None and raw is None:
        return None
    return KmemleakFrame(
        symbol=symbol,
        offset=int(m.group("off"), 16) if m.group("off") else None,
        size=int(m.group("size"), 16) if m.group("size") else None,
        module=module,
        address=address,
        address_kind=kind,
        address_text=None if addr_text is None else addr_text,
        file=m.group("file"),
        line=int(m.group("line")) if m.group("line") else None,
        inline=inline,
        text=text,
    )


def _hex_row_bytes(hex_part: str) -> bytes:
    out = bytearray()
    for tok in hex_part.split():
        b = bytes.fromhex(tok)
        # print_hex_dump with a group size > 1 prints each group as a native-endian number; we assume
        # little-endian (x86-64, arm64) and undo it so the bytes read in memory order.
        out += b[::-1] if len(b) > 1 else b
    return bytes(out)


def has_kmemleak_header(text: str) -> bool:
    """True when ``text`` (one log line, transport prefixes removed) starts a kmemleak record."""
    return bool(_HEADER_LOOSE_RE.match(_PREFIX_RE.sub("", text, count=1)))


class _Parser:
    """Line state machine; see the module docstring."""

    def __init__(self, path: str | None, lenient: bool) -> None:
        self.path = path
        self.lenient = lenient
        self.skipped: Counter[str] = Counter()
        self.summary_counts: list[int] = []
        self.obj: KmemleakObject | None = None
        self.section = "comm"  # comm -> hex / bt -> done

    def _fail(self, ln: LogLine, message: str) -> None:
        if self.lenient and self.obj is not None:
            self.obj.issues.append(f"line {ln.lineno}: {message}")
            self.skipped[message.split(":")[0]] += 1
            return
        raise UnusableReportError(message, path=self.path, line=ln.lineno, excerpt=ln.raw.strip()[:80])

    def _close(self, at: LogLine | None) -> KmemleakObject | None:
        obj = self.obj
        self.obj = None
        if obj is None:
            return None
        if not obj.hexdump_complete:
            where = at if at is not None else LogLine(obj.end_line + 1, "", "")
            self.obj = obj  # let _fail attach the issue
            self._fail(where, f"Cannot read the hex dump of object 0x{obj.address:x}: expected {obj.hexdump_len} "
                              f"bytes, found {len(obj.hexdump)} (truncated report)")
            self.obj = None
        if obj.comm is None:
            self.obj = obj
            self._fail(LogLine(obj.line + 1, "", ""), f"Cannot read object 0x{obj.address:x}: "
                                                      "expected a 'comm \"…\", pid N, jiffies N' line")
            self.obj = None
        return obj

    def feed(self, ln: LogLine) -> Iterator[KmemleakObject]:
        text = ln.text
        prefixed = False
        m = _PREFIX_RE.match(text)
        if m:
            s = _SUMMARY_RE.match(text)
            if s:
                self.summary_counts.append(int(s.group(1)))
            text = text[m.end():]
            prefixed = True
        body = text.strip()
        if _HEADER_LOOSE_RE.match(text):
            done = self._close(ln)
            if done is not None:
                yield done
            h = _HEADER_RE.match(body)
            if h is None:
                raise UnusableReportError(
                    "Cannot parse kmemleak header: expected 'unreferenced object 0x<hex> (size <N>):'",
                    path=self.path, line=ln.lineno, excerpt=body[:80])
            self.obj = KmemleakObject(address=int(h.group("addr"), 16), size=int(h.group("size")), line=ln.lineno,
                                      end_line=ln.lineno, prefixed=prefixed, kind=h.group("kind"), ts=ln.ts)
            self.obj.lines.append((ln.lineno, body))
            self.section = "comm"
            return
        obj = self.obj
        if obj is None:
            return
        if obj.prefixed and not prefixed and body:
            if self.section == "comm" and text[:1] == " " and _COMM_RE.match(body):
                # 2.6.31 printed the prefix in the header's format string only; its other lines have none.
                obj.prefixed = False
            else:
                self.skipped["interleaved line inside a console record"] += 1
                return
        indented = text[:1] in (" ", "\t")
        if not body or not indented:
            done = self._close(ln)
            if done is not None:
                yield done
            return
        obj.end_line = ln.lineno
        obj.lines.append((ln.lineno, body))
        if self.section == "comm":
            c = _COMM_RE.match(body)
            if c is None:
                self._fail(ln, "Cannot parse kmemleak comm line: expected 'comm \"<comm>\", pid <N>, jiffies <N>'")
                self.section = "any"
                return
            obj.comm = c.group("comm")
            obj.pid = int(c.group("pid"))
            obj.jiffies = int(c.group("jiffies"))
            if c.group("age_s") is not None:
                obj.age_ms = int(c.group("age_s")) * 1000 + int(c.group("age_ms").ljust(3, "0"))
            self.section = "any"
            return
        hh = _HEX_HEADER_RE.match(body)
        if hh:
            obj.hexdump_len = int(hh.group("n"))
            self.section = "hex"
            return
        bh = _BT_HEADER_RE.match(body)
        if bh:
            if not obj.hexdump_complete:
                self._fail(ln, f"Cannot read the hex dump of object 0x{obj.address:x}: expected "
                               f"{obj.hexdump_len} bytes, found {len(obj.hexdump)} before the backtrace "
                               "(truncated report)")
                obj.hexdump_len = len(obj.hexdump)
            if bh.group("crc") is not None:
                obj.crc = int(bh.group("crc"), 16)
            self.section = "bt"
            return
        if self.section == "hex":
            r = _HEX_ROW_RE.match(body)
            if r is None:
                self._fail(ln, f"Cannot parse hex dump row of object 0x{obj.address:x}: expected "
                               "'xx xx … xx  <ascii>'")
                self.section = "any"
                return
            obj.hexdump += _hex_row_bytes(r.group("hex"))
            if obj.hexdump_len is not None and len(obj.hexdump) >= obj.hexdump_len:
                obj.hexdump = obj.hexdump[:obj.hexdump_len]
                self.section = "any"
            return
        if self.section == "bt":
            fr = parse_frame(body)
            if fr is None:
                self._fail(ln, "Cannot parse backtrace frame: expected '[<addr>] symbol+0xoff/0xsize' "
                               "or 'symbol+0xoff/0xsize'")
                return
            obj.frames.append(fr)
            return
        self._fail(ln, f"Cannot parse line of object 0x{obj.address:x}: expected 'hex dump (first N bytes):' "
                       "or 'backtrace:'")

    def finish(self) -> Iterator[KmemleakObject]:
        done = self._close(None)
        if done is not None:
            yield done


def iter_kmemleak_objects(
    data: str | bytes | Iterable[str], *, path: str | None = None, lenient: bool = False,
    skipped: Counter[str] | None = None,
) -> Iterator[KmemleakObject]:
    """Yield every kmemleak record in a log, in input order.

    Args:
        data: the log (str, bytes or lines); dmesg, debugfs, syslog, mail copies all work.
        path: the input's name, for error messages.
        lenient: keep damaged records (with ``issues``) instead of raising.
        skipped: if given, receives counts of what was skipped, by reason.

    Yields:
        :class:`KmemleakObject` records.

    Raises:
        UnusableReportError: (a :class:`LogFormatError`) on a damaged record unless ``lenient``.
    """
    p = _Parser(path, lenient)
    for ln in iter_log_lines(data, strip_mail_quotes=True):
        yield from p.feed(ln)
    yield from p.finish()
    if skipped is not None:
        skipped.update(p.skipped)


def parse_kmemleak(data: str | bytes | Iterable[str], *, path: str | None = None,
                   lenient: bool = False) -> KmemleakReport:
    """Parse every kmemleak record of a log.

    Args:
        data: the log (str, bytes or lines).
        path: the input's name, for error messages.
        lenient: keep damaged records (with ``issues``) instead of raising.

    Returns:
        A :class:`KmemleakReport` (possibly with no objects).

    Raises:
        UnusableReportError: on a damaged record unless ``lenient``.
    """
    p = _Parser(path, lenient)
    objs: list[KmemleakObject] = []
    for ln in iter_log_lines(data, strip_mail_quotes=True):
        objs.extend(p.feed(ln))
    objs.extend(p.finish())
    return KmemleakReport(objs, p.skipped, p.summary_counts, path)


def kmemleak_tables(objects: Iterable[KmemleakObject]) -> dict[str, "pa.Table"]:
    """Arrow tables of parsed records: ``kmemleak_objects`` and ``kmemleak_frames``.

    Args:
        objects: records from :func:`parse_kmemleak`.

    Returns:
        ``{"kmemleak_objects": …, "kmemleak_frames": …}`` following :data:`iovatrace.schema.KMEMLEAK_OBJECTS`
        and :data:`iovatrace.schema.KMEMLEAK_FRAMES`.
    """
    import pyarrow as pa

    from ...schema import KMEMLEAK_FRAMES, KMEMLEAK_OBJECTS

    orows: dict[str, list[object]] = {f.name: [] for f in KMEMLEAK_OBJECTS}
    frows: dict[str, list[object]] = {f.name: [] for f in KMEMLEAK_FRAMES}
    for i, o in enumerate(objects):
        for k, v in (("object_id", i), ("line", o.line), ("address", o.address), ("size", o.size),
                     ("comm", o.comm), ("pid", o.pid), ("jiffies", o.jiffies), ("age_ms", o.age_ms),
                     ("crc", o.crc), ("hexdump_len", o.hexdump_len),
                     ("hexdump", o.hexdump if o.hexdump_len is not None else None),
                     ("n_frames", len(o.frames)), ("format", o.format), ("prefixed", o.prefixed)):
            orows[k].append(v)
        for j, f in enumerate(o.frames):
            for k, v in (("object_id", i), ("frame", j), ("symbol", f.symbol), ("offset", f.offset),
                         ("size", f.size), ("module", f.module), ("address", f.address),
                         ("address_kind", f.address_kind), ("file", f.file), ("src_line", f.line),
                         ("inline", f.inline)):
                frows[k].append(v)
    return {
        "kmemleak_objects": pa.table(orows, schema=KMEMLEAK_OBJECTS),
        "kmemleak_frames": pa.table(frows, schema=KMEMLEAK_FRAMES),
    }


def render_kmemleak_object(obj: KmemleakObject, fmt: str = "<=6.7", *, prefixed: bool = False) -> str:
    """Print a record the way a given kernel's kmemleak would (synthetic reports, round-trip tests, the replay).

    Args:
        obj: the record; its ``hexdump`` is printed as ``first len(hexdump) bytes`` and its frames' ``address``
            (or ``address_text``) fill the ``[<addr>]`` column.
        fmt: ``"2.6.31"`` (no hex dump, no age), ``"<=6.7"`` (age, ``backtrace:``), ``"6.8-6.12"``
            (``backtrace (crc …):``) or ``">=6.13"`` (no address column).
        prefixed: add the console's ``kmemleak: `` prefix to every line.

    Returns:
        The record's text, lines ending in ``\\n``.
    """
    lines = [f"unreferenced object 0x{obj.address:08x} (size {obj.size}):"]
    comm = f'  comm "{obj.comm}", pid {obj.pid}, jiffies {obj.jiffies}'
    if fmt == "<=6.7" and obj.age_ms is not None:
        comm += f" (age {obj.age_ms // 1000}.{obj.age_ms % 1000:03d}s)"
    lines.append(comm)
    if fmt != "2.6.31":
        lines.append(f"  hex dump (first {len(obj.hexdump)} bytes):")
        for i in range(0, len(obj.hexdump), 16):
            row = obj.hexdump[i:i + 16]
            asc = "".join(chr(b) if 0x20 <= b < 0x7f else "." for b in row)
            lines.append(f"    {row.hex(' '):<47}  {asc}")
    lines.append(f"  backtrace (crc {obj.crc or 0:x}):" if fmt in ("6.8-6.12", ">=6.13") else "  backtrace:")
    for f in obj.frames:
        sym = f.symbol if f.symbol is not None else f"0x{f.address or 0:x}"
        if f.offset is not None and f.size is not None:
            sym += f"+0x{f.offset:x}/0x{f.size:x}"
        if f.module:
            sym += f" [{f.module}]"
        if fmt == ">=6.13":
            lines.append(f"    {sym}")
        else:
            col = f.address_text if f.address_text is not None else f"{f.address or 0:016x}"
            lines.append(f"    [<{col}>] {sym}")
    pre = "kmemleak: " if prefixed else ""
    return "".join(f"{pre}{ln}\n" for ln in lines)
