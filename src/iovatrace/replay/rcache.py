"""The IOVA rcache: per-CPU magazines and the global depot (Bonwick's magazines, drivers/iommu/iova.c).

Theory of operation: each of the 6 size bins (orders 0..5) has, per CPU, a ``loaded`` and a ``prev`` magazine of
``IOVA_MAG_SIZE`` pfns, and one global ``depot`` of full magazines. A freed pfn goes into ``loaded`` (or ``prev``
after a swap, or a fresh magazine after ``loaded`` moves to the depot); an allocation pops from ``loaded`` (or
``prev``, or a depot magazine). A cached pfn is *still an allocated rbtree node*: it only returns to the tree
through ``iova_magazine_free_pfns`` (rcache flush, ≤6.6 depot overflow, ≥6.7 depot trim, CPU hot-unplug).

:class:`RcacheDomain` extends :class:`~.iova.IovaDomain` with the rcaches and the kernel's fast paths, mirroring
their names: :meth:`alloc_iova_fast`, :meth:`free_iova_fast`, :meth:`free_cpu_cached_iovas`,
:meth:`free_global_cached_iovas`, :meth:`iova_depot_work_func`, :meth:`free_iova_rcaches`. The depot differs by
version (the profile decides): ≤6.6 a fixed array of 32 (``depot[--depot_size]``, overflow frees the magazine's
pfns back to the tree), ≥6.7 a list through each magazine's first word (911aa1245da8) trimmed by a delayed work
every 100 ms down to num_online_cpus (233045378dbb). Both are a Python list whose end is the top/head.

Side effects a trace can check (magazine allocations and frees, free_pfns with their size, depot pushes and pops,
work scheduling) are appended to :attr:`RcacheDomain.ops` as tuples when it is a list (``None`` = not recorded),
so the hot path allocates nothing for them. Op tuples: ``("mag_alloc", cpu, mag)``, ``("mag_free", cpu, mag)``,
``("free_pfns", cpu, mag, size)``, ``("depot_push", bin, mag, depot_size)``, ``("depot_pop", bin, mag, depot_size)``,
``("work_sched", bin, due_ns)``, ``("empty_depot_pop", bin, site)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from .iova import FREE_OK, FREE_UNKNOWN, IovaDomain, order_base_2
from .profiles import KernelProfile

__all__ = [
    "IovaMagazine",
    "IovaCpuRcache",
    "IovaRcache",
    "RcacheDomain",
    "HIT_LOADED",
    "HIT_PREV",
    "HIT_DEPOT",
    "FROM_TREE",
    "FROM_FLUSH",
    "ALLOC_FAIL",
]

# Where alloc_iova_fast's pfn came from (RcacheDomain.last_source / predict_alloc_iova_fast).
HIT_LOADED = 1  #: popped from the CPU's loaded magazine
HIT_PREV = 2  #: loaded was empty: swapped with prev, then popped
HIT_DEPOT = 3  #: both empty: the empty loaded was freed and a depot magazine popped
FROM_TREE = 4  #: rcache miss: alloc_iova() found a range
FROM_FLUSH = 5  #: alloc_iova failed, every online CPU's rcache (and the depot) was flushed, the retry succeeded
ALLOC_FAIL = 0  #: 0 returned

_serial = itertools.count(1)

#: order_base_2(size) of the common sizes (a dict hit is cheaper than the arithmetic, on every free).
_ORDER = {n: (n - 1).bit_length() if n > 1 else 0 for n in range(256)}


class IovaMagazine:
    """struct iova_magazine: up to ``mag_size`` cached pfns of one size bin.

    Attributes:
        pfns: the cached pfns; ``len(pfns)`` is the magazine's ``size``.
        serial: model identity, increasing in allocation order.
        addr: kernel address of the object, once a trace revealed it (kmem events), else ``None``.
        alloc_ns: trace time of its allocation (0 = before the trace).
    """

    __slots__ = ("pfns", "serial", "addr", "alloc_ns")

    def __init__(self, alloc_ns: int = 0) -> None:
        self.pfns: list[int] = []
        self.serial = next(_serial)
        self.addr: int | None = None
        self.alloc_ns = alloc_ns

    def __repr__(self) -> str:
        addr = f" @{self.addr:#x}" if self.addr else ""
        return f"<mag #{self.serial}{addr} size={len(self.pfns)}>"


class IovaCpuRcache:
    """struct iova_cpu_rcache: the ``loaded`` and ``prev`` magazines of one CPU for one bin."""

    __slots__ = ("loaded", "prev")

    def __init__(self, loaded: IovaMagazine, prev: IovaMagazine) -> None:
        self.loaded = loaded
        self.prev = prev


class IovaRcache:
    """struct iova_rcache: one size bin.

    Attributes:
        depot: full magazines; the list's end is the array top (≤6.6) or the list head (≥6.7).
        cpu_rcaches: per-CPU loaded/prev, indexed by CPU number.
        work_due: ≥6.7: trace time the pending depot work is due (``None``: not pending).
    """

    __slots__ = ("depot", "cpu_rcaches", "work_due")

    def __init__(self, cpu_rcaches: list[IovaCpuRcache]) -> None:
        self.depot: list[IovaMagazine] = []
        self.cpu_rcaches = cpu_rcaches
        self.work_due: int | None = None

    @property
    def depot_size(self) -> int:
        """Number of magazines in the depot."""
        return len(self.depot)


class RcacheDomain(IovaDomain):
    """An iova_domain with rcaches: the allocator dma-iommu uses.

    Args:
        profile: kernel profile (magazine size, depot kind, retry behaviour).
        ncpus: number of possible CPUs (per-CPU rcaches are created for each).
        granule, start_pfn, iovad: as for :class:`~.iova.IovaDomain`.
        online: CPUs online now (default: all possible); shared with the driver, which updates it.
        with_rcaches: create the rcaches now (iova_domain_init_rcaches); False until that call otherwise.
        bug_modes: seed bug modes: ``"b"`` = the depot series' v1, whose ``iova_depot_pop`` had no empty check.

    Attributes:
        ops: list of side-effect tuples (see module doc) or ``None``.
        last_source: where the last alloc_iova_fast result came from (HIT_LOADED... ALLOC_FAIL).
        now: trace time of the operation being applied (set by the driver), used for work deadlines.
        cached_pfns: every pfn currently held by a magazine (loaded, prev or depot) of this domain.
        predicted_top: after :meth:`predict_alloc_iova_fast`, the loaded magazine's pfn list when its answer is
            that list's top (the usual rcache hit), else ``None``: see :meth:`take_predicted_top`.
    """

    __slots__ = ("profile", "mag_size", "ncpus", "online", "rcaches", "ops", "last_source", "now",
                 "cached_pfns", "bug_modes", "list_depot", "_mag_of", "_mag_dups", "_round_below",
                 "predicted_top", "_size_class")

    def __init__(self, profile: KernelProfile, ncpus: int, granule: int = 4096, start_pfn: int = 1, *,
                 iovad: int | None = None, online: set[int] | None = None, with_rcaches: bool = True,
                 bug_modes: Iterable[str] = ()) -> None:
        super().__init__(granule, start_pfn, second_pass=profile.second_pass, iovad=iovad)
        self.profile = profile
        self.mag_size = profile.mag_size
        self.list_depot = profile.list_depot
        # alloc_iova_fast rounds sizes below this up to a power of two (the largest cached size)
        self._round_below = 1 << max(0, profile.rcache_range_max_size - 1)
        # alloc_iova_fast's (rounded size, its bin) of the common sizes, as computed in predict_alloc_iova_fast
        self._size_class = {n: self._rounded(n) for n in range(256)}
        self.ncpus = ncpus
        self.online = online if online is not None else set(range(ncpus))
        self.ops: list[tuple] | None = None
        self.last_source = ALLOC_FAIL
        self.now = 0
        self.cached_pfns: set[int] = set()
        self.predicted_top: list[int] | None = None
        # pfn → the magazine holding it, so that uncache() finds it without scanning every CPU's magazines.
        # Exact while no pfn sits in two magazines at once; a re-synchronised model can get there (a depot pfn
        # the kernel handed out is freed again), and then _mag_dups sends uncache() back to the full scan.
        self._mag_of: dict[int, IovaMagazine] = {}
        self._mag_dups = False
        self.bug_modes = frozenset(bug_modes)
        self.rcaches: list[IovaRcache] | None = None
        if with_rcaches:
            self.iova_domain_init_rcaches()

    def _rounded(self, size: int) -> tuple[int, int]:
        """alloc_iova_fast()'s size (rounded up to a power of two below the largest cached size) and its bin."""
        if size < self._round_below:
            size = 1 << ((size - 1).bit_length()) if size > 1 else 1
        return size, (size - 1).bit_length() if size > 1 else 0  # order_base_2

    # ------------------------------------------------------------------------------------------- setup/teardown

    def _new_mag(self, cpu: int) -> IovaMagazine:
        mag = IovaMagazine(self.now)
        if self.ops is not None:
            self.ops.append(("mag_alloc", cpu, mag))
        return mag

    def _free_mag(self, cpu: int, mag: IovaMagazine) -> None:
        if self.ops is not None:
            self.ops.append(("mag_free", cpu, mag))

    def iova_domain_init_rcaches(self, cpu: int = 0) -> None:
        """iova_domain_init_rcaches(): per bin, per possible CPU, allocate ``loaded`` then ``prev`` (empty)."""
        self.rcaches = []
        for _ in range(self.profile.rcache_range_max_size):
            cpus = [IovaCpuRcache(self._new_mag(cpu), self._new_mag(cpu)) for _c in range(self.ncpus)]
            self.rcaches.append(IovaRcache(cpus))

    def ensure_cpu(self, cpu: int) -> None:
        """Grow the per-CPU rcaches to cover ``cpu`` (a trace may show more CPUs than assumed)."""
        if cpu < self.ncpus:
            return
        if self.rcaches is not None:
            for rc in self.rcaches:
                while len(rc.cpu_rcaches) <= cpu:
                    rc.cpu_rcaches.append(IovaCpuRcache(IovaMagazine(), IovaMagazine()))
        self.ncpus = cpu + 1

    def iova_magazine_free_pfns(self, mag: IovaMagazine, cpu: int) -> list[int]:
        """iova_magazine_free_pfns(): return every cached pfn to the tree, in index order 0..size-1.

        Order matters: each removal updates the cached nodes. A pfn with no node is skipped (kernel: WARN_ON).

        Returns:
            The pfns that had no tree node (normally empty).
        """
        if self.ops is not None:
            self.ops.append(("free_pfns", cpu, mag, len(mag.pfns)))
        missing = []
        cached = self.cached_pfns
        mag_of = self._mag_of
        for pfn in mag.pfns:
            cached.discard(pfn)
            mag_of.pop(pfn, None)
            if self._hi.get(pfn) is None:
                missing.append(pfn)
                continue
            self.remove_iova(pfn)
        mag.pfns = []
        return missing

    def _depot_pop(self, rc: IovaRcache, bin_: int) -> IovaMagazine:
        mag = rc.depot.pop()
        if self.ops is not None:
            self.ops.append(("depot_pop", bin_, mag, len(rc.depot)))
        return mag

    def _depot_push(self, rc: IovaRcache, bin_: int, mag: IovaMagazine) -> None:
        rc.depot.append(mag)
        if self.ops is not None:
            self.ops.append(("depot_push", bin_, mag, len(rc.depot)))

    def _drain_depot(self, rc: IovaRcache, bin_: int, cpu: int, return_pfns: bool, site: str) -> None:
        if self.list_depot:
            # 6.7+: "while (rcache->depot) pop" (newest first). The v1 posting popped until NULL instead:
            # its last pop dereferenced the empty head (seed (b), Dheeraj Kumar Srivastava, 6.5-rc6).
            while rc.depot:
                mag = self._depot_pop(rc, bin_)
                if return_pfns:
                    self.iova_magazine_free_pfns(mag, cpu)
                self._free_mag(cpu, mag)
            if "b" in self.bug_modes and self.ops is not None:
                self.ops.append(("empty_depot_pop", bin_, site))
        else:
            # ≤6.6: for j in 0..depot_size-1 (oldest first), then depot_size = 0.
            for mag in rc.depot:
                if return_pfns:
                    self.iova_magazine_free_pfns(mag, cpu)
                self._free_mag(cpu, mag)
            rc.depot = []

    def free_iova_rcaches(self, cpu: int = 0) -> None:
        """free_iova_rcaches(): free every magazine WITHOUT returning its pfns (they die with the tree)."""
        if self.rcaches is None:
            return
        for bin_, rc in enumerate(self.rcaches):
            for c in rc.cpu_rcaches:
                for mag in (c.loaded, c.prev):
                    self.cached_pfns.difference_update(mag.pfns)
                    self._free_mag(cpu, mag)
            rc.work_due = None  # cancel_delayed_work_sync
            for mag in rc.depot:
                self.cached_pfns.difference_update(mag.pfns)
            self._drain_depot(rc, bin_, cpu, return_pfns=False, site="free_iova_rcaches")
        self.rcaches = None
        self._mag_of = {}
        self._mag_dups = False

    def put_iova_domain(self, cpu: int = 0) -> list[tuple[int, int]]:  # type: ignore[override]
        """put_iova_domain(): free_iova_rcaches(), then every tree node.

        Returns:
            Non-reserved ranges still allocated (and not cached) at teardown.
        """
        cached = set(self.cached_pfns)
        self.free_iova_rcaches(cpu)
        return [n for n in super().put_iova_domain() if n[0] not in cached]

    # ------------------------------------------------------------------------------------------- free side

    def iova_rcache_insert(self, cpu: int, pfn: int, size: int) -> bool:
        """iova_rcache_insert(): cache pfn on ``cpu``; False when the bin is uncached (≥ 6) or no rcaches.

        ``size`` is the caller's unrounded page count; its order picks the bin.
        """
        try:
            bin_ = _ORDER[size]
        except KeyError:
            bin_ = (size - 1).bit_length() if size > 1 else 0  # order_base_2
        rcaches = self.rcaches
        if rcaches is None or bin_ >= len(rcaches):
            return False
        rc = rcaches[bin_]
        if cpu >= self.ncpus:
            self.ensure_cpu(cpu)
        crc = rc.cpu_rcaches[cpu]
        mag_size = self.mag_size
        if len(crc.loaded.pfns) < mag_size:
            pass
        elif len(crc.prev.pfns) < mag_size:
            crc.loaded, crc.prev = crc.prev, crc.loaded
        else:
            new_mag = self._new_mag(cpu)  # GFP_ATOMIC; the model assumes it succeeds
            full = crc.loaded
            crc.loaded = new_mag
            if self.list_depot:
                self._depot_push(rc, bin_, full)
                if rc.work_due is None:  # schedule_delayed_work() is a no-op while pending
                    rc.work_due = self.now + self.profile.depot_delay_ns
                    if self.ops is not None:
                        self.ops.append(("work_sched", bin_, rc.work_due))
            elif len(rc.depot) < self.profile.max_global_mags:
                self._depot_push(rc, bin_, full)
            else:
                # ≤6.6 depot overflow: the full magazine's pfns go back to the tree (after the push below).
                crc.loaded.pfns.append(pfn)
                self.cached_pfns.add(pfn)
                self._index(pfn, crc.loaded)
                self.iova_magazine_free_pfns(full, cpu)
                self._free_mag(cpu, full)
                return True
        mag = crc.loaded
        mag.pfns.append(pfn)
        self.cached_pfns.add(pfn)
        mag_of = self._mag_of
        if pfn in mag_of:
            self._mag_dups = True
        mag_of[pfn] = mag
        return True

    def _index(self, pfn: int, mag: IovaMagazine) -> None:
        if pfn in self._mag_of:
            self._mag_dups = True
        self._mag_of[pfn] = mag

    def free_iova_fast(self, cpu: int, pfn: int, size: int) -> int:
        """free_iova_fast(): into the rcache, else free_iova().

        Returns:
            FREE_OK when cached or freed; otherwise free_iova's status.
        """
        if self.iova_rcache_insert(cpu, pfn, size):
            return FREE_OK
        return self.free_iova(pfn)

    # ------------------------------------------------------------------------------------------- alloc side

    def iova_rcache_get(self, cpu: int, size: int, limit_excl: int) -> int:
        """iova_rcache_get(): pop a cached pfn that fits under the limit, or 0.

        Args:
            cpu: the allocating CPU.
            size: rounded size (picks the bin).
            limit_excl: alloc_iova_fast's limit_pfn + 1; a pfn is accepted if pfn ≤ limit_excl - size.
        """
        bin_ = (size - 1).bit_length() if size > 1 else 0  # order_base_2
        rcaches = self.rcaches
        if rcaches is None or bin_ >= len(rcaches):
            return 0
        rc = rcaches[bin_]
        if cpu >= self.ncpus:
            self.ensure_cpu(cpu)
        crc = rc.cpu_rcaches[cpu]
        pfns = crc.loaded.pfns
        if pfns and pfns[-1] <= limit_excl - size:
            # The top fits (the usual case): iova_magazine_pop() takes it, nothing moves.
            pfn = pfns.pop()
            self.cached_pfns.discard(pfn)
            self._mag_of.pop(pfn, None)
            self.last_source = HIT_LOADED
            return pfn
        if pfns:
            source = HIT_LOADED
        elif crc.prev.pfns:
            crc.loaded, crc.prev = crc.prev, crc.loaded
            source = HIT_PREV
        elif rc.depot:
            self._free_mag(cpu, crc.loaded)
            crc.loaded = self._depot_pop(rc, bin_)
            source = HIT_DEPOT
        else:
            return 0
        pfns = crc.loaded.pfns
        limit = limit_excl - size
        # iova_magazine_pop(): scan from the top for the first pfn <= limit
        for i in range(len(pfns) - 1, -1, -1):
            if pfns[i] <= limit:
                break
        else:
            return 0
        pfn = pfns[i]
        last = pfns.pop()
        if i < len(pfns):
            pfns[i] = last
        self.cached_pfns.discard(pfn)
        self._mag_of.pop(pfn, None)
        self.last_source = source
        return pfn

    def alloc_iova_fast(self, cpu: int, size: int, limit_pfn: int, flush_rcache: bool = True) -> int:
        """alloc_iova_fast(): rcache, then the tree, then (if flush_rcache) flush every rcache and retry once.

        Args:
            cpu: the allocating CPU.
            size: pages requested (sizes < 32 are rounded up to a power of two here).
            limit_pfn: inclusive limit.
            flush_rcache: allow the flush-and-retry.

        Returns:
            The pfn, or 0 on failure; :attr:`last_source` says where it came from.
        """
        if size < self._round_below:
            size = 1 << ((size - 1).bit_length()) if size > 1 else 1
        pfn = self.iova_rcache_get(cpu, size, limit_pfn + 1)
        if pfn:
            return pfn
        source = FROM_TREE
        while True:
            pfn = self.alloc_iova(size, limit_pfn, True)
            if pfn is not None:
                self.last_source = source
                return pfn
            if not flush_rcache:
                self.last_source = ALLOC_FAIL
                return 0
            flush_rcache = False
            source = FROM_FLUSH
            for c in sorted(self.online):
                self.free_cpu_cached_iovas(c, cpu)
            if self.profile.flush_global_on_fail:
                self.free_global_cached_iovas(cpu)

    def predict_alloc_iova_fast(self, cpu: int, size: int, limit_pfn: int) -> tuple[int, int]:
        """What alloc_iova_fast would return, without changing any state.

        Returns:
            ``(pfn, source)``; ``(0, FROM_FLUSH)`` means the answer needs the flush-and-retry (not predicted here).
        """
        try:
            size, bin_ = self._size_class[size]
        except KeyError:
            size, bin_ = self._rounded(size)
        rcaches = self.rcaches
        if rcaches is not None and bin_ < len(rcaches):
            rc = rcaches[bin_]
            if cpu >= self.ncpus:
                self.ensure_cpu(cpu)
            crc = rc.cpu_rcaches[cpu]
            pfns = crc.loaded.pfns
            if pfns and pfns[-1] <= limit_pfn + 1 - size:
                # The loaded magazine's top fits (the usual case): iova_rcache_get() will just pop it.
                self.predicted_top = pfns
                return pfns[-1], HIT_LOADED
            if pfns:
                source = HIT_LOADED
            elif crc.prev.pfns:
                pfns, source = crc.prev.pfns, HIT_PREV
            elif rc.depot:
                pfns, source = rc.depot[-1].pfns, HIT_DEPOT
            else:
                source = 0
            self.predicted_top = None
            if source:
                limit = limit_pfn + 1 - size
                # iova_magazine_pop()'s choice: from the top, the first pfn <= limit
                for i in range(len(pfns) - 1, -1, -1):
                    if pfns[i] <= limit:
                        return pfns[i], source
        self.predicted_top = None
        pfn = self.search(size, limit_pfn + 1, True)
        if pfn is not None:
            return pfn, FROM_TREE
        return 0, FROM_FLUSH

    def take_predicted_top(self, pfns: list[int]) -> int:
        """alloc_iova_fast() when :meth:`predict_alloc_iova_fast` answered the top of the loaded magazine
        ``pfns`` (its :attr:`predicted_top`) and nothing changed since: iova_rcache_get()'s pop of that top,
        without rounding the size and finding the magazine again (the replay predicts every allocation at its
        entry and commits it at its return).

        Returns:
            The pfn, as alloc_iova_fast() would.
        """
        pfn = pfns.pop()
        self.cached_pfns.discard(pfn)
        self._mag_of.pop(pfn, None)
        self.last_source = HIT_LOADED
        return pfn

    # ------------------------------------------------------------------------------------------- flushes

    def free_cpu_cached_iovas(self, cpu: int, on_cpu: int | None = None) -> None:
        """free_cpu_cached_iovas(): return ``cpu``'s loaded and prev pfns to the tree, bin by bin (magazines stay).

        Args:
            cpu: whose rcaches to flush.
            on_cpu: the CPU running the flush (for op attribution); default ``cpu``.
        """
        if self.rcaches is None:
            return
        if cpu >= self.ncpus:
            self.ensure_cpu(cpu)
        run = cpu if on_cpu is None else on_cpu
        for rc in self.rcaches:
            crc = rc.cpu_rcaches[cpu]
            self.iova_magazine_free_pfns(crc.loaded, run)
            self.iova_magazine_free_pfns(crc.prev, run)

    def free_global_cached_iovas(self, cpu: int = 0) -> None:
        """free_global_cached_iovas(): return every depot magazine's pfns and free it (order by version)."""
        if self.rcaches is None:
            return
        for bin_, rc in enumerate(self.rcaches):
            self._drain_depot(rc, bin_, cpu, return_pfns=True, site="free_global_cached_iovas")

    def iova_cpuhp_dead(self, cpu: int) -> None:
        """iova_cpuhp_dead(): a CPU went offline: flush its rcaches."""
        self.free_cpu_cached_iovas(cpu)

    def iova_depot_work_func(self, bin_: int, cpu: int) -> IovaMagazine | None:
        """iova_depot_work_func() (≥6.7): if depot_size > num_online_cpus, pop one, free its pfns, re-arm.

        Args:
            bin_: the rcache bin whose work runs.
            cpu: the CPU the kworker runs on.

        Returns:
            The magazine trimmed, or ``None``.
        """
        if self.rcaches is None:
            return None
        rc = self.rcaches[bin_]
        rc.work_due = None
        if len(rc.depot) > len(self.online):
            mag = self._depot_pop(rc, bin_)
            self.iova_magazine_free_pfns(mag, cpu)
            self._free_mag(cpu, mag)
            rc.work_due = self.now + self.profile.depot_delay_ns
            if self.ops is not None:
                self.ops.append(("work_sched", bin_, rc.work_due))
            return mag
        return None

    def next_work_due(self) -> int | None:
        """Earliest pending depot-work deadline of this domain, or ``None``."""
        if self.rcaches is None:
            return None
        dues = [rc.work_due for rc in self.rcaches if rc.work_due is not None]
        return min(dues) if dues else None

    # ------------------------------------------------------------------------------------------- queries

    def iter_magazines(self) -> Iterator[tuple[str, int, int, IovaMagazine]]:
        """Every live magazine as ``(where, bin, cpu_or_depot_index, mag)``; where ∈ loaded/prev/depot."""
        if self.rcaches is None:
            return
        for bin_, rc in enumerate(self.rcaches):
            for cpu, crc in enumerate(rc.cpu_rcaches):
                yield "loaded", bin_, cpu, crc.loaded
                yield "prev", bin_, cpu, crc.prev
            for j, mag in enumerate(rc.depot):
                yield "depot", bin_, j, mag

    def depot_sizes(self) -> list[int]:
        """depot_size of each bin (empty list without rcaches)."""
        return [len(rc.depot) for rc in self.rcaches] if self.rcaches is not None else []

    def uncache(self, pfn: int, cpu: int) -> bool:
        """Take pfn out of whichever magazine holds it (re-synchronisation after a divergence).

        Looks in ``cpu``'s magazines of pfn's bin first, then every other CPU's. The node stays allocated.

        Returns:
            Whether pfn was found.
        """
        if pfn not in self.cached_pfns or self.rcaches is None:
            return False
        mag = self._mag_of.get(pfn)
        if mag is not None and not self._mag_dups:
            # The index names the one magazine holding pfn: take it out if a CPU holds that magazine, leave it
            # if the depot does (as the scan below would).
            for rc in self.rcaches:
                for c in rc.cpu_rcaches:
                    if c.loaded is mag or c.prev is mag:
                        mag.pfns.remove(pfn)
                        self.cached_pfns.discard(pfn)
                        del self._mag_of[pfn]
                        return True
            return False
        hi = self._hi.get(pfn)
        bins = [order_base_2(hi - pfn + 1)] if hi is not None else []
        bins += [b for b in range(len(self.rcaches)) if b not in bins]
        for b in bins:
            if b >= len(self.rcaches):
                continue
            rc = self.rcaches[b]
            order = [rc.cpu_rcaches[cpu]] if cpu < len(rc.cpu_rcaches) else []
            mags = [m for c in order for m in (c.loaded, c.prev)]
            # Depot magazines are left alone: they must stay full, and a pfn there cannot be handed out
            # without the whole magazine being popped first.
            mags += [m for c in rc.cpu_rcaches for m in (c.loaded, c.prev)]
            for mag in mags:
                if pfn in mag.pfns:
                    mag.pfns.remove(pfn)
                    self.cached_pfns.discard(pfn)
                    if self._mag_of.get(pfn) is mag:
                        del self._mag_of[pfn]
                    return True
        return False

    def is_cached(self, pfn: int) -> bool:
        """Whether pfn sits in one of this domain's magazines."""
        return pfn in self.cached_pfns

    def free_status(self, pfn: int) -> int:
        """FREE_OK if pfn starts an allocated, uncached node (a legal free), else FREE_UNKNOWN."""
        return FREE_OK if (pfn in self._hi and pfn not in self.cached_pfns) else FREE_UNKNOWN
