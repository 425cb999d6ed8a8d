"""The IOVA range allocator of drivers/iommu/iova.c: an rbtree of ranges, searched top-down.

Theory of operation: ``struct iova_domain`` keeps allocated ranges ``[pfn_lo, pfn_hi]`` in an rbtree ending with
the ``anchor`` node (``pfn_lo = pfn_hi = IOVA_ANCHOR``). Allocation walks *backwards* from a cached node
(``cached32_node`` for limits ≤ 4 GiB, ``cached_node`` otherwise) looking for the highest size-aligned hole under
the limit; a failed first pass retries once from ``iova_find_limit()`` over the part the cache skipped, and a
failure sets ``max32_alloc_size`` so that later 32-bit requests of that size fail fast until a free below 4 GiB.

Speed without changing a result: the last search of each domain is memoised on the tree's generation and every
input of the walk (the driver predicts at entry and commits at return), and a walk longer than a few dozen nodes
evaluates the same stop rule over chunks of nodes in numpy (:meth:`IovaDomain._scan_down`); past a few hundred nodes,
over a numpy copy of the whole tree that is brought up to date from a log of the inserts and erases since the last
long walk (:meth:`IovaDomain._nodes_np`), instead of converting nodes again.

Here the tree is a :class:`sortedcontainers.SortedList` of ``pfn_lo`` plus a dict ``pfn_lo → pfn_hi``; a node is
named by its ``pfn_lo`` (unique while it is in the tree), so ``cached_node`` is a pfn and ``rb_prev``/``rb_next``
are neighbours in the list. Every rule follows Linux 6.1/6.12 iova.c (model_spec.md §1); where older kernels differ
(second pass from the anchor in 5.11-5.12, none before) the profile says so.

The class knows nothing of rcaches (see :mod:`.rcache`) or of traces; it never raises on a kernel misbehaviour:
free paths return a status code that the caller turns into a finding.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedList

__all__ = [
    "MASK64",
    "IOVA_ANCHOR",
    "FREE_OK",
    "FREE_UNKNOWN",
    "FREE_INTERIOR",
    "FREE_RESERVED",
    "IovaDomain",
    "fls_long",
    "order_base_2",
    "roundup_pow_of_two",
]

MASK64 = (1 << 64) - 1
#: pfn_lo == pfn_hi of the anchor node (~0UL).
IOVA_ANCHOR = MASK64

# Status codes of the free paths (why a free did or did not remove a node).
FREE_OK = 0  #: the node starting at pfn was removed
FREE_UNKNOWN = 1  #: no node contains pfn: never allocated, already freed, or allocated before the trace began
FREE_INTERIOR = 2  #: pfn lies inside a node but is not its pfn_lo (the kernel frees the node anyway)
FREE_RESERVED = 3  #: the node is a reserve_iova() range


#: Nodes the allocation walk visits in Python before handing the rest of a long walk to numpy.
_PY_STEPS = 32
#: Bounds below which the numpy walk's int64 arithmetic is exact.
_I64_SAFE = 1 << 62
#: Nodes a walk's numpy scan converts chunk by chunk before it takes the whole tree's numpy copy instead.
_MIRROR_AFTER = 64 + 256
#: Tree changes kept for the numpy copy; beyond them it is dropped (and rebuilt at the next long walk).
_MIRROR_LOG = 4096


def fls_long(x: int) -> int:
    """Index (1-based) of the most significant set bit; 0 for 0."""
    return x.bit_length()


def order_base_2(n: int) -> int:
    """ceil(log2(n)) for n ≥ 1 (order_base_2(1) == 0), as in include/linux/log2.h."""
    return (n - 1).bit_length() if n > 1 else 0


def roundup_pow_of_two(n: int) -> int:
    """The smallest power of two ≥ n (n ≥ 1)."""
    return 1 << ((n - 1).bit_length())


class IovaDomain:
    """``struct iova_domain`` without its rcaches: the rbtree, the cached nodes and max32_alloc_size.

    Args:
        granule: IOVA granule in bytes (power of two; 4096 on x86).
        start_pfn: lowest pfn handed out (dma-iommu passes max(1, base >> shift)).
        second_pass: ``"find_limit"`` (≥5.13), ``"anchor"`` (5.11-5.12) or ``"none"`` (≤5.10).
        iovad: the kernel address of the iova_domain (for reports), if known.

    Attributes:
        dma_32bit_pfn: first pfn above 4 GiB (``1 << (32 - shift)``).
        max32_alloc_size: smallest size that failed below 4 GiB since the last free there (``dma_32bit_pfn``: none).
        cached_node / cached32_node: ``pfn_lo`` of the node the next 64-bit / 32-bit search starts from.
        reserved: ``pfn_lo`` of the nodes created by :meth:`reserve_iova` (never leaks).
    """

    __slots__ = (
        "iovad", "granule", "shift", "start_pfn", "dma_32bit_pfn", "max32_alloc_size",
        "cached_node", "cached32_node", "second_pass", "_lo", "_hi", "reserved", "_released", "_gen", "_memo",
        "_mirror", "_mirror_log",
    )

    def __init__(self, granule: int = 4096, start_pfn: int = 1, *, second_pass: str = "find_limit",
                 iovad: int | None = None) -> None:
        if granule <= 0 or granule & (granule - 1):
            raise ValueError(f"init_iova_domain: granule {granule} is not a power of two")
        self.iovad = iovad
        self.granule = granule
        self.shift = granule.bit_length() - 1
        self.start_pfn = start_pfn
        self.dma_32bit_pfn = 1 << (32 - self.shift)
        self.max32_alloc_size = self.dma_32bit_pfn
        self.second_pass = second_pass
        self._lo: SortedList = SortedList([IOVA_ANCHOR])
        self._hi: dict[int, int] = {IOVA_ANCHOR: IOVA_ANCHOR}
        self.cached_node = IOVA_ANCHOR
        self.cached32_node = IOVA_ANCHOR
        self.reserved: set[int] = set()
        # pfn_lo of nodes removed since they were last allocated: tells a double free from a never-allocated pfn.
        self._released: set[int] = set()
        # Tree generation (bumped by every insert/erase) and the last search: the driver predicts an allocation
        # at entry and commits it at return, so the same search usually runs twice on an unchanged tree.
        self._gen = 0
        self._memo: tuple | None = None
        # numpy copy of the nodes for long walks (_scan_down): (pfn_lo array, pfn_hi array), anchor excluded, with
        # the inserts ``(lo, hi)`` and erases ``(lo, None)`` made since, applied at the next long walk.
        self._mirror: tuple | None = None
        self._mirror_log: list[tuple[int, int | None]] = []

    # ----------------------------------------------------------------------------------------------- lookup

    def __len__(self) -> int:
        """Number of nodes, the anchor excluded."""
        return len(self._lo) - 1

    def iter_nodes(self) -> Iterator[tuple[int, int]]:
        """``(pfn_lo, pfn_hi)`` of every node in address order, the anchor excluded."""
        hi = self._hi
        for lo in self._lo:
            if lo != IOVA_ANCHOR:
                yield lo, hi[lo]

    def node_hi(self, pfn_lo: int) -> int | None:
        """pfn_hi of the node starting exactly at ``pfn_lo``, or ``None``."""
        return self._hi.get(pfn_lo)

    def find_iova(self, pfn: int) -> tuple[int, int] | None:
        """private_find_iova(): the node ``(pfn_lo, pfn_hi)`` containing pfn, or ``None`` (anchor excluded)."""
        hi = self._hi.get(pfn)
        if hi is not None:  # pfn starts a node: no search needed
            return (pfn, hi) if pfn != IOVA_ANCHOR else None
        lo_list = self._lo
        i = lo_list.bisect_right(pfn) - 1
        if i < 0:
            return None
        lo = lo_list[i]
        hi = self._hi[lo]
        if pfn <= hi and lo != IOVA_ANCHOR:
            return lo, hi
        return None

    def was_released(self, pfn: int) -> bool:
        """Whether a node starting at pfn was removed and not allocated again since (double-free evidence)."""
        return pfn in self._released

    def _next(self, lo: int) -> int:
        # rb_next(): the anchor has no successor in practice (nothing is ever freed above it).
        lo_list = self._lo
        i = lo_list.bisect_right(lo)
        return lo_list[i] if i < len(lo_list) else IOVA_ANCHOR

    def iova_find_limit(self, limit_pfn: int) -> int:
        """iova_find_limit() (≈v5.13, "iommu/iova: Improve restart logic"): where the second pass starts.

        Returns the anchor above 4 GiB, else the first node (address order) whose pfn_hi ≥ limit_pfn. The kernel's
        descent may stop at a later node when one straddles the limit; the resulting allocation is the same.
        """
        if limit_pfn > self.dma_32bit_pfn:
            return IOVA_ANCHOR
        lo_list = self._lo
        i = lo_list.bisect_left(limit_pfn)
        if i > 0:
            lo = lo_list[i - 1]
            if self._hi[lo] >= limit_pfn:
                return lo
        return lo_list[i]

    # ----------------------------------------------------------------------------------------------- allocation

    def search(self, size: int, limit_excl: int, size_aligned: bool = True) -> int | None:
        """The pfn __alloc_and_insert_iova_range() would choose, without changing anything.

        Args:
            size: pages (not rounded here; only the start is aligned when size_aligned).
            limit_excl: exclusive limit (alloc_iova passes limit_pfn + 1).
            size_aligned: align the start to roundup_pow_of_two(size).

        Returns:
            The new node's pfn_lo, or ``None`` for -ENOMEM (fast-fail included).
        """
        return self._search(size, limit_excl, size_aligned)[0]

    def _search(self, size: int, limit_excl: int, size_aligned: bool) -> tuple[int | None, int]:
        # The walk is a pure function of the tree (generation), the cached nodes, max32_alloc_size and start_pfn.
        key = (self._gen, size, limit_excl, size_aligned, self.cached_node, self.cached32_node,
               self.max32_alloc_size, self.start_pfn, self.second_pass)
        memo = self._memo
        if memo is not None and memo[0] == key:
            return memo[1]
        res = self._walk(size, limit_excl, size_aligned)
        self._memo = (key, res)
        return res

    def _walk(self, size: int, limit_excl: int, size_aligned: bool) -> tuple[int | None, int]:
        align_mask = (MASK64 << fls_long(size - 1)) & MASK64 if size_aligned else MASK64
        dma32 = self.dma_32bit_pfn
        if limit_excl <= dma32 and size >= self.max32_alloc_size:
            return None, -1  # fast-fail: max32_alloc_size unchanged
        curr = self.cached32_node if limit_excl <= dma32 else self.cached_node
        hi_of = self._hi
        retry_pfn = hi_of[curr]
        high = limit_excl
        low = self.start_pfn
        lo_list = self._lo
        while True:
            it = lo_list.irange(maximum=curr, inclusive=(True, False), reverse=True)
            steps = 0
            while True:
                if curr < high:
                    if steps >= _PY_STEPS and low < _I64_SAFE and size < _I64_SAFE:
                        # A long walk (the second pass over a full tree): find where it stops with numpy.
                        curr = self._scan_down(curr, size, align_mask, low)
                        high = curr
                        new_pfn = (high - size) & align_mask
                        break
                    high = curr
                new_pfn = (high - size) & align_mask
                nxt = next(it, None)
                if nxt is None or new_pfn > hi_of[nxt] or new_pfn < low:
                    break
                curr = nxt
                steps += 1
            if high < size or new_pfn < low:
                if low == self.start_pfn and retry_pfn < limit_excl and self.second_pass != "none":
                    # Second pass over what the cached node skipped (Robin Murphy, "Improve restart logic").
                    high = limit_excl
                    low = retry_pfn + 1
                    curr = self.iova_find_limit(limit_excl) if self.second_pass == "find_limit" else IOVA_ANCHOR
                    continue
                return None, size
            return new_pfn, 0

    def _scan_down(self, curr: int, size: int, align_mask: int, low: int) -> int:
        """The node at which the top-down walk stops, from node ``curr`` (below the limit) downwards.

        Same rule as the loop in :meth:`_walk` once ``high`` is the current node's pfn_lo: with A a node and B the
        one below it, the walk stops at A when ``(A.lo - size) & align_mask`` is above B.hi, below ``low``, or
        when A.lo < size (the kernel's unsigned wrap-around); at the lowest node it stops anyway. Evaluated over
        chunks of nodes (doubling in length) in int64: every pfn below the anchor fits in 52 bits.
        """
        import numpy as np  # only long walks need it; importing the model stays light

        lo_list = self._lo
        hi_get = self._hi.__getitem__
        mask = align_mask - (1 << 64) if align_mask >= 1 << 63 else align_mask
        c = lo_list.bisect_left(curr)  # index of curr (a node of the tree)
        chunk = 64
        top = c
        while True:
            if top - c >= _MIRROR_AFTER and curr < _I64_SAFE:
                # A long scan: go on over the whole tree's numpy copy (kept up to date between long walks)
                # instead of converting chunk after chunk.
                nodes = self._nodes_np()
                if nodes is not None:
                    return self._scan_mirror(nodes, c, size, mask, low)
            s = c - chunk if c > chunk else 0
            los_l = lo_list[s:c + 1]
            his_l = list(map(hi_get, los_l[:-1]))
            try:
                los = np.array(los_l, dtype=np.int64)
                his = np.array(his_l, dtype=np.int64)
            except OverflowError:  # a node learned from a damaged trace beyond 63 bits: walk it in Python
                for t in range(len(his_l) - 1, -1, -1):
                    a_lo = los_l[t + 1]
                    nw = (a_lo - size) & align_mask
                    if nw > his_l[t] or nw < low:
                        return a_lo
                if s == 0:
                    return los_l[0]
                c = s
                continue
            a = los[1:]
            new = (a - size) & mask
            brk = (a < size) | (new > his) | (new < low)
            hit = np.flatnonzero(brk)
            if hit.size:
                return los_l[int(hit[-1]) + 1]
            if s == 0:
                return los_l[0]
            c = s
            chunk *= 4

    def _nodes_np(self) -> tuple | None:
        """``(pfn_lo, pfn_hi)`` int64 arrays of every node but the anchor, in address order (the numpy copy, made
        or brought up to date from the change log); ``None`` when a node does not fit in int64."""
        import numpy as np

        m = self._mirror
        log = self._mirror_log
        try:
            if m is None:
                los_l = list(self._lo)[:-1]  # the anchor is last
                los = np.array(los_l, dtype=np.int64)
                his = np.array(list(map(self._hi.__getitem__, los_l)), dtype=np.int64)
            elif log:
                final: dict[int, int | None] = {}
                for lo, hi in log:  # the last change of each pfn_lo decides whether it is in the tree now
                    final[lo] = hi
                los, his = m
                touched = sorted(final)
                keys = np.array(touched, dtype=np.int64)
                pos = np.searchsorted(los, keys)
                there = pos < len(los)
                there[there] = los[pos[there]] == keys[there]
                drop = pos[there]
                los, his = np.delete(los, drop), np.delete(his, drop)
                added = [lo for lo in touched if final[lo] is not None]
                new_lo = np.array(added, dtype=np.int64)
                new_hi = np.array([final[lo] for lo in added], dtype=np.int64)
                at = np.searchsorted(los, new_lo)
                los, his = np.insert(los, at, new_lo), np.insert(his, at, new_hi)
            else:
                return m
        except OverflowError:  # a node beyond 63 bits (damaged trace): no numpy copy
            self._mirror = None
            log.clear()
            return None
        log.clear()
        self._mirror = (los, his)
        return self._mirror

    @staticmethod
    def _scan_mirror(nodes: tuple, c: int, size: int, mask: int, low: int) -> int:
        """:meth:`_scan_down`'s rule over the numpy copy, from node index ``c`` downwards (chunks of 4096)."""
        import numpy as np

        los, his = nodes
        while True:
            s = c - 4096 if c > 4096 else 0
            a = los[s + 1:c + 1]
            new = (a - size) & mask
            brk = (a < size) | (new > his[s:c]) | (new < low)
            hit = np.flatnonzero(brk)
            if hit.size:
                return int(los[s + int(hit[-1]) + 1])
            if s == 0:
                return int(los[0])
            c = s

    def alloc_iova(self, size: int, limit_pfn: int, size_aligned: bool = True) -> int | None:
        """alloc_iova(): allocate ``size`` pages at or below ``limit_pfn`` (inclusive).

        Args:
            size: number of pages.
            limit_pfn: highest pfn the range may end at... the kernel passes limit_pfn + 1 as exclusive limit.
            size_aligned: align the start to roundup_pow_of_two(size).

        Returns:
            pfn_lo of the new node, or ``None`` when the space is exhausted (max32_alloc_size is then updated).
        """
        pfn, fail_size = self._search(size, limit_pfn + 1, size_aligned)
        if pfn is None:
            if fail_size > 0:
                # Set unconditionally, even for a >32-bit request (spec §1.3 step 5).
                self.max32_alloc_size = fail_size
            return None
        self._insert(pfn, pfn + size - 1)
        # __cached_rbnode_insert_update()
        if pfn + size - 1 < self.dma_32bit_pfn:
            self.cached32_node = pfn
        else:
            self.cached_node = pfn
        return pfn

    def _insert(self, lo: int, hi: int) -> None:
        self._gen += 1
        self._lo.add(lo)
        self._hi[lo] = hi
        self._released.discard(lo)
        if self._mirror is not None:
            self._log_change(lo, hi)

    def _log_change(self, lo: int, hi: int | None) -> None:
        log = self._mirror_log
        log.append((lo, hi))
        if len(log) > _MIRROR_LOG:
            self._mirror = None
            log.clear()

    def insert_known(self, pfn_lo: int, pfn_hi: int) -> bool:
        """Insert a node learned from the trace (prior state), with no cached-node update.

        Returns:
            False (and nothing inserted) when the range overlaps an existing node.
        """
        lo_list = self._lo
        i = lo_list.bisect_right(pfn_hi)
        if i > 0:
            lo = lo_list[i - 1]
            if lo <= pfn_hi and self._hi[lo] >= pfn_lo:
                return False
        self._insert(pfn_lo, pfn_hi)
        return True

    # ----------------------------------------------------------------------------------------------- free

    def remove_iova(self, pfn_lo: int) -> None:
        """remove_iova(): apply __cached_rbnode_delete_update() then erase the node starting at pfn_lo."""
        hi = self._hi[pfn_lo]
        dma32 = self.dma_32bit_pfn
        c32 = self.cached32_node
        if pfn_lo == c32 or (hi < dma32 and pfn_lo >= c32):
            self.cached32_node = self._next(pfn_lo)
        if pfn_lo < dma32:
            self.max32_alloc_size = dma32
        if pfn_lo >= self.cached_node:
            self.cached_node = self._next(pfn_lo)
        self._gen += 1
        self._lo.remove(pfn_lo)
        del self._hi[pfn_lo]
        self.reserved.discard(pfn_lo)
        self._released.add(pfn_lo)
        if self._mirror is not None:
            self._log_change(pfn_lo, None)

    def free_iova(self, pfn: int) -> int:
        """free_iova(): remove the node containing pfn; silently nothing if there is none.

        Returns:
            FREE_OK, FREE_INTERIOR (pfn inside a node, node removed), FREE_RESERVED (reserved node removed) or
            FREE_UNKNOWN (nothing removed).
        """
        node = self.find_iova(pfn)
        if node is None:
            return FREE_UNKNOWN
        lo = node[0]
        status = FREE_RESERVED if lo in self.reserved else (FREE_OK if lo == pfn else FREE_INTERIOR)
        self.remove_iova(lo)
        return status

    # ----------------------------------------------------------------------------------------------- reserve

    def reserve_iova(self, pfn_lo: int, pfn_hi: int) -> tuple[int, int] | None:
        """reserve_iova(): mark ``[pfn_lo, pfn_hi]`` as used, merging with overlapping nodes (6.x semantics).

        Returns:
            The node covering the (rest of the) range, or ``None`` for the WARN case (pfn beyond the address space).
        """
        if (pfn_hi | pfn_lo) > (MASK64 >> self.shift):
            return None
        overlap = False
        hi_of = self._hi
        for lo in list(self._lo):
            if lo == IOVA_ANCHOR:
                break
            hi = hi_of[lo]
            if pfn_lo <= hi and pfn_hi >= lo:
                # __adjust_overlap_range(): widen the node downward, continue above it.
                if pfn_lo < lo:
                    self._rekey(lo, pfn_lo)
                    lo = pfn_lo
                if pfn_hi > hi:
                    pfn_lo = hi + 1
                if pfn_lo >= lo and pfn_hi <= hi:
                    return lo, hi
                overlap = True
            elif overlap:
                break
        # __insert_new_range(): root search insert, no cached-node update.
        self._insert(pfn_lo, pfn_hi)
        self.reserved.add(pfn_lo)
        return pfn_lo, pfn_hi

    def _rekey(self, old_lo: int, new_lo: int) -> None:
        self._gen += 1
        hi = self._hi.pop(old_lo)
        self._lo.remove(old_lo)
        self._lo.add(new_lo)
        self._hi[new_lo] = hi
        if self._mirror is not None:
            self._log_change(old_lo, None)
            self._log_change(new_lo, hi)
        for attr in ("cached_node", "cached32_node"):
            if getattr(self, attr) == old_lo:
                setattr(self, attr, new_lo)
        if old_lo in self.reserved:
            self.reserved.discard(old_lo)
            self.reserved.add(new_lo)

    # ----------------------------------------------------------------------------------------------- teardown

    def put_iova_domain(self) -> list[tuple[int, int]]:
        """Free every node (the anchor stays); the caller handles the rcaches first.

        Returns:
            The non-reserved nodes that were still allocated (they die silently in the kernel).
        """
        alive = [(lo, hi) for lo, hi in self.iter_nodes() if lo not in self.reserved]
        self._gen += 1
        self._lo = SortedList([IOVA_ANCHOR])
        self._hi = {IOVA_ANCHOR: IOVA_ANCHOR}
        self._mirror = None
        self._mirror_log.clear()
        self.cached_node = self.cached32_node = IOVA_ANCHOR
        self.reserved.clear()
        self._released.clear()
        return alive
