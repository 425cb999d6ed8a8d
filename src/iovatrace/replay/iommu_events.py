"""The IOMMU layer of the replay: trace events → dma-iommu cookies, topology and mapping ledger, VT-d QI.

Theory of operation
-------------------
:class:`IommuLayer` is what the replay driver calls for every event of the systems ``iommu``, ``dma``,
``dmaiommu``, ``intel_iommu`` and ``page_pool``, for driver bind/unbind probes, and for the few ``iova`` events
that tie a domain to its cookie (``alloc_iova_fast``, ``free_iova_fast``, ``put_iova_domain``). It never touches
the allocator: in a trace the ``free_iova_fast`` calls are visible, so the flush queues run in *following* mode
(:mod:`.dma_iommu`) and only check that the kernel freed what the model expected.

How the kprobes of the lab (6.1, 6.12) are read:

* ``iommu_dma_alloc_iova(domain, dev, devname)`` names a device pointer and its domain; the next
  ``alloc_iova_fast`` on that CPU gives the domain's iova_domain (the cookie is ``iovad - 8``).
* ``__iommu_dma_map`` / ``iommu_dma_map_sg`` followed by ``iommu_dma_alloc_iova_ret`` make a ledger entry (when
  the trace has no ``dma:*`` tracepoints; 6.12 has them and they are used instead, with exact device names).
* ``__iommu_dma_unmap(dev, dma_addr, size)`` is resolved by the next event of that CPU: a ``fq_ring_free`` of a
  cookie means the domain is lazy and ``queue_iova`` ran (it is inlined in these builds); a ``free_iova_fast`` of
  the same pfn means strict.
* ``fq_flush_timeout(timer)`` followed on that CPU by ``fq_flush_iotlb(cookie)`` is the cookie's timer; a
  ``fq_flush_iotlb`` without it is a ring-full flush inside ``queue_iova``.
* ``fq_ring_free_locked(head, tail, mod_mask)`` (6.12) gives the ring's occupancy, which is compared with the model.

Per-event cost: the driver steps the layer with millions of events, so nothing that depends only on an event's
name is decided per event. :func:`_route` decides it once per name (wanted or not, handler, whether the event ends a
pending synchronous flush or resolves a pending unmap on its CPU) and memoises it; the hex spellings of cookies,
domains and iova_domains (the model's keys) are memoised too. ``tests/replay/test_ext_dispatch.py`` holds the
routes to the name rules they replace.

Bug modes (``c``, ``d``, ``e``; model_spec §11.3): ``c`` = no page_pool DMA tracking (≤6.14), ``d`` = the VT-d QI
reclaim before 3cf74230c139 (≤6.11), ``e`` = teardown that neither waits for nor drains the flush queue, with
release_device racing attach (s390 ≤6.1; FQ timer/teardown race fixed by d7061627d701). Without an explicit set,
``c`` and ``d`` follow the kernel profile and ``e`` is off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..event import Event
from .devices import _DIRECTION_OF_INT, DmaDirection, DmaMapping, Topology, direction_from_prot
from .dma_iommu import IOVAD_OFFSET_IN_COOKIE, FqConfig, FqQueueType, IommuDmaCookie
from .findings import Certainty, Finding, Severity
from .vtd_qi import QiRing

__all__ = ["IommuLayer", "LayerStats", "BUG_MODES", "DEFAULT_HZ"]

#: Bug modes this layer implements.
BUG_MODES = ("c", "d", "e")
#: CONFIG_HZ of the lab's Debian kernels (CONFIG_HZ_250); the FQ timer fires on jiffy ticks.
DEFAULT_HZ = 250

_SYSTEMS = ("iommu:", "dma:", "dmaiommu:", "intel_iommu:", "page_pool:", "driver:")
_IOVA_NAMES = frozenset({"iova:alloc_iova_fast", "iova:free_iova_fast", "iova:put_iova_domain",
                         "iova:init_iova_domain"})
_BIND = ("really_probe", "driver:bind")
_UNBIND = ("device_unbind_cleanup", "device_release_driver_internal_ret", "__device_release_driver_ret",
           "driver:unbind")


#: ``(wanted, handler, fn, ends_flush, resolves_unmap)`` of one event name, see :func:`_route`.
_Route = tuple[bool, Any, str, bool, bool]


def _fn(name: str) -> str:
    return name.split(":", 1)[-1]


# Pure-function memos: a trace names a handful of cookies, domains and iova_domains millions of times, so their
# hex spellings (the model's keys) are formatted once. Cleared when large so a trace of many addresses stays bounded.
_MEMO_MAX = 1 << 16
_HEX_OF: dict[int, str] = {}
_COOKIE_OF: dict[int, str] = {}


def _hex(v: Any) -> str:
    if type(v) is int:
        s = _HEX_OF.get(v)
        if s is None:
            if len(_HEX_OF) >= _MEMO_MAX:
                _HEX_OF.clear()
            s = _HEX_OF[v] = f"0x{v:x}"
        return s
    return f"0x{v:x}" if isinstance(v, int) else str(v)


def _int(v: Any) -> int:
    if isinstance(v, int):
        return v
    return int(str(v), 0)


_ABSENT = object()  # a field the event does not have (distinct from a field that is None)


def _key(ev: Event) -> tuple[int, int, int]:
    return (ev.ts_ns, ev.cpu, ev.seq)


@dataclass(slots=True)
class LayerStats:
    """Fidelity counters of the layer (how well the model followed the trace).

    Attributes:
        events: events handled.
        unresolved_unmaps: ``__iommu_dma_unmap`` not followed by a ring free or a free on its CPU.
        observed_full_flushes: ``fq_flush_iotlb`` outside a timeout (ring full in the kernel).
        ring_occupancy_checked / ring_occupancy_matched: 6.12 ``fq_ring_free_locked`` head/tail comparisons.
        qi_descriptors: ``intel_iommu:qi_submit`` events by iommu.
        cache_tag_flushes: ``intel_iommu:cache_tag_flush_*`` events by name.
        iommu_map / iommu_unmap: page-table tracepoint counts.
        timer_after_teardown: timeouts seen for a cookie already torn down.
        unmaps_from_tracepoint: kprobe-learned mappings closed at a check point (domain free, unbind, release)
            because an ``iommu:unmap`` tracepoint of their IOVA came after their map: the unmap kprobe hit was lost.
    """

    events: int = 0
    unresolved_unmaps: int = 0
    observed_full_flushes: int = 0
    ring_occupancy_checked: int = 0
    ring_occupancy_matched: int = 0
    qi_descriptors: dict[str, int] = field(default_factory=dict)
    cache_tag_flushes: dict[str, int] = field(default_factory=dict)
    iommu_map: int = 0
    iommu_unmap: int = 0
    timer_after_teardown: int = 0
    unmaps_from_tracepoint: int = 0


class IommuLayer:
    """Event-level model of dma-iommu, IOMMU topology, the DMA mapping ledger and VT-d QI.

    Args:
        profile: a ``profiles.KernelProfile`` (or anything with ``fq_size``, ``fq_timeout_ns``,
            ``qi_reclaim_fixed``, ``page_pool_dma_tracking``, ``qi_length``); ``None`` = 6.x defaults.
        bug_modes: the bug modes to turn on (subset of :data:`BUG_MODES`); ``None`` = profile defaults.
        event_names: names of the event types the trace holds (decides the ledger source and whether the FQ
            timer is observed or predicted); ``None`` = decide from the events as they come.
        timer_hz: CONFIG_HZ for predicted timers.
        possible_cpus: CPUs with a flush-queue ring.

    Driver protocol: before applying an event at time ``t`` call :meth:`fire_timers` ``(t)``; then
    :meth:`step` ``(event)`` for events where :meth:`wants` is true; at the end :meth:`finish`.
    """

    def __init__(self, profile: Any = None, *, bug_modes: Iterable[str] | None = None,
                 event_names: Iterable[str] | None = None, timer_hz: int | None = DEFAULT_HZ,
                 possible_cpus: Iterable[int] = (0, 1)) -> None:
        self.profile = profile
        if bug_modes is None:
            modes = set()
            if profile is not None and not getattr(profile, "page_pool_dma_tracking", False):
                modes.add("c")
            if profile is not None and not getattr(profile, "qi_reclaim_fixed", True):
                modes.add("d")
        else:
            modes = {m.lower().strip() for m in bug_modes}
            unknown = modes - set(BUG_MODES) - {"a", "b"}  # a, b belong to the allocator model
            if unknown:
                raise ValueError(f"Unknown bug mode(s) {sorted(unknown)}: expected some of {', '.join(BUG_MODES)}")
        self.bug_modes = frozenset(modes & set(BUG_MODES))
        names = set(event_names) if event_names is not None else None
        self.dma_ledger = bool(names and any(n.startswith("dma:dma_map") for n in names))
        self.timer_observed = names is None or "dmaiommu:fq_flush_timeout" in names
        self.timer_hz = timer_hz
        self.possible_cpus = tuple(possible_cpus)
        self.fq_size = int(getattr(profile, "fq_size", 256))
        self.fq_timeout_ms = getattr(profile, "fq_timeout_ns", 10_000_000) / 1e6
        self.qi_length = int(getattr(profile, "qi_length", 256))
        self.topology = Topology(page_pool_dma_tracking="c" not in self.bug_modes, release_race="e" in self.bug_modes)
        self.cookies: dict[str, IommuDmaCookie] = {}  # by cookie address
        self.freed_cookies: dict[str, IommuDmaCookie] = {}
        self.domain_iovad: dict[str, str] = {}  # domain -> iovad
        self.iovad_domain: dict[str, str] = {}
        self.timer_cookie: dict[str, str] = {}
        self.qi: dict[str, QiRing] = {}
        self.stats = LayerStats()
        self._alloc_ctx: dict[int, tuple[str, str | None, int | None]] = {}  # cpu -> (domain, devname, devptr)
        self._map_ctx: dict[int, tuple[str, int | None, int | None, int | None, DmaDirection, Event]] = {}
        self._unmap_ctx: dict[int, tuple[str | None, int, int, Event]] = {}
        self._timeout_ctx: dict[int, tuple[str, Event]] = {}
        self._pool_ctx: dict[int, str] = {}
        self._expect_rf: dict[int, int] = {}  # cpu -> ring frees the model already applied in queue_iova
        self._fq_ring: dict[tuple[str, int], int] = {}  # (cookie, fq pointer) -> ring key
        self._timeout_rf: dict[int, int] = {}  # cpu -> ring frees seen since its timeout flush
        self._flushing: dict[int, IommuDmaCookie] = {}  # cpu -> cookie whose flush it started (sync on that CPU)
        self._tp_unmap_ns: dict[int, int] = {}  # iova -> time of its last iommu:unmap (kprobe-fed ledger only)

    # -- driver protocol ----------------------------------------------------------------------------------

    @staticmethod
    def wants(name: str) -> bool:
        """Whether :meth:`step` should see events named ``name``."""
        return _route(name)[0]

    def fire_timers(self, now_ns: int) -> list[Finding]:
        """Fire the predicted flush-queue timers due at or before ``now_ns`` (only when the trace lacks them)."""
        if self.timer_observed:
            return []
        for c in self.cookies.values():  # run_timers only touches its own cookie
            if c.fq_timer_on and c.fq_timer_deadline is not None and c.fq_timer_deadline <= now_ns:
                c.run_timers(now_ns)
        return []

    def note_lost_events(self, ts_ns: int, cpu: int, count: int | None) -> None:
        """A ring-buffer loss: later completeness-based findings become uncertain."""
        self.topology.note_gap(f"{count if count is not None else 'some'} events lost on CPU {cpu} at {ts_ns} ns")

    def step(self, ev: Event) -> list[Finding]:
        """Apply one event; returns the findings it produced."""
        route = _ROUTES.get(ev.name) or _route(ev.name)
        return self._apply(ev, route) or []

    def _apply(self, ev: Event, route: _Route) -> list[Finding] | None:
        # The per-event part of :meth:`step` (and of IommuExtension.step): everything that depends only on the
        # event's name is in ``route``. The two per-CPU checks look at their dicts first: empty almost always.
        self.stats.events += 1
        out = None
        # fq_flush_iotlb is synchronous: the next event of the flushing CPU comes after the flush finished
        # (intel_iommu:qi_submit/cache_tag_*: still flushing)
        if self._flushing and route[3] and ev.cpu in self._flushing:
            self._flushing.pop(ev.cpu).fq_flush_finish(ev.ts_ns)
        # a pending __iommu_dma_unmap is resolved by the next relevant event of its CPU
        if self._unmap_ctx and route[4] and ev.cpu in self._unmap_ctx:
            out = self._resolve_unmap(ev, route[2])
        handler = route[1]
        if handler is not None:
            res = handler(self, ev, route[2])
            if res:
                out = out + res if out else res
        return out

    def _on_qi_submit_sync(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        return self._qi_sync(ev, f, _key(ev), ret=False)

    def _on_qi_submit_sync_ret(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        return self._qi_sync(ev, f, _key(ev), ret=True)

    def _on_bind(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        dev = self._devname(f)
        if dev:
            return self.topology.driver_bind(ev.ts_ns, dev, _key(ev))
        return []

    def _on_unbind(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        dev = self._devname(f)
        if dev:
            self._settle_lost_unmaps(lambda m: m.device == dev)
            return self.topology.driver_unbind(ev.ts_ns, dev, _key(ev))
        return []

    def _on_page_pool_dma_map(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        self._pool_ctx[ev.cpu] = f"page_pool:{_hex(f.get('pool'))}"
        return None

    def _on_page_pool_destroy(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        return self.topology.page_pool_destroy(ev.ts_ns, f"page_pool:{_hex(f.get('pool'))}", _key(ev))

    def _on_cache_tag_flush(self, ev: Event, fn: str) -> list[Finding] | None:
        self.stats.cache_tag_flushes[fn] = self.stats.cache_tag_flushes.get(fn, 0) + 1
        return None

    def finish(self, ts_ns: int) -> list[Finding]:
        """End of trace: summarise what is still live (informational; nothing is proven leaked by the end)."""
        out: list[Finding] = []
        for cpu, sub in sorted(((c, s) for r in self.qi.values() for c, s in r.inflight.items())):
            out.append(Finding("qi_wait_unfinished", Severity.INFO, ts_ns,
                               f"qi_submit_sync on CPU {cpu} had not returned when the trace ended",
                               certainty=Certainty.UNCERTAIN, gap="trace ended", events=(sub.event,) if sub.event
                               else ()))
        return out

    # -- queries for the driver / validators --------------------------------------------------------------

    def cookie_for_iovad(self, iovad: str | int) -> IommuDmaCookie | None:
        """The live cookie embedding iova_domain ``iovad``."""
        return self.cookies.get(self._cookie_of_iovad(iovad))

    def iter_queued_pfns(self, iovad: str | int) -> Iterator[tuple[int, int]]:
        """``(pfn, pages)`` the flush queue of ``iovad`` owns (for ``validate_single_owner``)."""
        c = self.cookie_for_iovad(iovad)
        if c is not None:
            yield from c.iter_queued_pfns()

    def summary(self) -> dict[str, Any]:
        """JSON-ready counters: per cookie flushes and queue figures, QI, ledger."""
        return {
            "cookies": {k: {"lazy": c.fq_domain, "flushes": dict(c.stats.flushes), "strict_syncs": c.stats.strict_syncs,
                            "queued": c.stats.queued, "freed": c.stats.freed, "timer_fires": c.stats.timer_fires,
                            "peak_queued": c.stats.peak_queued, "free_mismatch": c.stats.free_mismatch,
                            "torn_down": k in self.freed_cookies}
                        for k, c in {**self.cookies, **self.freed_cookies}.items()},
            "unresolved_unmaps": self.stats.unresolved_unmaps,
            "unmaps_from_tracepoint": self.stats.unmaps_from_tracepoint,
            "observed_full_flushes": self.stats.observed_full_flushes,
            "ring_occupancy": [self.stats.ring_occupancy_matched, self.stats.ring_occupancy_checked],
            "qi_descriptors": dict(self.stats.qi_descriptors),
            "cache_tag_flushes": dict(self.stats.cache_tag_flushes),
            "live_mappings": len(self.topology.ledger),
            "bug_modes": sorted(self.bug_modes),
        }

    # -- helpers ------------------------------------------------------------------------------------------

    @staticmethod
    def _devname(f: Mapping[str, Any]) -> str | None:
        for k in ("devname", "device", "dev_name", "name"):
            v = f.get(k)
            if isinstance(v, str) and v:
                return v
        return None

    @staticmethod
    def _cookie_of_iovad(iovad: str | int) -> str:
        if type(iovad) is int:
            s = _COOKIE_OF.get(iovad)
            if s is None:
                if len(_COOKIE_OF) >= _MEMO_MAX:
                    _COOKIE_OF.clear()
                s = _COOKIE_OF[iovad] = _hex(iovad - IOVAD_OFFSET_IN_COOKIE)
            return s
        return _hex(_int(iovad) - IOVAD_OFFSET_IN_COOKIE)

    def _cookie(self, cookie: str, *, lazy: bool) -> IommuDmaCookie:
        c = self.cookies.get(cookie)
        if c is None:
            cfg = FqConfig(lazy=lazy, queue_type=FqQueueType.PER_CPU, fq_size=self.fq_size,
                           fq_timeout_ms=self.fq_timeout_ms, timer_hz=self.timer_hz)
            c = self.cookies[cookie] = IommuDmaCookie(cookie, cfg, possible_cpus=self.possible_cpus)
            c.domain = self.iovad_domain.get(_hex(_int(cookie) + IOVAD_OFFSET_IN_COOKIE))
        elif lazy and not c.fq_domain:
            c.iommu_dma_init_fq(0)
        return c

    # -- dmaiommu kprobes ---------------------------------------------------------------------------------

    def _on_init_iova_domain(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        # a new iova_domain (and cookie) at an address a freed one may have had: a new incarnation, not a reuse
        iovad = _hex(f.get("iovad"))
        cookie = self._cookie_of_iovad(iovad)
        self.freed_cookies.pop(cookie, None)
        self.cookies.pop(cookie, None)
        old = self.iovad_domain.pop(iovad, None)
        if old is not None:
            self.domain_iovad.pop(old, None)
        self.timer_cookie = {t: c for t, c in self.timer_cookie.items() if c != cookie}
        return []

    def _on_alloc_iova(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        dom = _hex(f.get("domain"))
        topo = self.topology
        ds = topo.domains.get(dom)
        if ds is not None and ds.freed_ns is not None and ds.freed_ns < ev.ts_ns:
            # the allocator gave a freed domain's address to a new domain (kzalloc reuse)
            ds.freed_ns = None
            ds.created_ns = ev.ts_ns
            ds.iovad = None
        devname = f.get("devname")
        if not isinstance(devname, str):
            devname = None
        devptr = f.get("dev")
        if not isinstance(devptr, int):
            devptr = None
        if devname and devptr is not None:
            d = topo.devices.get(devname)
            if d is None or devptr not in d.dev_ptrs or topo.dev_by_ptr.get(devptr) != devname:
                topo.learn_dev_ptr(devptr, devname)  # else already known: learning again changes nothing
                d = topo.device(devname)
            if d.domain is None:
                d.domain = dom
                topo.domain(dom).devices.add(devname)
            elif d.domain != dom:
                if d.domain.startswith("group"):
                    topo.rename_domain(d.domain, dom)  # the attach's new domain has this address
                else:  # attached elsewhere without an attach event we saw
                    topo.attach_device_to_domain(ev.ts_ns, devname, dom, _key(ev))
        self._alloc_ctx[ev.cpu] = (dom, devname, devptr)
        return None

    def _on_alloc_iova_fast(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        ctx = self._alloc_ctx.get(ev.cpu)
        if ctx is not None and "iovad" in f:
            iovad = _hex(f["iovad"])
            dom = ctx[0]
            self.domain_iovad[dom] = iovad
            self.iovad_domain[iovad] = dom
            ds = self.topology.domains.get(dom)
            if ds is None:
                ds = self.topology.domain(dom)
            ds.iovad = iovad
        return None

    def _on_alloc_iova_ret(self, ev: Event, fn: str) -> list[Finding] | None:
        ctx = self._alloc_ctx.pop(ev.cpu, None)
        mctx = self._map_ctx.pop(ev.cpu, None)
        if self.dma_ledger:  # the dma:* tracepoints feed the ledger
            return None
        iova = ev.fields.get("iova")
        if ctx is None or mctx is None or not isinstance(iova, int) or iova == 0:
            return None
        call, devptr, phys, size, direction, mev = mctx
        devname = ctx[1] or (self.topology.dev_by_ptr.get(devptr) if devptr is not None else None)
        if devname is None:
            return []
        return self.topology.dma_map(DmaMapping(devname, iova, size or 0, direction, mev.ts_ns, call,
                                                (mev.ts_ns, mev.cpu, mev.seq), ctx[0], phys,
                                                self._pool_ctx.pop(ev.cpu, None), exact=False))

    def _on_dma_map_kprobe(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        if fn == "__iommu_dma_map":
            prev = self._map_ctx.get(ev.cpu)
            if prev is not None and prev[0] == "iommu_dma_map_sg":
                return None
            prot = f.get("prot", 0)
            self._map_ctx[ev.cpu] = (fn, f.get("dev"), f.get("phys"), f.get("size"),
                                     direction_from_prot(prot if type(prot) is int else _int(prot)), ev)
        else:
            self._map_ctx[ev.cpu] = (fn, f.get("dev"), None, None, DmaDirection.of(f.get("dir")), ev)
        return None

    def _on_iommu_dma_unmap(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        addr = f.get("dma_addr", 0)
        size = f.get("size", 0)
        try:  # ints from a trace.dat; text traces may give strings
            pfn = addr >> 12
            pages = ((addr & 0xFFF) + size + 0xFFF) >> 12
        except TypeError:
            addr = _int(addr)
            size = _int(size)
            pfn = addr >> 12
            pages = ((addr & 0xFFF) + size + 0xFFF) >> 12
        devptr = f.get("dev")
        devname = self.topology.dev_by_ptr.get(devptr) if isinstance(devptr, int) else None
        out: list[Finding] = []
        if devname is not None and not self.dma_ledger:
            out = self.topology.dma_unmap(ev.ts_ns, devname, addr & ~0xFFF, size, call="__iommu_dma_unmap",
                                          key=_key(ev), exact=False)
        self._unmap_ctx[ev.cpu] = (devname, pfn, pages, ev)
        return out

    def _resolve_unmap(self, ev: Event, fn: str) -> list[Finding] | None:
        cpu = ev.cpu
        devname, pfn, pages, uev = self._unmap_ctx.pop(cpu)
        if fn.startswith("fq_ring_free"):
            f = ev.fields
            cookie = _hex(f.get("cookie"))
            if cookie in self.freed_cookies:
                return [self._after_teardown(ev, cookie, "queue_iova")]
            c = self.cookies.get(cookie)
            if c is None or not c.fq_domain:
                c = self._cookie(cookie, lazy=True)
            fq = f.get("fq")
            if isinstance(fq, int):
                self._fq_ring[(cookie, fq)] = cpu
            flushes = c.fq_flush_start_cnt
            ts = uev.ts_ns
            c.queue_iova(pfn, pages, cpu, ts, (ts, uev.cpu, uev.seq))
            # queue_iova ran one ring free, two if the ring was full (flush in between): those are the trace's
            self._expect_rf[cpu] = self._expect_rf.get(cpu, 0) + 1 + (c.fq_flush_start_cnt - flushes)
            return None
        if ev.name == "iova:free_iova_fast" and _int(ev.fields.get("pfn", -1)) == pfn:
            c = self._cookie(self._cookie_of_iovad(ev.fields["iovad"]), lazy=False)
            if not c.fq_domain:
                c.iommu_dma_free_iova(pfn, pages, cpu, uev.ts_ns, (uev.ts_ns, uev.cpu, uev.seq))
            return None
        self.stats.unresolved_unmaps += 1
        return None

    def _on_fq_ring_free(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        cookie = _hex(f.get("cookie"))
        c = self.cookies.get(cookie)
        if c is None or c.ring_free_log is None:
            return None
        cpu = ev.cpu
        expected = self._expect_rf.get(cpu, 0)
        if expected > 0:
            self._expect_rf[cpu] = expected - 1  # already applied by the model's queue_iova
        else:
            # a timeout's ring free (or one whose unmap probe was lost): free the ring the fq pointer names
            fq = f.get("fq")
            ring = self._fq_ring.get((cookie, fq)) if isinstance(fq, int) else None
            if ring is None:
                keys = sorted(c.fqs)
                i = self._timeout_rf.get(ev.cpu, 0)
                ring = keys[i % len(keys)] if keys else ev.cpu
            self._timeout_rf[ev.cpu] = self._timeout_rf.get(ev.cpu, 0) + 1
            c.fq_ring_free(c._ring_of(ring), ev.cpu, ev.ts_ns)
        log = c.ring_free_log.get(cpu)
        if not log:
            return None
        _ring, occ = log.popleft()
        if c.stats.timer_fires > 0 and "head" in f and "tail" in f and "mod_mask" in f:
            tail, head, mask = f["tail"], f["head"], f["mod_mask"]
            try:  # ints from a trace.dat; text traces may give strings
                observed = (tail - head) & mask
            except TypeError:
                observed = (_int(tail) - _int(head)) & _int(mask)
            self.stats.ring_occupancy_checked += 1
            self.stats.ring_occupancy_matched += observed == occ
        return None

    def _on_fq_flush_timeout(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        timer = _hex(f.get("timer"))
        cookie = self.timer_cookie.get(timer)
        if cookie is not None and cookie in self.freed_cookies:
            return [self._after_teardown(ev, cookie, "fq_flush_timeout")]
        self._timeout_ctx[ev.cpu] = (timer, ev)
        return None

    def _on_fq_flush_iotlb(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        cookie = _hex(f.get("cookie"))
        if cookie in self.freed_cookies:
            return [self._after_teardown(ev, cookie, "fq_flush_iotlb")]
        c = self._cookie(cookie, lazy=True)
        tctx = self._timeout_ctx.pop(ev.cpu, None)
        if tctx is not None:
            self.timer_cookie[tctx[0]] = cookie
            self._timeout_rf[ev.cpu] = 0
            c.fq_flush_timeout(tctx[1].ts_ns, ev.cpu, free_rings=False)
            self._flushing[ev.cpu] = c
        else:
            self.stats.observed_full_flushes += 1
        return None

    def _after_teardown(self, ev: Event, cookie: str, what: str) -> Finding:
        self.stats.timer_after_teardown += what == "fq_flush_timeout"
        return Finding("fq_use_after_teardown", Severity.ERROR, ev.ts_ns,
                       f"{what} ran on cookie {cookie} after its domain was torn down (use-after-free; the "
                       "teardown must del_timer_sync the flush-queue timer, d7061627d701)",
                       domain=self.freed_cookies[cookie].domain, events=((ev.ts_ns, ev.cpu, ev.seq),))

    def _on_init_fq(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        dom = _hex(f.get("domain"))
        self.topology.set_domain_type(dom, "DMA-FQ")
        iovad = self.domain_iovad.get(dom)
        if iovad is not None:
            self._cookie(self._cookie_of_iovad(iovad), lazy=True)
        return []

    def _on_free_iova_fast(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        c = self.cookies.get(self._cookie_of_iovad(f.get("iovad", 0)))
        if c is not None and c.pending_free:
            pfn = f.get("pfn", 0)
            size = f.get("size", 0)
            c.note_free_iova_fast(pfn if type(pfn) is int else _int(pfn), size if type(size) is int else _int(size),
                                  ev.cpu)
        return None

    def _on_put_iova_domain(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        key = _key(ev)
        iovad = _hex(f.get("iovad"))
        cookie = self._cookie_of_iovad(iovad)
        out: list[Finding] = []
        dom = self.iovad_domain.get(iovad, iovad)
        self._settle_lost_unmaps(lambda m: m.domain == dom)
        out += self.topology.domain_free(ev.ts_ns, dom, key)
        c = self.cookies.pop(cookie, None)
        if c is None:
            return out
        armed = c.fq_timer_on
        left = [e for e in c.iommu_dma_free_fq(ev.ts_ns) if e.event is not None]
        self.freed_cookies[cookie] = c
        if left and "e" in self.bug_modes:
            attached = sorted(self.topology.domain(dom).devices)
            # the queue's content is only as good as the probes: a lost ring-free hit leaves freed entries queued
            doubts = list(self.topology.gaps)
            if c.stats.free_mismatch:
                doubts.append(f"{c.stats.free_mismatch} free_iova_fast calls did not match the modelled queue "
                              "(lost kprobe hits or state from before the trace)")
            cert = Certainty.UNCERTAIN if doubts else Certainty.LOWER_BOUND
            out.append(Finding(
                "fq_entries_at_teardown", Severity.WARNING if doubts else Severity.ERROR, ev.ts_ns,
                f"{len(left)} IOVA(s) still in the flush queue of domain {dom} at teardown, never invalidated"
                + (", flush timer still armed" if armed else "")
                + (f", devices still attached: {', '.join(attached)}" if attached else "")
                + "; a teardown that does not wait for the queue lets stale IOTLB entries and the timer outlive "
                  "the domain (s390 release_device race, seed thread e; d7061627d701)",
                domain=dom, certainty=cert, gap="; ".join(doubts) or None,
                events=tuple(e.event for e in left[:32] if e.event) + (key,),
                details={"entries": len(left), "timer_armed": armed, "oldest_ns": left[0].queued_ns,
                         "pfns": [e.iova_pfn for e in left[:32]], "attached": attached}))
        return out

    # -- iommu / dma tracepoints --------------------------------------------------------------------------

    def _on_add(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        key = _key(ev)
        return self.topology.add_device_to_group(ev.ts_ns, _int(f.get("gid", -1)), str(f.get("device")), key)

    def _on_remove(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        key = _key(ev)
        dev = str(f.get("device"))
        self._settle_lost_unmaps(lambda m: m.device == dev)
        return self.topology.remove_device_from_group(ev.ts_ns, _int(f.get("gid", -1)), dev, key)

    def _settle_lost_unmaps(self, which: Any) -> None:
        """Close kprobe-learned mappings (``which(m)``) whose IOVA an ``iommu:unmap`` tracepoint unmapped later.

        ``iommu:unmap`` is never dropped but names neither device nor domain, so it is only consulted at the check
        points (domain free, unbind, release), for mappings the ledger still holds: a live mapping whose IOVA was
        unmapped after it was made lost its ``__iommu_dma_unmap``/``iommu_dma_unmap_sg`` kprobe hit (counted in
        kprobe_profile.txt). An IOVA reused by another domain in between could hide a real leak here, which is why
        what stays is still reported only as uncertain.
        """
        if not self._tp_unmap_ns:
            return
        led = self.topology.ledger
        for m in [m for m in led.iter_live() if not m.exact and which(m)]:
            if self._tp_unmap_ns.get(m.dma_addr & ~0xFFF, -1) > m.ts_ns:
                led.unmap(m.device, m.dma_addr)
                self.stats.unmaps_from_tracepoint += 1

    def _on_attach(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        key = _key(ev)
        dom = f.get("domain")
        return self.topology.attach_device_to_domain(ev.ts_ns, str(f.get("device")),
                                                     _hex(dom) if dom is not None else None, key)

    def _on_map_tp(self, ev: Event, fn: str) -> list[Finding] | None:
        self.stats.iommu_map += 1
        return None

    def _on_unmap_tp(self, ev: Event, fn: str) -> list[Finding] | None:
        self.stats.iommu_unmap += 1
        if not self.dma_ledger:  # the dma:* tracepoints, when present, already see every unmap
            f = ev.fields
            if "iova" in f:
                self._tp_unmap_ns[_int(f["iova"])] = ev.ts_ns
        return None

    def _switch_to_dma_ledger(self) -> None:
        # the first dma:* event: from now on the tracepoints (exact, named) feed the ledger; drop what the kprobes
        # put there so far, since their unmaps will no longer be applied
        self.dma_ledger = True
        led = self.topology.ledger
        for dev in list(led.by_device):
            led.by_device[dev] = {a: m for a, m in led.by_device[dev].items() if m.exact}

    def _on_dma_map(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        ts = ev.ts_ns
        cpu = ev.cpu
        key = (ts, cpu, ev.seq)
        if not self.dma_ledger:
            self._switch_to_dma_ledger()
        dev = f.get("device")
        if type(dev) is not str:
            dev = str(dev)
        owner = self._pool_ctx.pop(cpu, None) if self._pool_ctx else None
        d = f.get("dir")
        direction = _DIRECTION_OF_INT.get(d) if type(d) is int else None  # DmaDirection.of(d), by lookup
        if direction is None:
            direction = DmaDirection.of(d)
        if fn == "dma_map_sg":
            # one entry per call: nents pages may merge into fewer DMA segments (ents), and dma_unmap_sg names the
            # call only by its physical addresses, so the first physical address is the key
            addrs = list(f.get("dma_addrs") or [])
            lens = list(f.get("lengths") or [])
            phys = list(f.get("phys_addrs") or [])
            if not addrs:
                return []
            return self.topology.dma_map(DmaMapping(dev, _int(addrs[0]), sum(_int(x) for x in lens), direction,
                                                    ts, fn, key, None, _int(phys[0]) if phys else None, owner))
        addr = f.get("dma_addr", 0)
        size = f.get("size", 0)
        phys = f.get("phys_addr", _ABSENT)
        return self.topology.dma_map(DmaMapping(
            dev, addr if type(addr) is int else _int(addr), size if type(size) is int else _int(size), direction,
            ts, fn, key, None, None if phys is _ABSENT else phys if type(phys) is int else _int(phys), owner))

    def _on_dma_unmap(self, ev: Event, fn: str) -> list[Finding]:
        f = ev.fields
        key = _key(ev)
        if not self.dma_ledger:
            self._switch_to_dma_ledger()
        dev = f.get("device")
        if type(dev) is not str:
            dev = str(dev)
        if fn == "dma_unmap_sg":
            phys = list(f.get("addrs") or f.get("phys_addrs") or [])
            if not phys:
                return []
            return self.topology.dma_unmap(ev.ts_ns, dev, None, None, call=fn, key=key, phys=_int(phys[0]))
        addr = f.get("addr", _ABSENT)
        if addr is _ABSENT:
            addr = f.get("dma_addr")
        size = f.get("size", 0)
        return self.topology.dma_unmap(key[0], dev, None if addr is None else addr if type(addr) is int else _int(addr),
                                       size if type(size) is int else _int(size), call=fn, key=key)

    # -- VT-d ---------------------------------------------------------------------------------------------

    def _on_qi_submit(self, ev: Event, fn: str) -> list[Finding] | None:
        f = ev.fields
        iommu = str(f.get("iommu", "dmar?"))
        self.stats.qi_descriptors[iommu] = self.stats.qi_descriptors.get(iommu, 0) + 1
        return None

    def _qi_sync(self, ev: Event, f: Mapping[str, Any], key: tuple[int, int, int], *, ret: bool) -> list[Finding]:
        iommu = str(f.get("iommu", "dmar0")) if not isinstance(f.get("iommu"), int) else _hex(f["iommu"])
        ring = self.qi.get(iommu)
        if ring is None:
            ring = self.qi[iommu] = QiRing(iommu, reclaim_fixed="d" not in self.bug_modes, length=self.qi_length)
        if ret:
            # a return probe carries no iommu: use the ring this CPU submitted to
            for r in self.qi.values():
                if ev.cpu in r.inflight:
                    return r.qi_submit_sync_return(ev.cpu, ev.ts_ns, key)
            ring.stats.unmatched_returns += 1
            return []
        return ring.qi_submit_sync(ev.cpu, _int(f.get("count", 0)), ev.ts_ns, key)


_HANDLERS: dict[str, Any] = {
    "dmaiommu:iommu_dma_alloc_iova": IommuLayer._on_alloc_iova,
    "dmaiommu:iommu_dma_alloc_iova_ret": IommuLayer._on_alloc_iova_ret,
    "dmaiommu:__iommu_dma_map": IommuLayer._on_dma_map_kprobe,
    "dmaiommu:iommu_dma_map_sg": IommuLayer._on_dma_map_kprobe,
    "dmaiommu:__iommu_dma_unmap": IommuLayer._on_iommu_dma_unmap,
    "dmaiommu:fq_ring_free": IommuLayer._on_fq_ring_free,
    "dmaiommu:fq_ring_free_locked": IommuLayer._on_fq_ring_free,
    "dmaiommu:fq_flush_timeout": IommuLayer._on_fq_flush_timeout,
    "dmaiommu:fq_flush_iotlb": IommuLayer._on_fq_flush_iotlb,
    "dmaiommu:iommu_dma_init_fq": IommuLayer._on_init_fq,
    "iova:alloc_iova_fast": IommuLayer._on_alloc_iova_fast,
    "iova:free_iova_fast": IommuLayer._on_free_iova_fast,
    "iova:put_iova_domain": IommuLayer._on_put_iova_domain,
    "iova:init_iova_domain": IommuLayer._on_init_iova_domain,
    "iommu:add_device_to_group": IommuLayer._on_add,
    "iommu:remove_device_from_group": IommuLayer._on_remove,
    "iommu:attach_device_to_domain": IommuLayer._on_attach,
    "iommu:map": IommuLayer._on_map_tp,
    "iommu:unmap": IommuLayer._on_unmap_tp,
    "dma:dma_map_page": IommuLayer._on_dma_map,
    "dma:dma_map_phys": IommuLayer._on_dma_map,
    "dma:dma_map_resource": IommuLayer._on_dma_map,
    "dma:dma_map_sg": IommuLayer._on_dma_map,
    "dma:dma_alloc": IommuLayer._on_dma_map,
    "dma:dma_unmap_page": IommuLayer._on_dma_unmap,
    "dma:dma_unmap_phys": IommuLayer._on_dma_unmap,
    "dma:dma_unmap_resource": IommuLayer._on_dma_unmap,
    "dma:dma_unmap_sg": IommuLayer._on_dma_unmap,
    "dma:dma_free": IommuLayer._on_dma_unmap,
    "intel_iommu:qi_submit": IommuLayer._on_qi_submit,
}

_WANTED_FNS = ("qi_submit_sync", "page_pool_", "really_probe", "device_unbind_cleanup", "device_release_driver",
               "__device_release_driver")
_ROUTES: dict[str, _Route] = {}


def _route(name: str) -> _Route:
    """What :meth:`IommuLayer.step` decides from an event's name alone, decided once per name (memoised).

    Returns:
        ``(wanted, handler, fn, ends_flush, resolves_unmap)``: whether the layer consumes the event, its handler
        (``None``: nothing beyond the two checks), the name after ``system:``, whether it ends a pending
        synchronous flush on its CPU, and whether it resolves a pending ``__iommu_dma_unmap`` on its CPU.
    """
    fn = _fn(name)
    wanted = name.startswith(_SYSTEMS) or name in _IOVA_NAMES or fn.startswith(_WANTED_FNS)
    handler = _HANDLERS.get(name) or _HANDLERS.get(fn)
    if handler is None:
        if fn.startswith("qi_submit_sync"):
            handler = IommuLayer._on_qi_submit_sync if fn == "qi_submit_sync" else IommuLayer._on_qi_submit_sync_ret
        elif fn.endswith(_BIND) or name == "driver:bind":
            handler = IommuLayer._on_bind
        elif fn.endswith(_UNBIND) or name == "driver:unbind":
            handler = IommuLayer._on_unbind
        elif fn.endswith("page_pool_dma_map"):
            handler = IommuLayer._on_page_pool_dma_map
        elif fn.endswith("page_pool_destroy") or name == "page_pool:page_pool_release":
            handler = IommuLayer._on_page_pool_destroy
        elif name.startswith("intel_iommu:cache_tag_flush"):
            handler = IommuLayer._on_cache_tag_flush
    route = (wanted, handler, fn, not name.startswith("intel_iommu:"),
             not name.startswith(("iommu:unmap", "intel_iommu:", "dma:")))
    if len(_ROUTES) >= _MEMO_MAX:
        _ROUTES.clear()
    _ROUTES[name] = route
    return route
