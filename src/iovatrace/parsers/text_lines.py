"""The line grammar of ftrace text: tracefs ``trace``/``trace_pipe`` and ``trace-cmd report`` output.

Theory of operation: every event line has the same skeleton whatever the producer::

    [instance: ]<comm>-<pid> [(<tgid>)] [<cpu>] [<flags>] <sec>.<frac>: <event>: <body>     (trace, report)
    <comm>-<pid> <cpu><flags> <sec>.<frac>: <event>: <body>                               (report -l)

``comm`` may hold spaces, ``-``, ``:`` and parentheses, so it is matched lazily up to the last ``-<pid>`` that is
followed by the CPU column. One regex (:data:`LINE_RE`) is applied to all lines at once with polars (Rust regex),
so no per-line Python runs for event lines. Lines that do not match are classified by a second, small set of
patterns (headers, ``cpus=N``, ``CPU:n [LOST n EVENTS]`` markers) and the rest are counted as skipped with a reason
(strict mode raises on the first one, naming file:line).

The flags column (``irqs-off``, ``need-resched``, ``hardirq/softirq``, ``preempt-depth``, ``migrate-disable``) is
mapped back to ``common_flags``/``common_preempt_count`` bits as the kernel's ``trace_print_lat_fmt`` prints them.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import TraceFormatError

__all__ = ["LINE_RE", "read_text", "split_lines", "SplitLines", "decode_flags", "sniff_text"]

LINE_RE = (
    r"^(?:(?P<inst>[A-Za-z_][\w.-]*): +)?\s*(?P<comm>.*?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?P<tgid>-+|\d+)\)\s+)?"
    r"(?:\[(?P<cpu>\d+)\]\s+(?:(?P<flags>[^\s:]{2,8})\s+)?|(?P<lcpu>\d+)(?P<lflags>[^\s\d:][^\s:]{1,7})\s+)"
    r"(?P<secs>\d+)(?:\.(?P<frac>\d+))?:\s+(?P<event>[^\s:]+):\s*(?P<body>.*)$"
)
_HEAD = 256
_LOST_RE = re.compile(
    r"^\s*(?:CPU:?\s*(?P<cpu>\d+)\s*)?\[(?:LOST (?P<n1>\d+) EVENTS|(?P<n2>\d+) EVENTS DROPPED|EVENTS DROPPED)\]\s*$"
)
_IGNORABLE = [
    ("header", re.compile(r"^\s*#")),
    ("blank", re.compile(r"^\s*$")),
    ("cpus", re.compile(r"^cpus=\d+\s*$")),
    ("version", re.compile(r"^version = \d+\s*$")),
    ("empty_cpu", re.compile(r"^CPU \d+ is empty\s*$")),
]
_ENTRIES_RE = re.compile(r"entries-in-buffer/entries-written:\s*(\d+)/(\d+)\s+#P:(\d+)")
_SNIFF_RE = re.compile(LINE_RE.replace("(?P<body>.*)$", ""), re.M)

# need-resched column: kernel trace_print_lat_fmt (NEED_RESCHED 0x04, PREEMPT_RESCHED 0x20, and on newer kernels
# NEED_RESCHED_LAZY in bit 0x02).
_RESCHED = {".": 0, "N": 0x24, "n": 0x04, "p": 0x20, "L": 0x22, "b": 0x06, "B": 0x26, "l": 0x02}
_IRQS = {".": 0, "d": 0x01, "X": 0x02, "b": 0x80, "D": 0x81}
_HARDSOFT = {".": 0, "h": 0x08, "s": 0x10, "H": 0x18, "z": 0x40, "Z": 0x48}


def read_text(path: str | Path) -> str:
    """Read a text trace, gunzipping ``.gz`` (by magic, not by name) transparently.

    Args:
        path: the file.

    Returns:
        Its text (invalid UTF-8 bytes replaced, so a damaged byte cannot abort the read).

    Raises:
        TraceFormatError: if the file cannot be read or the gzip stream is damaged.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TraceFormatError(f"Cannot read text trace: {exc}", path=str(p)) from None
    return raw.decode("utf-8", errors="replace")


def sniff_text(head: bytes) -> bool:
    """True if ``head`` (the first KiB of a file, possibly gzip) looks like ftrace text."""
    if head[:2] == b"\x1f\x8b":
        try:
            # A streaming decompressor accepts the truncated gzip stream a head is.
            head = zlib.decompressobj(wbits=31).decompress(head, 1 << 16)
        except zlib.error:
            return False
    text = head.decode("utf-8", errors="replace")
    if text.startswith("# tracer:") or re.match(r"^(version = \d+\n)?(CPU \d+ is empty\n)*cpus=\d+\n", text):
        return True
    return _SNIFF_RE.search(text) is not None


@dataclass
class SplitLines:
    """Event lines split into columns, and what else the file held.

    Attributes:
        frame: one row per event line: ``line`` (1-based), ``inst``, ``comm``, ``pid``, ``tgid``, ``cpu``,
            ``flags_text`` (null when absent), ``ts_ns``, ``frac_digits`` (null for raw clock values, which are
            kept as they are in ``ts_ns``), ``event``, ``body``.
        lost: ``(line, cpu or -1, count or -1, marker text)`` per loss marker.
        skipped: reason → count of lines that are neither events nor known non-event lines.
        first_bad: reason → (line, excerpt) of the first such line.
        header: values read from a tracefs header (``entries``, ``written``, ``cpus``) or ``cpus=`` line.
        producer: ``ftrace`` (tracefs text: header or flags column) or ``trace-cmd`` (``cpus=`` first line).
    """

    frame: pl.DataFrame
    lost: list[tuple[int, int, int, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    first_bad: dict[str, tuple[int, str]] = field(default_factory=dict)
    header: dict[str, int] = field(default_factory=dict)
    producer: str = "ftrace"


def split_lines(text: str, *, path: str = "<text>", strict: bool = False) -> SplitLines:
    """Split a whole text trace into event columns.

    Args:
        text: the file's text.
        path: for error messages.
        strict: raise on the first line that is not understood instead of counting it.

    Returns:
        A :class:`SplitLines`.

    Raises:
        TraceFormatError: in strict mode, for the first unrecognised line (file:line and an excerpt).
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    s = pl.Series("raw", lines, dtype=pl.String)
    # Capturing regexes are slow on long lines: match the line head only (comm, pid, cpu, flags, ts and event
    # name fit in _HEAD chars), then cut the body out of the full line by position.
    head = s.str.slice(0, _HEAD)
    parts = head.str.extract_groups(LINE_RE).struct.unnest()
    body_start = head.str.len_chars() - parts["body"].str.len_chars()
    parts = parts.with_columns(body=pl.when(pl.col("body").is_not_null()).then(s.str.slice(body_start)))
    df = pl.concat([pl.DataFrame({"line": pl.int_range(1, len(lines) + 1, eager=True, dtype=pl.UInt32)}), parts],
                   how="horizontal")
    is_event = df["event"].is_not_null()
    out = SplitLines(pl.DataFrame())
    head = "\n".join(lines[:20])
    m = _ENTRIES_RE.search(head)
    if m:
        out.header.update(entries=int(m.group(1)), written=int(m.group(2)), cpus=int(m.group(3)))
    m2 = re.search(r"^cpus=(\d+)$", head, re.M)
    if m2:
        out.header["cpus"] = int(m2.group(1))
        out.producer = "trace-cmd"
    bad_idx = np.flatnonzero(~is_event.to_numpy())
    for i in bad_idx.tolist():
        ln = lines[i]
        lm = _LOST_RE.match(ln)
        if lm:
            cpu = int(lm.group("cpu")) if lm.group("cpu") else -1
            n = lm.group("n1") or lm.group("n2")
            out.lost.append((i + 1, cpu, int(n) if n else -1, ln.strip()))
            continue
        reason = next((r for r, rx in _IGNORABLE if rx.match(ln)), None)
        if reason is not None:
            continue
        reason = "unrecognised_line"
        if strict:
            raise TraceFormatError(
                "Cannot parse ftrace text line: expected '<comm>-<pid> [<cpu>] <secs>.<frac>: <event>: ...'",
                path=path, line=i + 1, excerpt=ln[:80],
            )
        out.skipped[reason] = out.skipped.get(reason, 0) + 1
        out.first_bad.setdefault(reason, (i + 1, ln[:80]))
    ev = df.filter(is_event)
    # No fraction: a clock that does not count nanoseconds (counter, x86-tsc, uptime) prints raw clock values.
    frac_len = ev["frac"].str.len_chars().fill_null(0)
    raw_clock = ev["frac"].is_null()
    ev = ev.with_columns(
        cpu=pl.coalesce("cpu", "lcpu").cast(pl.UInt32),
        flags_text=pl.coalesce("flags", "lflags"),
        pid=pl.col("pid").cast(pl.Int32),
        tgid=pl.col("tgid").cast(pl.Int32, strict=False),
        ts_ns=pl.when(raw_clock).then(pl.col("secs").cast(pl.UInt64)).otherwise(
            pl.col("secs").cast(pl.UInt64) * 1_000_000_000
            + pl.col("frac").str.slice(0, 9).cast(pl.UInt64)
            * pl.lit(10, dtype=pl.UInt64).pow(9 - frac_len.clip(0, 9).cast(pl.UInt64))),
        frac_digits=pl.when(raw_clock).then(pl.lit(None, pl.UInt8)).otherwise(frac_len.cast(pl.UInt8)),
    ).select("line", "inst", "comm", "pid", "tgid", "cpu", "flags_text", "ts_ns", "frac_digits", "event", "body")
    if ev["flags_text"].is_not_null().any():
        out.producer = "ftrace" if out.producer != "trace-cmd" else out.producer
    out.frame = ev
    return out


def decode_flags(flags_text: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map the latency-format flags column back to ``common_flags`` and ``common_preempt_count``.

    Args:
        flags_text: strings such as ``dN.1.``, ``.Ns1.`` (kernel, 4–5 chars) or null (column absent).

    Returns:
        ``(flags u8, preempt u8, valid bool)``; ``valid`` is False where the column was absent or not understood
        (flags/preempt are 0 there).
    """
    # The column holds few distinct values: decode each distinct string once, then map the column.
    uniq = flags_text.unique().drop_nulls().to_list()
    codes = {u: _decode_one(u) or (0, 0, False) for u in uniq}
    keys = list(codes)
    fl = flags_text.replace_strict(keys, [codes[k][0] for k in keys], default=0, return_dtype=pl.UInt8)
    pc = flags_text.replace_strict(keys, [codes[k][1] for k in keys], default=0, return_dtype=pl.UInt8)
    ok = flags_text.replace_strict(keys, [codes[k][2] for k in keys], default=False, return_dtype=pl.Boolean)
    return fl.fill_null(0).to_numpy(), pc.fill_null(0).to_numpy(), ok.fill_null(False).to_numpy()


def _decode_one(s: str) -> tuple[int, int, bool] | None:
    if len(s) < 4:
        return None
    irq, res, hs, pd = s[0], s[1], s[2], s[3]
    md = s[4] if len(s) > 4 else "."
    if irq not in _IRQS or res not in _RESCHED or hs not in _HARDSOFT:
        return None
    try:
        p = 0 if pd == "." else int(pd, 16)
        mg = 0 if md == "." else int(md, 16)
    except ValueError:
        return None
    return _IRQS[irq] | _RESCHED[res] | _HARDSOFT[hs], (p & 0xF) | ((mg & 0xF) << 4), True
