"""Rendering a :class:`~.driver.ReplayResult`: a JSON-ready dict and the text summary of ``iovatrace replay``.

Every number says whether it is exact or a lower bound: counts over learned (partially observed) domains and over
domains touched by a gap are lower bounds.
"""

from __future__ import annotations

from typing import Any

from .driver import ReplayResult
from .state import UNCACHED_BIN

__all__ = ["result_to_dict", "render_text", "hit_rates"]


def hit_rates(res: ReplayResult) -> list[dict[str, Any]]:
    """rcache hit rate per size bin over all domains (bin 6 = uncached sizes ≥ 33 pages)."""
    out = []
    for b in range(UNCACHED_BIN + 1):
        hits = sum(st.hits[b] for st in res.domains)
        misses = sum(st.misses[b] for st in res.domains)
        n = hits + misses
        out.append({"bin": b, "pages": f"{1 << b}" if b < UNCACHED_BIN else ">32", "hits": hits,
                    "misses": misses, "hit_rate": hits / n if n else None})
    return out


def _certainty_of_counts(res: ReplayResult) -> str:
    exact = all(st.observed and st.gap is None for st in res.domains) and res.gap_count == 0
    return "exact" if exact else "lower_bound"


def result_to_dict(res: ReplayResult) -> dict[str, Any]:
    """One JSON object: profile, totals, per-domain summaries, hit rates, findings, fidelity, gaps."""
    doms = res.domains
    fq = res.extras.get("flush_queue", {})
    return {
        "trace": res.extras.get("trace"),
        "kernel_release": res.extras.get("kernel_release"),
        "profile": res.profile.name if res.profile else None,
        "profile_how": res.profile_how,
        "events": res.events,
        "span_ns": [res.first_ns, res.last_ns],
        "online_cpus": res.online_cpus,
        "domains": [st.summary() for st in doms],
        "devices": sorted({d for st in doms for d in st.devices}),
        "totals": {
            "domains": len(doms),
            "fully_observed": sum(1 for st in doms if st.observed),
            "allocs": sum(st.allocs for st in doms),
            "frees": sum(st.frees for st in doms),
            "free_iova": sum(st.free_iova_calls for st in doms),
            "alloc_failures": sum(st.failures for st in doms),
            "rcache_flushes": sum(st.rcache_flushes for st in doms),
            "live_iovas_at_end": sum(st.live_iovas() for st in doms if st.destroyed_ns is None),
            "certainty": _certainty_of_counts(res),
        },
        "rcache_hit_rate": hit_rates(res),
        "depot": [{"iovad": st.name, "depot_sizes": st.dom.depot_sizes(), "max_depot": st.max_depot}
                  for st in doms],
        "flush_queue": fq,
        "live_mappings": res.extras.get("live_mappings"),
        "findings": [f.to_dict() for f in res.findings],
        "fidelity": res.fidelity.to_dict(),
        "gaps": {"count": res.gap_count, "first": res.gaps[:20],
                 "kprobe_misses": {k: {"hits": h, "misses": m} for k, (h, m) in res.probe_misses.items() if m}},
        "snapshot": res.snapshot,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def render_text(res: ReplayResult) -> str:
    """The human summary printed by ``iovatrace replay``."""
    d = result_to_dict(res)
    t = d["totals"]
    lines = [
        f"trace: {d['trace']}  kernel: {d['kernel_release'] or '?'}  profile: {d['profile']} ({d['profile_how']})",
        f"events replayed: {d['events']:,}  online CPUs at end: {d['online_cpus']}",
        f"domains: {t['domains']} ({t['fully_observed']} fully observed)  devices: {', '.join(d['devices']) or '-'}",
    ]
    for s in d["domains"]:
        lines.append(f"  {s['iovad']} [{s['observed']}] devices={','.join(s['devices']) or '-'} "
                     f"allocs={s['allocs']} frees={s['frees']} live={s['live_iovas']} ({s['live_iovas_certainty']})"
                     f" depot={s['depot_sizes']}" + (" destroyed" if s["destroyed_ns"] else ""))
    lines.append(f"allocations: {t['allocs']:,}  frees: {t['frees']:,} (+{t['free_iova']:,} free_iova)  "
                 f"failures: {t['alloc_failures']}  rcache flushes: {t['rcache_flushes']}  "
                 f"[{t['certainty'].replace('_', ' ')}]")
    lines.append("rcache hit rate per bin: " + "  ".join(
        f"{h['pages']}p:{_pct(h['hit_rate'])}({h['hits'] + h['misses']})" for h in d["rcache_hit_rate"]
        if h["hits"] + h["misses"]))
    fq = d["flush_queue"]
    if fq:
        lines.append("flush queues: " + ", ".join(f"{k}={v}" for k, v in fq.items()))
    lm = d["live_mappings"]
    lines.append(f"live IOVAs at end: {t['live_iovas_at_end']:,} ({t['certainty'].replace('_', ' ')})"
                 + (f"  live mappings: {lm}" if lm is not None else ""))
    fid = d["fidelity"]
    lines.append(f"fidelity: {fid['exact']}/{fid['predicted']} exact ({_pct(fid['exact_rate'])}), "
                 f"{fid['uncertain']} uncertain, {fid['mismatched']} mismatched; learned domains: "
                 f"{fid['learned_matched']}/{fid['learned']} matched")
    for name, c in fid["checks"].items():
        if c["agree"] or c["disagree"]:
            lines.append(f"  check {name}: {c['agree']} agree, {c['disagree']} disagree")
    g = d["gaps"]
    if g["count"] or g["kprobe_misses"]:
        lines.append(f"gaps: {g['count']} detected" + (
            "; kprobe misses: " + ", ".join(f"{k} {v['misses']}/{v['hits'] + v['misses']}"
                                            for k, v in g["kprobe_misses"].items()) if g["kprobe_misses"] else ""))
    lines.append(f"findings: {len(res.findings)}")
    for f in res.findings[:30]:
        lines.append(f"  [{f.severity.value}/{f.certainty.value}] {f.ts_ns / 1e9:.6f} {f.kind}: {f.message}"
                     + (f" (gap: {f.gap})" if f.gap else ""))
    if res.snapshot is not None:
        lines.append(f"state at {res.snapshot['ts_ns'] / 1e9:.6f}s:")
        for s in res.snapshot["domains"]:
            lines.append(f"  {s['iovad']} nodes={s['nodes']} live={s['live_iovas']} cached={s['cached_pfns']} "
                         f"depot={[r['depot_size'] for r in s['rcaches']]} ({s['certainty']})")
    return "\n".join(lines)
