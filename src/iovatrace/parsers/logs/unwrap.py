"""Undo mail wrapping of kernel log lines.

Theory of operation: kernel logs pasted into mail get long lines broken in two. ``format=flowed`` mail keeps a
trailing space on each soft-broken line; hand-wrapped or client-wrapped text does not, but the fragments that
follow lack the ``[ ts]`` prefix every real line has. A fragment is glued back onto the line before it when

* the previous line carried a timestamp or caller tag and the fragment carries neither, and
* the previous raw line ends in a space (format=flowed), or it is one of the records the kernel prints as one
  long line (``CPU:``/``Hardware name:``/``Code:``/register dumps/``Modules linked in:``/``Kernel Offset:``/
  the ``BUG: ... address:`` line) and was not already complete.

Lines of a log without timestamps are never joined: there is nothing to tell a fragment from a line. Joining
is by plain concatenation, which is exact for both soft (trailing space kept) and column wraps (the fragment keeps
its leading space).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace

from .lines import LogLine

__all__ = ["unwrap_lines"]

_LONG_RECORD = re.compile(
    r"^\s*(?:CPU: |Hardware name: |Code: |Modules linked in:|Kernel Offset: |RSP: |RIP: |[RE][A-Z0-9]{1,2}: |"
    r"R\d\d: |FS: |CR2: |CS: |DR\d: |BUG: .*address: ?$|Tainted: )"
)
# A fragment that is itself clearly a kernel record is never glued on.
_RECORD_START = re.compile(r"^\s*(?:\[|<\d+>|[A-Z][A-Za-z ]{2,30}:\s)")


def unwrap_lines(lines: Iterable[LogLine], max_len: int = 65536) -> Iterator[LogLine]:
    """Yield log lines with mail-wrapped fragments joined onto their line (line number of the first part).

    Args:
        lines: lines from :func:`.lines.iter_log_lines`.
        max_len: joined lines never grow beyond this many characters.
    """
    prev: LogLine | None = None
    for ln in lines:
        if prev is not None and _is_fragment(prev, ln) and len(prev.text) < max_len:
            prev = replace(prev, text=prev.text + ln.text, raw=prev.raw + "\n" + ln.raw)
            continue
        if prev is not None:
            yield prev
        prev = ln
    if prev is not None:
        yield prev


def _is_fragment(prev: LogLine, ln: LogLine) -> bool:
    if ln.ts is not None or ln.caller is not None or not ln.text.strip():
        return False
    if prev.ts is None and prev.caller is None:
        return False
    if prev.raw.endswith(" ") and not prev.raw.endswith("  "):
        return not ln.text.startswith("[")
    if _LONG_RECORD.match(prev.text):
        return not _RECORD_START.match(ln.text)
    return False
