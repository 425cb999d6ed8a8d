"""The replay driver: a sans-IO stepping loop that feeds trace events to the IOVA model and checks it.

Theory of operation
-------------------
Events arrive merged by ``(ts_ns, cpu, seq)`` (:func:`iovatrace.schema.iter_events`). One dict lookup maps an
event to a bound handler and the trace's field names for its operation (:class:`~.adapter.EventMap`); nothing
else happens for events the replay does not use. Model time is ``ts_ns``; deadlines (the ≥6.7 depot work when the
trace does not probe it, the ``--at`` snapshot) fire before the first event at or after them.

Entry/return pairing: ``alloc_iova_fast`` is *predicted* at its entry (without changing the model) and
*committed* at its return on the same CPU, where the trace reveals the kernel's pfn. Between the two, nested
``alloc_iova`` (an rcache miss), ``free_cpu_cached_iovas`` (the flush-and-retry) and ``iova_magazine_free_pfns``
events are checks, not operations. ``free_iova_fast`` is applied at its entry; when the model says it falls back to
``free_iova``, the next ``free_iova`` on that CPU is its nested call and is consumed.

Partial traces: a domain first seen mid-life is *learned* (:class:`~.state.DomainState`): a free of a pfn it does
not know is prior state (the node is added, then freed), its predictions are counted apart, and it never yields an
error finding. Gaps (lost kprobe hits): a return with no entry, an entry whose return never came, a pfn handed out
while the model still holds it, a kprobe_profile reporting misses; each taints the domains it can touch, so their
next predictions and findings are uncertain and name the gap. A mismatch re-synchronises the model with the
kernel's answer (:meth:`ReplayDriver._resync_alloc`).

H6's models (dma-iommu cookies, devices, VT-d QI) plug in through :attr:`ReplayDriver.extensions`: objects with
``events()`` (names they need), ``step(event)`` and ``finish()`` returning findings.
"""

from __future__ import annotations

import difflib
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from ..event import Event
from .adapter import EventMap
from .fidelity import Fidelity
from .gaps import UnmapTracker
from .findings import Certainty, Finding, Severity
from .profiles import KernelProfile
from .rcache import ALLOC_FAIL, FROM_FLUSH, FROM_TREE, HIT_DEPOT, HIT_LOADED, HIT_PREV, RcacheDomain
from .state import UNCACHED_BIN, DomainState
from .validate import validate_domain

__all__ = ["ReplayDriver", "ReplayResult", "Extension", "TAINT_PREDICTIONS", "FLUSH_STORM"]

#: Predictions reported uncertain after a gap in a domain: two magazine turnovers of every CPU of one bin.
TAINT_PREDICTIONS = 2 * 128 * 2
#: Consecutive matching predictions that end a taint early (0: never).
RESYNC_RUN = 0
#: Taint the candidate domains of a lost allocation that cannot be attributed.
TAINT_AMBIGUOUS_MAPS = False
#: Check the device-announced domain of an unmap against the model (see _on_iommu_unmap).
VERIFY_UNMAP_OWNER = False
#: An rcache flush storm: this many flush-and-retry events within one second in one domain.
FLUSH_STORM = (10, 1_000_000_000)
_NO_RANGE = range(0)  # an empty pfn range
_NEVER = 1 << 64  # no deadline pending
_SOURCES = {HIT_LOADED: "loaded", HIT_PREV: "prev", HIT_DEPOT: "depot", FROM_TREE: "tree", FROM_FLUSH: "flush",
            ALLOC_FAIL: "fail"}


def _size_class(size: int) -> tuple[int, int]:
    """alloc_iova_fast's rounding and the bin it picks (order_base_2, capped at the uncached class)."""
    if size < 32:
        rsize = 1 << (size - 1).bit_length() if size > 1 else 1
        return rsize, (rsize - 1).bit_length()
    return size, min((size - 1).bit_length(), UNCACHED_BIN)


_SIZE_CLASS = {n: _size_class(n) for n in range(256)}  # the common sizes, looked up on every return


class Extension(Protocol):
    """A model that rides along with the IOVA replay (H6's dma-iommu/devices/QI models)."""

    def events(self) -> Iterable[str]:
        """Event names it consumes."""

    def step(self, event: Event) -> None:
        """Apply one event."""

    def finish(self) -> list[Finding]:
        """Findings at the end."""


class ReplayResult:
    """Everything a replay produced.

    Attributes:
        profile: the kernel profile used; profile_how says how it was chosen.
        domains: every domain seen (live and destroyed), in creation order.
        findings: the findings, by time.
        fidelity: prediction counters and checks.
        events: events handled; first_ns / last_ns the time span.
        gaps: detected gaps (descriptions with times), the first 50; gap_count all of them.
        probe_misses: kprobe misses reported by the recorder (kprobe_profile), if given.
        snapshot: state at ``--at``, if asked.
        timeline: state samples ``(ts_ns, iovad, live, cached, depot, allocs, frees)``.
        extras: summaries from extensions.
    """

    def __init__(self) -> None:
        self.profile: KernelProfile | None = None
        self.profile_how = ""
        self.domains: list[DomainState] = []
        self.findings: list[Finding] = []
        self.fidelity = Fidelity()
        self.events = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.gaps: list[str] = []
        self.gap_count = 0
        self.probe_misses: dict[str, tuple[int, int]] = {}
        self.snapshot: dict[str, Any] | None = None
        self.timeline: list[tuple[int, int, int, int, int, int, int]] = []
        self.extras: dict[str, Any] = {}
        self.online_cpus: list[int] = []


class _Pending:
    """An alloc_iova_fast between entry and return on one CPU (reused, no per-event allocation)."""

    __slots__ = ("st", "size", "limit", "flush", "pred", "src", "top", "ev", "nested_alloc", "nested_flush",
                 "nested_pfn", "changed")

    def __init__(self) -> None:
        self.st: DomainState | None = None


class ReplayDriver:
    """Replays events against the model.

    Args:
        profile: kernel profile.
        ncpus: possible CPUs (from the trace's metadata).
        event_map: probe naming (default: the lab's).
        bug_modes: seed bug modes to enable (``"a"``, ``"b"``; others are passed to extensions).
        available: event names the trace holds (decides which checks and fallbacks apply); ``None`` = all.
        probe_misses: ``probe name → (hits, misses)`` from kprobe_profile, if known.
        check_every: run the validators every N handled events (0: never; tests use 1).
        at_ns: take a state snapshot at this trace time.
        timeline_ns: sample per-domain state at most this often (0: no timeline).
        extensions: extra models stepped with the same events.
        lost_events: ``(ts_ns, cpu, count)`` where the ring buffer lost events (count -1: unknown); every live
            domain's later predictions and findings become uncertain from there.
    """

    def __init__(self, profile: KernelProfile, ncpus: int = 1, *, event_map: EventMap | None = None,
                 bug_modes: Iterable[str] = (), available: Iterable[str] | None = None,
                 probe_misses: Mapping[str, tuple[int, int]] | None = None, check_every: int = 0,
                 at_ns: int | None = None, timeline_ns: int = 0,
                 extensions: Iterable[Extension] = (),
                 lost_events: Iterable[tuple[int, int, int]] = ()) -> None:
        self.profile = profile
        self.ncpus = max(1, ncpus)
        self.map = event_map or EventMap()
        self.bug_modes = frozenset(bug_modes)
        self.online: set[int] = set(range(self.ncpus))
        self.domains: dict[int, DomainState] = {}
        self.all_domains: list[DomainState] = []
        self.result = ReplayResult()
        self.result.profile = profile
        self.result.probe_misses = dict(probe_misses or {})
        self.fid = self.result.fidelity
        self.findings = self.result.findings
        self.check_every = check_every
        self.at_ns = at_ns
        self.timeline_ns = timeline_ns
        self._last_sample: dict[int, int] = {}
        self.extensions = list(extensions)
        names = set(available) if available is not None else None

        def has(op: str) -> bool:
            return names is None or self.map.event_of(op) in names

        self.has_alloc_iova = has("alloc_iova_ret")
        self.has_free_cpu_cached = has("free_cpu_cached_iovas")
        self.has_depot_work = has("iova_depot_work_func") and profile.list_depot
        self.has_kmem = has("kmem_cache_alloc") and profile.mag_cache == "iommu_iova_magazine"
        self.has_cpuhp = has("cpuhp_enter")
        self.has_dma_events = has("dma_map_page")
        missed = {k: v for k, v in self.result.probe_misses.items() if v[1] > 0}
        self._misses_gap = (", ".join(f"{k} missed {v[1]} of {v[0] + v[1]}" for k, v in sorted(missed.items()))
                            if missed else None)
        cpus = self.ncpus
        self._pending = [_Pending() for _ in range(cpus)]
        self._direct = [None] * cpus  # direct alloc_iova calls: (st, size, limit, aligned)
        self._expect_free: list[tuple[DomainState, int] | None] = [None] * cpus
        self._cur: list[DomainState | None] = [None] * cpus
        # the iommu_dma_alloc_iova event whose device the next alloc_iova_fast entry on the CPU takes
        self._devname: list[Event | None] = [None] * cpus
        # pfns of the last allocation per CPU (_NO_RANGE: none); a range, as `pfn in` it is one C-level test
        self._mapped: list[range] = [_NO_RANGE] * cpus
        self._lost_map: list[tuple[int, int, int] | None] = [None] * cpus
        self._dma_alloc: list[Event | None] = [None] * cpus  # the last iommu_dma_alloc_iova on each CPU
        self._dma_keys = self.map.by_op["iommu_dma_alloc_iova"].fields
        self.unmaps = UnmapTracker()
        self._fq_events: dict[str, int] = {}  # by event name, in first-seen order (see fq_counts)
        self._losses = sorted(lost_events, reverse=True)  # popped from the end, earliest first
        self._next_deadline = at_ns if at_ns is not None else _NEVER
        # Only depot work the model runs itself (≥6.7 depot, no iova_depot_work_func probe) arms deadlines
        # while events are handled (_arm); otherwise, once the known ones have fired, none is left.
        self._may_arm = profile.list_depot and not self.has_depot_work
        if self._losses:
            self._next_deadline = min(self._next_deadline, self._losses[-1][0])
        self._n = 0
        self._dispatch: dict[str, tuple[Callable[[Event, tuple[str, ...]], None], tuple[str, ...]]] = {}
        for op, spec in self.map.by_op.items():
            # "__free_iova" -> _on_free_iova_ (kept apart from free_iova's handler)
            h = getattr(self, "_on_" + (op[2:] + "_" if op.startswith("__") else op), None)
            if h is not None:
                self._dispatch[spec.event] = (h, spec.fields)
        if not VERIFY_UNMAP_OWNER:  # _on_iommu_unmap would only pass the event on to the tracker
            unmap = self.map.by_op["iommu_unmap"]
            self._dispatch[unmap.event] = (self.unmaps.unmap_event, unmap.fields)

    # ------------------------------------------------------------------------------------------------ API

    def wanted_events(self) -> set[str]:
        """Every event name the replay (and its extensions) consumes: filter the trace on these first."""
        names = set(self._dispatch)
        for ext in self.extensions:
            names.update(ext.events())
        return names

    def run(self, events: Iterable[Event], progress: Callable[[int], None] | None = None) -> ReplayResult:
        """Replay an event stream to the end.

        Args:
            events: merged events.
            progress: called with the number of events handled every 65536 events.

        Returns:
            The result (also :attr:`result`).
        """
        dispatch = self._dispatch
        exts = self.extensions
        check = self.check_every
        n = 0
        first = None
        ts = 0
        ncpu = len(self._pending)
        if not exts and not check and progress is None:
            n, first, ts = self._run_plain(events)
            events = ()
        for ev in events:
            n += 1
            ts = ev.ts_ns
            if first is None:
                first = ts
            if ts >= self._next_deadline:
                self._deadline(ts)
            h = dispatch.get(ev.name)
            if h is not None:
                if ev.cpu >= ncpu:
                    self._grow(ev.cpu)
                    ncpu = len(self._pending)
                h[0](ev, h[1])
                if check:
                    self._n += 1
                    if self._n % check == 0:
                        self.validate()
            if exts:
                for ext in exts:
                    ext.step(ev)
            if progress is not None and not n & 0xFFFF:
                progress(n)
        self.result.events = n
        self.result.first_ns = first
        self.result.last_ns = ts if n else None
        return self.finish()

    def _run_plain(self, events: Iterable[Event]) -> tuple[int, int | None, int]:
        """The loop of :meth:`run` without extensions, validation or progress: the same steps, nothing else
        per event. Returns ``(events, first ts, last ts)``.

        While a deadline is pending (a ring-buffer loss, the ``--at`` snapshot, or depot work the model must run
        itself), every event's time is compared with it; once none is left and none can be armed again, the rest
        of the stream runs through a loop without that compare (one dict lookup and one call an event).
        """
        dispatch = self._dispatch
        ncpu = len(self._pending)
        # A list is counted by its length and read as it is; any other iterable is counted by a zip with a
        # counter in C, so the loop itself runs nothing per event for either.
        counter = itertools.count()
        n: int | None = None
        if isinstance(events, (list, tuple)):
            if not events:
                return 0, None, 0
            n = len(events)
            it: Iterator[Event] = iter(events)
            ev = events[0]
        else:
            it0 = iter(events)
            ev = next(it0, None)
            if ev is None:
                return 0, None, 0
            it = map(operator.itemgetter(0), zip(itertools.chain((ev,), it0), counter))
        first = ev.ts_ns
        may_arm = self._may_arm
        if self._next_deadline < _NEVER or may_arm:
            for ev in it:
                ts = ev.ts_ns
                if ts >= self._next_deadline:  # handlers may arm an earlier deadline (_arm)
                    self._deadline(ts)
                    if self._next_deadline >= _NEVER and not may_arm:
                        self._handle_one(ev)
                        break  # no deadline left: the loop below
                try:
                    handler, k = dispatch[ev.name]
                except KeyError:
                    continue  # an event the replay does not use
                if ev.cpu >= ncpu:
                    self._grow(ev.cpu)
                    ncpu = len(self._pending)
                handler(ev, k)
            else:
                return (n if n is not None else next(counter)), first, ev.ts_ns
            ncpu = len(self._pending)
        # iommu:map is the most frequent event, and nearly always a page of the allocation just made on its CPU:
        # _on_iommu_map's first test is made here, without the handler call.
        map_name = self.map.event_of("iommu_map")
        map_iova = self.map.by_op["iommu_map"].fields[0]
        mapped = self._mapped
        for ev in it:
            name = ev.name
            if name == map_name and ev.cpu < ncpu and ev.fields[map_iova] >> 12 in mapped[ev.cpu]:
                continue
            try:
                handler, k = dispatch[name]
            except KeyError:
                continue  # an event the replay does not use
            if ev.cpu >= ncpu:
                self._grow(ev.cpu)
                ncpu = len(self._pending)
            handler(ev, k)
        return (n if n is not None else next(counter)), first, ev.ts_ns

    def _handle_one(self, ev: Event) -> None:
        """Run the replay's own handler of one event, if it has one (no deadline check, no extensions)."""
        h = self._dispatch.get(ev.name)
        if h is not None:
            if ev.cpu >= len(self._pending):
                self._grow(ev.cpu)
            h[0](ev, h[1])

    def step(self, ev: Event) -> None:
        """Apply one event (for callers that drive the loop themselves)."""
        if ev.ts_ns >= self._next_deadline:
            self._deadline(ev.ts_ns)
        h = self._dispatch.get(ev.name)
        if h is not None:
            if ev.cpu >= len(self._pending):
                self._grow(ev.cpu)
            h[0](ev, h[1])
        for ext in self.extensions:
            ext.step(ev)
        self.result.events += 1

    def validate(self) -> None:
        """Run every validator on every live domain (raises ModelError)."""
        for st in self.domains.values():
            validate_domain(st.dom)

    # ------------------------------------------------------------------------------------------------ plumbing

    def _grow(self, cpu: int) -> None:
        while len(self._pending) <= cpu:
            self._pending.append(_Pending())
            self._direct.append(None)
            self._expect_free.append(None)
            self._cur.append(None)
            self._devname.append(None)
            self._mapped.append(_NO_RANGE)
            self._lost_map.append(None)
            self._dma_alloc.append(None)
        if cpu >= self.ncpus:
            self.online.update(range(self.ncpus, cpu + 1))
            self.ncpus = cpu + 1

    def _deadline(self, ts: int) -> None:
        if self.at_ns is not None and ts >= self.at_ns and self.result.snapshot is None:
            self.result.snapshot = self.snapshot(self.at_ns)
        losses = self._losses
        while losses and losses[-1][0] <= ts:
            lts, lcpu, count = losses.pop()
            what = "an unknown number of" if count < 0 else str(count)
            self._gap(lts, f"ring buffer lost {what} events on cpu{lcpu}", list(self.domains.values()))
        nxt = losses[-1][0] if losses else _NEVER
        if not self.has_depot_work and self.profile.list_depot:
            # The trace does not probe iova_depot_work_func: run the work at its deadline ourselves.
            for st in list(self.domains.values()):
                due = st.dom.next_work_due()
                while due is not None and due <= ts:
                    for b, rc in enumerate(st.dom.rcaches or ()):
                        if rc.work_due is not None and rc.work_due <= ts:
                            st.dom.now = rc.work_due
                            st.dom.iova_depot_work_func(b, 0)
                            self._drain(st, rc.work_due, 0)
                    due = st.dom.next_work_due()
                if due is not None:
                    nxt = min(nxt, due)
        if self.at_ns is not None and self.result.snapshot is None:
            nxt = min(nxt, self.at_ns)
        self._next_deadline = nxt

    def _arm(self, due: int) -> None:
        if due < self._next_deadline:
            self._next_deadline = due

    def _new_domain(self, iovad: int, ts: int, observed: bool, granule: int = 4096, start_pfn: int = 1,
                    with_rcaches: bool = True) -> DomainState:
        dom = RcacheDomain(self.profile, self.ncpus, granule, start_pfn, iovad=iovad, online=self.online,
                           with_rcaches=False, bug_modes=self.bug_modes)
        st = DomainState(dom, iovad, observed, ts if observed else None)
        if with_rcaches:
            dom.iova_domain_init_rcaches()
            st.ops.clear()  # magazines allocated before the trace: not traced
        old = self.domains.get(iovad)
        if old is not None:
            old.destroyed_ns = ts
        self.domains[iovad] = st
        self.all_domains.append(st)
        return st

    def _dom(self, iovad: int, ts: int) -> DomainState:
        st = self.domains.get(iovad)
        if st is None:
            st = self._new_domain(iovad, ts, observed=False)
        return st

    def _key(self, ev: Event) -> tuple[int, int, int]:
        return ev.ts_ns, ev.cpu, ev.seq

    def _gap(self, ts: int, text: str, domains: Iterable[DomainState] = ()) -> None:
        self.result.gap_count += 1
        if len(self.result.gaps) < 50:
            self.result.gaps.append(f"{ts / 1e9:.6f}: {text}")
        for st in domains:
            st.taint(text, TAINT_PREDICTIONS)

    def _certainty(self, st: DomainState) -> tuple[Certainty, str | None]:
        gap = st.findings_gap if st.observed else (st.gap or "domain created before the trace began")
        if gap is None and self._misses_gap is not None:
            gap = f"kprobe misses: {self._misses_gap}"
        return (Certainty.EXACT, None) if gap is None else (Certainty.UNCERTAIN, gap)

    def _drain(self, st: DomainState, ts: int, cpu: int) -> None:
        ops = st.ops
        for op in ops:
            kind = op[0]
            if kind == "mag_alloc":
                if self.has_kmem and st.observed:
                    st.kmem_model.append(("A", op[2]))
            elif kind == "mag_free":
                if self.has_kmem and st.observed:
                    st.kmem_model.append(("F", op[2]))
            elif kind == "free_pfns":
                if st.observed:
                    st.fp_model.append(op[3])
            elif kind == "depot_push":
                b = op[1]
                if op[3] > st.max_depot[b]:
                    st.max_depot[b] = op[3]
            elif kind == "depot_pop":
                if op[3] > 0 and self.profile.list_depot:
                    st.depot_pops_with_successors.append((ts, op[1], op[3], op[2].serial))
            elif kind == "work_sched":
                if not self.has_depot_work:
                    self._arm(op[2])
            elif kind == "empty_depot_pop":
                self._seed_b(st, ts, cpu, op[1], op[2])
        ops.clear()

    def _touch(self, st: DomainState) -> None:
        # st changed: allocations pending on any CPU in st must re-predict at their return.
        for p in self._pending:
            if p.st is st:
                p.changed = True

    def _sample(self, st: DomainState, ts: int) -> None:
        last = self._last_sample.get(st.iovad, -self.timeline_ns)
        if ts - last >= self.timeline_ns:
            self._last_sample[st.iovad] = ts
            dom = st.dom
            self.result.timeline.append((ts, st.iovad, st.live_iovas(), len(dom.cached_pfns),
                                         sum(dom.depot_sizes()), st.allocs, st.frees))

    # ------------------------------------------------------------------------------------------------ domains

    def _on_init_iova_domain(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        granule = f[k[1]] or 4096
        st = self._new_domain(f[k[0]], ev.ts_ns, observed=True, granule=granule, start_pfn=f[k[2]],
                              with_rcaches=False)
        self._cur[ev.cpu] = st

    def _on_iova_domain_init_rcaches(self, ev: Event, k: tuple[str, ...]) -> None:
        st = self._dom(ev.fields[k[0]], ev.ts_ns)
        self._cur[ev.cpu] = st
        if st.dom.rcaches is None:
            st.dom.now = ev.ts_ns
            st.dom.iova_domain_init_rcaches(ev.cpu)
            self._drain(st, ev.ts_ns, ev.cpu)

    def _on_reserve_iova(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        st = self._dom(f[k[0]], ev.ts_ns)
        self._cur[ev.cpu] = st
        st.dom.reserve_iova(f[k[1]], f[k[2]])

    def _on_put_iova_domain(self, ev: Event, k: tuple[str, ...]) -> None:
        iovad = ev.fields[k[0]]
        st = self.domains.get(iovad)
        if st is None:
            return
        self._cur[ev.cpu] = st
        st.dom.now = ev.ts_ns
        alive = st.dom.put_iova_domain(ev.cpu)
        st.alive_at_put = len(alive)
        self._drain(st, ev.ts_ns, ev.cpu)
        st.destroyed_ns = ev.ts_ns
        del self.domains[iovad]
        self.unmaps.forget(st)

    def _on_free_iova_rcaches(self, ev: Event, k: tuple[str, ...]) -> None:
        st = self.domains.get(ev.fields[k[0]])
        if st is not None:
            self._cur[ev.cpu] = st

    # ------------------------------------------------------------------------------------------------ alloc

    def _on_alloc_iova_fast(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        cpu = ev.cpu
        ts = ev.ts_ns
        iovad = f[k[0]]
        st = self.domains.get(iovad)
        if st is None:
            st = self._new_domain(iovad, ts, observed=False)
        self._cur[cpu] = st
        self._expect_free[cpu] = None
        if cpu not in self.online and not self.has_cpuhp:
            self.online.add(cpu)  # it runs again: it was brought back online (no cpuhp events to say when)
        um = self.unmaps
        da = self._devname[cpu]
        if da is not None:  # the device of the iommu_dma_alloc_iova just before allocates in st
            self._devname[cpu] = None
            kd = self._dma_keys
            fd = da.fields
            dn = fd.get(kd[4])
            if dn:
                st.devices.add(dn)
                um.dev_owner[dn] = st
                dp = fd.get(kd[3])
                if dp is not None:
                    um.dev_owner[dp] = st
        # A strict domain frees at unmap time: unmaps still open on this CPU lost their free_iova_fast hit.
        # (UnmapTracker.alloc and .unknown_open, their empty-ring answers checked here first.)
        r = um.rings.get((st, cpu))
        if r is not None and r.q and st not in um.lazy and um.is_strict(st):
            for e in um.alloc(st, cpu):
                self._lost_free(st, cpu, e.pfn, e.pages, ts)
        r = um.unknown_ring.get(cpu)
        if r is not None and r.q:
            for e in um.unknown_open(cpu):
                self._attribute_unknown(cpu, e.pfn, e.pages, ts)
        p = self._pending[cpu]
        if p.st is not None:
            # The previous allocation's return was lost (kretprobe miss); the kernel did allocate: commit the
            # model's own answer for it and mark that pfn as reconstructed.
            old = p.st
            p.st = None
            old.dom.now = ts
            pfn = old.dom.alloc_iova_fast(cpu, p.size, p.limit, bool(p.flush))
            if old.ops:
                self._drain(old, ts, cpu)
            if pfn:
                old.recon.add(pfn)
                self._mapped[cpu] = range(pfn, pfn + max(1, p.size))
            self._touch(old)
            self._gap(ts, f"alloc_iova_fast on cpu{cpu} without the return of the previous one (lost kretprobe); "
                          f"committed the model's pfn {pfn:#x}")
        size = f[k[1]]
        limit = f[k[2]]
        dom = st.dom
        if cpu >= dom.ncpus:
            dom.ensure_cpu(cpu)
        pred, src = dom.predict_alloc_iova_fast(cpu, size, limit)
        p.top = dom.predicted_top
        p.st = st
        p.size = size
        p.limit = limit
        p.flush = f[k[3]]
        p.pred = pred
        p.src = src
        p.ev = ev  # the entry, for findings that cite it (_key)
        p.nested_alloc = False
        p.nested_flush = False
        p.nested_pfn = None
        p.changed = False

    def _on_alloc_iova_fast_ret(self, ev: Event, k: tuple[str, ...]) -> None:
        cpu = ev.cpu
        p = self._pending[cpu]
        st = p.st
        if st is None:
            self._ret_without_entry(ev, k)
            return
        p.st = None
        ts = ev.ts_ns
        actual = ev.fields[k[0]]
        dom = st.dom
        dom.now = ts
        size = p.size
        try:
            rsize, bin_ = _SIZE_CLASS[size]
        except KeyError:
            rsize, bin_ = _size_class(size)
        pred = p.pred
        src = p.src
        st.allocs += 1
        if p.changed:
            # Events applied to this domain inside the entry→return window (an interrupt's frees on this CPU,
            # another CPU): the kernel's choice came either before or after them. Predict with everything seen;
            # if the kernel matched the entry-time answer instead, its get ran first: re-synchronise to it.
            pred2, src2 = dom.predict_alloc_iova_fast(cpu, size, p.limit)
            if pred2 != pred and actual == pred and src != FROM_FLUSH:
                self._resync_alloc(st, cpu, rsize, actual)
                pred2 = actual
                src = -src
            else:
                pred, src = pred2, src2
        if src < 0:
            src = -src
            matched = True
        elif src == FROM_FLUSH:
            # Needs the flush-and-retry (or fails): run it for real, then compare.
            res = dom.alloc_iova_fast(cpu, size, p.limit, bool(p.flush))
            src = dom.last_source if res else ALLOC_FAIL
            matched = res == actual
            if src == FROM_FLUSH:
                st.rcache_flushes += 1
                self._flush_storm(st, ts, self._key(p.ev))
            if not matched:
                self._resync_alloc(st, cpu, rsize, actual)
        elif pred == actual:
            top = p.top
            if top and not p.changed and top[-1] == actual:
                # The entry's prediction was the loaded magazine's top and the domain did not change since:
                # commit it without walking the rcache again.
                res = dom.take_predicted_top(top)
            else:
                res = dom.alloc_iova_fast(cpu, size, p.limit, bool(p.flush))
            matched = True
            if res != actual:  # predict and commit must agree: a model bug
                from ..errors import ModelError

                raise ModelError(f"iovad {st.name}: predicted {pred:#x} but committed {res:#x} at {ts}")
        else:
            matched = False
            self._check_overlap(st, ev, actual, rsize)
            self._resync_alloc(st, cpu, rsize, actual)
        for q in self._pending:  # _touch(st)
            if q.st is st:
                q.changed = True
        if st.ops:
            self._drain(st, ts, cpu)
        # rcache statistics: the trace's own nested alloc_iova decides hit/miss when probed.
        if actual:
            miss = p.nested_alloc if self.has_alloc_iova else src == FROM_TREE or src == FROM_FLUSH
            if miss:
                st.misses[bin_] += 1
            else:
                st.hits[bin_] += 1
            self._mapped[cpu] = range(actual, actual + rsize)
            # Its earlier unmap never saw a free: that free_iova_fast hit was lost before this allocation, so
            # the prediction depended on a gap.
            um = self.unmaps
            stale = actual in um.indexed and um.realloc(st, actual) > 0  # (realloc's first test, inline)
        else:
            st.failures += 1
            if p.limit < dom.dma_32bit_pfn:
                st.fail32 += 1
            if p.flush:
                self._exhaustion(st, ev, p)
            stale = False
        if p.nested_flush and src != FROM_FLUSH:
            st.rcache_flushes += 1
        # fidelity: counted per domain here, summed into Fidelity by finish()
        if stale:
            st.lost_frees += 1
            st.findings_gap = f"lost free_iova_fast hits (kprobe misses), e.g. pfn {actual:#x}"
            self._gap(ts, f"pfn {actual:#x} in {st.name} allocated again without the free of its last unmap")
        recon = stale
        if not recon:
            rc = st.recon
            recon = bool(rc) and (pred in rc or actual in rc)
        if recon:
            st.recon.discard(pred)
            st.recon.discard(actual)
        if st.observed:
            if st.taint_left > 0 or recon:
                if st.taint_left > 0:
                    st.taint_left -= 1
                    if RESYNC_RUN:
                        # Evidence of re-synchronisation: a run of matches ends the taint early.
                        st.resync_run = st.resync_run + 1 if matched else 0
                        if st.resync_run >= RESYNC_RUN:
                            st.taint_left = 0
                            st.resync_run = 0
                st.pred_uncertain += 1
                if matched:
                    st.uncertain_match += 1
            elif matched:
                st.pred_exact += 1
            else:
                st.pred_mismatch += 1
                fid = self.fid
                if len(fid.mismatches) < 20:
                    fid.mismatches.append({"ts_ns": ts, "cpu": cpu, "iovad": st.name, "size": size,
                                           "limit_pfn": p.limit, "predicted": pred, "actual": actual,
                                           "source": _SOURCES.get(p.src, "?")})
                self._gap(ts, f"model diverged in {st.name} (predicted {pred:#x}, kernel {actual:#x}); "
                              "re-synchronised", (st,))
            if self.has_alloc_iova and st.taint_left == 0 and actual:
                model_miss = p.src == FROM_TREE or p.src == FROM_FLUSH
                chk = self.fid.checks["rcache_miss"]
                if model_miss == p.nested_alloc:
                    chk.agree += 1  # Check.record(True) without building its example
                else:
                    chk.record(False, ts_ns=ts, iovad=st.name, model_miss=model_miss, trace_miss=p.nested_alloc)
        else:
            st.learned += 1
            if matched:
                st.learned_match += 1
        if self.timeline_ns:
            self._sample(st, ts)

    def _ret_without_entry(self, ev: Event, k: tuple[str, ...]) -> None:
        # The entry was lost: the device of the iommu_dma_alloc_iova before it names the domain.
        cpu = ev.cpu
        ts = ev.ts_ns
        actual = ev.fields[k[0]]
        da = self._dma_alloc[cpu]
        owner = None
        ctx = None
        if da is not None:
            kd = self._dma_keys
            fd = da.fields
            ctx = (fd.get(kd[4]), fd.get(kd[3]), fd.get(kd[1]) or 0)  # (device name, pointer, size)
            owner = self.unmaps.dev_owner.get(ctx[0]) or self.unmaps.dev_owner.get(ctx[1])
        if owner is not None and actual and owner.destroyed_ns is None:
            for e in self.unmaps.alloc(owner, cpu):  # a strict domain's open unmaps were freed by now
                self._lost_free(owner, cpu, e.pfn, e.pages, ts)
            pages = (ctx[2] + 4095) >> 12
            rsize = (1 << (pages - 1).bit_length() if pages > 1 else 1) if pages < 32 else pages
            owner.dom.now = ts
            self._resync_alloc(owner, cpu, rsize, actual)
            owner.recon.add(actual)
            self._touch(owner)
            self._mapped[cpu] = range(actual, actual + rsize)
        self._gap(ts, f"alloc_iova_fast return on cpu{cpu} without its entry (lost kprobe)"
                      + (f"; pfn {actual:#x} given to {owner.name}" if owner is not None else ""))

    def _check_overlap(self, st: DomainState, ev: Event, actual: int, rsize: int) -> None:
        """The kernel handed out a range the model holds as allocated: overlap, or a free we never saw."""
        if not actual or not st.observed:
            return  # learned domains diverge routinely: their prior state is unknown, not lost
        dom = st.dom
        hi = actual + rsize - 1
        node = dom.find_iova(actual) or dom.find_iova(hi)
        if node is None or node[0] in dom.cached_pfns:
            return
        if node[0] in dom.reserved:
            what = "a reserved range"
        else:
            what = "a live allocation"
        # A live node handed out again: either the kernel overlapped ranges or we lost its free.
        gap = f"pfn {actual:#x} handed out while the model holds it as {what}: a free was lost or ranges overlap"
        self._gap(ev.ts_ns, gap, (st,))
        cert, why = self._certainty(st)
        if not st.observed or cert is Certainty.UNCERTAIN or what == "a live allocation":
            # A lost free_iova_fast explains it as well as a kernel bug does: never an error on its own.
            return
        self.findings.append(Finding(
            "overlap", Severity.ERROR, ev.ts_ns,
            f"alloc_iova_fast returned [{actual:#x}, {hi:#x}], overlapping {what} [{node[0]:#x}, {node[1]:#x}]",
            domain=st.name, certainty=cert, gap=why, events=(self._key(ev),),
            details={"pfn": actual, "size": rsize, "node": list(node)}))

    def _resync_alloc(self, st: DomainState, cpu: int, rsize: int, actual: int) -> None:
        """Make the model agree with the kernel's pfn after a divergence."""
        dom = st.dom
        if not actual:
            if rsize < dom.max32_alloc_size:
                dom.max32_alloc_size = rsize
            return
        if actual in dom.cached_pfns:
            if not dom.uncache(actual, cpu):
                # Only a depot magazine holds it in the model; moving whole magazines would be a guess. Keep it
                # there and remember that the kernel handed it out: its next free is not a double free.
                st.recon.add(actual)
            return
        if dom.node_hi(actual) is not None and actual not in dom.cached_pfns:
            return  # a free we never saw: the node is allocated again, nothing moves
        hi = actual + rsize - 1
        while True:
            node = dom.find_iova(actual) or dom.find_iova(hi)
            if node is None:
                lo_list = dom._lo
                i = lo_list.bisect_left(actual)
                lo = lo_list[i]
                node = (lo, dom._hi[lo]) if lo <= hi and lo != (1 << 64) - 1 else None
            if node is None:
                break
            if node[0] in dom.cached_pfns:
                dom.uncache(node[0], cpu)
                dom.cached_pfns.discard(node[0])
            dom.remove_iova(node[0])
        dom._insert(actual, hi)
        if hi < dom.dma_32bit_pfn:
            dom.cached32_node = actual
        else:
            dom.cached_node = actual
        if dom.ops:
            dom.ops.clear()

    def _on_alloc_iova(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        cpu = ev.cpu
        st = self._dom(f[k[0]], ev.ts_ns)
        p = self._pending[cpu]
        if p.st is st:
            p.nested_alloc = True
            return
        self._direct[cpu] = (st, f[k[1]], f[k[2]], f[k[3]])

    def _on_alloc_iova_ret(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        cpu = ev.cpu
        p = self._pending[cpu]
        if p.st is not None and p.nested_alloc:
            p.nested_pfn = f[k[2]] if f[k[0]] else 0
            return
        d = self._direct[cpu]
        if d is None:
            return
        self._direct[cpu] = None
        st, size, limit, aligned = d
        pfn = st.dom.alloc_iova(size, limit, bool(aligned))
        actual = f[k[2]] if f[k[0]] else None
        if pfn != actual:
            if pfn is not None:
                st.dom.remove_iova(pfn)
            if actual is not None:
                st.dom.insert_known(actual, f[k[1]])
            if st.observed:
                self._gap(ev.ts_ns, f"direct alloc_iova in {st.name} diverged", (st,))

    # ------------------------------------------------------------------------------------------------ free

    def _on_free_iova_fast(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        cpu = ev.cpu
        ts = ev.ts_ns
        iovad = f[k[0]]
        st = self.domains.get(iovad)
        if st is None:
            st = self._new_domain(iovad, ts, observed=False)
        self._cur[cpu] = st
        if cpu not in self.online and not self.has_cpuhp:
            self.online.add(cpu)
        pfn = f[k[1]]
        size = f[k[2]]
        dom = st.dom
        dom.now = ts
        st.frees += 1
        if st.recon and pfn in st.recon and (pfn in dom.cached_pfns or pfn not in dom._hi):
            st.recon.discard(pfn)  # the free we reconstructed was only late, not lost: already applied
            return
        um = self.unmaps
        lost = um.free(st, cpu, pfn, ts)
        unknown = um.unknown_ring.get(cpu)
        if unknown is not None and unknown.q and um.is_strict(st):
            # Unmaps of unknown domain on this CPU before this one: in a strict domain they were freed by now.
            last = um.last_unmap.get(cpu)
            for e in um.older_unknown(cpu, last.ts if last is not None else ts):
                self._attribute_unknown(cpu, e.pfn, e.pages, ts)
        if lost:
            late = not um.is_strict(st)  # a flush-queue batch: the lost frees happened some time ago
            for e in lost:
                self._lost_free(st, cpu, e.pfn, e.pages, ts, late=late)
        if pfn in dom.cached_pfns:
            self._bad_free(st, ev, pfn, size, "double_free", "is already in a magazine")
            return
        if pfn not in dom._hi:
            if not self._unknown_free(st, ev, pfn, size):
                return
        if cpu >= dom.ncpus:
            dom.ensure_cpu(cpu)
        for q in self._pending:  # _touch(st)
            if q.st is st:
                q.changed = True
        if dom.iova_rcache_insert(cpu, pfn, size):
            self._expect_free[cpu] = None
        else:
            dom.free_iova(pfn)
            self._expect_free[cpu] = (st, pfn)
        if st.ops:
            self._drain(st, ts, cpu)
        if self.timeline_ns:
            self._sample(st, ts)

    def _unknown_free(self, st: DomainState, ev: Event, pfn: int, size: int) -> bool:
        """A free of a pfn the model has no node for. Returns whether to go on applying it."""
        dom = st.dom
        if dom.find_iova(pfn) is not None:
            self._bad_free(st, ev, pfn, size, "free_unknown_iova", "is inside a range but not its start")
            return False
        rsize = (1 << (size - 1).bit_length() if size > 1 else 1) if size < 32 else size
        if not st.observed:
            # Prior state: the range was allocated before the trace began. Learn it, then free it.
            st.prior_frees += 1
            if not dom.insert_known(pfn, pfn + rsize - 1):
                return False
            return True
        kind = "double_free" if dom.was_released(pfn) else "free_unknown_iova"
        self._bad_free(st, ev, pfn, size, kind, "was freed before" if kind == "double_free" else
                       "was never allocated")
        return False

    def _bad_free(self, st: DomainState, ev: Event, pfn: int, size: int, kind: str, why: str) -> None:
        cert, gap = self._certainty(st)
        if cert is Certainty.UNCERTAIN and (self._misses_gap is not None or st.lost_frees or st.recon
                                            or st.taint_left or self.result.gap_count):
            # Lost kprobe hits explain a free of an unexpected pfn as well as a kernel bug would: count it,
            # never report it (a finding must not come from a lost event).
            st.suspect_frees += 1
            return
        sev = Severity.ERROR if cert is Certainty.EXACT else Severity.WARNING
        if not st.observed:
            sev = Severity.WARNING
        self.findings.append(Finding(
            kind, sev, ev.ts_ns, f"free_iova_fast of pfn {pfn:#x} ({size} pages) on cpu{ev.cpu}: the pfn {why}",
            domain=st.name, certainty=cert, gap=gap, events=(self._key(ev),),
            details={"pfn": pfn, "size": size, "cpu": ev.cpu}))

    def _on_free_iova(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        cpu = ev.cpu
        st = self._dom(f[k[0]], ev.ts_ns)
        pfn = f[k[1]]
        exp = self._expect_free[cpu]
        self._expect_free[cpu] = None
        if exp is not None and exp[0] is st and exp[1] == pfn:
            return  # the nested call of a free_iova_fast the model already applied
        st.free_iova_calls += 1
        dom = st.dom
        dom.now = ev.ts_ns
        if pfn in dom.cached_pfns:
            self._bad_free(st, ev, pfn, 0, "double_free", "is in a magazine (free_iova)")
            return
        node = dom.find_iova(pfn)
        if node is None:
            if not st.observed:
                st.prior_frees += 1
            return  # free_iova silently ignores unknown pfns
        self._touch(st)
        dom.free_iova(pfn)
        if st.ops:
            self._drain(st, ev.ts_ns, cpu)

    def _on_free_iova_(self, ev: Event, k: tuple[str, ...]) -> None:  # __free_iova
        f = ev.fields
        st = self._dom(f[k[0]], ev.ts_ns)
        lo = f[k[3]]
        if st.dom.node_hi(lo) is not None and lo not in st.dom.cached_pfns:
            st.dom.remove_iova(lo)

    # ------------------------------------------------------------------------------------------------ flushes

    def _on_free_cpu_cached_iovas(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        st = self._dom(f[k[1]], ev.ts_ns)
        self._cur[ev.cpu] = st
        p = self._pending[ev.cpu]
        if p.st is st:
            p.nested_flush = True  # alloc_iova_fast's flush-and-retry: applied at its return
            return
        st.dom.now = ev.ts_ns
        self._touch(st)
        st.dom.free_cpu_cached_iovas(f[k[0]], ev.cpu)
        self._drain(st, ev.ts_ns, ev.cpu)

    def _on_iova_magazine_free_pfns(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        st = self._dom(f[k[1]], ev.ts_ns)
        if st.observed:
            st.fp_trace.append(f[k[2]])

    def _on_iova_cpuhp_dead(self, ev: Event, k: tuple[str, ...]) -> None:
        cpu = ev.fields[k[0]]
        if not self.has_cpuhp:
            self.online.discard(cpu)
        if not self.has_free_cpu_cached:
            for st in self.domains.values():
                st.dom.free_cpu_cached_iovas(cpu, ev.cpu)
                self._drain(st, ev.ts_ns, ev.cpu)

    def _hotplug(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        cpu, target, idx = f[k[0]], f[k[1]], f[k[2]]
        if target == 0 and idx > 0:
            self.online.discard(cpu)  # teardown below CPUHP_TEARDOWN_CPU: cpu_online() is false now
        elif target > idx:
            self.online.add(cpu)

    _on_cpuhp_enter = _hotplug
    _on_cpuhp_multi_enter = _hotplug

    def _on_iova_depot_work_func(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        st = self._dom(f[k[1]], ev.ts_ns)
        self._cur[ev.cpu] = st
        dom = st.dom
        prof = self.profile
        if not prof.list_depot or dom.rcaches is None or not prof.rcache_stride:
            return
        off = f[k[0]] - f[k[4]] - prof.rcache_work_offset
        bin_, rem = divmod(off, prof.rcache_stride)
        if rem or not 0 <= bin_ < len(dom.rcaches):
            self._gap(ev.ts_ns, f"iova_depot_work_func work={f[k[0]]:#x} names no rcache bin")
            return
        rc = dom.rcaches[bin_]
        ts = ev.ts_ns
        if st.observed and st.taint_left == 0:
            self.fid.checks["depot_size_at_work"].record(len(rc.depot) == f[k[2]], ts_ns=ts, iovad=st.name,
                                                         bin=bin_, model=len(rc.depot), trace=f[k[2]])
            # The work runs after its 100 ms delay, rounded up by the timer wheel; never before it.
            sched = rc.work_due is not None and ts >= rc.work_due - 1_000_000
            self.fid.checks["depot_work_scheduled"].record(sched, ts_ns=ts, iovad=st.name, bin=bin_,
                                                           due=rc.work_due)
        dom.now = ts
        self._touch(st)
        dom.iova_depot_work_func(bin_, ev.cpu)
        self._drain(st, ts, ev.cpu)

    # ------------------------------------------------------------------------------------------------ kmem

    def _on_kmem_cache_alloc(self, ev: Event, k: tuple[str, ...]) -> None:
        st = self._cur[ev.cpu]
        if st is not None and st.observed and self.has_kmem:
            st.kmem_trace.append(("A", ev.fields[k[1]]))

    def _on_kmem_cache_free(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        name = f.get(k[2])
        if name is not None and name != "iommu_iova_magazine":
            return
        st = self._cur[ev.cpu]
        if st is not None and st.observed and self.has_kmem:
            st.kmem_trace.append(("F", f[k[1]]))

    def _on_iommu_dma_alloc_iova(self, ev: Event, k: tuple[str, ...]) -> None:
        # dma-iommu's caller: names the device whose alloc_iova_fast follows on this CPU.
        # Kept as it is: its fields are read only by the alloc_iova_fast entry that follows (and a lost one).
        cpu = ev.cpu
        self._devname[cpu] = ev
        self._dma_alloc[cpu] = ev

    # ------------------------------------------------------------------------------------------------ lost frees

    def _count_fq(self, ev: Event, k: tuple[str, ...]) -> None:
        # Flush-queue activity as the trace shows it (the dma-iommu extension models it in full).
        c = self._fq_events
        name = ev.name
        c[name] = c.get(name, 0) + 1

    @property
    def fq_counts(self) -> dict[str, int]:
        """Flush-queue events seen (``fq_flush_iotlb``, ``fq_ring_free``...: names without their system)."""
        out: dict[str, int] = {}
        for name, n in self._fq_events.items():
            short = name.split(":", 1)[-1]
            out[short] = out.get(short, 0) + n
        return out

    _on_fq_flush_iotlb = _count_fq
    _on_fq_flush_timeout = _count_fq
    _on_fq_ring_free = _count_fq
    _on_fq_ring_free_locked = _count_fq

    def _on_iommu_dma_unmap_(self, ev: Event, k: tuple[str, ...]) -> None:  # __iommu_dma_unmap
        um = self.unmaps
        um.next_owner[ev.cpu] = um.dev_owner.get(ev.fields[k[0]])  # UnmapTracker.announce, inline

    def _on_dma_unmap_sg(self, ev: Event, k: tuple[str, ...]) -> None:
        self.unmaps.announce(ev.cpu, ev.fields[k[0]])  # the sg tracepoint comes before the unmap

    def _on_iommu_map(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        pfn = f[k[0]] >> 12
        if pfn in self._mapped[ev.cpu]:
            return  # a page of the allocation just made on this CPU (the most common event of all)
        cpu = ev.cpu
        self._mapped[cpu] = _NO_RANGE
        pages = (f[k[2]] + 4095) >> 12
        if self.has_dma_events:
            # The dma:dma_map_* tracepoint right after names the device: attribute the mapping then.
            self._lost_map[cpu] = (pfn, pages, ev.ts_ns)
            return
        self._reconstruct_alloc(cpu, pfn, pages, ev.ts_ns, None)

    def _on_dma_map_page(self, ev: Event, k: tuple[str, ...]) -> None:
        lm = self._lost_map[ev.cpu]
        if lm is None:
            return
        self._lost_map[ev.cpu] = None
        f = ev.fields
        if f[k[1]] >> 12 == lm[0]:
            self._reconstruct_alloc(ev.cpu, lm[0], lm[1], lm[2], self.unmaps.dev_owner.get(f[k[0]]))

    def _on_dma_map_sg(self, ev: Event, k: tuple[str, ...]) -> None:
        lm = self._lost_map[ev.cpu]
        if lm is None:
            return
        self._lost_map[ev.cpu] = None
        f = ev.fields
        addrs = f[k[1]] or []
        if addrs and addrs[0] >> 12 == lm[0]:
            self._reconstruct_alloc(ev.cpu, lm[0], lm[1], lm[2], self.unmaps.dev_owner.get(f[k[0]]))

    def _reconstruct_alloc(self, cpu: int, pfn: int, pages: int, ts: int, owner: DomainState | None) -> None:
        """An iommu:map with no alloc_iova_fast before it: the allocation's kprobe hits were lost."""
        rsize = (1 << (pages - 1).bit_length() if pages > 1 else 1) if pages < 32 else pages
        cands = []
        # Only domains already allocating through dma-iommu qualify: direct mappings made at domain setup
        # (reserved regions, identity maps) have no alloc_iova_fast either, and are not losses.
        for d in ([owner] if owner is not None else self.domains.values()):
            dd = d.dom
            if d.allocs == 0 or pfn < dd.start_pfn:
                continue
            if pfn in dd.cached_pfns or (dd.find_iova(pfn) is None and dd.find_iova(pfn + rsize - 1) is None):
                cands.append(d)
        if len(cands) != 1:
            if cands:
                self._gap(ts, f"iommu:map of pfn {pfn:#x} without its alloc_iova_fast; {len(cands)} domains "
                              "could own it (not reconstructed)", cands if TAINT_AMBIGUOUS_MAPS else ())
            return
        st = cands[0]
        dom = st.dom
        # A dma-iommu mapping whose allocation the trace lost: the range must be free or cached on this CPU.
        if pfn in dom.cached_pfns:
            if not dom.uncache(pfn, cpu):
                return
        elif dom.find_iova(pfn) is None and dom.find_iova(pfn + rsize - 1) is None:
            lo_list = dom._lo
            nxt = lo_list[lo_list.bisect_left(pfn)]
            if nxt <= pfn + rsize - 1:
                return
            dom._insert(pfn, pfn + rsize - 1)
            if pfn + rsize - 1 < dom.dma_32bit_pfn:
                dom.cached32_node = pfn
            else:
                dom.cached_node = pfn
        else:
            return
        self._touch(st)
        st.recon.add(pfn)
        st.findings_gap = f"lost alloc_iova_fast hits (kprobe misses), e.g. pfn {pfn:#x} at {ts / 1e9:.6f}s"
        self._gap(ts, f"iommu:map of pfn {pfn:#x} ({pages} pages) on cpu{cpu} without its alloc_iova_fast: "
                      f"allocation reconstructed in {st.name}")

    def _on_iommu_unmap(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        size = f[k[1]]
        pfn = f[k[0]] >> 12
        um = self.unmaps
        if not VERIFY_UNMAP_OWNER:
            um.unmap(ev.cpu, pfn, (size + 4095) >> 12, ev.ts_ns)  # the owner announced on this CPU
            return
        owner = um.next_owner.get(ev.cpu)
        # The announced device can be wrong (an interrupt's unmap nested in the task's): the unmapped pfn must
        # be a live allocation of its domain; otherwise take the one domain where it is.
        if VERIFY_UNMAP_OWNER and (owner is None or pfn not in owner.dom._hi or pfn in owner.dom.cached_pfns):
            cands = [d for d in self.domains.values() if pfn in d.dom._hi and pfn not in d.dom.cached_pfns]
            if len(cands) == 1:
                owner = cands[0]
        um.unmap(ev.cpu, pfn, (size + 4095) >> 12, ev.ts_ns, owner)

    def _on_dma_unmap_page(self, ev: Event, k: tuple[str, ...]) -> None:
        f = ev.fields
        um = self.unmaps
        e = um.attribute(ev.cpu, f[k[0]], f[k[1]] >> 12)
        # (an entry of a lazy domain stays open until its flush queue frees it: is_strict's first test, inline)
        if e is not None and e.owner is not None and e.owner not in um.lazy and um.is_strict(e.owner):
            e.open = False
            self._lost_free(e.owner, ev.cpu, e.pfn, e.pages, ev.ts_ns)

    def _lost_free(self, st: DomainState, cpu: int, pfn: int, pages: int, ts: int, late: bool = False) -> None:
        """Apply a free_iova_fast the kernel did but the trace lost (its unmap is in the trace).

        ``late``: found only when a later entry of its flush-queue ring was freed; when exactly it happened is
        unknown, so the domain's next predictions are uncertain.
        """
        dom = st.dom
        if st.destroyed_ns is not None or pfn not in dom._hi or pfn in dom.cached_pfns:
            return
        node_pages = dom._hi[pfn] - pfn + 1
        if pages > node_pages:
            return  # an unmap larger than the allocation is not its free
        if cpu >= dom.ncpus:
            dom.ensure_cpu(cpu)
        dom.now = ts
        self._touch(st)
        # The bin follows the allocation's (rounded) size, as the caller's page count would.
        if not dom.iova_rcache_insert(cpu, pfn, node_pages):
            dom.free_iova(pfn)
        if st.ops:
            self._drain(st, ts, cpu)
        st.recon.add(pfn)
        st.lost_frees += 1
        st.findings_gap = f"lost free_iova_fast hits (kprobe misses), e.g. pfn {pfn:#x} at {ts / 1e9:.6f}s"
        self._gap(ts, f"lost free_iova_fast of pfn {pfn:#x} ({pages} pages) in {st.name} on cpu{cpu}, "
                      "reconstructed from iommu:unmap", (st,) if late else ())

    def _attribute_unknown(self, cpu: int, pfn: int, pages: int, ts: int) -> None:
        """An unmap of unknown domain never freed: give it to the one strict domain that can own it."""
        rsize = (1 << (pages - 1).bit_length() if pages > 1 else 1) if pages < 32 else pages
        cands = [st for st in self.domains.values()
                 if st.dom.node_hi(pfn) == pfn + rsize - 1 and pfn not in st.dom.cached_pfns]
        if len(cands) == 1 and self.unmaps.is_strict(cands[0]):
            self._lost_free(cands[0], cpu, pfn, pages, ts)
        elif cands:
            self._gap(ts, f"unmap of pfn {pfn:#x} lost its free; {len(cands)} domains could own it", cands)

    # ------------------------------------------------------------------------------------------------ findings

    def _flush_storm(self, st: DomainState, ts: int, key: tuple[int, int, int]) -> None:
        st.flush_times.append(ts)
        n, window = FLUSH_STORM
        recent = [t for t in st.flush_times if ts - t <= window]
        st.flush_times = recent
        if len(recent) == n:
            cert, gap = self._certainty(st)
            self.findings.append(Finding(
                "rcache_flush_storm", Severity.WARNING, ts,
                f"{n} rcache flushes (alloc_iova_fast flush-and-retry) within {window / 1e9:g} s: the IOVA space "
                "is exhausted and every flush throws away all CPUs' caches", domain=st.name, certainty=cert,
                gap=gap, events=(key,), details={"flushes": n, "window_ns": window}))

    def _exhaustion(self, st: DomainState, ev: Event, p: _Pending) -> None:
        if st.failures > 1 and any(fd.kind == "iova_exhaustion" and fd.domain == st.name for fd in self.findings):
            return
        cert, gap = self._certainty(st)
        self.findings.append(Finding(
            "iova_exhaustion", Severity.WARNING, ev.ts_ns,
            f"alloc_iova_fast of {p.size} pages below pfn {p.limit:#x} failed even after flushing the rcaches: "
            "the IOVA space is exhausted (the DMA mapping fails)", domain=st.name, certainty=cert, gap=gap,
            events=(self._key(p.ev), self._key(ev)), details={"size": p.size, "limit_pfn": p.limit}))

    def _seed_b(self, st: DomainState, ts: int, cpu: int, bin_: int, site: str) -> None:
        if any(fd.kind == "empty_depot_pop" and fd.domain == st.name and fd.details.get("site") == site
               for fd in self.findings):
            return
        self.findings.append(Finding(
            "empty_depot_pop", Severity.ERROR, ts,
            f"{site}: iova_depot_pop() on an empty depot (bin {bin_}) dereferences NULL, as in v1 of "
            "'iommu/iova: Make the rcache depot scale better' (BUG: kernel NULL pointer dereference, "
            f"RIP: {site})", domain=st.name, certainty=Certainty.EXACT,
            details={"site": site, "bin": bin_, "cpu": cpu, "bug_mode": "b"}))

    def _seed_a(self) -> None:
        if "a" not in self.bug_modes and self.profile.kmemleak_transient_fixed:
            return
        if not self.profile.list_depot:
            return
        for st in self.all_domains:
            pops = st.depot_pops_with_successors
            if not pops:
                continue
            first = pops[0]
            self.findings.append(Finding(
                "depot_pop_transient_leak", Severity.WARNING, first[0],
                f"{len(pops)} depot pops left magazines chained behind the popped one: a kmemleak scan that "
                "read the rcache before the pop and the popped magazine after it (its first word rewritten "
                "to the size) sees the rest of the chain unreferenced and reports it as leaked (size 1024, "
                "backtrace through free_iova_fast); transient false positives, fixed by 7591c127f3b1",
                domain=st.name, certainty=Certainty.EXACT,
                details={"pops": len(pops), "max_chain": max(p[2] for p in pops), "bin": first[1],
                         "bug_mode": "a"}))

    # ------------------------------------------------------------------------------------------------ end

    def snapshot(self, ts: int) -> dict[str, Any]:
        """The state of every live domain now (for ``--at``)."""
        out = []
        for st in self.domains.values():
            dom = st.dom
            mags = []
            if dom.rcaches is not None:
                for b, rc in enumerate(dom.rcaches):
                    mags.append({"bin": b, "depot_size": len(rc.depot),
                                 "loaded": [len(c.loaded.pfns) for c in rc.cpu_rcaches],
                                 "prev": [len(c.prev.pfns) for c in rc.cpu_rcaches]})
            out.append({"iovad": st.name, "observed": st.observed, "nodes": len(dom),
                        "live_iovas": st.live_iovas(), "cached_pfns": len(dom.cached_pfns),
                        "cached_node": dom.cached_node, "cached32_node": dom.cached32_node,
                        "max32_alloc_size": dom.max32_alloc_size, "rcaches": mags,
                        "certainty": "exact" if st.observed and st.gap is None else "lower_bound"})
        return {"ts_ns": ts, "online_cpus": sorted(self.online), "domains": out}

    def finish(self) -> ReplayResult:
        """Close the replay: sequence checks, aggregated findings, extensions. Idempotent enough to call once."""
        res = self.result
        fid = self.fid
        # The prediction counters, kept per domain while replaying (an observed domain stays observed).
        obs = [st for st in self.all_domains if st.observed]
        fid.exact = sum(st.pred_exact for st in obs)
        fid.uncertain = sum(st.pred_uncertain for st in obs)
        fid.uncertain_matched = sum(st.uncertain_match for st in obs)
        fid.mismatched = sum(st.pred_mismatch for st in obs)
        fid.predicted = fid.exact + fid.uncertain + fid.mismatched
        learned = [st for st in self.all_domains if not st.observed]
        fid.learned = sum(st.learned for st in learned)
        fid.learned_matched = sum(st.learned_match for st in learned)
        for st in self.all_domains:
            if not st.observed:
                continue
            chk = fid.checks["free_pfns_size"]
            sm = difflib.SequenceMatcher(None, st.fp_model, st.fp_trace, autojunk=False)
            for tag, i1, i2, j1, j2 in sm.get_opcodes():
                for n in range(max(i2 - i1, j2 - j1)):
                    chk.record(tag == "equal", iovad=st.name, model=st.fp_model[i1 + n] if i1 + n < i2 else None,
                               trace=st.fp_trace[j1 + n] if j1 + n < j2 else None)
            if self.has_kmem:
                self._compare_magazines(st)
        self._seed_a()
        for ext in self.extensions:
            res.findings.extend(ext.finish())
        res.findings.sort(key=lambda x: x.ts_ns)
        res.domains = list(self.all_domains)
        res.online_cpus = sorted(self.online)
        if self.at_ns is not None and res.snapshot is None:
            res.snapshot = self.snapshot(self.at_ns)
        return res

    def _compare_magazines(self, st: DomainState) -> None:
        """Model vs traced magazine allocations/frees, aligned (one divergence must not shift all the rest)."""
        chk = self.fid.checks["magazines"]
        model, trace = st.kmem_model, st.kmem_trace
        sm = difflib.SequenceMatcher(None, [m[0] for m in model], [t[0] for t in trace], autojunk=False)
        for tag, i1, i2, j1, j2 in sm.get_opcodes():
            if tag != "equal":
                for n in range(max(i2 - i1, j2 - j1)):
                    chk.record(False, iovad=st.name, model_index=i1 + n if i1 + n < i2 else None,
                               trace_index=j1 + n if j1 + n < j2 else None)
                continue
            for m, t in zip(model[i1:i2], trace[j1:j2]):
                mag = m[1]
                if t[0] == "A":
                    mag.addr = t[1]  # type: ignore[attr-defined]
                    chk.record(True)
                else:
                    addr = mag.addr  # type: ignore[attr-defined]
                    chk.record(addr is None or addr == t[1], iovad=st.name, op="free", model_addr=addr,
                               trace_addr=t[1])

    def iter_live_domains(self) -> Iterator[DomainState]:
        """Domains not destroyed yet."""
        return iter(self.domains.values())
