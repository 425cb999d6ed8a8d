"""Register dumps, ``Code:`` bytes and the ``Modules linked in:`` list of a crash report.

Theory of operation: ``show_regs()`` prints ``NAME: value`` pairs, several per line, in per-architecture
layouts -- x86-64 ``RAX: 0000.. RBX: ..``, ``RSP: 0018:ffff..`` (segment:value), ``FS: 0000..(0000)``;
arm64 ``x29: ffff.. x28: ..``, ``pc : sym+0x..``, ``pstate: 60400005 (nZCv ..)``; arm ``r10: ..``,
``pc : [<c0..>]``; riscv `` epc : .. ra : ..``, ``status: .. badaddr: .. cause: ..``; powerpc ``GPR00: v v v v``
(four or eight values), ``NIP:``, ``MSR:``, ``CR:``. A line is a register line when it *starts* with such a
pair; every pair on it is taken. A register name seen again starts a new *dump* (the user-mode registers
x86 prints after the ``<TASK>`` stack, or a second CPU's backtrace).

``Code:`` lines hold the instruction bytes around the faulting PC: x86 prints bytes with the faulting one in
``<..>``, arm64/riscv print 32-bit words with the faulting one in ``(..)``, thumb 16-bit halfwords.
``Modules linked in:`` lists modules with taint flags in parentheses (``nvidia(POE)``) and may end with
``[last unloaded: x]``; printk wraps long lists onto lines that start with a space.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Register", "CodeBytes", "Module", "extract_registers", "extract_code", "extract_modules"]


@dataclass(frozen=True, slots=True)
class Register:
    """One register value.

    Attributes:
        dump: 0 for the first register dump of the report, 1 for the next...
        name: register name as printed (``RAX``, ``x29``, ``pc``, ``GPR03``, ``CR2``).
        value: its value.
        line: 1-based input line.
    """

    dump: int
    name: str
    value: int
    line: int


@dataclass(frozen=True, slots=True)
class CodeBytes:
    """One ``Code:`` record.

    Attributes:
        data: the instruction bytes in print order (words kept in printed byte order, most significant first).
        fault_offset: offset in ``data`` of the faulting unit (``<..>``/``(..)``), ``None`` if unmarked.
        unit: bytes per printed unit (1 x86, 2 thumb, 4 arm64/riscv/arm).
        line: 1-based input line.
    """

    data: bytes
    fault_offset: int | None
    unit: int
    line: int


@dataclass(frozen=True, slots=True)
class Module:
    """One entry of ``Modules linked in:``.

    Attributes:
        name: module name.
        flags: taint flags in the parentheses (``OE``, ``POE``, ``-``), ``''`` if none.
        position: index in the list.
        last_unloaded: ``True`` for the ``[last unloaded: x]`` entry.
    """

    name: str
    flags: str
    position: int
    last_unloaded: bool = False


_PAIR = re.compile(
    r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_]{0,9}) ?:\s*(?:\[<)?(?:([0-9a-f]{4}):(?=[0-9a-f]{8}))?([0-9a-f]{8,16})"
    r"(?:>\])?(?:\([0-9a-f]{4}\))?(?=\s|$|\()"
)
_LINE_START = re.compile(
    r"^\s*(?:[RE](?:[A-Z]{2}|\d{1,2})|R\d\d|E[A-Z]{2}|RIP|RSP|EFLAGS|ORIG_RAX|ORIG_EAX|FS|GS|knlGS|CS|DS|ES|SS|CR\d|"
    r"DR\d|PKRU|x\d{1,2}|r\d{1,2}|sp|pc|lr|ip|fp|psr|pstate|epc|ra|gp|tp|t\d|s\d{1,2}|a\d|status|NIP|LR|MSR|CTR|"
    r"CFAR|DAR|DSISR|IRQMASK|XER|SOFTE|TRAP|CR|elr|far|esr) ?:"
)
_GPR = re.compile(r"^\s*GPR(\d\d): ((?:[0-9a-f]{8,16}\s*)+)$")
_NOT_REGS = ("CPU:", "Code:", "Hardware name:", "Modules linked in:", "Call Trace", "Call trace")


def extract_registers(lines: Sequence[str], linenos: Sequence[int]) -> list[Register]:
    """All register values of a report.

    Args:
        lines: the report's lines, prefixes stripped.
        linenos: input line number of each line.
    """
    out: list[Register] = []
    seen: set[str] = set()
    dump = 0

    def add(name: str, value: int, lineno: int) -> None:
        nonlocal dump, seen
        if name in seen:
            dump += 1
            seen = set()
        seen.add(name)
        out.append(Register(dump, name, value, lineno))

    for text, lineno in zip(lines, linenos):
        if len(text) > 512 or ":" not in text or text.lstrip().startswith(_NOT_REGS):
            continue
        g = _GPR.match(text)
        if g:
            base = int(g.group(1))
            for k, v in enumerate(g.group(2).split()):
                add(f"GPR{base + k:02d}", int(v, 16), lineno)
            continue
        if not _LINE_START.match(text):
            continue
        for m in _PAIR.finditer(text):
            add(m.group(1), int(m.group(3), 16), lineno)
    return out


_CODE = re.compile(r"^\s*Code: (.*)$")
_CODE_TOKEN = re.compile(r"^([<(]?)([0-9a-fA-F]{2,8})([>)]?)$")


def extract_code(lines: Sequence[str], linenos: Sequence[int]) -> list[CodeBytes]:
    """The ``Code:`` records of a report (lines that say ``Unable to access opcode bytes`` are skipped).

    Args:
        lines: the report's lines, prefixes stripped.
        linenos: input line number of each line.
    """
    out: list[CodeBytes] = []
    for text, lineno in zip(lines, linenos):
        if "Code:" not in text:
            continue
        m = _CODE.match(text[:2048])
        if not m:
            continue
        toks = m.group(1).split()
        data = bytearray()
        fault: int | None = None
        unit = 0
        ok = bool(toks)
        for t in toks:
            tm = _CODE_TOKEN.match(t)
            if not tm or len(tm.group(2)) % 2:
                ok = False
                break
            if tm.group(1) or tm.group(3):
                fault = len(data)
            unit = max(unit, len(tm.group(2)) // 2)
            data += bytes.fromhex(tm.group(2))
        if ok and data:
            out.append(CodeBytes(bytes(data), fault, unit, lineno))
    return out


_MODULES = re.compile(r"Modules linked in:(.*)$")
_MOD_TOKEN = re.compile(r"^([\w-]+)(?:\(([A-Z+\-]*)\))?$")
_LAST = re.compile(r"\[last unloaded: ([\w-]+)(?:\(([A-Z+\-]*)\))?\]")


def extract_modules(lines: Sequence[str]) -> list[Module]:
    """The first ``Modules linked in:`` list of a report, continuation lines included.

    Args:
        lines: the report's lines, prefixes stripped (mail-wrapped fragments already joined).
    """
    for i, text in enumerate(lines):
        m = _MODULES.search(text[:65536])
        if not m:
            continue
        body = m.group(1)
        # printk splits very long lists; the continuation starts with a space and holds only module names.
        for nxt in lines[i + 1:i + 20]:
            if nxt.startswith(" ") and nxt.strip() and all(
                    _MOD_TOKEN.match(t) or t.startswith("[last") or t.endswith("]") for t in nxt.split()):
                body += " " + nxt
            else:
                break
        out: list[Module] = []
        last = _LAST.search(body)
        if last:
            body = body[:last.start()] + body[last.end():]
        for t in body.split():
            tm = _MOD_TOKEN.match(t)
            if tm:
                out.append(Module(tm.group(1), tm.group(2) or "", len(out)))
        if last:
            out.append(Module(last.group(1), last.group(2) or "", len(out), last_unloaded=True))
        return out
    return []
