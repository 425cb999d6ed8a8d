"""Seed bug classes (c), (d), (e) replayed from hand-built event sequences, with the bug mode on and off.

Each sequence follows the kernel's own event order for the path (model_spec §5.3, §8.4, §8.5): tracepoint and
kprobe names and fields are those of the lab's 6.1/6.12 kernels (traces-lab/probe*/event_formats.txt,
kprobe_events.txt); driver bind/unbind, page_pool and qi_submit_sync are probes a user adds (model_spec §6.5).
"""

from __future__ import annotations

from typing import Any

import pytest

from iovatrace.event import Event
from iovatrace.replay.findings import Certainty, Severity
from iovatrace.replay.iommu_events import IommuLayer
from iovatrace.replay.profiles import profile_for

US = 1000


class Seq:
    """Builds a time-ordered event list; each event gets the next microsecond and a per-CPU seq."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.t = 1_000_000
        self.seq: dict[int, int] = {}

    def __call__(self, name: str, cpu: int = 0, **fields: Any) -> Event:
        self.t += US
        s = self.seq.get(cpu, 0)
        self.seq[cpu] = s + 1
        ev = Event(self.t, cpu, s, name, 100 + cpu, fields)
        self.events.append(ev)
        return ev


def run(events: list[Event], **kw: Any) -> list:
    layer = IommuLayer(kw.pop("profile", None), **kw)
    out = []
    for ev in events:
        out += layer.fire_timers(ev.ts_ns)
        if layer.wants(ev.name):
            out += layer.step(ev)
    out += layer.finish(events[-1].ts_ns)
    return [f for f in out if f.severity is not Severity.INFO]


# -- (c) page_pool pages still mapped when the driver unbinds ----------------------------------------------

NIC = "0000:00:03.0"
POOL = 0xFFFF888012340000


def seed_c_events() -> list[Event]:
    e = Seq()
    e("iommu:add_device_to_group", gid=3, device=NIC)
    e("iommu:attach_device_to_domain", device=NIC)
    e("driver:bind", device=NIC)
    for i in range(3):  # the pool maps three RX pages
        e("probe:page_pool_dma_map", pool=POOL)
        e("dma:dma_map_page", device=NIC, phys_addr=0x1000000 + i * 0x1000, dma_addr=0xFFFF0000 - i * 0x1000,
          size=4096, dir=2, attrs=0)
    e("dma:dma_map_page", device=NIC, phys_addr=0x2000042, dma_addr=0xFFFE0042, size=42, dir=1, attrs=0)
    e("dma:dma_unmap_page", device=NIC, addr=0xFFFE0042, size=42, dir=1, attrs=0)  # TX completion
    e("dma:dma_unmap_page", device=NIC, addr=0xFFFF0000, size=4096, dir=2, attrs=0)  # a page came back
    e("probe:page_pool_destroy", pool=POOL)  # driver remove(): two pages still held by sockets
    e("driver:unbind", device=NIC)
    e("iommu:remove_device_from_group", gid=3, device=NIC)
    # much later a socket frees its skb: page_pool returns the page and unmaps it on the gone device
    e("dma:dma_unmap_page", cpu=1, device=NIC, addr=0xFFFEF000, size=4096, dir=2, attrs=0)
    return e.events


def test_seed_c_detected_without_page_pool_dma_tracking() -> None:
    events = seed_c_events()
    fs = run(events, bug_modes=["c"])
    kinds = [f.kind for f in fs]
    assert kinds == ["outstanding_mappings", "outstanding_mappings", "unmap_after_release"]
    unbind, release, late = fs
    assert unbind.details["when"] == "driver unbind" and unbind.severity is Severity.WARNING
    assert release.details["when"] == "device release" and release.severity is Severity.ERROR
    assert unbind.details["count"] == 2 and {m["dma_addr"] for m in unbind.details["mappings"]} == {
        0xFFFEF000, 0xFFFEE000}
    assert all(m["owner"] == f"page_pool:0x{POOL:x}" and m["direction"] == "FROM_DEVICE"
               for m in unbind.details["mappings"])
    assert unbind.certainty is Certainty.EXACT and unbind.device == NIC
    # the evidence: the two dma_map_page events and the unbind
    keyed = {(ev.ts_ns, ev.cpu, ev.seq): ev for ev in events}
    assert [keyed[k].name for k in unbind.events] == ["dma:dma_map_page", "dma:dma_map_page", "driver:unbind"]
    assert late.severity is Severity.ERROR and keyed[late.events[-1]].cpu == 1


def test_seed_c_not_detected_with_the_v6_15_fix() -> None:
    assert run(seed_c_events(), bug_modes=[]) == []
    # the kernel profile decides when no bug mode is given: 6.15 tracks, 6.12 does not
    assert run(seed_c_events(), profile=profile_for("6.15")) == []
    assert [f.kind for f in run(seed_c_events(), profile=profile_for("6.12"))][:1] == ["outstanding_mappings"]


def test_seed_c_never_certain_after_a_loss() -> None:
    """The same trace with a ring-buffer loss before the unbind: the two pages may have been unmapped in the
    lost window, so the finding is uncertain, names the gap, and is only a warning."""
    layer = IommuLayer(None, bug_modes=["c"])
    fs = []
    events = seed_c_events()
    for ev in events:
        if ev.name == "driver:unbind":
            layer.note_lost_events(ev.ts_ns - 1, 0, 12)
        fs += layer.step(ev)
    assert fs and all(f.certainty is Certainty.UNCERTAIN and "lost" in (f.gap or "") for f in fs)
    assert all(f.severity is Severity.WARNING for f in fs)


def test_seed_c_unknown_prior_mappings_are_not_invented() -> None:
    """Unmaps of mappings made before the trace began, then an unbind: nothing is outstanding."""
    e = Seq()
    e("iommu:add_device_to_group", gid=3, device=NIC)
    e("dma:dma_unmap_page", device=NIC, addr=0xFFFA0000, size=4096, dir=2, attrs=0)
    e("driver:unbind", device=NIC)
    e("iommu:remove_device_from_group", gid=3, device=NIC)
    assert run(e.events, bug_modes=["c"]) == []


def test_seed_c_kprobe_ledger_is_uncertain() -> None:
    """6.1 has no dma:* events: a mapping learned from kprobes (whose hits can be dropped) is never 'exact'."""
    e = Seq()
    dev = 0xFF11000012345000
    e("iommu:add_device_to_group", gid=4, device="0000:00:04.0")
    e("dmaiommu:__iommu_dma_map", dev=dev, phys=0x3000000, size=4096, prot=6, dma_mask=(1 << 64) - 1)
    e("dmaiommu:iommu_dma_alloc_iova", domain=0xFF11000011110000, size=4096, dma_limit=(1 << 64) - 1, dev=dev,
      devname="0000:00:04.0")
    e("iova:alloc_iova_fast", iovad=0xFF11000022220008, size=1, limit_pfn=0xFFFFF, flush_rcache=0)
    e("iova:alloc_iova_fast_ret", pfn=0xFFFFF)
    e("dmaiommu:iommu_dma_alloc_iova_ret", iova=0xFFFFF000)
    e("iommu:remove_device_from_group", gid=4, device="0000:00:04.0")
    (f,) = run(e.events, bug_modes=["c"])
    assert f.kind == "outstanding_mappings" and f.certainty is Certainty.UNCERTAIN and "kprobe" in f.gap
    assert f.details["mappings"][0]["direction"] == "FROM_DEVICE" and f.details["mappings"][0]["call"] == \
        "__iommu_dma_map"


# -- (d) VT-d QI reclaim frees another waiter's wait slot ---------------------------------------------------


def seed_d_events(second_count: int = 0, order: str = "t1_first") -> list[Event]:
    e = Seq()
    e("probe:qi_submit_sync", cpu=0, iommu="dmar0", count=1, options=0)  # T1: one IOTLB invalidation + wait
    e("intel_iommu:qi_submit", cpu=0, iommu="dmar0", qw0=0x500F2, qw1=0xFFFA0000, qw2=0, qw3=0)
    e("probe:qi_submit_sync", cpu=1, iommu="dmar0", count=second_count, options=0)  # T2: a pure wait (drain)
    if order == "t1_first":
        e("probe:qi_submit_sync_ret", cpu=0, retval=0)
    else:
        e("probe:qi_submit_sync_ret", cpu=1, retval=0)
        e("probe:qi_submit_sync_ret", cpu=0, retval=0)
    return e.events


def test_seed_d_lockup_with_the_old_reclaim() -> None:
    events = seed_d_events()
    (f,) = run(events, bug_modes=["d"])
    assert f.kind == "qi_reclaim_lockup" and f.severity is Severity.ERROR and f.certainty is Certainty.EXACT
    assert f.details == {"victim_cpu": 1, "victim_count": 0, "wait_index": 2, "reclaimer_cpu": 0,
                         "submitted_ns": events[2].ts_ns}
    assert f.events == tuple((ev.ts_ns, ev.cpu, ev.seq) for ev in (events[2], events[0], events[3]))


def test_seed_d_no_lockup_after_3cf74230c139() -> None:
    events = seed_d_events() + []
    e = Seq()
    e.t = events[-1].ts_ns
    events.append(Event(e.t + US, 1, 1, "probe:qi_submit_sync_ret", 101, {"retval": 0}))
    assert run(events, bug_modes=[]) == []
    assert run(events, profile=profile_for("6.12")) == []  # 6.12 carries the fix
    assert [f.kind for f in run(seed_d_events(), profile=profile_for("6.11"))] == ["qi_reclaim_lockup"]


@pytest.mark.parametrize(("count", "order"), [(1, "t1_first"), (0, "t2_first")])
def test_seed_d_needs_a_zero_count_waiter_reclaimed_by_another(count: int, order: str) -> None:
    """With count > 0 the waiter's IN_USE invalidation slot stops the walk; if the zero-count waiter polls
    first it frees its own slot. Neither locks up, even with the old reclaim."""
    assert run(seed_d_events(count, order), bug_modes=["d"]) == []


# -- (e) flush-queue entries alive when the domain is torn down -------------------------------------------

DEV = 0xFF11000012345000
DOMAIN = 0xFF11000011110000
COOKIE = 0xFF11000022220000
TIMER = COOKIE + 0xA0
FQ0 = 0xFF8100003FC07830


def seed_e_events(*, timer_after: bool = False, attach_after: bool = False) -> list[Event]:
    e = Seq()
    name = "0000:00:05.0"
    e("iommu:add_device_to_group", gid=7, device=name)
    e("iommu:attach_device_to_domain", device=name)
    for i in range(3):
        e("dmaiommu:__iommu_dma_map", dev=DEV, phys=0x4000000 + i * 0x1000, size=4096, prot=7, dma_mask=(1 << 64) - 1)
        e("dmaiommu:iommu_dma_alloc_iova", domain=DOMAIN, size=4096, dma_limit=(1 << 64) - 1, dev=DEV, devname=name)
        e("iova:alloc_iova_fast", iovad=COOKIE + 8, size=1, limit_pfn=0xFFFFF, flush_rcache=0)
        e("iova:alloc_iova_fast_ret", pfn=0xFFFFF - i)
        e("dmaiommu:iommu_dma_alloc_iova_ret", iova=(0xFFFFF - i) << 12)
    # a first unmap and a timeout teach the model which timer belongs to the cookie
    e("dmaiommu:__iommu_dma_unmap", dev=DEV, dma_addr=0xFFFFF000, size=4096)
    e("iommu:unmap", iova=0xFFFFF000, size=4096, unmapped_size=4096)
    e("dmaiommu:fq_ring_free", cookie=COOKIE, fq=FQ0)
    e("dmaiommu:fq_flush_timeout", timer=TIMER)
    e("dmaiommu:fq_flush_iotlb", cookie=COOKIE)
    e("dmaiommu:fq_ring_free", cookie=COOKIE, fq=FQ0)
    e("iova:free_iova_fast", iovad=COOKIE + 8, pfn=0xFFFFF, size=1)
    # the device goes away with two IOVAs still queued (no timeout in between)
    for pfn in (0xFFFFE, 0xFFFFD):
        e("dmaiommu:__iommu_dma_unmap", dev=DEV, dma_addr=pfn << 12, size=4096)
        e("iommu:unmap", iova=pfn << 12, size=4096, unmapped_size=4096)
        e("dmaiommu:fq_ring_free", cookie=COOKIE, fq=FQ0)
    e("iommu:remove_device_from_group", gid=7, device=name)
    if attach_after:
        e("iommu:attach_device_to_domain", cpu=1, device=name)
    e("iova:put_iova_domain", iovad=COOKIE + 8)
    if timer_after:
        e("dmaiommu:fq_flush_timeout", cpu=1, timer=TIMER)
    return e.events


def test_seed_e_entries_at_teardown_detected_in_bug_mode() -> None:
    events = seed_e_events()
    (f,) = run(events, bug_modes=["e"])
    assert f.kind == "fq_entries_at_teardown" and f.severity is Severity.ERROR
    assert f.domain == f"0x{DOMAIN:x}" and f.details["entries"] == 2 and f.details["timer_armed"]
    assert f.details["pfns"] == [0xFFFFE, 0xFFFFD]
    keyed = {(ev.ts_ns, ev.cpu, ev.seq): ev for ev in events}
    assert [keyed[k].name for k in f.events] == ["dmaiommu:__iommu_dma_unmap"] * 2 + ["iova:put_iova_domain"]


def test_seed_e_not_detected_without_the_bug() -> None:
    assert run(seed_e_events(), bug_modes=[]) == []
    assert run(seed_e_events(), profile=profile_for("6.1")) == []


def test_seed_e_release_race_and_timer_after_teardown() -> None:
    fs = run(seed_e_events(timer_after=True, attach_after=True), bug_modes=["e"])
    assert [f.kind for f in fs] == ["attach_after_release", "fq_entries_at_teardown", "fq_use_after_teardown"]
    # a timer running on a freed cookie is proven by the trace alone, bug mode or not
    assert [f.kind for f in run(seed_e_events(timer_after=True), bug_modes=[])] == ["fq_use_after_teardown"]


# -- the lab's real traces: no false findings from the seeds' checks ----------------------------------------


@pytest.mark.parametrize("trace", ["lazy_v7", "strict_v7-6.12"])
def test_lab_traces_have_no_seed_findings(shared_data, trace: str) -> None:
    from iovatrace.parsers import open_trace
    from iovatrace.schema import iter_events

    tr = open_trace(shared_data / "traces-lab" / trace / "trace.dat")
    tables = tr.read_tables()
    layer = IommuLayer(profile_for(tr.meta.kernel_release), bug_modes=["c", "d", "e"], event_names=list(tables))
    fs = []
    for ev in iter_events(tables, [n for n in tables if layer.wants(n)]):
        fs += layer.fire_timers(ev.ts_ns)
        fs += layer.step(ev)
    # the NVMe PCI remove of the lab: its driver unmapped everything before the release, and its flush queue was
    # empty at put_iova_domain (the last timeout freed it)
    assert [f for f in fs if f.severity is not Severity.INFO] == []
    nvme = layer.topology.devices["0000:00:04.0"]
    assert nvme.releases == 1 and not nvme.released  # removed, then re-added by the rescan


def test_seed_e_uncertain_when_the_queue_may_be_wrong() -> None:
    """A free_iova_fast the modelled queue cannot explain (a lost probe hit somewhere): the teardown finding stays,
    but as an uncertain warning that names the gap."""
    events = seed_e_events()
    teardown = next(i for i, ev in enumerate(events) if ev.name == "iova:put_iova_domain")
    odd = Event(events[teardown].ts_ns - 1, 0, 999, "iova:free_iova_fast", 100,
                {"iovad": COOKIE + 8, "pfn": 0xABCDE, "size": 1})
    (f,) = run(events[:teardown] + [odd] + events[teardown:], bug_modes=["e"])
    assert f.kind == "fq_entries_at_teardown" and f.certainty is Certainty.UNCERTAIN
    assert f.severity is Severity.WARNING and "did not match" in f.gap


def test_models_ride_along_in_the_replay_driver() -> None:
    """make_extensions plugs the layer into H5's ReplayDriver: the 6.11 profile has the old QI reclaim (bug mode d
    by default), 6.12 has the fix."""
    from iovatrace.replay.driver import ReplayDriver
    from iovatrace.replay.extensions import make_extensions

    for kernel, kinds in (("6.11", ["qi_reclaim_lockup"]), ("6.12", [])):
        prof = profile_for(kernel)
        exts = make_extensions(prof, (), 2)
        res = ReplayDriver(prof, 2, extensions=exts).run(seed_d_events())
        assert [f.kind for f in res.findings if f.severity is not Severity.INFO] == kinds
        assert set(exts[0].events()) >= {"probe:qi_submit_sync", "dmaiommu:fq_flush_timeout", "dma:dma_map_page"}
