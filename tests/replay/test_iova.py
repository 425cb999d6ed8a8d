"""The rbtree allocator against hand-worked cases of drivers/iommu/iova.c (6.x), one rule per test.

Each expected value is derived in the docstring from the kernel's algorithm (model_spec.md §1.3–1.6), not copied
from the model's output.
"""

from __future__ import annotations

import pytest

from iovatrace.replay.iova import FREE_INTERIOR, FREE_OK, FREE_UNKNOWN, IOVA_ANCHOR, IovaDomain
from iovatrace.replay.validate import validate_domain


def test_top_down_and_size_alignment() -> None:
    """First allocation ends at the limit; a 2-page request is aligned to 2 and leaves the odd pfn as a hole."""
    d = IovaDomain()
    assert d.alloc_iova(1, 0xFFFFF) == 0xFFFFF
    # high = min(0x100000, 0xfffff) = 0xfffff; (0xfffff - 2) & ~1 = 0xffffc
    assert d.alloc_iova(2, 0xFFFFF) == 0xFFFFC
    # 3 pages: align mask ~3; the search restarts at cached32 (0xffffc): (0xffffc - 3) & ~3 = 0xffff8
    assert d.alloc_iova(3, 0xFFFFF) == 0xFFFF8
    assert d.node_hi(0xFFFF8) == 0xFFFFA  # the node keeps exactly 3 pages
    assert d.cached32_node == 0xFFFF8
    validate_domain(d)


def test_above_4g_uses_cached_node() -> None:
    """A 64-bit limit starts at cached_node (the anchor) and leaves cached32_node alone."""
    d = IovaDomain()
    lo = d.alloc_iova(1, (1 << 36) - 1)
    assert lo == (1 << 36) - 1
    assert d.cached_node == lo and d.cached32_node == IOVA_ANCHOR


def test_fast_fail_and_reset_by_free_below_4g() -> None:
    """A failed 32-bit search records max32_alloc_size; same-size requests then fail without searching."""
    d = IovaDomain(start_pfn=1)
    got = [d.alloc_iova(1, 0xF) for _ in range(15)]
    assert got == list(range(0xF, 0, -1))
    assert d.alloc_iova(1, 0xF) is None
    assert d.max32_alloc_size == 1
    # Freeing below 4 GiB resets max32_alloc_size to dma_32bit_pfn.
    assert d.free_iova(0x8) == FREE_OK
    assert d.max32_alloc_size == d.dma_32bit_pfn
    assert d.alloc_iova(1, 0xF) == 0x8


def test_second_pass_from_iova_find_limit() -> None:
    """cached32 low with space only above it: the first pass fails, the retry over [retry_pfn+1, limit] succeeds.

    alloc(limit 0xf) = 0xf; alloc(limit 0x7) = 0x7 (search from cached32 0xf: high = min(0x8, 0xf)); six more at
    limit 0x7 fill 0x6..0x1, so cached32 = 0x1. alloc(limit 0xf): from 0x1, high = 1, new = 0 < low → fail;
    retry_pfn = 1 < 0x10: second pass from iova_find_limit(0x10) = the anchor, low = 2: 0xf is taken, next hole 0xe.
    """
    for second, expect in (("find_limit", 0xE), ("anchor", 0xE), ("none", None)):
        d = IovaDomain(second_pass=second)
        assert d.alloc_iova(1, 0xF) == 0xF
        assert d.alloc_iova(1, 0x7) == 0x7
        assert [d.alloc_iova(1, 0x7) for _ in range(6)] == [6, 5, 4, 3, 2, 1]
        assert d.alloc_iova(1, 0xF) == expect
        if expect is None:
            assert d.max32_alloc_size == 1  # ≤5.10: no retry, the failure is recorded


def test_iova_find_limit_straddling_node() -> None:
    d = IovaDomain()
    d.reserve_iova(0x10, 0x30)
    d.reserve_iova(0x40, 0x50)
    assert d.iova_find_limit(0x20) == 0x10  # [0x10, 0x30] straddles the limit
    assert d.iova_find_limit(0x35) == 0x40
    assert d.iova_find_limit(d.dma_32bit_pfn + 1) == IOVA_ANCHOR


def test_delete_update_moves_cached_nodes() -> None:
    """Freeing the cached32 node moves it to its successor; freeing below it leaves it."""
    d = IovaDomain()
    a = d.alloc_iova(1, 0xFFFFF)
    b = d.alloc_iova(1, 0xFFFFF)
    c = d.alloc_iova(1, 0xFFFFF)
    assert (a, b, c) == (0xFFFFF, 0xFFFFE, 0xFFFFD) and d.cached32_node == c
    d.free_iova(b)  # b.lo >= cached32.lo? 0xffffe >= 0xffffd → cached32 = successor(b) = a
    assert d.cached32_node == a
    assert d.alloc_iova(1, 0xFFFFF) == 0xFFFFE  # the hole is found again at once


def test_reserve_merges_and_widens() -> None:
    """reserve_iova widens an overlapping node downward and inserts only the uncovered rest."""
    d = IovaDomain()
    assert d.reserve_iova(0x10, 0x1F) == (0x10, 0x1F)
    assert d.reserve_iova(0x18, 0x2F) == (0x20, 0x2F)  # overlap: continue above 0x1f
    assert d.reserve_iova(0x8, 0x12) == (0x8, 0x1F)  # fully covered after widening
    assert list(d.iter_nodes()) == [(0x8, 0x1F), (0x20, 0x2F)]
    assert d.reserve_iova(1 << 60, 1 << 60) is None  # beyond ULLONG_MAX >> shift: WARN, nothing reserved
    validate_domain(d)


def test_free_status_codes() -> None:
    d = IovaDomain()
    lo = d.alloc_iova(4, 0xFFFFF)
    assert d.free_iova(lo + 1) == FREE_INTERIOR  # the kernel frees the node containing pfn anyway
    assert d.free_iova(lo) == FREE_UNKNOWN
    assert d.was_released(lo)


@pytest.mark.parametrize("granule", [0, 3, 6000])
def test_bad_granule(granule: int) -> None:
    with pytest.raises(ValueError):
        IovaDomain(granule=granule)


def test_put_iova_domain_reports_live_ranges() -> None:
    d = IovaDomain()
    d.reserve_iova(0x100, 0x1FF)
    lo = d.alloc_iova(2, 0xFFFFF)
    assert d.put_iova_domain() == [(lo, lo + 1)]  # reserved ranges never count as leaked
    assert len(d) == 0 and d.cached32_node == IOVA_ANCHOR
