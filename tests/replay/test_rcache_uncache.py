"""uncache() through the pfn→magazine index takes out exactly what a scan of every CPU's magazines takes out."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace.replay.iova import order_base_2
from iovatrace.replay.profiles import profile_for, with_overrides
from iovatrace.replay.rcache import RcacheDomain

LIMIT = 0xFFFFF


def _scan_uncache(d: RcacheDomain, pfn: int, cpu: int) -> bool:
    """The reference: the node's bin first, this CPU's loaded/prev then every CPU's; depot magazines stay."""
    if pfn not in d.cached_pfns or d.rcaches is None:
        return False
    hi = d.node_hi(pfn)
    bins = [order_base_2(hi - pfn + 1)] if hi is not None else []
    bins += [b for b in range(len(d.rcaches)) if b not in bins]
    for b in bins:
        if b >= len(d.rcaches):
            continue
        rc = d.rcaches[b]
        mags = [m for m in (rc.cpu_rcaches[cpu].loaded, rc.cpu_rcaches[cpu].prev)] if cpu < len(rc.cpu_rcaches) else []
        mags += [m for c in rc.cpu_rcaches for m in (c.loaded, c.prev)]
        for mag in mags:
            if pfn in mag.pfns:
                mag.pfns.remove(pfn)
                d.cached_pfns.discard(pfn)
                return True
    return False


def _layout(d: RcacheDomain) -> list[list[int]]:
    return [list(m.pfns) for _w, _b, _c, m in d.iter_magazines()]


ops = st.lists(st.tuples(st.sampled_from(["alloc", "free", "flush", "uncache"]), st.integers(0, 1),
                         st.sampled_from([1, 2, 4, 3]), st.integers(0, 10**6)), max_size=120)


@settings(max_examples=60, deadline=None)
@given(kernel=st.sampled_from(["6.1", "6.12"]), steps=ops)
def test_uncache_index_matches_the_scan(kernel: str, steps: list[tuple[str, int, int, int]]) -> None:
    p = with_overrides(profile_for(kernel), mag_size=3)
    d = RcacheDomain(p, 2)
    live: list[tuple[int, int]] = []
    for op, cpu, size, pick in steps:
        if op == "alloc":
            pfn = d.alloc_iova_fast(cpu, size, LIMIT)
            if pfn:
                live.append((pfn, size))
        elif op == "free" and live:
            pfn, size = live.pop(pick % len(live))
            d.free_iova_fast(cpu, pfn, size)
        elif op == "flush":
            d.free_cpu_cached_iovas(cpu)
        elif op == "uncache" and d.cached_pfns:
            pfn = sorted(d.cached_pfns)[pick % len(d.cached_pfns)]
            ref = copy.deepcopy(d)
            expected = _scan_uncache(ref, pfn, cpu)
            assert d.uncache(pfn, cpu) is expected
            assert _layout(d) == _layout(ref) and d.cached_pfns == ref.cached_pfns
            if expected:
                live.append((pfn, d.node_hi(pfn) - pfn + 1))
