"""What-if replay: the allocation/unmap stream of one trace under other flush policies and kernel profiles.

Theory of operation
-------------------
:func:`extract_ops` reduces a trace to what a driver asked of dma-iommu: every ``alloc_iova_fast`` (domain, CPU,
size, limit, and the pfn the kernel chose), every ``__iommu_dma_unmap`` (mapped to its domain through the device
pointer), CPU hot-unplug (``iova_cpuhp_dead``) and domain teardown (``put_iova_domain``). It also counts the
invalidations the kernel really issued (:class:`ObservedFlushes`).

:func:`run_policy` replays those operations on fresh models, one per domain: H5's allocator and rcache
(:class:`~.rcache.RcacheDomain`, with the chosen kernel profile) behind a dma-iommu cookie
(:class:`~.dma_iommu.IommuDmaCookie`) configured by a :class:`Policy`:

* ``strict``: one IOTLB invalidation per unmap, the IOVA freed at once;
* ``lazy`` / ``lazy:SIZE/TIMEOUT_MS``: per-CPU flush queues (default 256 entries, 10 ms);
* ``single`` / ``single:SIZE/TIMEOUT_MS``: one shared queue (default 32768 entries, 1000 ms, v6.7+);
* ``rollover``: s390's old scheme (model_spec §4.7): queue without bound and never on a timer; when an allocation
  would fail, flush once and give every queued IOVA back, then retry.

The model's pfns differ from the kernel's once policies differ; an unmap is matched to its allocation by the
kernel's pfn. Unmaps of IOVAs allocated before the trace began still cost an invalidation (strict) or a queue slot
(lazy) but free nothing. Timers and depot work are deadlines fired before any later operation (trace time).

Cost model (:class:`CostModel`): the work is the trace's DMA operations; each costs ``op_us`` of CPU time; each
strict (ranged) invalidation costs ``sync_us``; each flush-queue flush (a global ``flush_iotlb_all``) costs
``flush_us``. Flushes are serialised (s390 RPCIT under z/VM, or a VT-d queue drained by one waiter), so the
estimated run time is ``ops*op_us + syncs*sync_us + flushes*flush_us`` and the relative throughput of a policy is
``time(rollover) / time(policy)``.

Why :data:`S390_COST` is (1, 1, 5800): on a saturating stream the queue timers never fire and the rings fill; a
ring-full flush of one CPU advances the shared ``fq_flush_finish_cnt``, so every CPU's ring drains at its next
``queue_iova`` and there is one global flush per ``ncpus * (size - 1)`` unmaps. The seed thread's s390 NVMe
figures then pin the parameters (2 CPUs, op = 1): strict ≈ 50 % gives ``sync = op``; 8192/100 ms ≈ 76 % gives
``flush ≈ 5200``; 32768/4000 ms ≈ 91 % gives ``flush ≈ 6500``; the default queue under 8 % needs ``flush > 5870``.
``flush = 5800`` satisfies all four within three points: a global flush that re-validates the whole shadowed I/O
page table costs thousands of ranged ones. With a cheap global flush (VT-d: ``flush_us ≈ sync_us``) the verdict
reverses and every queue beats strict.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..event import Event
from .dma_iommu import FlushReason, FqConfig, FqQueueType, IommuDmaCookie
from .profiles import IOVA_DEFAULT_FQ_SIZE, IOVA_DEFAULT_FQ_TIMEOUT_NS, IOVA_SINGLE_FQ_SIZE, \
    IOVA_SINGLE_FQ_TIMEOUT_NS, KernelProfile
from .rcache import ALLOC_FAIL, FROM_FLUSH, FROM_TREE, RcacheDomain

__all__ = [
    "Policy", "parse_policy", "CostModel", "S390_COST", "Op", "ObservedFlushes", "extract_ops", "run_policy",
    "scale_time", "add_throughput",
    "WHATIF_EVENTS", "percentile",
]

#: Events :func:`extract_ops` reads.
WHATIF_EVENTS = (
    "iova:alloc_iova_fast", "iova:alloc_iova_fast_ret", "dmaiommu:iommu_dma_alloc_iova",
    "dmaiommu:iommu_dma_alloc_iova_ret", "dmaiommu:__iommu_dma_unmap",
    "iova:iova_cpuhp_dead", "iova:put_iova_domain", "iova:init_iova_domain", "dmaiommu:fq_flush_iotlb",
    "dmaiommu:fq_flush_timeout", "intel_iommu:qi_submit", "intel_iommu:cache_tag_flush_range", "iommu:unmap",
)

ALLOC, UNMAP, CPU_DEAD, TEARDOWN = 0, 1, 2, 3
_NEVER = 1 << 127


@dataclass(frozen=True, slots=True)
class Policy:
    """One flush configuration.

    Attributes:
        name: as given (``lazy:8192/100``).
        kind: ``strict``, ``lazy``, ``single`` or ``rollover``.
        fq_size / fq_timeout_ms: queue size and timeout (lazy, single).
    """

    name: str
    kind: str
    fq_size: int = IOVA_DEFAULT_FQ_SIZE
    fq_timeout_ms: float = IOVA_DEFAULT_FQ_TIMEOUT_NS / 1e6

    def fq_config(self, timer_hz: int | None) -> FqConfig:
        """The cookie configuration of this policy."""
        if self.kind == "strict":
            return FqConfig.strict()
        if self.kind == "rollover":
            # no ring limit, no timer: flushes only when the allocator runs dry (WhatifRun._alloc)
            return FqConfig(True, FqQueueType.SINGLE, 1 << 62, 1e18, None)
        qt = FqQueueType.SINGLE if self.kind == "single" else FqQueueType.PER_CPU
        return FqConfig(True, qt, self.fq_size, self.fq_timeout_ms, timer_hz)


def parse_policy(text: str) -> Policy:
    """Parse a ``--policy`` value.

    Args:
        text: ``strict``, ``lazy``, ``lazy:SIZE/TIMEOUT_MS``, ``single``, ``single:SIZE/TIMEOUT_MS``, ``rollover``.

    Returns:
        The policy.

    Raises:
        ValueError: anything else (the message says what is accepted).
    """
    t = text.strip().lower()
    if t in ("strict", "rollover"):
        return Policy(t, t)
    if t == "lazy":
        return Policy(t, "lazy")
    if t == "single":
        return Policy(t, "single", IOVA_SINGLE_FQ_SIZE, IOVA_SINGLE_FQ_TIMEOUT_NS / 1e6)
    kind, sep, rest = t.partition(":")
    if sep and kind in ("lazy", "single"):
        size_s, slash, timeout_s = rest.partition("/")
        try:
            size = int(size_s)
            timeout = float(timeout_s)
        except ValueError:
            size, timeout = 0, 0.0
        if slash and size >= 2 and timeout > 0:
            return Policy(t, kind, size, timeout)
    raise ValueError(f"Cannot parse policy {text!r}: expected strict, lazy, lazy:SIZE/TIMEOUT_MS, single, "
                     "single:SIZE/TIMEOUT_MS or rollover (SIZE >= 2 entries, TIMEOUT_MS > 0)")


@dataclass(frozen=True, slots=True)
class CostModel:
    """Per-operation costs in microseconds (see the module doc).

    Attributes:
        op_us: CPU cost of one DMA map + unmap.
        sync_us: one strict (ranged) IOTLB invalidation.
        flush_us: one flush-queue flush (global ``flush_iotlb_all``).
    """

    op_us: float = 1.0
    sync_us: float = 1.0
    flush_us: float = 1.0

    def time_us(self, ops: int, syncs: int, flushes: int) -> float:
        """Serialised run time of a replay."""
        return ops * self.op_us + syncs * self.sync_us + flushes * self.flush_us


#: The expensive-flush model that reproduces the seed thread (e)'s s390 measurements (module doc).
S390_COST = CostModel(op_us=1.0, sync_us=1.0, flush_us=5800.0)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of the stream.

    Attributes:
        ts_ns, cpu: when and where.
        kind: ALLOC, UNMAP, CPU_DEAD or TEARDOWN.
        iovad: the domain (iova_domain address), or -1 (CPU_DEAD).
        size: pages (ALLOC: as requested; UNMAP: iova_align(size + offset) >> shift).
        limit_pfn: ALLOC limit.
        pfn: the kernel's pfn (ALLOC result, UNMAP address).
        flush_rcache: ALLOC's flush_rcache argument (of its last attempt).
        fallback_limit: ALLOC inside ``iommu_dma_alloc_iova``: the device's full limit, tried (with
            flush_rcache) when the first, 32-bit attempt fails; 0 = no second attempt.
    """

    ts_ns: int
    cpu: int
    kind: int
    iovad: int
    size: int = 0
    limit_pfn: int = 0
    pfn: int = 0
    flush_rcache: bool = True
    fallback_limit: int = 0


@dataclass(slots=True)
class ObservedFlushes:
    """IOTLB invalidations the kernel issued, counted from the trace.

    Attributes:
        fq_flushes: ``fq_flush_iotlb`` hits (lazy domains); ``fq_timeouts``: ``fq_flush_timeout`` hits.
        unmap_invalidations: invalidations issued by unmaps: on 6.12+ ``cache_tag_flush_range``; before, the first
            IOTLB ``qi_submit`` after each ``iommu:unmap`` on the same CPU (page-selective, granularity 3).
        unmaps: ``__iommu_dma_unmap`` hits.
    """

    fq_flushes: int = 0
    fq_timeouts: int = 0
    unmap_invalidations: int = 0
    unmaps: int = 0
    first_ns: int = 0
    last_ns: int = 0

    @property
    def lazy(self) -> bool:
        """The trace ran with flush queues."""
        return self.fq_flushes > 0 and self.unmap_invalidations < self.unmaps // 2


def extract_ops(events: Iterable[Event]) -> tuple[list[Op], ObservedFlushes, dict[str, int]]:
    """Reduce a merged event stream to the operations a what-if replays.

    Args:
        events: the trace's events in merged order (at least :data:`WHATIF_EVENTS`).

    Returns:
        ``(ops, observed, skipped)``: operations in time order, the kernel's own invalidation counts, and counts
        of what could not be used (an unmap whose device was never tied to a domain, a return without entry).
    """
    ops: list[Op] = []
    obs = ObservedFlushes()
    skipped = {"unmap_unknown_domain": 0, "ret_without_entry": 0}
    pend_alloc: dict[int, Event] = {}
    pend_dev: dict[int, int] = {}
    # iommu_dma_alloc_iova in progress per CPU: [first attempt Op or None, its dma_limit pfn]; the kernel tries a
    # 32-bit limit first (SAC / pci_32bit_workaround) and then the device's limit: that is one allocation
    in_dma_alloc: dict[int, list[Any]] = {}
    dev_iovad: dict[int, int] = {}
    after_unmap: dict[int, bool] = {}
    has_cache_tag = False
    first = None
    ts = 0
    for ev in events:
        n = ev.name
        f = ev.fields
        ts = ev.ts_ns
        if first is None:
            first = ts
        cpu = ev.cpu
        if n == "iova:alloc_iova_fast":
            pend_alloc[cpu] = ev
            d = pend_dev.pop(cpu, None)
            if d is not None:
                dev_iovad[d] = f["iovad"]
        elif n == "iova:alloc_iova_fast_ret":
            a = pend_alloc.pop(cpu, None)
            if a is None:
                skipped["ret_without_entry"] += 1
                continue
            af = a.fields
            op = Op(a.ts_ns, cpu, ALLOC, af["iovad"], af["size"], af["limit_pfn"], f["pfn"],
                    bool(af.get("flush_rcache", 1)))
            ctx = in_dma_alloc.get(cpu)
            if ctx is None:
                ops.append(op)
            elif ctx[0] is None:
                ctx[0] = op
            else:  # the second attempt: merge into the first
                f0 = ctx[0]
                ctx[0] = Op(f0.ts_ns, cpu, ALLOC, f0.iovad, f0.size, f0.limit_pfn, op.pfn, op.flush_rcache,
                            op.limit_pfn)
        elif n == "dmaiommu:iommu_dma_alloc_iova":
            pend_dev[cpu] = f["dev"]
            in_dma_alloc[cpu] = [None, (f.get("dma_limit", 0) >> 12)]
        elif n == "dmaiommu:iommu_dma_alloc_iova_ret":
            ctx = in_dma_alloc.pop(cpu, None)
            if ctx is not None and ctx[0] is not None:
                f0 = ctx[0]
                fb = f0.fallback_limit
                if not fb and not f0.flush_rcache and ctx[1] > f0.limit_pfn:
                    fb = ctx[1]  # the 32-bit try succeeded in the kernel; a model failure would fall back
                ops.append(Op(f0.ts_ns, cpu, ALLOC, f0.iovad, f0.size, f0.limit_pfn,
                              f["iova"] >> 12 if f.get("iova") else 0, f0.flush_rcache or bool(fb), fb))
        elif n == "dmaiommu:__iommu_dma_unmap":
            obs.unmaps += 1
            iovad = dev_iovad.get(f["dev"])
            if iovad is None:
                skipped["unmap_unknown_domain"] += 1
                continue
            addr, size = f["dma_addr"], f["size"]
            ops.append(Op(ts, cpu, UNMAP, iovad, ((addr & 0xFFF) + size + 0xFFF) >> 12, 0, addr >> 12))
        elif n == "iova:iova_cpuhp_dead":
            ops.append(Op(ts, cpu, CPU_DEAD, -1, 0, 0, f.get("field_cpu", f.get("cpu", cpu))))  # schema renames "cpu"
        elif n == "iova:put_iova_domain":
            ops.append(Op(ts, cpu, TEARDOWN, f["iovad"]))
        elif n == "dmaiommu:fq_flush_iotlb":
            obs.fq_flushes += 1
        elif n == "dmaiommu:fq_flush_timeout":
            obs.fq_timeouts += 1
        elif n == "intel_iommu:cache_tag_flush_range":
            has_cache_tag = True
            obs.unmap_invalidations += 1
        elif n == "iommu:unmap":
            after_unmap[cpu] = True
        elif n == "intel_iommu:qi_submit" and not has_cache_tag:
            qw0 = f.get("qw0", 0)
            # IOTLB invalidation (type 2), page-selective (granularity 3): the strict unmap's own flush
            if after_unmap.get(cpu) and qw0 & 0xF == 2 and (qw0 >> 4) & 3 == 3:
                obs.unmap_invalidations += 1
                after_unmap[cpu] = False
    obs.first_ns = first or 0
    obs.last_ns = ts
    return ops, obs, skipped


def percentile(sorted_vals: Sequence[int], q: float) -> int:
    """The q-quantile (0..1) of an ascending sequence (nearest rank); 0 when empty."""
    if not sorted_vals:
        return 0
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return int(sorted_vals[i])


class _TrackedDomain(RcacheDomain):
    """The allocator with a running count of pages held by rbtree nodes (anchor excluded), so that sampling the
    IOVA space in use costs O(1) instead of a walk of the tree."""

    __slots__ = ("pages",)

    def __init__(self, *a: Any, **kw: Any) -> None:
        self.pages = 0
        super().__init__(*a, **kw)

    def _insert(self, lo: int, hi: int) -> None:
        super()._insert(lo, hi)
        self.pages += hi - lo + 1

    def remove_iova(self, pfn_lo: int) -> None:
        self.pages -= self._hi[pfn_lo] - pfn_lo + 1
        super().remove_iova(pfn_lo)


@dataclass(slots=True)
class _Dom:
    dom: _TrackedDomain
    cookie: IommuDmaCookie
    live: dict[int, tuple[int, int]] = field(default_factory=dict)  # kernel pfn -> (model pfn, size)


class WhatifRun:
    """One policy × profile replay of an operation stream (see :func:`run_policy`)."""

    def __init__(self, policy: Policy, profile: KernelProfile, ncpus: int, *, timer_hz: int | None = 250,
                 sample_every: int = 64) -> None:
        self.policy = policy
        self.profile = profile
        self.ncpus = max(1, ncpus)
        self.timer_hz = timer_hz
        self.doms: dict[int, _Dom] = {}
        self.online = set(range(self.ncpus))
        self.allocs = self.unmaps = self.failures = self.rcache_flushes = self.hits = self.prior_unmaps = 0
        self.queued_pages = 0
        self.samples: list[tuple[int, int, int, int, int]] = []  # ts, tree pages, queued pages, mags, depot mags
        self.sample_every = sample_every
        self._n = 0
        self._next_due = _NEVER
        self.torn_down: list[IommuDmaCookie] = []

    def _domain(self, iovad: int) -> _Dom:
        d = self.doms.get(iovad)
        if d is None:
            dom = _TrackedDomain(self.profile, self.ncpus, online=self.online, iovad=iovad)

            def free(pfn: int, pages: int, cpu: int, ts: int, _dom: RcacheDomain = dom) -> None:
                self.queued_pages -= pages
                if pfn >= 0:  # -1: an IOVA allocated before the trace (nothing to free in the model)
                    _dom.now = ts
                    _dom.free_iova_fast(cpu, pfn, pages)

            cookie = IommuDmaCookie(hex(iovad), self.policy.fq_config(self.timer_hz),
                                    possible_cpus=range(self.ncpus), free_iova_fast=free)
            d = self.doms[iovad] = _Dom(dom, cookie)
        return d

    def _due(self, d: _Dom) -> int:
        c = d.cookie
        due = c.fq_timer_deadline if c.fq_timer_on and c.fq_timer_deadline is not None else _NEVER
        if self.profile.depot_trim:
            w = d.dom.next_work_due()
            if w is not None and w < due:
                due = w
        return due

    def _timers(self, ts: int) -> None:
        if ts < self._next_due:
            return  # nothing can be due: deadlines only move earlier through an operation (see apply)
        for d in self.doms.values():
            c = d.cookie
            while c.fq_timer_on and c.fq_timer_deadline is not None and c.fq_timer_deadline <= ts:
                c.run_timers(ts)
            if self.profile.depot_trim and d.dom.rcaches is not None:
                for bin_, rc in enumerate(d.dom.rcaches):
                    while rc.work_due is not None and rc.work_due <= ts:
                        d.dom.now = rc.work_due
                        d.dom.iova_depot_work_func(bin_, 0)
        self._next_due = min((self._due(d) for d in self.doms.values()), default=_NEVER)

    def apply(self, op: Op) -> None:
        """Apply one operation (timers due before it fire first)."""
        self._timers(op.ts_ns)
        if op.kind == ALLOC:
            self._alloc(op)
        elif op.kind == UNMAP:
            self._unmap(op)
        elif op.kind == CPU_DEAD:
            self.online.discard(op.pfn)
            for d in self.doms.values():
                d.dom.now = op.ts_ns
                d.dom.iova_cpuhp_dead(op.pfn)
            self.online.add(op.pfn)  # it comes back; the lab's cpuhp cycles are short
        elif op.kind == TEARDOWN:
            d = self.doms.pop(op.iovad, None)
            if d is not None:
                left = d.cookie.iommu_dma_free_fq(op.ts_ns)
                self.queued_pages -= sum(e.pages for e in left)
                self.torn_down.append(d.cookie)
        d = self.doms.get(op.iovad)
        if d is not None:  # the operation may have armed a timer or scheduled depot work
            due = self._due(d)
            if due < self._next_due:
                self._next_due = due
        self._n += 1
        if self._n % self.sample_every == 0:
            self.sample(op.ts_ns)

    def _alloc(self, op: Op) -> None:
        d = self._domain(op.iovad)
        dom = d.dom
        dom.now = op.ts_ns
        self.allocs += 1
        if self.policy.kind == "rollover":
            pfn = dom.alloc_iova_fast(op.cpu, op.size, op.limit_pfn, False)
            if not pfn:
                # the s390 scheme: the allocator ran dry, flush once and reuse everything queued
                d.cookie.flush_all_queued(op.ts_ns, op.cpu, FlushReason.EXHAUSTION)
                pfn = dom.alloc_iova_fast(op.cpu, op.size, op.limit_pfn, op.flush_rcache)
        else:
            pfn = dom.alloc_iova_fast(op.cpu, op.size, op.limit_pfn, op.flush_rcache and not op.fallback_limit)
        if not pfn and op.fallback_limit:
            # iommu_dma_alloc_iova's second try over the device's whole DMA mask
            pfn = dom.alloc_iova_fast(op.cpu, op.size, op.fallback_limit, True)
        src = dom.last_source
        if src == FROM_FLUSH:
            self.rcache_flushes += 1
        if not pfn or src == ALLOC_FAIL:
            self.failures += 1
            return
        if src not in (FROM_TREE, FROM_FLUSH):
            self.hits += 1
        d.live[op.pfn] = (pfn, op.size)

    def _unmap(self, op: Op) -> None:
        d = self._domain(op.iovad)
        self.unmaps += 1
        got = d.live.pop(op.pfn, None)
        if got is None:
            self.prior_unmaps += 1
            pfn, size = -1, op.size
        else:
            pfn, size = got
        self.queued_pages += size
        d.cookie.iommu_dma_free_iova(pfn, size, op.cpu, op.ts_ns)

    def sample(self, ts: int) -> None:
        """Record IOVA space in use (tree pages, reserved excluded), queued pages and magazines."""
        tree = mags = depot = 0
        for d in self.doms.values():
            tree += d.dom.pages  # type: ignore[attr-defined]
            for where, _b, _c, _m in d.dom.iter_magazines():
                mags += 1
                depot += where == "depot"
        self.samples.append((ts, tree, self.queued_pages, mags, depot))

    def cookies(self) -> Iterator[IommuDmaCookie]:
        """Every cookie, live and torn down."""
        yield from (d.cookie for d in self.doms.values())
        yield from self.torn_down

    def finish(self, end_ns: int) -> dict[str, Any]:
        """Fire the timers due by ``end_ns`` and return the figures (JSON-ready)."""
        self._timers(end_ns)
        self.sample(end_ns)
        stats = [c.stats for c in self.cookies()]
        syncs = sum(s.strict_syncs for s in stats)
        flushes = {r.value: sum(s.flushes[r.value] for s in stats) for r in FlushReason}
        nflush = sum(flushes.values())
        inval = syncs + nflush
        exposure = sorted(x for s in stats for x in s.exposure_ns)
        still_open = [end_ns - e.queued_ns for c in self.cookies() for e in c.iter_queued()]
        ts = [s[0] for s in self.samples]
        tree = [s[1] for s in self.samples]
        span = max(1, end_ns - (self.samples[0][0] if self.samples else end_ns))
        mean_tree = 0.0
        if len(ts) > 1:  # time-weighted mean of a step function
            mean_tree = sum(tree[i] * (ts[i + 1] - ts[i]) for i in range(len(ts) - 1)) / max(1, ts[-1] - ts[0])
        mag_bytes = self.profile.mag_object_size
        return {
            "policy": self.policy.name,
            "kernel": self.profile.name,
            "unmaps": self.unmaps,
            "allocations": self.allocs,
            "invalidations": inval,
            "strict_invalidations": syncs,
            "fq_flushes": flushes,
            "batching_factor": round(self.unmaps / inval, 3) if inval else None,
            "peak_queued_entries": max((s.peak_queued for s in stats), default=0),
            "iova_pages_in_use_peak": max(tree, default=0),
            "iova_pages_in_use_mean": round(mean_tree, 1),
            "queued_pages_peak": max((s[2] for s in self.samples), default=0),
            "magazines_peak": max((s[3] for s in self.samples), default=0),
            "magazine_bytes_peak": max((s[3] for s in self.samples), default=0) * mag_bytes,
            "depot_magazines_peak": max((s[4] for s in self.samples), default=0),
            "depot_bytes_peak": max((s[4] for s in self.samples), default=0) * mag_bytes,
            "rcache_hit_rate": round(self.hits / self.allocs, 4) if self.allocs else None,
            "allocation_failures": self.failures,
            "rcache_flushes": self.rcache_flushes,
            "unmaps_of_prior_iovas": self.prior_unmaps,
            "exposure_us": {
                "count": len(exposure),
                "p50": percentile(exposure, 0.5) / 1000, "p90": percentile(exposure, 0.9) / 1000,
                "p99": percentile(exposure, 0.99) / 1000,
                # windows still open at the end of the trace count with their age so far (a lower bound)
                "max": max(exposure[-1] if exposure else 0, max(still_open, default=0)) / 1000,
                "open_at_end": len(still_open), "open_max": max(still_open, default=0) / 1000,
            },
            "exposure_hist": _histogram(exposure),
            "span_s": span / 1e9,
        }


_EXPO_EDGES_US = (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)


def _histogram(sorted_ns: Sequence[int]) -> dict[str, int]:
    # counts per decade of microseconds; "0" holds the strict (zero-window) entries
    out: dict[str, int] = {}
    prev = 0
    for edge in _EXPO_EDGES_US[1:]:
        j = bisect.bisect_left(sorted_ns, edge * 1000)
        out[f"<{edge}us"] = j - prev
        prev = j
    out[">=10s"] = len(sorted_ns) - prev
    return out


def scale_time(ops: Sequence[Op], start_ns: int, scale: float) -> list[Op]:
    """The same operations with every gap since ``start_ns`` multiplied by ``scale`` (0.01 = a device 100× faster
    issuing the same sequence: flush-queue timers then fire relatively less often than rings fill)."""
    return [Op(start_ns + int((o.ts_ns - start_ns) * scale), o.cpu, o.kind, o.iovad, o.size, o.limit_pfn, o.pfn,
               o.flush_rcache) for o in ops]


def run_policy(ops: Sequence[Op], policy: Policy, profile: KernelProfile, *, ncpus: int, end_ns: int,
               start_ns: int, timer_hz: int | None = 250) -> dict[str, Any]:
    """Replay ``ops`` under one policy and kernel profile.

    Args:
        ops: from :func:`extract_ops`.
        policy: the flush policy.
        profile: the kernel profile (magazine size, depot kind, retry behaviour).
        ncpus: possible CPUs.
        end_ns / start_ns: the trace's time span (rates and open exposure windows).
        timer_hz: CONFIG_HZ for the queue timer (``None``: exact deadlines).

    Returns:
        The figures (see ``iovatrace whatif --help`` and :meth:`WhatifRun.finish`), plus ``invalidations_per_s``.
    """
    run = WhatifRun(policy, profile, ncpus, timer_hz=timer_hz)
    for op in ops:
        run.apply(op)
    res = run.finish(end_ns)
    dur = max(1e-9, (end_ns - start_ns) / 1e9)
    res["duration_s"] = round(dur, 6)
    res["invalidations_per_s"] = round(res["invalidations"] / dur, 2)
    return res


def add_throughput(results: list[dict[str, Any]], cost: CostModel, baseline: str = "rollover") -> None:
    """Add ``est_time_us`` and ``relative_throughput`` (vs the ``baseline`` policy of the same kernel, or vs the
    fastest policy when there is none) to each result, in place."""
    for r in results:
        nflush = sum(r["fq_flushes"].values())
        r["est_time_us"] = round(cost.time_us(r["unmaps"], r["strict_invalidations"], nflush), 3)
    for kernel in {r["kernel"] for r in results}:
        group = [r for r in results if r["kernel"] == kernel]
        base = next((r for r in group if r["policy"] == baseline), None)
        ref = base["est_time_us"] if base else min(r["est_time_us"] for r in group)
        for r in group:
            r["relative_throughput"] = round(ref / r["est_time_us"], 4) if r["est_time_us"] else None
            r["throughput_baseline"] = baseline if base else "fastest"
            if r["allocation_failures"]:
                # a failed mapping costs the model nothing, but the I/O failed: the estimate is optimistic
                r["throughput_caveat"] = f"{r['allocation_failures']} allocations failed (not costed)"
