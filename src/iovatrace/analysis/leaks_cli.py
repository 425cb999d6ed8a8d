"""``iovatrace leaks REPORT``: render a leak diagnosis as a terminal report, JSON or Parquet tables.

Theory of operation: :func:`run_leaks` reads the report (a file or ``-``), calls
:func:`iovatrace.analysis.leaks.diagnose`, optionally correlates it with a trace through
:mod:`iovatrace.analysis.leaks_trace`, and renders. Rendering never re-derives anything: the text report, the JSON
object (:func:`diagnosis_json`) and the Parquet tables (:func:`diagnosis_tables`) all show the same
:class:`~iovatrace.analysis.leaks.LeakDiagnosis`. Unusable input raises
:class:`~iovatrace.parsers.logs.kmemleak.UnusableReportError` (exit status 2).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from ..parsers.kmemleak_cli import object_json, read_log_input
from .leaks import Chain, LeakDiagnosis, diagnose
from .leaks_decode import DecodedObject

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["run_leaks", "diagnosis_json", "diagnosis_tables", "render_text"]

# A long chain would print thousands of evidence lines; the terminal shows the first ones, JSON has them all.
_MAX_EVIDENCE = 40


def _pfns(d: DecodedObject) -> str:
    if d.kind == "iova_magazine":
        return " ".join(f"0x{p:x}" for p in d.pfns) or "-"
    if d.kind == "iova":
        lo = "?" if d.pfn_lo is None else f"0x{d.pfn_lo:x}"
        hi = "?" if d.pfn_hi is None else f"0x{d.pfn_hi:x}"
        return f"pfn_lo={lo} pfn_hi={hi}"
    return "-"


def _role(d: DecodedObject) -> str:
    return {"next": "next", "null_or_empty": "NULL/0", "size": f"size={d.mag_size}", "garbage": "garbage",
            "rb_parent": "rb_parent"}.get(d.first_word_role or "", "-")


def _chain_of(diag: LeakDiagnosis) -> dict[int, int]:
    return {m.address: c.chain_id for c in diag.chains for m in c.members}


def diagnosis_json(diag: LeakDiagnosis, correlation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The diagnosis as one JSON-ready object.

    Args:
        diag: the diagnosis.
        correlation: the trace correlation, if ``--trace`` was given.

    Returns:
        ``{"report", "kernel", "objects", "chains", "dma_debug", "notes"[, "trace"]}``; each chain has ``objects``
        (hex addresses in chain order) and ``verdict`` (in words) plus the reasoning.
    """
    chain_of = _chain_of(diag)
    out: dict[str, Any] = {
        "report": diag.path,
        "kernel": {"versions": diag.kernel.label, "profiles": [p.name for p in diag.kernel.profiles],
                   "given": diag.kernel.given, "evidence": diag.kernel.how,
                   "list_depot": diag.kernel.list_depot, "transient_fix_present": diag.kernel.transient_fixed},
        "objects": [
            {**object_json(d.obj, d.object_id), "kind": d.kind, "caller": d.caller, "chain": chain_of[d.address],
             "first_word": None if d.first_word is None else f"0x{d.first_word:x}",
             "first_word_role": d.first_word_role, "mag_size": d.mag_size, "pfns": [f"0x{p:x}" for p in d.pfns],
             "pfn_lo": None if d.pfn_lo is None else f"0x{d.pfn_lo:x}",
             "pfn_hi": None if d.pfn_hi is None else f"0x{d.pfn_hi:x}", "notes": d.notes}
            for d in diag.objects
        ],
        "chains": [
            {"chain": c.chain_id, "objects": [f"0x{a:x}" for a in c.addresses], "shape": c.shape,
             "terminal": c.terminal, "what": c.what, "verdict": c.verdict.replace("_", " "),
             "verdict_code": c.verdict, "verdict_text": c.verdict_text, "reasoning": c.reasoning,
             "evidence": [{"line": ln, "text": diag.lines.get(ln, "").strip()} for ln in c.evidence_lines],
             "next_steps": c.next_steps,
             "pfns": {f"0x{m.address:x}": [f"0x{p:x}" for p in m.pfns] for m in c.members if m.pfns}}
            for c in diag.chains
        ],
        "dma_debug": [
            {"line": r.line, "kind": r.kind, "message": r.message, "driver": r.driver, "device": r.device,
             "count": r.count, "device_address": None if r.device_address is None else f"0x{r.device_address:x}",
             "size": r.size, "direction": r.direction, "mapped_with": r.mapped_with, "mapped_as": r.mapped_as,
             "pool_id": r.pool_id, "inflight": r.inflight, "stalled_s": r.stalled_s,
             "warn_location": r.warn_location, "mapped_at": r.mapped_at}
            for r in diag.dma_debug
        ],
        "dma_assessment": diag.dma_assessment,
        "notes": diag.notes,
    }
    if correlation is not None:
        out["trace"] = correlation
    return out


def diagnosis_tables(diag: LeakDiagnosis, correlation: dict[str, Any] | None = None) -> dict[str, "pa.Table"]:
    """The diagnosis as Arrow tables (schemas in :mod:`iovatrace.schema`).

    Args:
        diag: the diagnosis.
        correlation: the ``--trace`` correlation, if any (adds ``leak_trace_magazines`` and
            ``leak_trace_devices``).

    Returns:
        ``kmemleak_objects``, ``kmemleak_frames``, ``leak_objects``, ``leak_chains`` and ``dma_debug_reports``.
    """
    import pyarrow as pa

    from ..parsers.logs.dmadebug import dma_debug_table
    from ..parsers.logs.kmemleak import kmemleak_tables
    from ..schema import LEAK_CHAINS, LEAK_OBJECTS

    tables = kmemleak_tables([d.obj for d in diag.objects])
    chain_of = _chain_of(diag)
    verdict_of = {m.address: c.verdict for c in diag.chains for m in c.members}
    tables["leak_objects"] = pa.table({
        "object_id": [d.object_id for d in diag.objects], "address": [d.address for d in diag.objects],
        "size": [d.obj.size for d in diag.objects], "kind": [d.kind for d in diag.objects],
        "chain_id": [chain_of[d.address] for d in diag.objects],
        "first_word": [d.first_word for d in diag.objects],
        "first_word_role": [d.first_word_role for d in diag.objects],
        "mag_size": [d.mag_size for d in diag.objects],
        "pfns": [d.pfns if d.kind == "iova_magazine" else None for d in diag.objects],
        "pfn_lo": [d.pfn_lo for d in diag.objects], "pfn_hi": [d.pfn_hi for d in diag.objects],
        "verdict": [verdict_of[d.address] for d in diag.objects],
    }, schema=LEAK_OBJECTS)
    tables["leak_chains"] = pa.table({
        "chain_id": [c.chain_id for c in diag.chains], "objects": [c.addresses for c in diag.chains],
        "shape": [c.shape for c in diag.chains], "terminal": [c.terminal for c in diag.chains],
        "what": [c.what for c in diag.chains], "verdict": [c.verdict for c in diag.chains],
        "verdict_text": [c.verdict_text for c in diag.chains], "reasoning": [c.reasoning for c in diag.chains],
        "evidence_lines": [c.evidence_lines for c in diag.chains],
        "next_steps": [c.next_steps for c in diag.chains],
    }, schema=LEAK_CHAINS)
    tables["dma_debug_reports"] = dma_debug_table(diag.dma_debug)
    if correlation is not None:
        tables.update(_correlation_tables(correlation))
    return tables


def _correlation_tables(corr: dict[str, Any]) -> dict[str, "pa.Table"]:
    import pyarrow as pa

    from ..schema import LEAK_TRACE_DEVICES, LEAK_TRACE_MAGAZINES

    mags = corr["magazines"]
    devs = corr["devices"]

    def first(xs: list[dict[str, Any]], key: str) -> Any:
        return xs[0].get(key) if xs else None

    return {
        "leak_trace_magazines": pa.table({
            "address": [int(m["address"], 16) for m in mags], "state": [m["state"] for m in mags],
            "domain": [m.get("domain") for m in mags], "bin": [m.get("bin") for m in mags],
            "slot": [m.get("cpu", m.get("position")) for m in mags], "size": [m.get("size") for m in mags],
            "meaning": [m["meaning"] for m in mags]}, schema=LEAK_TRACE_MAGAZINES),
        "leak_trace_devices": pa.table({
            "device": [d["device"] for d in devs],
            "dma_debug_count": [first(d["dma_debug"], "count") for d in devs],
            "dma_debug_line": [first(d["dma_debug"], "line") for d in devs],
            "replay_outstanding": [first(d["replay"], "count") for d in devs],
            "replay_when": [first(d["replay"], "when") for d in devs],
            "live_at_end": [d.get("live_at_end", {}).get("count") for d in devs],
            "live_at_end_bytes": [d.get("live_at_end", {}).get("bytes") for d in devs],
            "entry_in_replay": [("replay_mapping" in d["dma_debug"][0]) if d["dma_debug"] else None for d in devs],
        }, schema=LEAK_TRACE_DEVICES),
    }


def _arrows(c: Chain) -> str:
    parts = [f"0x{a:x}" for a in c.addresses]
    if c.shape in ("list", "open") or (c.shape == "lone" and c.terminal and "not a link" not in c.terminal):
        return " -> ".join(parts + [c.terminal or "?"])
    if c.shape == "lone" and c.terminal:
        return f"{parts[0]}  ({c.terminal})"
    if c.shape == "cycle":
        return " -> ".join(parts + [parts[0]]) + "  (cycle)"
    if c.shape == "fork":
        return "  ".join(parts) + "  (fork: two objects point at the same one)"
    return parts[0]


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return ["  " + fmt.format(*header).rstrip()] + ["  " + fmt.format(*map(str, r)).rstrip() for r in rows]


def render_text(diag: LeakDiagnosis, correlation: dict[str, Any] | None = None) -> str:
    """The diagnosis as a terminal report (tables, chains drawn as arrows, verdicts with reasons and evidence)."""
    k = diag.kernel
    out = [f"iovatrace leaks: {diag.path}",
           f"kernel: {k.label} ({'given' if k.given else 'inferred'}; profiles {', '.join(p.name for p in k.profiles)})"]
    out += [f"  - {h}" for h in k.how]
    kinds: dict[str, int] = {}
    for d in diag.objects:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    out.append(f"{len(diag.objects)} kmemleak object(s) ({', '.join(f'{n} {k_}' for k_, n in kinds.items()) or '-'}),"
               f" {len(diag.chains)} chain(s), {len(diag.dma_debug)} dma-debug/page_pool warning(s)")
    if diag.objects:
        out += ["", "Objects:"]
        chain_of = _chain_of(diag)
        out += _table([[str(d.object_id), f"0x{d.address:x}", str(d.obj.size), d.kind, d.caller or "-",
                        "-" if d.first_word is None else f"0x{d.first_word:016x}", _role(d), _pfns(d),
                        str(chain_of[d.address]), str(d.obj.line)] for d in diag.objects],
                      ["#", "address", "size", "kind", "allocated in", "first word", "role", "pfns / range",
                       "chain", "line"])
    for c in diag.chains:
        out += ["", f"Chain {c.chain_id} ({c.shape}, {len(c.members)} object(s)): {c.what}", f"  {_arrows(c)}",
                f"  verdict: {c.verdict.replace('_', ' ').upper()}: {c.verdict_text}", "  why:"]
        out += [f"    - {r}" for r in c.reasoning]
        out.append("  evidence:")
        shown = c.evidence_lines[:_MAX_EVIDENCE]
        out += [f"    line {ln:>5}: {diag.lines.get(ln, '').strip()}" for ln in shown]
        if len(c.evidence_lines) > len(shown):
            out.append(f"    … {len(c.evidence_lines) - len(shown)} more line(s) in --json")
        out.append("  next:")
        out += [f"    - {s}" for s in c.next_steps]
    if diag.dma_debug or (correlation and correlation.get("devices")):
        out += ["", "dma-debug / page_pool (per device):"]
        rows = []
        for r in diag.dma_debug:
            rows.append([r.device or "-", r.driver or "-", r.kind, "-" if r.count is None else str(r.count),
                         "-" if r.device_address is None else f"0x{r.device_address:x}",
                         "-" if r.size is None else str(r.size), r.direction or "-", r.mapped_as or "-",
                         "-" if r.inflight is None else f"{r.inflight} inflight {r.stalled_s}s", str(r.line)])
        if rows:
            out += _table(rows, ["device", "driver", "kind", "count", "device address", "size", "direction",
                                 "mapped as", "page_pool", "line"])
        out += [f"  - {a}" for a in diag.dma_assessment]
    if correlation is not None:
        from .leaks_trace import render_correlation

        out += ["", *render_correlation(correlation)]
    if diag.notes:
        out += ["", "Notes:"] + [f"  - {n}" for n in diag.notes]
    return "\n".join(out)


def run_leaks(report: str, *, kernel: str | None, trace: str | None, as_json: bool, out_dir: str | None) -> None:
    """Diagnose REPORT (the ``iovatrace leaks`` command).

    Args:
        report: a report file or ``-`` for stdin.
        kernel: ``--kernel``: version or profile name; inferred from the report when ``None``.
        trace: ``--trace``: a trace of the same run to correlate.
        as_json: print one JSON object instead of the text report.
        out_dir: write the Parquet tables there.

    Raises:
        UnusableReportError: unreadable or unusable report (exit status 2).
        IovatraceError: the trace cannot be correlated.
    """
    data, name = read_log_input(report)
    diag = diagnose(data, path=name, kernel=kernel)
    correlation = None
    if trace is not None:
        from .leaks_trace import correlate_trace

        correlation = correlate_trace(trace, diag)
    if out_dir:
        import pyarrow.parquet as pq

        os.makedirs(out_dir, exist_ok=True)
        for tname, table in diagnosis_tables(diag, correlation).items():
            pq.write_table(table, os.path.join(out_dir, f"{tname}.parquet"))
    if as_json:
        click.echo(json.dumps(diagnosis_json(diag, correlation), indent=1))
    else:
        click.echo(render_text(diag, correlation))
        if out_dir:
            click.echo(f"\n# wrote Parquet tables to {out_dir}")
