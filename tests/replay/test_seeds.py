"""Seeds (a) and (b) reproduced from hand-built event sequences, with and without the bug mode / fix.

(a) 911aa1245da8 (v6.7) threads the depot through each magazine's first word; a depot pop while a kmemleak scan
    is between the rcache and the popped magazine makes the rest of the chain look unreferenced. Fixed by
    7591c127f3b1 (v6.13, backported to 6.12-stable). The sequence below fills the bin-0 depot of CPU 0 with several
    full magazines and then allocates them back, so the depot is popped while other magazines are still chained.
(b) The depot series' v1 popped "until NULL" in free_iova_rcaches / free_global_cached_iovas without checking the
    head: every domain teardown dereferenced NULL (Dheeraj Kumar Srivastava's oops at free_iova_rcaches+0x9c).
"""

from __future__ import annotations

from iovatrace.event import Event
from iovatrace.replay.driver import ReplayDriver
from iovatrace.replay.findings import Severity
from iovatrace.replay.profiles import profile_for

IOVAD = 0xFFFF888001234208
LIMIT = 0xFFFFF


class _Seq:
    """Builds events with increasing timestamps and per-CPU sequence numbers."""

    def __init__(self) -> None:
        self.ts = 1_000_000
        self.seq = [0, 0]
        self.events: list[Event] = []

    def add(self, name: str, cpu: int = 0, **fields: int) -> None:
        self.ts += 1000
        self.seq[cpu] += 1
        self.events.append(Event(self.ts, cpu, self.seq[cpu], name, 1, fields))


def _domain_life(n_pfns: int, teardown: bool = True, kernel: str = "6.9") -> list[Event]:
    """init, n single-page allocations and frees on CPU 0 (filling the depot), allocate them all back, teardown.

    The pfns of the allocations back come from the rcache's own rules (loaded, then prev, then depot magazines),
    computed here with the model; what the tests check is the seed detection, not the prediction.
    """
    from iovatrace.replay.rcache import RcacheDomain

    sim = RcacheDomain(profile_for(kernel), 2)
    s = _Seq()
    s.add("iova:init_iova_domain", iovad=IOVAD, granule=4096, start_pfn=1)
    s.add("iova:iova_domain_init_rcaches", iovad=IOVAD)
    pfns = []
    for i in range(n_pfns):
        s.add("iova:alloc_iova_fast", iovad=IOVAD, size=1, limit_pfn=LIMIT, flush_rcache=1)
        pfn = LIMIT - i  # a fresh domain allocates top-down, one page at a time
        s.add("iova:alloc_iova_fast_ret", pfn=pfn)
        pfns.append(pfn)
    for pfn in pfns:
        s.add("iova:free_iova_fast", iovad=IOVAD, pfn=pfn, size=1)
    for pfn in pfns:
        sim.alloc_iova_fast(0, 1, LIMIT)
    for pfn in pfns:
        sim.free_iova_fast(0, pfn, 1)
    for _ in pfns:
        s.add("iova:alloc_iova_fast", iovad=IOVAD, size=1, limit_pfn=LIMIT, flush_rcache=1)
        s.add("iova:alloc_iova_fast_ret", pfn=sim.alloc_iova_fast(0, 1, LIMIT))
    for pfn in pfns[: n_pfns // 2]:
        s.add("iova:free_iova_fast", iovad=IOVAD, pfn=pfn, size=1)
    if teardown:
        s.add("iova:put_iova_domain", iovad=IOVAD)
        s.add("iova:free_iova_rcaches", iovad=IOVAD)
    return s.events


def _replay(kernel: str, events: list[Event], modes: tuple[str, ...] = ()):
    drv = ReplayDriver(profile_for(kernel), 2, bug_modes=modes, check_every=50)
    return drv.run(events)


def _kinds(res) -> list[str]:
    return [f.kind for f in res.findings]


def test_seed_a_depot_pop_window_detected_on_affected_kernels() -> None:
    events = _domain_life(127 * 6)
    res = _replay("6.11", events)
    assert res.fidelity.mismatched == 0  # the hand-built trace is self-consistent
    found = [f for f in res.findings if f.kind == "depot_pop_transient_leak"]
    assert len(found) == 1
    assert found[0].details["pops"] > 0 and found[0].details["max_chain"] >= 1
    assert found[0].severity is Severity.WARNING


def test_seed_a_bug_mode_on_and_off_on_6_12() -> None:
    events = _domain_life(127 * 6)
    # Debian's 6.12 carries the stable backport of 7591c127f3b1: no window unless the bug mode forces pre-fix code.
    assert "depot_pop_transient_leak" not in _kinds(_replay("6.12", events))
    assert "depot_pop_transient_leak" in _kinds(_replay("6.12", events, ("a",)))
    # 6.13+ and the ≤6.6 array depot: nothing to report.
    assert "depot_pop_transient_leak" not in _kinds(_replay("6.13", events))
    assert "depot_pop_transient_leak" not in _kinds(_replay("6.1", events, ("a",)))


def test_seed_a_needs_a_chain() -> None:
    # Two magazines' worth: the depot never holds more than one magazine, so a pop never leaves a chain behind.
    events = _domain_life(127 * 3)
    assert "depot_pop_transient_leak" not in _kinds(_replay("6.11", events))


def test_seed_b_empty_depot_pop_with_bug_mode() -> None:
    events = _domain_life(127 * 4)
    res = _replay("6.9", events, ("b",))
    found = [f for f in res.findings if f.kind == "empty_depot_pop"]
    assert found and found[0].severity is Severity.ERROR
    assert found[0].details["site"] == "free_iova_rcaches"
    assert "free_iova_rcaches" in found[0].message


def test_seed_b_absent_with_the_merged_series_and_array_depot() -> None:
    events = _domain_life(127 * 4)
    assert "empty_depot_pop" not in _kinds(_replay("6.9", events))  # merged v3: "while (depot) pop"
    assert "empty_depot_pop" not in _kinds(_replay("6.1", events, ("b",)))  # ≤6.6 array depot has no pop loop
    # No teardown, no flush: the buggy loop never runs.
    assert "empty_depot_pop" not in _kinds(_replay("6.9", _domain_life(127 * 4, teardown=False), ("b",)))
