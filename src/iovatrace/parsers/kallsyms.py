"""kallsyms and printk formats of a trace.dat, parsed on demand.

Theory of operation: trace.dat carries the text of ``/proc/kallsyms`` (``addr type name [module]``) and of
``printk_formats`` (``0xADDR : "fmt"``). Both are only needed to render ``bprint``/``bputs`` messages and ``%ps``
symbols, so the reader parses them lazily. Symbols are kept as sorted numpy address arrays for ``searchsorted``
lookups; a malformed line is skipped (the text is untrusted and informational).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["Kallsyms", "parse_printk_formats"]


@dataclass(slots=True)
class Kallsyms:
    """A sorted kernel symbol table.

    Attributes:
        addrs: symbol addresses, ascending.
        names: symbol names, parallel to ``addrs``.
        modules: module of each symbol (``""`` for the kernel proper).
    """

    addrs: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: bytes) -> Kallsyms:
        """Parse ``/proc/kallsyms`` text.

        Args:
            raw: the text as bytes.

        Returns:
            The table (empty for empty input).
        """
        ents = []
        for line in raw.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            mod = parts[3].strip("[]") if len(parts) > 3 else ""
            ents.append((addr, parts[2], mod))
        ents.sort(key=lambda e: e[0])
        return cls([e[0] for e in ents], [e[1] for e in ents], [e[2] for e in ents])

    def __len__(self) -> int:
        return len(self.addrs)

    def lookup(self, addr: int) -> tuple[str, int, int] | None:
        """The symbol containing ``addr``: (name, offset, size to the next symbol), or None."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or addr == 0:
            return None
        size = self.addrs[i + 1] - self.addrs[i] if i + 1 < len(self.addrs) else 0
        return self.names[i], addr - self.addrs[i], size

    def symbolize(self, addr: int, offset: bool = False) -> str:
        """``name`` (``%ps``), or ``name+0xoff`` with ``offset`` (``%pS`` as libtraceevent prints it), or
        ``0x<addr>`` when no symbol contains ``addr``."""
        hit = self.lookup(addr)
        if hit is None:
            return f"0x{addr:x}"
        name, off, _size = hit
        return f"{name}+0x{off:x}" if offset else name


def _unescape(s: str) -> str:
    out = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            nx = s[i + 1]
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nx, "\\" + nx))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def parse_printk_formats(raw: bytes) -> dict[int, str]:
    """Parse ``printk_formats`` text into address → format string (C escapes resolved).

    Args:
        raw: the text as bytes (``0xADDR : "fmt"`` lines).

    Returns:
        The map (malformed lines skipped).
    """
    out: dict[int, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        addr, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            a = int(addr.strip(), 16)
        except ValueError:
            continue
        rest = rest.strip()
        if rest.startswith('"') and rest.endswith('"') and len(rest) >= 2:
            rest = rest[1:-1]
        out[a] = _unescape(rest)
    return out
