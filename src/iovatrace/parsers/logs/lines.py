"""Kernel log lines: strip what transport added, keep what the kernel printed.

Theory of operation: the same ``printk`` text reaches us through dmesg, serial consoles, journald/syslog exports
and mail. Each route prefixes lines differently (``<4>`` levels, ``[  12.345678]`` timestamps, ``[T123]``/``[C4]``
caller tags, ``Dec 28 14:23:13 host kernel:`` syslog headers, ``kernel:`` alone, ``> `` mail quotes) and may end
them with CRLF. :func:`iter_log_lines` peels those layers off every line and yields :class:`LogLine` objects that
keep the original line number, so every report parser works on the kernel's own text and can still point back at
the input. Mail-wrapping (a long line broken in two) is left to the report parsers: only they know what a complete
line looks like.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["LogLine", "iter_log_lines", "split_lines", "strip_prefixes"]

# Syslog/journal headers: "Dec 28 14:23:13 host kernel: ", ISO timestamps "2023-12-28T14:23:13.123+02:00 host kernel: ".
_SYSLOG_RE = re.compile(
    r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r"\s+\S+\s+kernel(?:\[\d+\])?:\s?"
)
_KERNEL_RE = re.compile(r"^kernel(?:\[\d+\])?:\s?")
# i915 CI and some consoles print "<4> [18.297089] ...": the level, one space, then the timestamp.
_LEVEL_RE = re.compile(r"^<(\d{1,2})>(?: (?=\[\s*\d+\.\d+\]))?")
_TS_RE = re.compile(r"^\[\s*(\d+\.\d+)\]\s?")
_CALLER_RE = re.compile(r"^\[\s*([TC])\s*(\d+)\]\s?")
_QUOTE_RE = re.compile(r"^(?:> ?)+")
_PREFIX_START = frozenset("<[kJFMASOND0123456789")
_HOST_KERNEL_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,63} kernel(?:\[\d+\])?: ?")
_CONSOLE_RE = re.compile(
    r"^(?:<(\d{1,2})>(?: (?=\[\s*\d+\.\d+\]))?)?\[\s*(\d+\.\d+)\]\s?(?:\[\s*([TC])\s*(\d+)\]\s?)?"
)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a kernel log with its transport prefixes removed.

    Attributes:
        lineno: 1-based line number in the input.
        text: what the kernel printed (no timestamp, level, caller tag or syslog header; no line ending).
        raw: the line as it was in the input (without the line ending).
        ts: the ``[ seconds.micro ]`` printk timestamp in seconds, if present.
        level: the ``<N>`` log level, if present.
        caller: ``"T123"`` (task) or ``"C4"`` (CPU) printk caller tag, if present.
    """

    lineno: int
    text: str
    raw: str
    ts: float | None = None
    level: int | None = None
    caller: str | None = None


def strip_prefixes(raw: str) -> tuple[str, float | None, int | None, str | None]:
    """Remove transport prefixes from one line.

    Returns:
        ``(text, ts, level, caller)``.
    """
    s = raw
    ts: float | None = None
    level: int | None = None
    caller: str | None = None
    # Fast path for the common console form "<4>[ ts][ T12] ": the same three layers the loop below peels, in
    # the same order, in one match; the loop then only looks for further layers.
    m = _CONSOLE_RE.match(s)
    if m:
        if m.group(1) is not None:
            level = int(m.group(1))
        ts = float(m.group(2))
        if m.group(3) is not None:
            caller = f"{m.group(3)}{m.group(4)}"
        s = s[m.end():]
        # journalctl -o short-monotonic: "[  599.020261] myhost kernel: BUG: ..." (timestamp, host, "kernel:").
        m = _HOST_KERNEL_RE.match(s)
        if m:
            s = s[m.end():]
    # The layers nest in a known order, but some routes repeat or reorder them; loop until nothing changes.
    for _ in range(6):
        # Fast exit: every prefix starts with one of these characters (syslog: month name or ISO date).
        if not s or s[0] not in _PREFIX_START:
            break
        before = s
        m = _SYSLOG_RE.match(s) or _KERNEL_RE.match(s)
        if m:
            s = s[m.end():]
        m = _LEVEL_RE.match(s)
        if m:
            level = int(m.group(1))
            s = s[m.end():]
        m = _TS_RE.match(s)
        if m:
            ts = float(m.group(1))
            s = s[m.end():]
        m = _CALLER_RE.match(s)
        if m:
            caller = f"{m.group(1)}{m.group(2)}"
            s = s[m.end():]
        if s == before:
            break
    return s, ts, level, caller


def split_lines(data: str | bytes) -> list[str]:
    """Split input into lines on LF, CRLF or CR, decoding bytes as UTF-8 with replacement (logs are not always text)."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    return data.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def iter_log_lines(data: str | bytes | Iterable[str], *, strip_mail_quotes: bool = False) -> Iterator[LogLine]:
    """Yield every line of a log with its transport prefixes removed.

    Args:
        data: the whole log (str or bytes) or an iterable of lines.
        strip_mail_quotes: also remove leading ``> `` mail quoting (for reports quoted in replies).
    """
    lines = split_lines(data) if isinstance(data, (str, bytes)) else (l.rstrip("\r\n") for l in data)
    for lineno, raw in enumerate(lines, 1):
        s = raw
        if strip_mail_quotes:
            s = _QUOTE_RE.sub("", s)
        text, ts, level, caller = strip_prefixes(s)
        yield LogLine(lineno, text, raw, ts, level, caller)
