"""The extension models' per-name dispatch (routes, memos) decides exactly what the name-string rules decide.

``IommuLayer.step`` and ``IommuExtension.step`` look every decision that depends only on the event name up in a
memoised route, and the extension runs the layer's per-event body after its own checks. These tests hold both to
the plain rules (an oracle written the way the model used to decide per event) and to each other, on hand-built
sequences and on a lab trace.
"""

from __future__ import annotations

from typing import Any

import pytest

from iovatrace.event import Event
from iovatrace.replay import iommu_events
from iovatrace.replay.dma_iommu import FqConfig, IommuDmaCookie, IovaFq
from iovatrace.replay.extensions import IommuExtension
from iovatrace.replay.findings import Finding
from iovatrace.replay.iommu_events import _HANDLERS, IommuLayer, _hex, _route

NAMES = [
    "iommu:map", "iommu:unmap", "iommu:unmap_extra", "iommu:add_device_to_group", "iommu:attach_device_to_domain",
    "dma:dma_map_page", "dma:dma_unmap_sg", "dma:dma_sync_single_for_cpu", "dmaiommu:fq_ring_free_locked",
    "dmaiommu:__iommu_dma_unmap", "dmaiommu:something_new", "iova:alloc_iova_fast", "iova:alloc_iova_fast_ret",
    "iova:free_iova", "intel_iommu:qi_submit", "intel_iommu:cache_tag_flush_range_np", "intel_iommu:prq_report",
    "probe:qi_submit_sync", "kprobes:qi_submit_sync_ret", "driver:bind", "driver:unbind", "probe:really_probe",
    "probe:device_release_driver_internal_ret", "iovatrace:__device_release_driver_ret",
    "probe:device_unbind_cleanup", "page_pool:page_pool_release", "probe:page_pool_dma_map",
    "page_pool:page_pool_destroy", "probe:page_pool_other", "sched:sched_switch", "cpuhp:cpuhp_enter",
    "nocolon", "qi_submit_sync", "",
]


def _oracle(name: str) -> tuple[bool, str | None, bool, bool]:
    """The per-event rules as the layer applied them before routes: (wanted, handler name, ends flush, resolves)."""
    fn = name.split(":", 1)[-1]
    wanted = name.startswith(("iommu:", "dma:", "dmaiommu:", "intel_iommu:", "page_pool:", "driver:")) or name in {
        "iova:alloc_iova_fast", "iova:free_iova_fast", "iova:put_iova_domain", "iova:init_iova_domain"} or \
        fn.startswith(("qi_submit_sync", "page_pool_", "really_probe", "device_unbind_cleanup",
                       "device_release_driver", "__device_release_driver"))
    h = _HANDLERS.get(name) or _HANDLERS.get(fn)
    if h is not None:
        handler: str | None = h.__name__
    elif fn.startswith("qi_submit_sync"):
        handler = "_on_qi_submit_sync" if fn == "qi_submit_sync" else "_on_qi_submit_sync_ret"
    elif fn.endswith(("really_probe", "driver:bind")) or name == "driver:bind":
        handler = "_on_bind"
    elif fn.endswith(("device_unbind_cleanup", "device_release_driver_internal_ret", "__device_release_driver_ret",
                      "driver:unbind")) or name == "driver:unbind":
        handler = "_on_unbind"
    elif fn.endswith("page_pool_dma_map"):
        handler = "_on_page_pool_dma_map"
    elif fn.endswith("page_pool_destroy") or name == "page_pool:page_pool_release":
        handler = "_on_page_pool_destroy"
    elif name.startswith("intel_iommu:cache_tag_flush"):
        handler = "_on_cache_tag_flush"
    else:
        handler = None
    return wanted, handler, not name.startswith("intel_iommu:"), not name.startswith(
        ("iommu:unmap", "intel_iommu:", "dma:"))


@pytest.mark.parametrize("name", NAMES + sorted(IommuExtension(IommuLayer()).events()))
def test_route_decides_what_the_name_rules_decide(name: str) -> None:
    wanted, handler, fn, ends_flush, resolves = _route(name)
    assert (wanted, handler.__name__ if handler else None, ends_flush, resolves) == _oracle(name)
    assert fn == name.split(":", 1)[-1]
    assert IommuLayer.wants(name) is wanted
    assert _route(name) == (wanted, handler, fn, ends_flush, resolves)  # memoised: the same answer again


@pytest.mark.parametrize("value", [0, 1, 0xFF20C99581A7BC00, -8, True, "0x10", "dmar0", None, 2**70])
def test_hex_is_the_plain_formatting(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = f"0x{value:x}" if isinstance(value, int) else str(value)
    assert _hex(value) == plain
    assert _hex(value) == plain  # from the memo
    monkeypatch.setattr(iommu_events, "_MEMO_MAX", 1)  # a full memo is cleared, never wrong
    for v in range(5):
        assert _hex(v) == f"0x{v:x}"
    assert _hex(value) == plain
    assert IommuLayer._cookie_of_iovad(0x1008) == "0x1000" == IommuLayer._cookie_of_iovad("0x1008")


def test_ring_free_log_names_the_ring_or_minus_one() -> None:
    c = IommuDmaCookie("0x1000", FqConfig(fq_size=4), possible_cpus=(0, 1))
    c.queue_iova(0x10, 1, 1, 100)
    assert c.ring_free_log is not None
    assert list(c.ring_free_log[1]) == [(1, 0)]
    stray = IovaFq(4)  # a ring the cookie did not make: the log says -1, as a search of fqs would
    c.fq_ring_free(stray, 0, 200)
    assert list(c.ring_free_log[0]) == [(-1, 0)]
    c.fqs[1] = moved = IovaFq(4, key=0)  # a ring under another key than the one it was made for
    c.fq_ring_free(moved, 0, 300)
    assert c.ring_free_log[0][-1] == (1, 0)


# -- extension vs layer -------------------------------------------------------------------------------------

DEV = "0000:00:03.0"
DOM, IOVAD = 0xFFFF8880AA000000, 0xFFFF8880BB000008
COOKIE, TIMER, DEVPTR = IOVAD - 8, 0xFFFF8880BB0000A0, 0xFFFF8880CC000000


def _lazy_sequence() -> list[Event]:
    """Maps and lazy unmaps on two CPUs, a full ring, timeouts, sg maps, a QI wait, an unbind with live mappings."""
    evs: list[Event] = []
    t = 1_000_000
    seq = {0: 0, 1: 0}

    def e(name: str, cpu: int = 0, **fields: Any) -> None:
        nonlocal t
        t += 1000
        evs.append(Event(t, cpu, seq[cpu], name, 100, fields))
        seq[cpu] += 1

    e("iova:init_iova_domain", iovad=IOVAD, granule=4096, start_pfn=1)
    e("iommu:add_device_to_group", gid=3, device=DEV)
    e("iommu:attach_device_to_domain", device=DEV)
    e("driver:bind", device=DEV)
    e("dmaiommu:iommu_dma_init_fq", domain=DOM)
    for i in range(40):
        cpu = i % 2
        pfn = 0xFFFFF - i
        e("dmaiommu:__iommu_dma_map", cpu, dev=DEVPTR, phys=0x1000 * i, size=4096, prot=3)
        e("dmaiommu:iommu_dma_alloc_iova", cpu, domain=DOM, dev=DEVPTR, devname=DEV, size=4096)
        e("iova:alloc_iova_fast", cpu, iovad=IOVAD, size=1, limit_pfn=0xFFFFF, flush_rcache=0)
        e("dmaiommu:iommu_dma_alloc_iova_ret", cpu, iova=pfn << 12)
        e("iommu:map", cpu, iova=pfn << 12, paddr=0x1000 * i, size=4096)
        e("dma:dma_map_page", cpu, device=DEV, dma_addr=pfn << 12, size=4096, dir=i % 4, phys_addr=0x1000 * i,
          attrs=0)
        if i % 7 == 3:
            e("dma:dma_map_sg", cpu, device=DEV, dir=2, dma_addrs=[0x5000_0000 + i * 0x2000],
              lengths=[8192], phys_addrs=[0x9000_0000 + i * 0x2000, 0x9000_1000 + i * 0x2000])
            e("dma:dma_unmap_sg", cpu, device=DEV, dir=2, addrs=[0x9000_0000 + i * 0x2000])
        if i % 3 != 2:  # unmap two of three: some stay live for the unbind
            e("dmaiommu:__iommu_dma_unmap", cpu, dev=DEVPTR, dma_addr=pfn << 12, size=4096)
            e("iommu:unmap", cpu, iova=pfn << 12, size=4096, unmapped_size=4096)
            e("dmaiommu:fq_ring_free_locked", cpu, cookie=COOKIE, fq=0x7000 + cpu, head=0, tail=i % 3, mod_mask=3)
            e("dma:dma_unmap_page", cpu, device=DEV, addr=pfn << 12, size=4096, dir=i % 4, attrs=0)
        if i % 10 == 9:
            e("dmaiommu:fq_flush_timeout", cpu, timer=TIMER)
            e("dmaiommu:fq_flush_iotlb", cpu, cookie=COOKIE)
            e("intel_iommu:qi_submit", cpu, iommu="dmar0", qw0=1, qw1=0, qw2=0, qw3=0)
            e("probe:qi_submit_sync", cpu, iommu="dmar0", count=0)
            e("probe:qi_submit_sync_ret", cpu)
            e("dmaiommu:fq_ring_free_locked", cpu, cookie=COOKIE, fq=0x7000 + cpu, head=0, tail=1, mod_mask=3)
            e("iova:free_iova_fast", cpu, iovad=IOVAD, pfn=pfn, size=1)
            e("intel_iommu:cache_tag_flush_all", cpu, iommu="dmar0")
        e("sched:sched_switch", cpu)
    e("driver:unbind", device=DEV)
    e("iova:put_iova_domain", iovad=IOVAD)
    e("iommu:remove_device_from_group", gid=3, device=DEV)
    return evs


def _via_layer(events: list[Event], **kw: Any) -> tuple[list[Finding], IommuLayer]:
    layer = IommuLayer(None, possible_cpus=(0, 1), **kw)
    out: list[Finding] = []
    last = 0
    for ev in events:
        if layer.wants(ev.name):
            last = ev.ts_ns
            out += layer.fire_timers(ev.ts_ns)
            out += layer.step(ev)
    return out + layer.finish(last), layer


def _via_extension(events: list[Event], **kw: Any) -> tuple[list[Finding], IommuLayer]:
    ext = IommuExtension(IommuLayer(None, possible_cpus=(0, 1), **kw))
    for ev in events:
        ext.step(ev)
    return ext.finish(), ext.layer


def _state(layer: IommuLayer) -> str:
    cookies = {k: (c.stats, c.fq_flush_start_cnt, c.fq_flush_finish_cnt, list(c.iter_queued()))
               for k, c in {**layer.cookies, **layer.freed_cookies}.items()}
    led = layer.topology.ledger
    return repr((layer.summary(), layer.stats, cookies, sorted(led.iter_live(), key=repr), led.mapped, led.unmapped,
                 led.unmatched_unmaps, {k: (r.stats, r.free_head, r.free_tail) for k, r in layer.qi.items()}))


@pytest.mark.parametrize("kw", [{}, {"bug_modes": ["c", "d", "e"]},
                                {"event_names": {"dma:dma_map_page", "dmaiommu:fq_ring_free_locked"}}])
def test_extension_step_is_layer_step(kw: dict[str, Any]) -> None:
    events = _lazy_sequence()
    f_layer, layer = _via_layer(events, **kw)
    f_ext, ext_layer = _via_extension(events, **kw)
    assert [repr(f) for f in f_ext] == [repr(f) for f in f_layer]
    assert _state(ext_layer) == _state(layer)
    assert layer.stats.events > 300 and layer.summary()["cookies"]  # the sequence reached the flush queue
    assert any(f.kind == "outstanding_mappings" for f in f_layer)  # and the unbind check


def test_extension_step_is_layer_step_on_a_lab_trace(shared_data: Any) -> None:
    from iovatrace.parsers import open_trace
    from iovatrace.schema import iter_events

    path = shared_data / "traces-lab" / "lazy_v7-6.12" / "trace.dat"
    if not path.exists():
        pytest.skip(f"{path} not found")
    tr = open_trace(str(path))
    names = sorted(n for n, k in tr.event_counts().items() if k)
    events = list(iter_events(tr.read_tables(names)))
    kw = {"event_names": names, "bug_modes": ["c", "d", "e"]}
    f_layer, layer = _via_layer(events, **kw)
    f_ext, ext_layer = _via_extension(events, **kw)
    assert [repr(f) for f in f_ext] == [repr(f) for f in f_layer]
    assert _state(ext_layer) == _state(layer)
    assert layer.stats.events > 10_000
