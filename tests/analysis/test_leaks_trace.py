"""Leak diagnosis with --trace: correlation with the replay of a real 6.12 lab trace, and a pure unit check."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from iovatrace.analysis.leaks import diagnose
from iovatrace.analysis.leaks_trace import correlate_result, render_correlation
from iovatrace.cli import cli
from iovatrace.parsers.logs.kmemleak import KmemleakFrame, KmemleakObject, render_kmemleak_object
from iovatrace.replay.findings import Finding, Severity

pytest.importorskip("iovatrace.replay.commands", reason="the replay driver is not in this build")


def _mag(addr: int, first: int, pfns: list[int]) -> str:
    dump = b"".join(w.to_bytes(8, "little") for w in [first, *pfns])[:32]
    frames = [KmemleakFrame(n, 0x10, 0x100, None, None, "none", None, None, None, False, "")
              for n in ("kmem_cache_alloc_noprof", "free_iova_fast", "fq_ring_free_locked")]
    return render_kmemleak_object(KmemleakObject(address=addr, size=1024, comm="kworker/0:1", pid=5, jiffies=1,
                                                 crc=1, hexdump_len=len(dump), hexdump=dump, frames=frames),
                                  ">=6.13")


@pytest.fixture(scope="module")
def lab(shared_data: Path) -> tuple[Path, dict[int, str]]:
    """The lazy 6.12 lab trace and the fate of every magazine address from its raw kmem events."""
    from iovatrace.parsers import open_trace
    from iovatrace.schema import iter_events

    trace = shared_data / "traces-lab" / "lazy_v7-6.12" / "trace.dat"
    tables = open_trace(trace).read_tables(["kmem:kmem_cache_alloc", "kmem:kmem_cache_free"])
    last: dict[int, str] = {}
    for ev in iter_events(tables):  # raw events, independent of the replay model
        last[ev.fields["ptr"]] = "alloc" if ev.name.endswith("alloc") else "free"
    return trace, last


@pytest.fixture(scope="module")
def replayed(lab: tuple[Path, dict[int, str]]) -> tuple[Any, Any]:
    """One replay of the lab trace (state at the end, snapshot at 13 s) and the IOMMU layer's ledger."""
    from iovatrace.analysis.leaks_trace import _device_ledger
    from iovatrace.replay.commands import replay_trace

    res = replay_trace(str(lab[0]), kernel="6.12", at_ns=13_000_000_000)
    return res, _device_ledger(str(lab[0]), res.profile)


def test_trace_correlation_agrees_with_raw_kmem_events(lab: tuple[Path, dict[int, str]],
                                                       replayed: tuple[Any, Any]) -> None:
    trace, last = lab
    alive = sorted(a for a, s in last.items() if s == "alloc")
    freed = sorted(a for a, s in last.items() if s == "free")
    assert alive and freed
    report = "".join(_mag(a, 0, [0x1000 + i]) for i, a in enumerate(alive + freed))
    corr = correlate_result(replayed[0], diagnose(report, path="r", kernel="6.12"))
    states = {int(m["address"], 16): m["state"] for m in corr["magazines"]}
    held = [a for a, s in states.items() if s in ("loaded", "prev", "depot")]
    assert held, "the replay should place some magazines of the observed domain"
    assert set(held) <= set(alive)  # everything the replay holds is alive by the raw events
    assert all(states[a] not in ("loaded", "prev", "depot") for a in freed)
    assert corr["profile"] == "6.12" and corr["time"] == "end of trace"


def test_trace_correlation_text_and_pfn_owner(lab: tuple[Path, dict[int, str]],
                                              replayed: tuple[Any, Any]) -> None:
    trace, last = lab
    res = replayed[0]
    st, (where, bin_, cpu, mag) = next((s, m) for s in res.domains if s.dom.rcaches is not None
                                       for m in s.dom.iter_magazines() if m[3].addr and m[3].pfns)
    assert last[mag.addr] == "alloc"
    report = _mag(mag.addr, len(mag.pfns), mag.pfns[:3])
    corr = correlate_result(res, diagnose(report, path="r", kernel="6.12"))
    (m,) = corr["magazines"]
    assert (m["state"], m["domain"], m["bin"]) == (where, st.name, bin_)
    owners = corr["iova_ranges"][0]["owners"]
    assert any(o["domain"] == st.name and o["state"] == "cached" for o in owners)
    assert "referenced" in corr["chains"][0]["conclusion"]


def test_devices_side_by_side_unit() -> None:
    res = SimpleNamespace(domains=[], profile=None, findings=[
        Finding("outstanding_mappings", Severity.WARNING, 5, "2 DMA mapping(s) of 0000:00:04.0 still live",
                domain="0xd", device="0000:00:04.0",
                details={"count": 2, "bytes": 8192, "when": "driver unbind",
                         "mappings": [{"dma_addr": 0xFFF00000, "size": 4096, "direction": "FROM_DEVICE"}]}),
    ])
    log = ("DMA-API: nvme 0000:00:04.0: device driver has pending DMA allocations while released from device "
           "[count=2]\nDMA-API: e1000e 0000:00:03.0: device driver has pending DMA allocations while released "
           "from device [count=1]\n")
    corr = correlate_result(res, diagnose(log, path="d"))
    by = {d["device"]: d for d in corr["devices"]}
    assert by["0000:00:04.0"]["agree"] is True and by["0000:00:04.0"]["replay"][0]["first"]["dma_addr"] == \
        "0xfff00000"
    assert by["0000:00:03.0"]["replay"] == [] and "agree" not in by["0000:00:03.0"]


def test_printk_time_of_a_console_report_gives_depot_sizes(lab: tuple[Path, dict[int, str]]) -> None:
    trace, last = lab
    alive = sorted(a for a, s in last.items() if s == "alloc")[:2]
    # The lab trace uses the 'local' clock, the clock of printk timestamps on the same boot.
    report = "".join(f"[   13.000000] kmemleak: {ln}\n" for a in alive for ln in _mag(a, 0, [1]).splitlines())
    r = CliRunner().invoke(cli, ["leaks", "--kernel", "6.12", "--json", "--trace", str(trace), "-"], input=report)
    assert r.exit_code == 0, r.output
    at = json.loads(r.output)["trace"]["at_report"]
    assert at["ts_ns"] == 13_000_000_000 and at["inside_trace"] is True
    assert at["domains"] and all(len(d["depot_sizes"]) in (0, 6) for d in at["domains"])
    text = "\n".join(render_correlation(json.loads(r.output)["trace"]))
    assert "at the report's printk time 13.000000s: depot sizes per bin" in text


def test_dma_debug_beside_the_replays_ledger(shared_data: Path, replayed: tuple[Any, Any]) -> None:
    """The ledger's live mappings per device match raw dma:dma_map_page/dma_unmap_page pairs of the trace."""
    from iovatrace.parsers import open_trace
    from iovatrace.schema import iter_events

    trace = shared_data / "traces-lab" / "lazy_v7-6.12" / "trace.dat"
    tables = open_trace(trace).read_tables(["dma:dma_map_page", "dma:dma_unmap_page", "dma:dma_map_sg"])
    assert "0000:00:03.0" not in tables["dma:dma_map_sg"].column("device").to_pylist()  # the NIC maps pages only
    live: dict[int, dict[str, object]] = {}
    for ev in iter_events(tables, ["dma:dma_map_page", "dma:dma_unmap_page"]):
        f = ev.fields
        if f["device"] != "0000:00:03.0":
            continue
        if ev.name == "dma:dma_map_page":
            live[f["dma_addr"]] = f
        else:
            live.pop(f["addr"], None)
    addr = sorted(live)[len(live) // 2]
    log = ("DMA-API: e1000e 0000:00:03.0: device driver has pending DMA allocations while released from device "
           f"[count={len(live)}]\nOne of leaked entries details: [device address=0x{addr:016x}] "
           f"[size={live[addr]['size']} bytes] [mapped with DMA_FROM_DEVICE] [mapped as single]\n")
    corr = correlate_result(replayed[0], diagnose(log, path="d", kernel="6.12"), ledger=replayed[1])
    by = {d["device"]: d for d in corr["devices"]}
    nic = by["0000:00:03.0"]
    assert nic["live_at_end"]["count"] == len(live)
    (dd,) = nic["dma_debug"]
    assert dd["replay_mapping"]["dma_addr"] == f"0x{addr:x}" and dd["replay_mapping"]["size"] == live[addr]["size"]


def test_correlation_tables(lab: tuple[Path, dict[int, str]], replayed: tuple[Any, Any]) -> None:
    from iovatrace.analysis.leaks_cli import diagnosis_tables

    _, last = lab
    alive = sorted(a for a, s in last.items() if s == "alloc")[:3]
    diag = diagnose("".join(_mag(a, 0, [1]) for a in alive) + "DMA-API: e1000e 0000:00:03.0: device driver has "
                    "pending DMA allocations while released from device [count=3]\n", path="t", kernel="6.12")
    corr = correlate_result(replayed[0], diag, ledger=replayed[1])
    tables = diagnosis_tables(diag, corr)
    mags = tables["leak_trace_magazines"].to_pylist()
    assert [m["address"] for m in mags] == alive
    devs = {d["device"]: d for d in tables["leak_trace_devices"].to_pylist()}
    assert devs["0000:00:03.0"]["dma_debug_count"] == 3 and devs["0000:00:03.0"]["live_at_end"] == 255
