"""Arrow tables of the oops-family reports (schemas: :data:`iovatrace.schema.OOPS_REPORTS` and friends).

Theory of operation: reports are few and small, so each table is built column-wise from plain Python lists in
one pass over the reports and validated against its schema by ``pa.Table.from_pydict(..., schema=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ... import schema

if TYPE_CHECKING:
    from .oops import OopsReport

__all__ = ["oops_tables"]


def _table(sch: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    cols = {f.name: [r[f.name] for r in rows] for f in sch}
    return pa.Table.from_pydict(cols, schema=sch)


def oops_tables(reports: Sequence[OopsReport]) -> dict[str, pa.Table]:
    """Build the ``reports``, ``frames``, ``registers``, ``modules`` and ``code`` tables.

    Args:
        reports: reports from :func:`.oops.parse_oops`.

    Returns:
        ``{name: pa.Table}``.
    """
    reps: list[dict[str, Any]] = []
    frames: list[dict[str, Any]] = []
    regs: list[dict[str, Any]] = []
    mods: list[dict[str, Any]] = []
    code: list[dict[str, Any]] = []
    for r in reports:
        f = r.fields
        reps.append({
            "report_id": r.id, "kind": r.kind, "title": r.title, "alt_titles": r.alt_titles, "type": r.type,
            "corrupted": r.corrupted, "corrupted_reason": r.corrupted_reason or None, "header": r.header,
            "kernel_release": f.kernel_release, "taint": f.taint, "hardware": f.hardware, "cpu": f.cpu,
            "pid": f.pid, "comm": f.comm, "address": f.address, "rip_symbol": f.rip_symbol,
            "rip_offset": f.rip_offset, "rip_size": f.rip_size, "rip_module": f.rip_module,
            "first_line": r.first_line, "last_line": r.last_line, "context": r.context,
        })
        frames.extend({
            "report_id": r.id, "section": fr.section, "position": fr.position, "symbol": fr.symbol,
            "offset": fr.offset, "size": fr.size, "module": fr.module, "address": fr.address,
            "reliable": fr.reliable, "line": fr.line,
        } for fr in r.frames)
        regs.extend({"report_id": r.id, "dump": g.dump, "name": g.name, "value": g.value, "line": g.line}
                    for g in r.registers)
        mods.extend({"report_id": r.id, "position": m.position, "name": m.name, "flags": m.flags,
                     "last_unloaded": m.last_unloaded} for m in r.modules)
        code.extend({"report_id": r.id, "line": c.line, "data": c.data, "fault_offset": c.fault_offset,
                     "unit": c.unit} for c in r.code)
    return {
        "reports": _table(schema.OOPS_REPORTS, reps),
        "frames": _table(schema.OOPS_FRAMES, frames),
        "registers": _table(schema.OOPS_REGISTERS, regs),
        "modules": _table(schema.OOPS_MODULES, mods),
        "code": _table(schema.OOPS_CODE, code),
    }
