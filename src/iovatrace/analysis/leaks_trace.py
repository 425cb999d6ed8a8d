"""Leak diagnosis, step 3 (optional): correlate a report with a trace of the same run through the replay.

Theory of operation: :func:`iovatrace.replay.commands.replay_trace` rebuilds the IOVA allocator, the rcaches and,
when the devices model is installed, the per-device mapping ledger from a trace. Correlation then asks the
replayed state three questions (model_spec.md §2.9, §8.4, §11.2):

* **Magazines.** Where is each reported magazine? The replay names magazines by address when the trace holds the
  magazine cache's ``kmem:kmem_cache_alloc``/``kmem_cache_free`` events (6.9+ named cache). In a depot or a CPU's
  loaded/prev slot it is referenced: kmemleak's report is a false positive. Freed during the trace: the report
  predates the free or the address was reused. Never seen: allocated before the trace began.
* **IOVA ranges.** Which domain (and device) holds each reported pfn: struct iova ranges and the pfns visible in
  magazine dumps. A pfn alone does not name a domain (each domain is its own IOVA space), so every domain holding
  it is listed.
* **Devices.** The replay's ``outstanding_mappings`` findings (mappings still live at driver unbind, device
  release or domain destruction) beside dma-debug's ``pending DMA allocations`` warnings, per device.

Time: kmemleak records carry jiffies, not trace time, so the replayed state is the state at the end of the trace
(a report read after the trace stopped). The output says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import IovatraceError

if TYPE_CHECKING:
    from .leaks import LeakDiagnosis

__all__ = ["CorrelationUnavailableError", "correlate_trace", "correlate_result", "render_correlation"]


class CorrelationUnavailableError(IovatraceError):
    """``--trace`` was given but the replay cannot answer the questions correlation asks."""


def correlate_trace(trace: str, diag: "LeakDiagnosis") -> dict[str, Any]:
    """Replay ``trace`` and correlate it with the diagnosis.

    Args:
        trace: path of a trace.dat or ftrace text file of the same run.
        diag: the report's diagnosis.

    Returns:
        See :func:`correlate_result`.

    Raises:
        CorrelationUnavailableError: the replay is not available in this build.
        IovatraceError: the trace cannot be read (from the replay).
    """
    try:
        from ..replay.commands import replay_trace
    except ImportError as exc:  # pragma: no cover - only in a build without the replay
        raise CorrelationUnavailableError(
            f"{trace}: Cannot correlate the report with a trace: correlation needs the replay ({exc})") from None
    kernel = diag.kernel.profiles[0].name if diag.kernel.given else None
    stamps = [d.obj.ts for d in diag.objects if d.obj.ts is not None]
    at_ns = int(max(stamps) * 1e9) if stamps else None
    res = replay_trace(trace, kernel=kernel, at_ns=at_ns)
    ledger = None
    modelled = _replay_models_devices()
    if diag.dma_debug or not modelled:
        # Live mappings per device at the end of the trace (the replay result keeps only findings); the layer's
        # findings are used only when the replay did not produce them itself.
        found, live = _device_ledger(trace, res.profile)
        ledger = ([] if modelled else found, live)
    out = correlate_result(res, diag, ledger=ledger)
    out["trace"] = trace
    if at_ns is not None:
        out["at_report"] = _at_report(res, at_ns)
    return out


def _replay_models_devices() -> bool:
    """Whether replay_trace already runs the devices model (its extension hook is installed)."""
    import importlib.util

    return importlib.util.find_spec("iovatrace.replay.extensions") is not None


def _device_ledger(trace: str, profile: Any) -> tuple[list[Any], dict[str, list[Any]]]:
    """Run the replay's IOMMU layer (topology and DMA mapping ledger) over the trace's device events.

    Used when :func:`replay_trace` does not run it itself. Returns ``(findings, live mappings by device at the
    end of the trace)``.
    """
    from ..parsers import open_trace
    from ..replay.iommu_events import IommuLayer
    from ..schema import iter_events

    tr = open_trace(trace)
    names = sorted(k for k, n in tr.event_counts().items() if n and IommuLayer.wants(k))
    layer = IommuLayer(profile, event_names=names, possible_cpus=range(int(getattr(tr.meta, "cpus", 0) or 1)))
    findings: list[Any] = []
    ts = 0
    for ev in iter_events(tr.read_tables(names)):
        ts = ev.ts_ns
        findings += layer.fire_timers(ts)
        findings += layer.step(ev)
    findings += layer.finish(ts)
    live: dict[str, list[Any]] = {}
    for m in layer.topology.ledger.iter_live():
        live.setdefault(m.device, []).append(m)
    return findings, live


def _at_report(res: Any, at_ns: int) -> dict[str, Any]:
    """Depot sizes at the report's printk time (the printk clock is the trace's 'local' clock on one boot)."""
    snap = getattr(res, "snapshot", None) or {}
    first, last = getattr(res, "first_ns", None), getattr(res, "last_ns", None)
    inside = first is not None and last is not None and first <= at_ns <= last
    doms = [{"domain": d["iovad"], "depot_sizes": [b["depot_size"] for b in d.get("rcaches", [])],
             "certainty": d.get("certainty")} for d in snap.get("domains", [])]
    return {"ts_ns": at_ns, "inside_trace": inside, "domains": doms}


def _magazine_index(res: Any) -> tuple[dict[int, dict[str, Any]], dict[int, str], bool]:
    live: dict[int, dict[str, Any]] = {}
    last_op: dict[int, tuple[str, str]] = {}
    has_kmem = False
    for st in res.domains:
        for op, addr in getattr(st, "kmem_trace", ()):
            has_kmem = True
            last_op[addr] = (op, st.name)
        dom = st.dom
        if getattr(dom, "rcaches", None) is None or st.destroyed_ns is not None:
            continue
        for where, bin_, idx, mag in dom.iter_magazines():
            if mag.addr:
                live[mag.addr] = {"domain": st.name, "where": where, "bin": bin_,
                                  ("cpu" if where != "depot" else "position"): idx, "size": len(mag.pfns),
                                  "pfns_head": [f"0x{p:x}" for p in mag.pfns[:3]]}
    freed = {a: dom for a, (op, dom) in last_op.items() if op == "F"}
    return live, freed, has_kmem


def _pfn_owners(res: Any, pfn: int) -> list[dict[str, Any]]:
    out = []
    for st in res.domains:
        dom = st.dom
        node = dom.find_iova(pfn)
        if node is None:
            continue
        cached = bool(getattr(dom, "is_cached", lambda p: False)(node[0]))
        out.append({"domain": st.name, "devices": sorted(getattr(st, "devices", ())),
                    "node": [f"0x{node[0]:x}", f"0x{node[1]:x}"], "state": "cached" if cached else "allocated",
                    "destroyed": st.destroyed_ns is not None, "observed": bool(st.observed)})
    return out


def correlate_result(res: Any, diag: "LeakDiagnosis",
                     ledger: tuple[list[Any], dict[str, list[Any]]] | None = None) -> dict[str, Any]:
    """Correlate a finished replay with the diagnosis (pure: no IO).

    Args:
        res: a :class:`iovatrace.replay.driver.ReplayResult`.
        diag: the report's diagnosis.
        ledger: ``(findings, live mappings by device)`` of the IOMMU layer when the replay did not run it; its
            findings join the replay's.

    Returns:
        ``{"profile", "profile_how", "time", "magazines", "chains", "iova_ranges", "devices",
        "transient_windows", "notes"}``.
    """
    live, freed, has_kmem = _magazine_index(res)
    notes: list[str] = ["replayed state is the state at the end of the trace (kmemleak records carry jiffies, "
                        "not trace time)"]
    mags = []
    for d in diag.objects:
        if d.kind != "iova_magazine":
            continue
        row: dict[str, Any] = {"address": f"0x{d.address:x}"}
        if d.address in live:
            row.update(live[d.address])
            row["state"] = live[d.address]["where"]
            row["meaning"] = ("referenced by the rcache at the end of the trace: kmemleak's report is a false "
                              "positive (model_spec §2.9 rule 5)")
        elif d.address in freed:
            row.update({"state": "freed", "domain": freed[d.address],
                        "meaning": "freed during the trace: the report predates the free, or the address was reused"})
        elif has_kmem:
            row.update({"state": "unknown", "meaning": "not among the magazines the replay followed by address "
                                                       "(allocated before the trace, or in a domain the trace did "
                                                       "not observe from its creation)"})
        else:
            row.update({"state": "unknown", "meaning": "the trace has no kmem events for magazines, so the "
                                                       "replay cannot name magazines by address"})
        mags.append(row)
    if mags and not has_kmem:
        notes.append("record kmem:kmem_cache_alloc/kmem_cache_free filtered to the IOVA call sites (6.9+ named "
                     "cache) to follow magazines by address")
    ranges = []
    for d in diag.objects:
        pfns: list[int] = []
        if d.kind == "iova" and d.pfn_lo is not None and d.pfn_hi is not None and d.pfn_lo <= d.pfn_hi:
            pfns = [d.pfn_lo]
        elif d.kind == "iova" and d.pfn_lo is None and d.pfn_hi is not None:
            pfns = [d.pfn_hi]  # a 32-byte dump shows pfn_hi only; the node holding it is the range
        elif d.kind == "iova_magazine":
            pfns = d.pfns
        for p in pfns:
            ranges.append({"object": f"0x{d.address:x}", "pfn": f"0x{p:x}", "owners": _pfn_owners(res, p)})
    devices: dict[str, dict[str, Any]] = {}
    findings = list(getattr(res, "findings", ())) + (ledger[0] if ledger else [])
    live_maps = ledger[1] if ledger else {}
    for f in findings:
        if f.kind != "outstanding_mappings" or not f.device:
            continue
        det = f.details or {}
        dv = devices.setdefault(f.device, {"device": f.device, "replay": [], "dma_debug": []})
        maps = det.get("mappings") or []
        dv["replay"].append({"ts_ns": f.ts_ns, "when": det.get("when"), "count": det.get("count"),
                             "bytes": det.get("bytes"), "domain": f.domain, "certainty": f.certainty.value,
                             "first": ({"dma_addr": f"0x{maps[0]['dma_addr']:x}", "size": maps[0]["size"],
                                        "direction": maps[0]["direction"]} if maps else None)})
    for r in diag.dma_debug:
        if r.kind != "pending_at_release":
            continue
        key = r.device or "(unnamed)"
        dv = devices.setdefault(key, {"device": key, "replay": [], "dma_debug": []})
        dv["dma_debug"].append({"line": r.line, "driver": r.driver, "count": r.count,
                                "device_address": None if r.device_address is None else f"0x{r.device_address:x}",
                                "size": r.size, "direction": r.direction, "mapped_as": r.mapped_as})
    for dev in set(live_maps) | ({r.device for r in diag.dma_debug if r.device} if live_maps else set()):
        dv = devices.setdefault(dev, {"device": dev, "replay": [], "dma_debug": []})
        maps = live_maps.get(dev, [])
        dv["live_at_end"] = {"count": len(maps), "bytes": sum(m.size for m in maps)}
        for x in dv["dma_debug"]:
            addr = x["device_address"]
            hit = next((m for m in maps if addr is not None and m.dma_addr <= int(addr, 16) < m.dma_addr + m.size),
                       None)
            if hit is not None:
                x["replay_mapping"] = {"dma_addr": f"0x{hit.dma_addr:x}", "size": hit.size, "call": hit.call,
                                       "ts_ns": hit.ts_ns, "domain": hit.domain}
    for dv in devices.values():
        if dv["dma_debug"] and dv["replay"]:
            want = dv["dma_debug"][0]["count"]
            got = [x["count"] for x in dv["replay"] if x["when"] == "driver unbind"]
            dv["agree"] = bool(got) and want == got[0]
    chains = []
    by_addr = {m["address"]: m for m in mags}
    for c in diag.chains:
        states = [by_addr[f"0x{a:x}"]["state"] for a in c.addresses if f"0x{a:x}" in by_addr]
        if not states:
            continue
        held = sum(st in ("loaded", "prev", "depot") for st in states)
        if held == len(states):
            concl = ("the replay holds every magazine of this chain in the rcache at the end of the trace: they "
                     "are referenced, so kmemleak reported them falsely")
        elif "freed" in states:
            concl = "the replay saw some of these magazines freed: the report is stale or addresses were reused"
        elif held:
            concl = f"the replay holds {held} of {len(states)} magazines in the rcache; the rest are unknown"
        else:
            concl = "the replay cannot place these magazines (see the notes)"
        chains.append({"chain": c.chain_id, "states": states, "conclusion": concl})
    windows = [{"ts_ns": f.ts_ns, "domain": f.domain, **(f.details or {})}
               for f in findings if f.kind == "depot_pop_transient_leak"]
    prof = getattr(res, "profile", None)
    return {"profile": getattr(prof, "name", None), "profile_how": getattr(res, "profile_how", None),
            "time": "end of trace", "magazines": mags, "chains": chains, "iova_ranges": ranges,
            "devices": sorted(devices.values(), key=lambda x: x["device"]), "transient_windows": windows,
            "notes": notes}


def render_correlation(corr: dict[str, Any]) -> list[str]:
    """Text lines for the correlation section of the terminal report."""
    out = [f"Trace {corr.get('trace', '')}: replayed with profile {corr.get('profile')} "
           f"({corr.get('profile_how') or '-'}); state at the {corr['time']}"]
    if corr["magazines"]:
        out.append("  magazines:")
        for m in corr["magazines"]:
            where = m["state"]
            if where in ("loaded", "prev"):
                where += f" of CPU {m.get('cpu')}, bin {m.get('bin')}"
            elif where == "depot":
                where += f" bin {m.get('bin')} position {m.get('position')}"
            out.append(f"    {m['address']}: {where}"
                       + (f" in domain {m['domain']}" if m.get("domain") else "") + f": {m['meaning']}")
    for c in corr.get("chains", []):
        out.append(f"  chain {c['chain']}: {c['conclusion']}")
    if corr["iova_ranges"]:
        out.append("  IOVA pfns in the report, by domain:")
        for r in corr["iova_ranges"]:
            owners = "; ".join(f"{o['domain']} {o['state']} node {o['node'][0]}-{o['node'][1]}"
                               f" ({', '.join(o['devices']) or 'no device seen'}"
                               f"{', destroyed' if o['destroyed'] else ''})" for o in r["owners"])
            out.append(f"    {r['object']} pfn {r['pfn']}: {owners or 'in no domain at the end of the trace'}")
    if corr["devices"]:
        out.append("  per device: dma-debug pending at release vs the replay's outstanding mappings:")
        for dv in corr["devices"]:
            dd = ", ".join(f"count={x['count']} (line {x['line']})" for x in dv["dma_debug"]) or "-"
            rp = ", ".join(f"{x['count']} at {x['when']}" for x in dv["replay"]) or "-"
            if "live_at_end" in dv:
                rp += f"; {dv['live_at_end']['count']} live at the end ({dv['live_at_end']['bytes']} bytes)"
            for x in dv["dma_debug"]:
                if "replay_mapping" in x:
                    hm = x["replay_mapping"]
                    rp += f"; holds dma-debug's entry {x['device_address']} ({hm['call']} at {hm['ts_ns']} ns)"
            agree = {True: "agree", False: "DIFFER"}.get(dv.get("agree"), "")
            out.append(f"    {dv['device']}: dma-debug {dd} | replay {rp} {agree}".rstrip())
    if corr["transient_windows"]:
        out.append(f"  the replay saw {len(corr['transient_windows'])} depot-pop window(s) in which kmemleak can "
                   "report the magazines chained behind a popped one")
    at = corr.get("at_report")
    if at is not None:
        where = "" if at["inside_trace"] else " (outside the trace: different clocks, or not covered)"
        out.append(f"  at the report's printk time {at['ts_ns'] / 1e9:.6f}s{where}: depot sizes per bin: "
                   + ("; ".join(f"{d['domain']} {d['depot_sizes']}" for d in at["domains"]) or "no domain"))
    out += [f"  note: {n}" for n in corr["notes"]]
    return out
