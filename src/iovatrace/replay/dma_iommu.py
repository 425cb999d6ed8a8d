"""dma-iommu flush queues: the ``iommu_dma_cookie`` of one domain, strict or lazy (DMA-FQ).

Theory of operation
-------------------
A DMA domain's cookie (``struct iommu_dma_cookie``, drivers/iommu/dma-iommu.c; the flush queue lived in
``struct iova_domain`` up to v5.16 and moved into the cookie with f7f07484542f / a17e3026bc4d in v5.17) decides
what happens to an IOVA when a driver unmaps it:

* **strict** (``IOMMU_DOMAIN_DMA``): ``__iommu_dma_unmap`` invalidates the IOTLB synchronously
  (``iommu_iotlb_sync``) and gives the IOVA back with ``free_iova_fast`` at once;
* **lazy** (``IOMMU_DOMAIN_DMA_FQ``): the IOVA is appended to a flush queue (``queue_iova``) stamped with
  ``fq_flush_start_cnt``; it becomes reusable only after a flush that *started after it was queued* has
  *finished* (``counter < fq_flush_finish_cnt``). Flushes happen when a ring is full (synchronously, in
  ``queue_iova``) or when the queue timer fires (``fq_flush_timeout``), which flushes once and then frees the
  ready entries of every ring.

Rings: per-CPU rings of ``IOVA_DEFAULT_FQ_SIZE`` (256) entries with a 10 ms timeout, or, since v6.7
(32d5bc8b09c7, 9f5b681e2a3f), one shared ring of ``IOVA_SINGLE_FQ_SIZE`` (32768) entries with a 1000 ms timeout
for devices whose flush shadows page tables (s390). A ring keeps one slot empty, so it holds ``size - 1``
entries. All sizes and timeouts are parameters (:class:`FqConfig`); kernel defaults live in ``profiles.py``.

Time is trace time. The timer is a deadline; :meth:`IommuDmaCookie.run_timers` fires it before the driver
applies any later event. The kernel arms it with ``mod_timer(jiffies + msecs_to_jiffies(timeout))`` and the
timer wheel rounds the expiry *up* by one granule of its level so it never fires early
(kernel/time/timer.c ``calc_wheel_index``, v4.8+), so with ``timer_hz`` set the model reproduces that: at
HZ=250 a 10 ms timer fires 12–16 ms after it was armed, which is what the lab's lazy traces show. With
``timer_hz=None`` the deadline is exactly ``armed + timeout``.

The cookie can run in two ways:

* *predictive* (``free_iova_fast`` callback given): ring frees call back into the allocator/rcache, as the
  kernel does. The what-if replay uses this.
* *following* (no callback): a real trace shows the ``free_iova_fast`` calls itself; entries popped by the model
  wait in ``pending_free`` until :meth:`IommuDmaCookie.note_free_iova_fast` confirms them, and mismatches are
  counted in :class:`FqStats` (fidelity, not findings).

Exposure window: from the moment an IOVA is queued (its mapping is gone from the page table but a stale IOTLB
entry may still translate it) to the finish of the next flush. Strict unmaps have a zero window.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import ModelError

__all__ = [
    "FqQueueType",
    "FqConfig",
    "IovaFqEntry",
    "IovaFq",
    "FqStats",
    "FlushReason",
    "IommuDmaCookie",
    "FreeIovaFast",
    "wheel_expiry_ns",
    "IOVAD_OFFSET_IN_COOKIE",
]

# ``struct iommu_dma_cookie`` starts with ``enum iommu_dma_cookie_type type`` (4 bytes, padded to 8) followed by
# the embedded ``struct iova_domain``: iovad == cookie + 8. Derived from the lab traces (6.1 and 6.12:
# fq_ring_free cookie=...200 vs alloc_iova_fast iovad=...208), valid for 5.17+ x86-64 builds.
IOVAD_OFFSET_IN_COOKIE = 8

#: ``free_iova_fast(pfn, pages, cpu, ts_ns)``: give an IOVA back to the allocator on ``cpu`` (the CPU that runs
#: the ring free; the timer frees every ring on its own CPU).
FreeIovaFast = Callable[[int, int, int, int], None]


class FqQueueType(enum.Enum):
    """``enum iommu_dma_queue_type`` (v6.9+; ``IOMMU_DMA_OPTS_*_QUEUE`` flags in v6.7–6.8)."""

    PER_CPU = "per_cpu"
    SINGLE = "single"


class FlushReason(enum.Enum):
    """Why ``fq_flush_iotlb`` ran."""

    TIMEOUT = "timeout"  # fq_flush_timeout
    FULL = "full"  # queue_iova found the ring still full after a ring free
    EXHAUSTION = "exhaustion"  # what-if rollover / E_flush_on_exhaustion (not mainline, model_spec §4.7)
    TEARDOWN = "teardown"  # what-if drain at domain teardown (not mainline)


_PER_CPU = FqQueueType.PER_CPU


@dataclass(frozen=True, slots=True)
class FqConfig:
    """How one cookie flushes.

    Attributes:
        lazy: ``True`` for DMA-FQ, ``False`` for strict.
        queue_type: per-CPU rings or one shared ring.
        fq_size: ring size in entries (``size - 1`` usable).
        fq_timeout_ms: timer period in milliseconds.
        timer_hz: model jiffies and timer-wheel rounding at this HZ; ``None`` for exact deadlines.
    """

    lazy: bool = True
    queue_type: FqQueueType = FqQueueType.PER_CPU
    fq_size: int = 256
    fq_timeout_ms: float = 10.0
    timer_hz: int | None = None

    def __post_init__(self) -> None:
        if self.fq_size < 2:
            raise ModelError(f"Cannot build a flush queue: fq_size={self.fq_size}, expected >= 2")
        if self.fq_timeout_ms <= 0:
            raise ModelError(f"Cannot build a flush queue: fq_timeout_ms={self.fq_timeout_ms}, expected > 0")

    @classmethod
    def strict(cls) -> FqConfig:
        """A strict (``IOMMU_DOMAIN_DMA``) cookie."""
        return cls(lazy=False)


@dataclass(slots=True)
class IovaFqEntry:
    """``struct iova_fq_entry``: one queued IOVA.

    Attributes:
        iova_pfn: first IOVA pfn.
        pages: length in granules.
        counter: ``fq_flush_start_cnt`` when queued.
        queued_ns: trace time of the unmap that queued it.
        cpu: CPU that queued it.
        event: ``(ts_ns, cpu, seq)`` of the unmap event, if known.
    """

    iova_pfn: int
    pages: int
    counter: int
    queued_ns: int
    cpu: int
    event: tuple[int, int, int] | None = None


class IovaFq:
    """``struct iova_fq``: a ring of :class:`IovaFqEntry`; one slot stays empty, as in the kernel."""

    __slots__ = ("size", "entries", "peak", "key")

    def __init__(self, size: int, key: int | None = None) -> None:
        self.size = size
        self.entries: deque[IovaFqEntry] = deque()
        self.peak = 0
        #: its key in the cookie's ``fqs`` (CPU, or -1 for the single queue), if the cookie made it
        self.key = key

    def fq_full(self) -> bool:
        """``fq_full()``: the next append would make tail == head."""
        return len(self.entries) >= self.size - 1

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(slots=True)
class FqStats:
    """Counters of one cookie (the kernel has only the two flush counters; the rest is for analysis).

    Attributes:
        flushes: ``fq_flush_iotlb`` calls by :class:`FlushReason` value.
        strict_syncs: synchronous invalidations of strict unmaps (one per ``__iommu_dma_unmap``).
        queued: entries appended by ``queue_iova``.
        freed: entries given back by ring frees.
        ring_frees: ``fq_ring_free`` calls.
        timer_fires: ``fq_flush_timeout`` runs.
        exposure_ns: exposure window of every invalidated entry (ns), in flush order.
        free_mismatch: following mode, a ``free_iova_fast`` the model did not expect (or in another order).
        timer_lateness_ns: following mode, observed timeout minus the model's deadline.
        peak_queued: most entries queued at once over all rings.
    """

    flushes: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in FlushReason})
    strict_syncs: int = 0
    queued: int = 0
    freed: int = 0
    ring_frees: int = 0
    timer_fires: int = 0
    exposure_ns: list[int] = field(default_factory=list)
    free_mismatch: int = 0
    timer_lateness_ns: list[int] = field(default_factory=list)
    peak_queued: int = 0

    @property
    def invalidations(self) -> int:
        """IOTLB invalidations issued by this cookie: strict syncs plus flush-queue flushes."""
        return self.strict_syncs + sum(self.flushes.values())


def _msecs_to_jiffies(ms: float, hz: int) -> int:
    # include/linux/jiffies.h: rounds up
    j = ms * hz / 1000.0
    return max(1, int(j) if j == int(j) else int(j) + 1)


def wheel_expiry_ns(armed_ns: int, timeout_ms: float, hz: int | None) -> int:
    """When a timer armed at ``armed_ns`` with ``mod_timer(jiffies + msecs_to_jiffies(timeout_ms))`` fires.

    Args:
        armed_ns: trace time of ``mod_timer``.
        timeout_ms: the timeout in milliseconds.
        hz: CONFIG_HZ, or ``None`` for an exact deadline.

    Returns:
        The trace time of the tick that runs the timer. Jiffy boundaries are taken at multiples of the tick on
        the trace clock (their real phase is unknown, so the result can be up to one tick off). The wheel rounds
        the expiry up by one granule of the level the delta falls in (levels of 64 buckets, granule 8**level).
    """
    if hz is None:
        return armed_ns + int(round(timeout_ms * 1_000_000))
    tick = 1_000_000_000 // hz
    clk = armed_ns // tick
    delta = _msecs_to_jiffies(timeout_ms, hz)
    expires = clk + delta
    lvl = 0
    # LVL_START(n) = 63 << 3*(n-1): deltas below it go to level n-1
    while lvl < 8 and delta >= (63 << (3 * lvl)):
        lvl += 1
    shift = 3 * lvl
    expires = ((expires + (1 << shift)) >> shift) << shift
    return expires * tick


class IommuDmaCookie:
    """``struct iommu_dma_cookie`` of one DMA domain: its flush queue(s), counters and timer.

    Args:
        cookie: the cookie's address as a hex string (or any stable id).
        config: :class:`FqConfig` (strict or lazy, ring sizes, timeout).
        possible_cpus: CPUs that have a ring in per-CPU mode (``for_each_possible_cpu``); rings for CPUs first
            seen later are created on demand.
        free_iova_fast: callback for predictive mode (see module doc); ``None`` to follow a trace.
        domain: the ``iommu_domain`` address, if known.
    """

    def __init__(
        self,
        cookie: str,
        config: FqConfig,
        *,
        possible_cpus: Iterable[int] = (0,),
        free_iova_fast: FreeIovaFast | None = None,
        domain: str | None = None,
    ) -> None:
        self.cookie = cookie
        self.domain = domain
        self.config = config
        self.free_iova_fast = free_iova_fast
        self.fq_flush_start_cnt = 0
        self.fq_flush_finish_cnt = 0
        self.fq_timer_on = False
        self.fq_timer_deadline: int | None = None
        self.fq_timer_cpu = 0  # the timer runs on the CPU that armed it
        self.fq_domain = config.lazy  # published fq_domain == lazy mode (iommu_dma_init_fq)
        self.fqs: dict[int, IovaFq] = {}
        if config.lazy:
            self._init_rings(possible_cpus)
        self.stats = FqStats()
        # following mode: popped by a ring free, not yet seen freed; per executing CPU because two CPUs can run
        # ring frees at the same time (the lab's 6.12 trace interleaves their free_iova_fast calls)
        self.pending_free: dict[int, deque[IovaFqEntry]] = {}
        self.freed_fq = False
        self._unflushed: list[tuple[int, int]] = []  # (queued_ns, start_cnt) not yet covered by a flush
        self._queued_total = 0
        #: following mode: per executing CPU, ``(ring key, entries before the free)`` of each ring free, for
        #: comparing with the head/tail of a ``fq_ring_free_locked`` probe (6.12); ``None`` = not recorded
        self.ring_free_log: dict[int, deque[tuple[int, int]]] | None = None if free_iova_fast else {}

    # -- setup / teardown ---------------------------------------------------------------------------------

    def _init_rings(self, cpus: Iterable[int]) -> None:
        if self.config.queue_type is FqQueueType.SINGLE:
            self.fqs = {-1: IovaFq(self.config.fq_size, -1)}
        else:
            self.fqs = {c: IovaFq(self.config.fq_size, c) for c in cpus}

    def iommu_dma_init_fq(self, ts_ns: int, config: FqConfig | None = None) -> None:
        """Turn on lazy mode (boot, or sysfs ``DMA`` → ``DMA-FQ`` online): rings, counters, timer.

        Args:
            ts_ns: trace time.
            config: lazy configuration to use; default: this cookie's sizes with ``lazy=True``.
        """
        if self.fq_domain:
            return  # runs once: returns if fq_domain is already set
        cfg = config or FqConfig(True, self.config.queue_type, self.config.fq_size, self.config.fq_timeout_ms,
                                 self.config.timer_hz)
        self.config = cfg
        self._init_rings(sorted(set(self.fqs) | {0}))
        self.fq_flush_start_cnt = self.fq_flush_finish_cnt = 0
        self.fq_domain = True

    def iommu_dma_free_fq(self, ts_ns: int) -> list[IovaFqEntry]:
        """``iommu_dma_free_fq``: cancel the timer, drop the rings. Queued IOVAs are not freed (they go with
        ``put_iova_domain``).

        Returns:
            The entries still queued in the rings, oldest first (following-mode entries popped but never seen
            freed are dropped: they were freed by the kernel, whose probe hit may have been lost).
        """
        left: list[IovaFqEntry] = []
        for fq in self.fqs.values():
            left.extend(fq.entries)
            fq.entries.clear()
        self.pending_free.clear()
        self.fq_timer_on = False
        self.fq_timer_deadline = None
        self.freed_fq = True
        self._queued_total = 0
        return sorted(left, key=lambda e: e.queued_ns)

    # -- unmap path ---------------------------------------------------------------------------------------

    def _ring_of(self, cpu: int) -> IovaFq:
        if self.config.queue_type is FqQueueType.SINGLE:
            return self.fqs[-1]
        fq = self.fqs.get(cpu)
        if fq is None:
            fq = self.fqs[cpu] = IovaFq(self.config.fq_size, cpu)
        return fq

    def iommu_dma_free_iova(self, iova_pfn: int, pages: int, cpu: int, ts_ns: int,
                            event: tuple[int, int, int] | None = None) -> list[IovaFqEntry]:
        """The tail of ``__iommu_dma_unmap``: strict → one IOTLB sync and ``free_iova_fast``; lazy → ``queue_iova``.

        Args:
            iova_pfn: first pfn of the unmapped IOVA.
            pages: its length in granules.
            cpu: the CPU doing the unmap.
            ts_ns: trace time.
            event: key of the unmap event.

        Returns:
            Entries given back to the allocator by this call (the unmapped one itself in strict mode).
        """
        if not self.fq_domain:
            self.stats.strict_syncs += 1
            self.stats.exposure_ns.append(0)
            entry = IovaFqEntry(iova_pfn, pages, self.fq_flush_start_cnt, ts_ns, cpu, event)
            self._give_back([entry], cpu, ts_ns)
            return [entry]
        return self.queue_iova(iova_pfn, pages, cpu, ts_ns, event)

    def queue_iova(self, iova_pfn: int, pages: int, cpu: int, ts_ns: int,
                   event: tuple[int, int, int] | None = None) -> list[IovaFqEntry]:
        """``queue_iova``: ring free, flush if still full, append, arm the timer.

        Returns:
            Entries given back by the ring frees this call ran.
        """
        if self.freed_fq:
            raise ModelError(f"cookie {self.cookie}: queue_iova after iommu_dma_free_fq")
        fq = self.fqs.get(cpu) if self.config.queue_type is _PER_CPU else None
        if fq is None:
            fq = self._ring_of(cpu)
        freed = self.fq_ring_free(fq, cpu, ts_ns)
        ents = fq.entries
        if len(ents) >= fq.size - 1:  # fq_full()
            self.fq_flush_iotlb(ts_ns, FlushReason.FULL)
            freed += self.fq_ring_free(fq, cpu, ts_ns)
        start = self.fq_flush_start_cnt
        ents.append(IovaFqEntry(iova_pfn, pages, start, ts_ns, cpu, event))
        self._unflushed.append((ts_ns, start))
        if len(ents) > fq.peak:
            fq.peak = len(ents)
        stats = self.stats
        stats.queued += 1
        self._queued_total += 1
        if self._queued_total > stats.peak_queued:
            stats.peak_queued = self._queued_total
        if not self.fq_timer_on:
            self.fq_timer_on = True
            self.fq_timer_cpu = cpu
            self.fq_timer_deadline = wheel_expiry_ns(ts_ns, self.config.fq_timeout_ms, self.config.timer_hz)
        return freed

    def fq_ring_free(self, fq: IovaFq, cpu: int, ts_ns: int) -> list[IovaFqEntry]:
        """``fq_ring_free(_locked)``: from the head, give back entries whose ``counter < fq_flush_finish_cnt``.

        Args:
            fq: the ring.
            cpu: the CPU running the free (its rcache receives the IOVAs).
            ts_ns: trace time.

        Returns:
            The entries freed, in ring order.
        """
        self.stats.ring_frees += 1
        ents = fq.entries
        logs = self.ring_free_log
        if logs is not None:
            log = logs.get(cpu)
            if log is None:
                log = logs[cpu] = deque(maxlen=64)
            key = fq.key
            if key is None or self.fqs.get(key) is not fq:  # a ring the cookie did not make, or no longer holds
                key = next((k for k, v in self.fqs.items() if v is fq), -1)
            log.append((key, len(ents)))
        finish = self.fq_flush_finish_cnt
        if not ents or ents[0].counter >= finish:
            return []
        out: list[IovaFqEntry] = []
        while ents and ents[0].counter < finish:
            out.append(ents.popleft())
        self._queued_total -= len(out)
        self._give_back(out, cpu, ts_ns)
        return out

    def _give_back(self, entries: list[IovaFqEntry], cpu: int, ts_ns: int) -> None:
        self.stats.freed += len(entries) if self.fq_domain else 0
        if self.free_iova_fast is not None:
            for e in entries:
                self.free_iova_fast(e.iova_pfn, e.pages, cpu, ts_ns)
        else:
            pend = self.pending_free.get(cpu)
            if pend is None:
                pend = self.pending_free[cpu] = deque()
            pend.extend(entries)

    def fq_flush_iotlb(self, ts_ns: int, reason: FlushReason = FlushReason.TIMEOUT) -> None:
        """``fq_flush_iotlb``: start_cnt++, ``flush_iotlb_all``, finish_cnt++ (modelled as instantaneous)."""
        self.fq_flush_start(ts_ns, reason)
        self.fq_flush_finish(ts_ns)

    def fq_flush_start(self, ts_ns: int, reason: FlushReason = FlushReason.TIMEOUT) -> None:
        """First half of ``fq_flush_iotlb`` (following mode: a trace shows when the flush began, not when the
        hardware finished; another CPU's ring free in between still sees the old ``fq_flush_finish_cnt``)."""
        self.fq_flush_start_cnt += 1
        self.stats.flushes[reason.value] += 1

    def fq_flush_finish(self, ts_ns: int) -> None:
        """Second half of ``fq_flush_iotlb``: the invalidation completed; closes the exposure windows."""
        if self.fq_flush_finish_cnt >= self.fq_flush_start_cnt:
            return
        # every entry queued before this flush started is now invalidated
        if self._unflushed:
            cnt = self.fq_flush_start_cnt
            keep = [(q, c) for q, c in self._unflushed if c >= cnt]
            self.stats.exposure_ns.extend(ts_ns - q for q, c in self._unflushed if c < cnt)
            self._unflushed = keep
        self.fq_flush_finish_cnt = self.fq_flush_start_cnt

    def fq_flush_timeout(self, ts_ns: int, cpu: int, *, free_rings: bool = True) -> list[IovaFqEntry]:
        """``fq_flush_timeout``: timer off, one flush, then a ring free of every ring on ``cpu``.

        Args:
            ts_ns: trace time.
            cpu: the CPU running the timer.
            free_rings: ``False`` when following a trace: its ``fq_ring_free`` events say when each ring is freed
                (another CPU may free its own ring first, inside ``queue_iova``).

        Returns:
            The entries freed.
        """
        if self.fq_timer_deadline is not None and self.free_iova_fast is None:
            self.stats.timer_lateness_ns.append(ts_ns - self.fq_timer_deadline)
        self.fq_timer_on = False
        self.fq_timer_deadline = None
        self.stats.timer_fires += 1
        out: list[IovaFqEntry] = []
        if not free_rings:
            self.fq_flush_start(ts_ns, FlushReason.TIMEOUT)  # the driver calls fq_flush_finish
            return out
        self.fq_flush_iotlb(ts_ns, FlushReason.TIMEOUT)
        for key in sorted(self.fqs):
            out += self.fq_ring_free(self.fqs[key], cpu, ts_ns)
        return out

    def flush_all_queued(self, ts_ns: int, cpu: int, reason: FlushReason) -> list[IovaFqEntry]:
        """Not a kernel function: flush once and free every ring (rollover / flush-on-exhaustion what-ifs)."""
        if not self.fq_domain:
            return []
        self.fq_flush_iotlb(ts_ns, reason)
        out: list[IovaFqEntry] = []
        for key in sorted(self.fqs):
            out += self.fq_ring_free(self.fqs[key], cpu, ts_ns)
        return out

    # -- timers -------------------------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """Trace time at which the armed timer fires, or ``None``."""
        return self.fq_timer_deadline if self.fq_timer_on else None

    def run_timers(self, now_ns: int, cpu: int | None = None) -> list[IovaFqEntry]:
        """Fire the timer if its deadline is at or before ``now_ns`` (predictive mode only).

        Args:
            now_ns: time of the next event to apply.
            cpu: CPU the timer runs on; default: the one that armed it (as the kernel's timer wheel does).

        Returns:
            Entries freed by the timer.
        """
        d = self.next_deadline()
        if d is None or d > now_ns:
            return []
        return self.fq_flush_timeout(d, self.fq_timer_cpu if cpu is None else cpu)

    # -- following mode -----------------------------------------------------------------------------------

    def note_free_iova_fast(self, pfn: int, pages: int, cpu: int) -> bool:
        """Following mode: a ``free_iova_fast`` seen in the trace on ``cpu``; match it with the model's oldest
        pending free of that CPU.

        Returns:
            ``True`` when it was the expected entry; otherwise the mismatch is counted and any pending entry for
            that pfn is dropped.
        """
        pend = self.pending_free.get(cpu)
        if pend is None:
            self.stats.free_mismatch += 1
            return False
        if pend and pend[0].iova_pfn == pfn:
            pend.popleft()
            return True
        for i, e in enumerate(pend):
            if e.iova_pfn == pfn:
                # the entries before it were freed too, but their probe hits are missing (dropped kprobe hits)
                for _ in range(i + 1):
                    pend.popleft()
                self.stats.free_mismatch += i
                return False
        self.stats.free_mismatch += 1  # a free the model did not expect (prior state, or a model divergence)
        return False

    # -- views and validators -----------------------------------------------------------------------------

    def iter_queued(self) -> Iterator[IovaFqEntry]:
        """Every entry the cookie still holds: ring contents, then pending frees (following mode)."""
        for key in sorted(self.fqs):
            yield from self.fqs[key].entries
        for cpu in sorted(self.pending_free):
            yield from self.pending_free[cpu]

    def iter_queued_pfns(self) -> Iterator[tuple[int, int]]:
        """``(pfn, pages)`` of every IOVA the flush queue owns, for ``validate_single_owner``."""
        for e in self.iter_queued():
            yield e.iova_pfn, e.pages

    def queued_count(self) -> int:
        """Entries in the rings now."""
        return sum(len(fq) for fq in self.fqs.values())

    def validate_fq(self) -> None:
        """Check the ring invariants.

        Raises:
            ModelError: a ring over capacity, counters out of order, or entry counters not monotonic.
        """
        if self.fq_flush_finish_cnt > self.fq_flush_start_cnt:
            raise ModelError(f"cookie {self.cookie}: fq_flush_finish_cnt {self.fq_flush_finish_cnt} > "
                             f"fq_flush_start_cnt {self.fq_flush_start_cnt}")
        for key, fq in self.fqs.items():
            if len(fq) > fq.size - 1:
                raise ModelError(f"cookie {self.cookie}: ring {key} holds {len(fq)} entries, capacity {fq.size - 1}")
            last = -1
            for e in fq.entries:
                if e.counter < last or e.counter > self.fq_flush_start_cnt:
                    raise ModelError(f"cookie {self.cookie}: ring {key} entry pfn=0x{e.iova_pfn:x} counter "
                                     f"{e.counter} out of order (previous {last}, start_cnt {self.fq_flush_start_cnt})")
                last = e.counter
        if self.fq_domain and self._queued_total != self.queued_count():
            raise ModelError(f"cookie {self.cookie}: queued total {self._queued_total} != rings {self.queued_count()}")
