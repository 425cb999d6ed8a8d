"""Findings of the IOVA replay from hand-built event sequences: what is proven is an error, what a gap could explain
is never reported, partial domains learn prior state, and ring-buffer losses make later results uncertain."""

from __future__ import annotations

from iovatrace.event import Event
from iovatrace.replay.driver import ReplayDriver
from iovatrace.replay.findings import Certainty, Severity
from iovatrace.replay.profiles import profile_for

IOVAD = 0xFFFF888001234208


class _Seq:
    def __init__(self) -> None:
        self.ts = 1_000_000
        self.seq = 0
        self.events: list[Event] = []

    def add(self, name: str, cpu: int = 0, dt: int = 1000, **fields: int) -> None:
        self.ts += dt
        self.seq += 1
        self.events.append(Event(self.ts, cpu, self.seq, name, 1, fields))

    def init(self) -> None:
        self.add("iova:init_iova_domain", iovad=IOVAD, granule=4096, start_pfn=1)
        self.add("iova:iova_domain_init_rcaches", iovad=IOVAD)

    def alloc(self, pfn: int, size: int = 1, limit: int = 0xFFFFF, flush: int = 1, cpu: int = 0, dt: int = 1000):
        self.add("iova:alloc_iova_fast", cpu, dt, iovad=IOVAD, size=size, limit_pfn=limit, flush_rcache=flush)
        self.add("iova:alloc_iova_fast_ret", cpu, pfn=pfn)

    def free(self, pfn: int, size: int = 1, cpu: int = 0) -> None:
        self.add("iova:free_iova_fast", cpu, iovad=IOVAD, pfn=pfn, size=size)


def _run(events: list[Event], **kw):
    return ReplayDriver(profile_for("6.1"), 2, check_every=1, **kw).run(events)


def test_double_free_in_fully_observed_domain_is_an_exact_error() -> None:
    s = _Seq()
    s.init()
    s.alloc(0xFFFFF)
    s.free(0xFFFFF)
    s.free(0xFFFFF)
    res = _run(s.events)
    [f] = res.findings
    assert (f.kind, f.severity, f.certainty) == ("double_free", Severity.ERROR, Certainty.EXACT)
    assert f.events == ((s.events[-1].ts_ns, 0, s.events[-1].seq),)


def test_free_of_never_allocated_iova() -> None:
    s = _Seq()
    s.init()
    s.free(0x12345)
    res = _run(s.events)
    assert [(f.kind, f.severity) for f in res.findings] == [("free_unknown_iova", Severity.ERROR)]


def test_partial_domain_learns_prior_state_without_findings() -> None:
    """No init in the trace: a free of an unknown pfn is prior state; the model learns the node, then caches it."""
    s = _Seq()
    s.free(0x80000, size=3)  # allocated before the trace: a 4-page node (rounded), now cached in bin 2
    s.alloc(0x80000, size=4)  # the kernel takes it back from CPU 0's magazine
    res = _run(s.events)
    assert res.findings == []
    [d] = res.domains
    assert not d.observed and d.prior_frees == 1
    assert res.fidelity.learned == res.fidelity.learned_matched == 1 and res.fidelity.predicted == 0


def test_double_free_explained_by_a_ring_buffer_loss_is_not_reported() -> None:
    s = _Seq()
    s.init()
    s.alloc(0xFFFFF)
    s.free(0xFFFFF)
    s.free(0xFFFFF)
    loss = [(s.events[2].ts_ns + 1, 1, 12)]
    res = _run(s.events, lost_events=loss)
    assert res.findings == []
    assert res.gap_count == 1 and "ring buffer lost 12 events on cpu1" in res.gaps[0]
    assert res.domains[0].suspect_frees == 1


def test_predictions_after_a_ring_buffer_loss_are_uncertain() -> None:
    s = _Seq()
    s.init()
    s.alloc(0xFFFFF)
    s.alloc(0xFFFFE)
    res = _run(s.events, lost_events=[(s.events[3].ts_ns + 1, 0, -1)])
    assert (res.fidelity.exact, res.fidelity.uncertain) == (1, 1)
    assert "an unknown number of" in res.gaps[0]


def test_exhaustion_and_fast_fail() -> None:
    """A 16-page window: 15 one-page allocations fill it; the next fails even after the flush (a finding), and
    a failure without flush_rcache (dma-iommu's 32-bit attempt) is not one."""
    s = _Seq()
    s.init()
    for i in range(15):
        s.alloc(0xF - i, limit=0xF)
    s.alloc(0, limit=0xF, flush=0)
    s.alloc(0, limit=0xF, flush=1)
    res = _run(s.events)
    assert res.fidelity.exact == res.fidelity.predicted == 17
    [f] = res.findings
    assert f.kind == "iova_exhaustion" and f.severity is Severity.WARNING
    assert res.domains[0].failures == 2 and res.domains[0].dom.max32_alloc_size == 1


def test_rcache_flush_storm() -> None:
    """Ten flush-and-retry allocations within a second: every CPU's cache thrown away each time."""
    s = _Seq()
    s.init()
    for i in range(15):
        s.alloc(0xF - i, limit=0xF)
    s.free(0x5, cpu=1)  # cached on CPU 1: only the flush-and-retry can reach it
    for i in range(10):
        s.alloc(0x5, limit=0xF, dt=50_000_000)
        s.free(0x5, cpu=1)
    res = _run(s.events)
    assert res.fidelity.mismatched == 0
    assert res.domains[0].rcache_flushes == 10
    storms = [f for f in res.findings if f.kind == "rcache_flush_storm"]
    assert len(storms) == 1 and storms[0].details["flushes"] == 10
