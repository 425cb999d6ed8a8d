"""Stack frames of a crash report, with the section each one belongs to.

Theory of operation: a report holds several stacks (``Call Trace:`` with nested ``<IRQ>``/``<NMI>``/``<TASK>``
blocks, KASAN's ``Allocated by task N:``/``Freed by task N:``, lockdep's ``-> #1 (...):`` chains and
``... at:`` records, kmemleak's ``backtrace:``). :func:`extract_frames` walks the lines once, tracking the
current *section* (the last stack heading; ``<IRQ>`` and friends nest inside it until their closing tag) and
parses every line that is exactly one frame in one of the architectures' formats:

* x86-64/arm64/riscv: ``[ ? ][<addr>] sym+0xoff/0xsize [module buildid] [file:line] [(P)]``;
* symbolized inline frames ``sym file.h:12 [inline]`` (no offset);
* arm32: ``[<pc>] (sym+0x..) from [<lr>] (caller+0x..)`` (the callee is the frame);
* powerpc: ``[sp] [pc] sym+0x../0x.. [module] (unreliable)``.

``?`` (x86) and ``(unreliable)`` (powerpc) frames are kept with ``reliable = False``: they are stale return
addresses found on the stack, not part of the unwound chain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Frame", "extract_frames", "parse_frame_line"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One stack frame.

    Attributes:
        section: the stack it belongs to (``Call Trace``, ``IRQ``, ``NMI``, ``TASK``, ``Allocated by``,
            ``Freed by``, ``backtrace``, lockdep headings...).
        position: index within the report (0 = first frame printed).
        symbol: function name as printed (``free_iova_rcaches``, ``foo.isra.7``).
        offset, size: ``+0xoff/0xsize`` (``None`` for inline or bare-address frames).
        module: ``[module]`` name, ``None`` for vmlinux.
        address: the ``[<addr>]`` value, if printed.
        reliable: ``False`` for ``?`` and ``(unreliable)`` frames.
        line: 1-based line number in the input.
    """

    section: str
    position: int
    symbol: str
    offset: int | None
    size: int | None
    module: str | None
    address: int | None
    reliable: bool
    line: int


_SYM = r"([A-Za-z_.$][\w.$]*)"
_X86 = re.compile(
    r"^\s*(\? )?(?:\[<?(?:0x)?([0-9a-f]+)>?\]\s+)?(\? )?" + _SYM + r"\+0x([0-9a-f]+)/0x([0-9a-f]+)"
    r"(?: \[([\w-]+)(?: [0-9a-f]+)?\])?(?: (?:\S+:\d+|\(P\)|\[inline\]))*\s*$"
)
_INLINE = re.compile(r"^\s*(\? )?" + _SYM + r" \S+\.[ch]:\d+(?::\d+)? \[inline\]\s*$")
_ARM = re.compile(r"^\s*\[<([0-9a-f]+)>\] \(" + _SYM + r"(?:\+0x([0-9a-f]+)/0x([0-9a-f]+))?(?: \[([\w-]+)\])?\)"
                  r" from \[<[0-9a-f]+>\]")
_PPC = re.compile(r"^\s*\[[0-9a-f]+\] \[([0-9a-f]+)\] " + _SYM + r"\+0x([0-9a-f]+)/0x([0-9a-f]+)"
                  r"(?: \[([\w-]+)\])?( \(unreliable\))?\s*$")
_TAG = re.compile(r"^\s*<(/?)(IRQ|NMI|TASK|EOI|SOFTIRQ)>\s*$")
_HEADING = re.compile(
    r"^\s*(Call [Tt]race|Backtrace|Allocated by task \d+|Freed by task \d+|Allocated|Freed|"
    r"Last potentially related work creation|Second to last potentially related work creation|"
    r"(?:stack )?backtrace(?: \(crc [0-9a-f]+\))?|Uninit was (?:created|stored to memory) at|"
    r"Local variable .* created at|Memory state around the buggy address|Exception stack|"
    r"-> #\d+ \(.*\)\{.*\}|.*state was registered at|.*last (?:en|dis)abled at|Stack|"
    r"(?:read|write)(?:-marked)?(?: \(marked\))? to 0x[0-9a-f]+ of \d+ bytes by (?:task|interrupt) .*)"
    r"(?:[:(].*)?$"
)


def _section_name(heading: str) -> str:
    h = heading.strip().rstrip(":")
    if h.startswith(("Allocated by", "Freed by")):
        return " ".join(h.split()[:2])
    if h.startswith("Call"):
        return "Call Trace"
    if h.startswith("-> #"):
        return h.split(" (")[0]
    if "backtrace" in h and "stack" not in h:
        return "backtrace"
    h = re.sub(r" 0x[0-9a-f]+", " ADDR", h)
    return re.sub(r"\d+", "N", h)[:80]


def parse_frame_line(text: str) -> tuple[str, int | None, int | None, str | None, int | None, bool] | None:
    """Parse one line that holds exactly one frame.

    Returns:
        ``(symbol, offset, size, module, address, reliable)`` or ``None`` if the line is not a frame.
    """
    m = _X86.match(text)
    if m:
        addr = int(m.group(2), 16) if m.group(2) else None
        reliable = not (m.group(1) or m.group(3))
        return m.group(4), int(m.group(5), 16), int(m.group(6), 16), m.group(7), addr, reliable
    m = _PPC.match(text)
    if m:
        return m.group(2), int(m.group(3), 16), int(m.group(4), 16), m.group(5), int(m.group(1), 16), not m.group(6)
    m = _ARM.match(text)
    if m:
        off = int(m.group(3), 16) if m.group(3) else None
        size = int(m.group(4), 16) if m.group(4) else None
        return m.group(2), off, size, m.group(5), int(m.group(1), 16), True
    m = _INLINE.match(text)
    if m:
        return m.group(2), None, None, None, None, not m.group(1)
    return None


def extract_frames(lines: Sequence[str], linenos: Sequence[int]) -> list[Frame]:
    """All frames of a report, in print order, with their sections.

    Args:
        lines: the report's lines (prefixes stripped, ``?`` frames included).
        linenos: the input line number of each line.
    """
    frames: list[Frame] = []
    base = ""
    nested: list[str] = []
    for text, lineno in zip(lines, linenos):
        if len(text) > 1024 or "+0x" not in text and "[inline]" not in text and " from [<" not in text:
            m = _TAG.match(text) if len(text) < 64 else None
            if m:
                if m.group(2) == "EOI" or m.group(1):
                    if nested:
                        nested.pop()
                else:
                    nested.append(m.group(2))
                continue
            if len(text) < 200:
                h = _HEADING.match(text)
                if h:
                    base, nested = _section_name(h.group(1)), []
            continue
        parsed = parse_frame_line(text)
        if parsed is None:
            if len(text) < 200 and ("at:" in text or "state was registered" in text):
                h = _HEADING.match(text)
                if h:
                    base, nested = _section_name(h.group(1)), []
            continue
        sym, off, size, mod, addr, reliable = parsed
        section = nested[-1] if nested else (base or "stack")
        frames.append(Frame(section, len(frames), sym, off, size, mod, addr, reliable, lineno))
    return frames
