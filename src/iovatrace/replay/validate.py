"""Invariants of the IOVA model, as drgn-style validators: each ``validate_*`` raises ModelError or returns None.

Theory of operation: these are the facts the kernel's code maintains by construction (model_spec.md §2.9); if the
model breaks one, the model is wrong (a bug in iovatrace), so they raise :class:`~iovatrace.errors.ModelError`
rather than produce findings. They are O(state), so tests run them after every step and production runs them
every N events (``--check``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ModelError
from .iova import IOVA_ANCHOR, IovaDomain, order_base_2
from .rcache import RcacheDomain

__all__ = [
    "validate_no_overlap",
    "validate_cached_nodes",
    "validate_magazine_bounds",
    "validate_depot_bounds",
    "validate_single_owner",
    "validate_domain",
]


def _name(dom: IovaDomain) -> str:
    return f"iovad {dom.iovad:#x}" if dom.iovad else "iovad"


def validate_no_overlap(dom: IovaDomain) -> None:
    """No two tree nodes overlap, each has pfn_lo ≤ pfn_hi, and the anchor is last.

    Raises:
        ModelError: naming the two nodes.
    """
    prev_hi = -1
    prev_lo = -1
    for lo in dom._lo:
        hi = dom._hi[lo]
        if lo > hi:
            raise ModelError(f"{_name(dom)}: node [{lo:#x}, {hi:#x}] has pfn_lo > pfn_hi")
        if lo <= prev_hi:
            raise ModelError(f"{_name(dom)}: nodes [{prev_lo:#x}, {prev_hi:#x}] and [{lo:#x}, {hi:#x}] overlap")
        prev_lo, prev_hi = lo, hi
    if prev_lo != IOVA_ANCHOR:
        raise ModelError(f"{_name(dom)}: the anchor is not the last node")
    if len(dom._hi) != len(dom._lo):
        raise ModelError(f"{_name(dom)}: node index and range map disagree ({len(dom._lo)} vs {len(dom._hi)})")


def validate_cached_nodes(dom: IovaDomain) -> None:
    """cached_node and cached32_node name nodes that are in the tree.

    Raises:
        ModelError: a cached pointer dangles.
    """
    for attr in ("cached_node", "cached32_node"):
        lo = getattr(dom, attr)
        if lo not in dom._hi:
            raise ModelError(f"{_name(dom)}: {attr} {lo:#x} is not a node of the tree")


def validate_magazine_bounds(dom: RcacheDomain) -> None:
    """Every magazine holds 0..IOVA_MAG_SIZE pfns; every depot magazine is full.

    Raises:
        ModelError: a magazine over- or under-flows.
    """
    for where, bin_, idx, mag in dom.iter_magazines():
        n = len(mag.pfns)
        if n > dom.mag_size:
            raise ModelError(f"{_name(dom)}: {where} magazine bin {bin_} #{idx} holds {n} > {dom.mag_size} pfns")
        if where == "depot" and n != dom.mag_size:
            raise ModelError(f"{_name(dom)}: depot magazine bin {bin_} #{idx} holds {n}, not {dom.mag_size}")


def validate_depot_bounds(dom: RcacheDomain) -> None:
    """The ≤6.6 array depot holds at most MAX_GLOBAL_MAGS magazines.

    Raises:
        ModelError: the depot overflowed.
    """
    if dom.profile.list_depot:
        return
    for bin_, n in enumerate(dom.depot_sizes()):
        if n > dom.profile.max_global_mags:
            raise ModelError(f"{_name(dom)}: depot of bin {bin_} holds {n} > {dom.profile.max_global_mags}")


def validate_single_owner(dom: RcacheDomain, queued: Iterable[int] = ()) -> None:
    """Each cached or queued pfn is owned once: by one magazine slot or one flush-queue entry, never both.

    Every such pfn starts a tree node (a cached pfn is still allocated in the tree) of exactly 2^bin pages.

    Args:
        dom: the domain.
        queued: pfns sitting in the domain's flush queue(s), if the caller models them.

    Raises:
        ModelError: a pfn has two owners, or its node is missing or of the wrong size.
    """
    seen: dict[int, str] = {}
    for where, bin_, idx, mag in dom.iter_magazines():
        for pfn in mag.pfns:
            owner = f"{where} magazine bin {bin_} #{idx}"
            if pfn in seen:
                raise ModelError(f"{_name(dom)}: pfn {pfn:#x} is in {seen[pfn]} and {owner}")
            seen[pfn] = owner
            hi = dom._hi.get(pfn)
            if hi is None:
                raise ModelError(f"{_name(dom)}: cached pfn {pfn:#x} ({owner}) has no tree node")
            if order_base_2(hi - pfn + 1) != bin_:
                raise ModelError(f"{_name(dom)}: cached pfn {pfn:#x} ({owner}) node has {hi - pfn + 1} pages")
    if set(seen) != dom.cached_pfns:
        extra = sorted(dom.cached_pfns.symmetric_difference(seen))[:4]
        raise ModelError(f"{_name(dom)}: cached-pfn index disagrees with the magazines at {[hex(p) for p in extra]}")
    for pfn in queued:
        if pfn in seen:
            raise ModelError(f"{_name(dom)}: pfn {pfn:#x} is both queued and in {seen[pfn]}")
        seen[pfn] = "flush queue"
        if pfn not in dom._hi:
            raise ModelError(f"{_name(dom)}: queued pfn {pfn:#x} has no tree node")


def validate_domain(dom: IovaDomain, queued: Iterable[int] = ()) -> None:
    """Run every validator that applies to ``dom``.

    Raises:
        ModelError: the first invariant broken.
    """
    validate_no_overlap(dom)
    validate_cached_nodes(dom)
    if isinstance(dom, RcacheDomain):
        validate_magazine_bounds(dom)
        validate_depot_bounds(dom)
        validate_single_owner(dom, queued)
