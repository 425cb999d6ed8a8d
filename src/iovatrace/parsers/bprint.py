"""Rendering ``ftrace:bprint`` and ``ftrace:bputs`` records into the text trace-cmd shows.

Theory of operation: ``trace_printk()`` with arguments records ``bprint``: the instruction pointer, a pointer to
the format string (resolved through the trace's printk formats) and the arguments packed by the kernel's
``vbin_printf`` into ``u32 buf[]``: each integer stored at its C size and aligned to it (up to 4 bytes),
8-byte values and pointers (kernel longs) aligned to 4, strings copied inline with their NUL, pointers that the kernel dereferences (``%pI4``,
``%pM``...) already rendered into inline strings. We walk the format's conversions, unpack each argument from
the buffer with bounds checks, and format it with Python's ``%`` operator (C flags, width and precision carry
over). ``bputs`` (no arguments) only needs the format lookup. The text column is ``"<symbol of ip>: <message>"``
without the trailing newline, as ``trace-cmd report`` prints it. A record whose format or arguments cannot be
resolved gets a text that says so, never an exception.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["render_bprint", "decode_text_column"]

_CONV_RE = re.compile(r"%([-+ #0]*)(\d+|\*)?(?:\.(\d+|\*))?(hh|h|ll|l|L|z|j|t)?([diouxXcsp%])([a-zA-Z]*)")
_DEREF_P = set("IiMmEeUuVvKkNnRrBbaDdghtOCGfS")


def _unpack(buf: bytes, pos: int, size: int, align: int, little: bool) -> tuple[int, int]:
    pos = (pos + align - 1) // align * align
    if pos + size > len(buf):
        raise ValueError("argument beyond the buffer")
    return int.from_bytes(buf[pos:pos + size], "little" if little else "big"), pos + size


def render_bprint(fmt: str, buf: bytes, long_size: int, little: bool, symbolize: Any) -> str:
    """Format ``fmt`` with ``vbin_printf``-packed arguments.

    Args:
        fmt: the printk format string.
        buf: the packed arguments.
        long_size: kernel long size.
        little: the file's byte order is little-endian.
        symbolize: ``f(addr, with_offset) -> str`` for ``%ps``/``%pS``.

    Returns:
        The message.

    Raises:
        ValueError: if the buffer is shorter than the format needs.
    """
    out = []
    pos = 0
    last = 0
    for m in _CONV_RE.finditer(fmt):
        out.append(fmt[last:m.start()])
        last = m.end()
        flags, width, prec, qual, conv, ext = m.groups()
        if conv == "%":
            out.append("%" + ext)
            continue
        spec = "%" + flags
        if width == "*":
            v, pos = _unpack(buf, pos, 4, 4, little)
            spec += str(v)
        elif width:
            spec += width
        if prec == "*":
            v, pos = _unpack(buf, pos, 4, 4, little)
            spec += "." + str(v)
        elif prec:
            spec += "." + prec
        if conv == "s":
            end = buf.find(b"\0", pos)
            if end < 0:
                raise ValueError("unterminated string argument")
            out.append((spec + "s") % buf[pos:end].decode("utf-8", "replace") + ext)
            pos = end + 1
            continue
        if conv == "p":
            if ext and ext[0] in _DEREF_P and ext[0] not in "SsFfBx":
                end = buf.find(b"\0", pos)
                if end < 0:
                    raise ValueError("unterminated string argument")
                out.append(buf[pos:end].decode("utf-8", "replace") + ext[1:])
                pos = end + 1
                continue
            v, pos = _unpack(buf, pos, long_size, min(long_size, 4), little)
            if ext[:1] in ("S", "s", "F", "f", "B"):
                out.append(symbolize(v, ext[:1] in ("S", "F", "B")) + ext[1:])
            else:
                out.append(f"0x{v:x}" + ext[1:] if ext[:1] == "x" else f"0x{v:x}" + ext)
            continue
        size = {"hh": 1, "h": 2, "l": long_size, "z": long_size, "t": long_size, "ll": 8, "L": 8, "j": 8}.get(
            qual or "", 4)
        if conv == "c":
            size = 1
        v, pos = _unpack(buf, pos, size, min(size, 4), little)
        if conv in "di" and v >= 1 << (8 * size - 1):
            v -= 1 << (8 * size)
        if conv == "c":
            out.append((spec + "c") % chr(v) + ext)
        else:
            out.append((spec + ("d" if conv in "diu" else conv)) % v + ext)
    out.append(fmt[last:])
    return "".join(out)


def decode_text_column(trace: Any, fmt: Any, cols: list[Any], schema: Any) -> Any:
    """The ``text`` column of a batch of ``bprint`` or ``bputs`` records.

    Args:
        trace: the :class:`~iovatrace.parsers.tracedat.TraceDat` (for printk formats and kallsyms).
        fmt: the event format.
        cols: the batch's columns so far (common then payload, in schema order).
        schema: the batch schema.

    Returns:
        A ``pa.string()`` array.
    """
    import pyarrow as pa

    names = schema.names[:len(cols)]
    col = dict(zip(names, cols))
    ks = trace.kallsyms
    pf = trace.printk_formats
    little = trace.meta.endian == "little"
    L = trace.meta.kernel_long_size

    def sym(addr: int, off: bool) -> str:
        return ks.symbolize(addr, off) if len(ks) else f"0x{addr:x}"

    ips = col["ip"].to_pylist() if "ip" in col else []
    texts = []
    if fmt.name == "bputs":
        strs = col["str"].to_pylist() if "str" in col else [None] * len(ips)
        for ip, s in zip(ips, strs):
            msg = pf.get(s, f"[unknown printk format 0x{s:x}]") if s is not None else ""
            texts.append(f"{sym(ip, False)}: {msg}".rstrip("\n"))
        return pa.array(texts, pa.string())
    fmts = col["fmt"].to_pylist()
    bufs = col["buf"].to_pylist() if "buf" in col else [b""] * len(ips)
    for ip, f, b in zip(ips, fmts, bufs):
        pfmt = pf.get(f)
        if pfmt is None:
            texts.append(f"{sym(ip, False)}: [unknown printk format 0x{f:x}]")
            continue
        try:
            msg = render_bprint(pfmt, b or b"", L, little, sym)
        except (ValueError, TypeError, OverflowError) as exc:
            msg = f"[cannot decode arguments of {pfmt!r}: {exc}]"
        texts.append(f"{sym(ip, False)}: {msg}".rstrip("\n"))
    return pa.array(texts, pa.string())
