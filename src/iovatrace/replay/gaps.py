"""Lost-free reconstruction: finding the ``free_iova_fast`` kprobe hits the kernel dropped, from tracepoints.

Theory of operation
-------------------
A kprobe that fires while another kprobe handler runs on the same CPU is dropped (only counted in
kprobe_profile); tracepoints are never dropped. Every DMA unmap emits the ``iommu:unmap`` tracepoint, and its IOVA
then comes back through ``free_iova_fast``: at once on the same CPU (strict), or later from the CPU's flush-queue
ring, in FIFO order (lazy). So each ``iommu:unmap`` opens a *pending* entry in a ring keyed by (domain, CPU of the
unmap), and each ``free_iova_fast`` closes the entry with its pfn. An entry left open *behind* a closed one in the
same ring was freed too (rings free in order) but its probe hit was lost: :class:`UnmapTracker` reports it so the
driver can apply the free where it happened. In a domain known to be strict, an allocation on the CPU also closes
the ring (the free would have come first).

The domain of an unmap is known from the ``__iommu_dma_unmap`` probe just before it (device pointer) or the
``dma:dma_unmap_page`` / ``dma:dma_unmap_sg`` tracepoints (device name, 6.12+); entries whose domain stays unknown
sit in the CPU's unknown ring and are attributed by pfn when exactly one domain can own them.

Strict or lazy is learned per domain: a free of the newest unmap of its ring is strict evidence; a free with
:data:`LAZY_BEHIND` or more later unmaps queued behind it is lazy evidence (lazy wins). Time is no guide: in the
emulated lab a strict IOTLB sync can take a millisecond.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

__all__ = ["UnmapTracker", "LAZY_BEHIND", "RING_LIMIT"]

#: Later unmaps queued behind an entry when it is freed that prove a flush queue (lazy mode).
LAZY_BEHIND = 4
#: Pending entries kept per ring (older ones are dropped: unmaps outside the DMA API never come back).
RING_LIMIT = 4096
#: Strict evidence needed before allocations may close a domain's rings.
STRICT_MIN = 8


class _Entry:
    __slots__ = ("pfn", "pages", "owner", "ts", "open", "seq")

    def __init__(self, pfn: int, pages: int, owner: Any, ts: int) -> None:
        self.pfn = pfn
        self.pages = pages
        self.owner = owner
        self.ts = ts
        self.open = True
        self.seq = 0


_new_entry = _Entry.__new__  # UnmapTracker.unmap fills the slots itself (see there)


class _Ring:
    """One (domain, CPU) ring: pending entries in unmap order, and the newest entry of each pfn (``index``).

    ``counts`` is shared by every ring of a tracker: for each pfn, how many rings' indexes hold it, so that a
    search by pfn over all rings (:meth:`UnmapTracker.realloc`, once per allocation) stops at once when none
    does. Every change to ``index`` goes through :meth:`put` / :meth:`drop` (or their inline copies, marked).
    """

    __slots__ = ("q", "index", "seq", "counts")

    def __init__(self, counts: dict[int, int]) -> None:
        self.q: deque[_Entry] = deque()
        self.index: dict[int, _Entry] = {}
        self.seq = 0
        self.counts = counts

    def put(self, pfn: int, e: _Entry) -> None:
        """index[pfn] = e."""
        index = self.index
        if pfn not in index:
            counts = self.counts
            counts[pfn] = counts.get(pfn, 0) + 1
        index[pfn] = e

    def drop(self, pfn: int) -> None:
        """del index[pfn] (which must be there)."""
        del self.index[pfn]
        counts = self.counts
        c = counts[pfn]
        if c == 1:
            del counts[pfn]
        else:
            counts[pfn] = c - 1

    def add(self, e: _Entry) -> None:
        self.seq += 1
        e.seq = self.seq
        self.q.append(e)
        self.put(e.pfn, e)
        if len(self.q) > RING_LIMIT:
            old = self.q.popleft()
            if self.index.get(old.pfn) is old:
                self.drop(old.pfn)

    def close_upto(self, e: _Entry) -> Iterator[_Entry]:
        """Close e; yield the open entries ahead of it (lost frees)."""
        q = self.q
        while q:
            x = q.popleft()
            if self.index.get(x.pfn) is x:
                self.drop(x.pfn)
            if x is e:
                break
            if x.open:
                x.open = False
                yield x
        e.open = False

    def drain(self) -> Iterator[_Entry]:
        q = self.q
        while q:
            x = q.popleft()
            if self.index.get(x.pfn) is x:
                self.drop(x.pfn)
            if x.open:
                x.open = False
                yield x


class UnmapTracker:
    """Pending unmaps per (domain, CPU) ring.

    Owners are opaque objects (the driver's DomainState) or ``None`` (unknown). The tracker tells the driver which
    pending unmaps were freed without a trace of it; the driver decides how to apply them.
    """

    def __init__(self) -> None:
        self.rings: dict[tuple[Any, int], _Ring] = {}
        self.unknown_ring: dict[int, _Ring] = {}  # cpu -> its unknown-owner ring (= rings[(None, cpu)])
        self.indexed: dict[int, int] = {}  # pfn -> number of rings whose index holds it (_Ring.counts)
        self.dev_owner: dict[Any, Any] = {}  # device pointer or name -> owner
        self.next_owner: dict[int, Any] = {}  # cpu -> owner announced for the next iommu:unmap on it
        self.strict_evidence: dict[Any, int] = {}
        self.lazy: set[Any] = set()
        self.last_unmap: dict[int, _Entry] = {}  # cpu -> most recent entry opened on it
        self.owner_rings: dict[Any, list[_Ring]] = {}  # owner -> its rings
        # What a search by pfn for an owner looks at: its rings and the unknown-owner rings, in creation order
        # (the order of self.rings), each with "unknown owner?"; _scan_none alone for an owner without rings.
        self._scan: dict[Any, list[tuple[bool, _Ring]]] = {}
        self._scan_none: list[tuple[bool, _Ring]] = []

    def _ring(self, owner: Any, cpu: int) -> _Ring:
        r = self.rings.get((owner, cpu))
        if r is None:
            r = self.rings[(owner, cpu)] = _Ring(self.indexed)
            self.owner_rings.setdefault(owner, []).append(r)
            if owner is None:
                self.unknown_ring[cpu] = r
                item = (True, r)
                self._scan_none.append(item)
                for lst in self._scan.values():
                    lst.append(item)
            else:
                lst = self._scan.get(owner)
                if lst is None:
                    lst = self._scan[owner] = list(self._scan_none)
                lst.append((False, r))
        return r

    def _rebuild_scan(self) -> None:
        self._scan_none = [(True, r) for k, r in self.rings.items() if k[0] is None]
        self._scan = {}
        for owner in {k[0] for k in self.rings if k[0] is not None}:
            self._scan[owner] = [(k[0] is None, r) for k, r in self.rings.items()
                                 if k[0] is owner or k[0] is None]

    def announce(self, cpu: int, dev: Any) -> None:
        """A device is about to unmap on cpu (``__iommu_dma_unmap`` dev pointer, ``dma:dma_unmap_sg`` name)."""
        self.next_owner[cpu] = self.dev_owner.get(dev)

    def unmap(self, cpu: int, pfn: int, pages: int, ts: int, owner: Any = None) -> None:
        """An ``iommu:unmap`` tracepoint on cpu; ``owner`` when the caller already knows the domain."""
        announced = self.next_owner.pop(cpu, None)
        if owner is None:
            owner = announced
        r = self.rings.get((owner, cpu))
        if r is None:
            r = self._ring(owner, cpu)
        # _Entry(pfn, pages, owner, ts) and _Ring.add, inline: no __init__ frame, one call less on every unmap
        r.seq = seq = r.seq + 1
        e = _new_entry(_Entry)
        e.pfn = pfn
        e.pages = pages
        e.owner = owner
        e.ts = ts
        e.open = True
        e.seq = seq
        q = r.q
        q.append(e)
        index = r.index
        if pfn not in index:  # _Ring.put, inline
            counts = self.indexed
            counts[pfn] = counts.get(pfn, 0) + 1
        index[pfn] = e
        if len(q) > RING_LIMIT:
            old = q.popleft()
            if index.get(old.pfn) is old:
                r.drop(old.pfn)
        self.last_unmap[cpu] = e

    def unmap_event(self, ev: Any, k: tuple[str, ...]) -> None:
        """:meth:`unmap` of an ``iommu:unmap`` event (``k``: its iova and size field names) in the domain announced
        on its CPU; the replay driver dispatches the event here directly."""
        f = ev.fields
        self.unmap(ev.cpu, f[k[0]] >> 12, (f[k[1]] + 4095) >> 12, ev.ts_ns)

    def attribute(self, cpu: int, dev: Any, pfn: int) -> Any:
        """``dma:dma_unmap_page`` (after the unmap): the entry of pfn on cpu belongs to dev's owner.

        Returns:
            The entry if it is still open (its free was not seen: lost when the owner is strict), else ``None``.
        """
        owner = self.dev_owner.get(dev)
        e = self.last_unmap.get(cpu)
        if e is None or e.pfn != pfn:
            return None
        if e.owner is not owner and owner is not None:
            r = self.rings.get((e.owner, cpu))
            if r is not None and r.q and r.q[-1] is e:
                r.q.pop()
                if r.index.get(e.pfn) is e:
                    r.drop(e.pfn)
                e.owner = owner
                self._ring(owner, cpu).add(e)
        return e if e.open else None

    def older_unknown(self, cpu: int, ts: int) -> list[_Entry]:
        """Open unknown-owner entries on cpu opened before ts (closed and returned for attribution by pfn)."""
        r = self.rings.get((None, cpu))
        if r is None or not r.q:
            return []
        out = []
        while r.q and r.q[0].ts < ts:
            x = r.q.popleft()
            if r.index.get(x.pfn) is x:
                r.drop(x.pfn)
            if x.open:
                x.open = False
                out.append(x)
        return out

    def free(self, owner: Any, cpu: int, pfn: int, ts: int) -> list[_Entry]:
        """A ``free_iova_fast`` of pfn in owner's domain on cpu.

        Returns:
            Open entries of the same ring that were ahead of it: frees whose probe hits were lost.
        """
        r = self.rings.get((owner, cpu))
        e = r.index.get(pfn) if r is not None else None
        unknown = owner is None
        if e is None or not e.open:
            # Not in its own ring: the timer freed another CPU's ring, or the unmap's domain was not known.
            e = None
            for unknown, r in (self._scan.get(owner, self._scan_none) if owner is not None else self._scan_none):
                e2 = r.index.get(pfn)
                if e2 is not None and e2.open:
                    e = e2
                    break
            if e is None:
                return []
        # Strict: the free follows its own unmap, nothing queued behind it. Lazy: a ring of later unmaps
        # waits behind the entry (an interrupt's nested unmap accounts for one or two, not LAZY_BEHIND).
        behind = r.seq - e.seq
        if behind == 0:
            self.strict_evidence[owner] = self.strict_evidence.get(owner, 0) + 1
        elif behind >= LAZY_BEHIND:
            self.lazy.add(owner)
        if unknown:
            e.open = False  # unknown-owner ring: no FIFO claim across domains
            return []
        q = r.q
        if q[0] is e:
            # The usual case: e is the ring's oldest entry, nothing ahead of it was lost (close_upto without
            # the generator); r.index[pfn] is e.
            q.popleft()
            r.drop(pfn)
            e.open = False
            return []
        return list(r.close_upto(e))

    def realloc(self, owner: Any, pfn: int) -> int:
        """pfn was handed out again in owner's domain: an open unmap of it is stale (its free was lost earlier).

        Returns:
            How many open entries were closed (each one a free the trace lost before this allocation).
        """
        n = 0
        if pfn not in self.indexed:
            return 0  # no ring holds an entry of pfn (the usual answer)
        for _unknown, r in (self._scan.get(owner, self._scan_none) if owner is not None else self._scan_none):
            e = r.index.get(pfn)
            if e is not None and e.open:
                e.open = False
                n += 1
        return n

    def is_strict(self, owner: Any) -> bool:
        """Enough evidence that owner frees at unmap time."""
        return owner not in self.lazy and self.strict_evidence.get(owner, 0) >= STRICT_MIN

    def alloc(self, owner: Any, cpu: int) -> list[_Entry]:
        """An allocation in owner's domain on cpu: in a strict domain every open unmap on cpu was freed before."""
        r = self.rings.get((owner, cpu))
        if r is None or not r.q or not self.is_strict(owner):
            return []
        return list(r.drain())

    def unknown_open(self, cpu: int) -> list[_Entry]:
        """Open entries of unknown owner on cpu (closed and returned; the driver attributes them by pfn)."""
        r = self.rings.get((None, cpu))
        return list(r.drain()) if r is not None and r.q else []

    def forget(self, owner: Any) -> None:
        """Drop owner's rings (domain destroyed: queued entries die with it)."""
        for key in [k for k in self.rings if k[0] is owner]:
            r = self.rings.pop(key)
            for pfn in list(r.index):
                r.drop(pfn)
        self.owner_rings.pop(owner, None)
        self._rebuild_scan()
        self.lazy.discard(owner)
        self.strict_evidence.pop(owner, None)
        for dev in [d for d, o in self.dev_owner.items() if o is owner]:
            del self.dev_owner[dev]
