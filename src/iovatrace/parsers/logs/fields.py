"""Scalar facts of one crash report: who crashed, where, on which kernel.

Theory of operation: the kernel's ``dump_stack``/``show_regs`` preamble has a handful of stable one-line records
(``CPU: N PID: N Comm: x Not tainted <release> #n``, ``Hardware name: ...``, ``RIP: 0010:f+0x9c/0x110``,
``pc : f+0x..``, ``NIP [..] f+0x..``, ``PC is at f+0x..``) and the header names the faulting address in a few
ways (``address: X``, ``at X``, ``at virtual address X``, ``at addr X``, ``non-canonical address X``, ``CR2: X``).
:func:`extract_fields` takes the first occurrence of each in the report's lines; absent facts stay ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ReportFields", "extract_fields", "RIP_RE"]

_CPU_RE = re.compile(
    r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (.{1,16}?) (?:Kdump: loaded )?"
    r"(?:Not tainted|Tainted: ([A-Z ]*[A-Z]))\s+(\S+)"
)
_OLD_PID_RE = re.compile(r"Pid: (\d+), comm: (.{1,16}?) (?:Not tainted|Tainted: ([A-Z ]*[A-Z]))\s+(\S+)")
_CPU_ONLY_RE = re.compile(r"(?:^|\s)CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)")
_TAINT_LINE = re.compile(r"^Tainted: ((?:\[[A-Z]\]=[A-Z_]+\s*)+)")
_HW_RE = re.compile(r"Hardware name: (.*\S)")
_ADDR_RES = [
    re.compile(r"(?:NULL pointer dereference|paging request|data access)"
               r"(?:,)? (?:at (?:virtual address )?|address: ?)(?:0x)?([0-9a-f]{1,16})\b"),
    re.compile(r"page fault for address: ?(?:0x)?([0-9a-f]{1,16})\b"),
    re.compile(r"\bat addr (?:0x)?([0-9a-f]{4,16})\b"),
    re.compile(r"non-canonical address (0x[0-9a-f]+)"),
    re.compile(r"^KFENCE: .* at 0x([0-9a-f]+)"),
    re.compile(r"^(?:Faulting instruction address|Data address|DAR): (?:0x)?([0-9a-f]+)"),
]
_FAULT_WORDS = re.compile(r"page fault|paging request|NULL pointer|general protection|#PF:")
_CR2_RE = re.compile(r"\bCR2: ([0-9a-f]{8,16})\b")
#: The faulting PC in ``RIP:``/``IP:``/``pc :``/``PC is at``/``NIP``/``epc :`` lines: symbol, offset, size, module.
RIP_RE = re.compile(
    r"(?:\bRIP: (?:[0-9a-f]{4}:)?|^\s*IP: |\bpc : |PC is at |\bNIP[: ]\s*(?:\[[0-9a-f]+\] )?|\bepc : )"
    r"(?:\[<?[0-9a-f]+>?\] +){0,2}([A-Za-z_.$][\w.$]*)\+0x([0-9a-f]+)/0x([0-9a-f]+)(?: \[([\w-]+)(?: [0-9a-f]+)?\])?"
)


@dataclass
class ReportFields:
    """Facts of one report (``None`` when the report does not say).

    Attributes:
        kernel_release: ``uname -r`` from the ``CPU:``/``Tainted`` line.
        taint: taint flags as letters (``""`` = not tainted), e.g. ``GW`` or ``GSOE``.
        hardware: the ``Hardware name:`` line.
        cpu, pid, comm: the task that crashed.
        address: the faulting data address, if the report names one.
        rip_symbol, rip_offset, rip_size, rip_module: where the faulting PC was.
    """

    kernel_release: str | None = None
    taint: str | None = None
    hardware: str | None = None
    cpu: int | None = None
    pid: int | None = None
    comm: str | None = None
    address: int | None = None
    rip_symbol: str | None = None
    rip_offset: int | None = None
    rip_size: int | None = None
    rip_module: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def _release(tok: str) -> str | None:
    # Releases always carry a digit ("6.5.0-rc6-x"); vendors sometimes redact them ("kernel version xxxx").
    return tok if any(c.isdigit() for c in tok) else None


def extract_fields(lines: Sequence[str]) -> ReportFields:
    """Collect :class:`ReportFields` from a report's lines (first occurrence of each fact wins).

    Args:
        lines: the report's lines, transport prefixes stripped.
    """
    f = ReportFields()
    cr2: int | None = None
    fault = False  # CR2 is the last page-fault address: meaningful only for fault reports
    for ln in lines:
        if ":" not in ln and "at addr" not in ln:
            continue  # stack frames and other lines that carry none of the facts (cheap early exit)
        if not fault and _FAULT_WORDS.search(ln):
            fault = True
        if f.cpu is None:
            m = _CPU_RE.search(ln)
            if m:
                f.cpu, f.pid, f.comm = int(m.group(1)), int(m.group(2)), m.group(3)
                f.taint = "".join(m.group(4).split()) if m.group(4) is not None else ""
                f.kernel_release = _release(m.group(5))
            else:
                m = _OLD_PID_RE.search(ln)
                if m:
                    f.pid, f.comm = int(m.group(1)), m.group(2)
                    f.taint = "".join(m.group(3).split()) if m.group(3) is not None else ""
                    f.kernel_release = _release(m.group(4))
                else:
                    m = _CPU_ONLY_RE.search(ln)
                    if m:
                        f.cpu, f.pid, f.comm = int(m.group(1)), int(m.group(2)), m.group(3)
        if f.hardware is None:
            m = _HW_RE.search(ln)
            if m:
                f.hardware = m.group(1)
        if f.address is None:
            for r in _ADDR_RES:
                m = r.search(ln)
                if m:
                    f.address = int(m.group(1), 16)
                    break
        if cr2 is None:
            m = _CR2_RE.search(ln)
            if m:
                cr2 = int(m.group(1), 16)
        if f.rip_symbol is None:
            m = RIP_RE.search(ln)
            if m:
                f.rip_symbol, f.rip_module = m.group(1), m.group(4)
                f.rip_offset, f.rip_size = int(m.group(2), 16), int(m.group(3), 16)
    if f.address is None and cr2 is not None and fault:
        f.address = cr2
    return f
