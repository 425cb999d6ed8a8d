"""The rcache and depot per profile, and the validators run after every replayed event of real traces."""

from __future__ import annotations

import pytest

from iovatrace.replay.commands import replay_trace
from iovatrace.replay.profiles import profile_for, with_overrides
from iovatrace.replay.rcache import FROM_FLUSH, HIT_DEPOT, HIT_LOADED, HIT_PREV, RcacheDomain
from iovatrace.replay.validate import validate_domain

LIMIT = 0xFFFFF


def _dom(kernel: str, mag: int = 4, depot: int = 2) -> RcacheDomain:
    p = profile_for(kernel)
    p = with_overrides(p, mag_size=mag, max_global_mags=depot if not p.list_depot else 0)
    d = RcacheDomain(p, 2)
    d.ops = []
    return d


def _fill(d: RcacheDomain, n: int, cpu: int = 0) -> list[int]:
    pfns = [d.alloc_iova_fast(cpu, 1, LIMIT) for _ in range(n)]
    for p in pfns:
        d.free_iova_fast(cpu, p, 1)
    return pfns


def test_magazine_sizes_by_profile() -> None:
    assert profile_for("5.15").mag_size == 128
    assert profile_for("6.1").mag_size == 127 and profile_for("6.1").depot_kind == "array"
    assert profile_for("6.12.107+deb13-amd64").depot_kind == "list"
    assert profile_for("6.6").max_global_mags == 32


def test_loaded_prev_depot_order() -> None:
    """free: loaded fills, swaps with prev, then loaded goes to the depot; get: loaded, prev, depot."""
    d = _dom("6.12")
    # f1-f4 fill loaded A; f5 swaps (loaded B, prev A); f6-f8 fill B; f9 finds both full: B goes to the depot
    # and f9 lands in a new magazine C.
    pfns = _fill(d, 9)
    assert d.depot_sizes()[0] == 1
    validate_domain(d)
    got = []
    sources = []
    for _ in range(9):
        got.append(d.alloc_iova_fast(0, 1, LIMIT))
        sources.append(d.last_source)
    assert sorted(got) == sorted(pfns)
    # C (f9), then A via the swap (f4..f1), then B from the depot (f8..f5)
    assert sources == [HIT_LOADED] + [HIT_PREV] + [HIT_LOADED] * 3 + [HIT_DEPOT] + [HIT_LOADED] * 3
    assert got == [pfns[8], *pfns[3::-1], *pfns[7:3:-1]]
    assert d.alloc_iova_fast(0, 1, LIMIT) not in pfns  # all cached pfns used: back to the tree


def test_array_depot_overflow_returns_pfns_to_tree() -> None:
    """≤6.6: with the depot full (2 here) the full loaded magazine's pfns go back to the tree (free_pfns)."""
    d = _dom("6.1")
    _fill(d, 17)  # loaded+prev hold 8; pushes at f9 and f13 fill the depot; the push at f17 overflows
    sizes = [op[3] for op in d.ops if op[0] == "free_pfns"]
    assert sizes == [4]
    assert d.depot_sizes()[0] == 2
    validate_domain(d)


def test_list_depot_grows_and_trims_to_online_cpus() -> None:
    d = _dom("6.12")
    _fill(d, 21)  # pushes at f9, f13, f17, f21: a depot of 4, work scheduled 100 ms after the first push
    assert d.depot_sizes()[0] == 4
    assert d.rcaches is not None and d.rcaches[0].work_due == 100_000_000
    d.online = {0, 1}
    trimmed = [d.iova_depot_work_func(0, 0) for _ in range(4)]
    assert [m is not None for m in trimmed] == [True, True, False, False]  # down to num_online_cpus = 2
    assert d.depot_sizes()[0] == 2
    validate_domain(d)


@pytest.mark.parametrize("kernel,first", [("6.1", "oldest"), ("6.12", "newest")])
def test_free_global_cached_iovas_order(kernel: str, first: str) -> None:
    """≤6.6 frees depot[0..n-1] (oldest first); ≥6.7 pops the list head (newest first)."""
    d = _dom(kernel, depot=8)
    _fill(d, 4 * 5 + 1)
    assert d.rcaches is not None
    depot = list(d.rcaches[0].depot)
    d.ops.clear()
    d.free_global_cached_iovas()
    order = [op[2] for op in d.ops if op[0] == "free_pfns"]
    assert order == (depot if first == "oldest" else depot[::-1])
    assert d.depot_sizes()[0] == 0
    validate_domain(d)


def test_flush_and_retry_on_exhaustion() -> None:
    """alloc_iova_fast fails in the tree, flushes every online CPU's rcache and the depot, and retries once."""
    d = _dom("6.12")
    small = 0x1F
    got = [d.alloc_iova_fast(1, 1, small) for _ in range(31)]
    assert 0 not in got
    for p in got[:4]:
        d.free_iova_fast(1, p, 1)  # cached on CPU 1; the tree is still full
    assert d.alloc_iova_fast(0, 2, small, flush_rcache=False) == 0
    pfn = d.alloc_iova_fast(0, 2, small, flush_rcache=True)
    assert pfn and d.last_source == FROM_FLUSH
    assert not d.cached_pfns
    validate_domain(d)


def test_cpu_hot_unplug_flushes_only_that_cpu() -> None:
    d = _dom("6.1")
    a = _fill(d, 3, cpu=0)
    b = _fill(d, 3, cpu=1)
    d.iova_cpuhp_dead(1)
    assert set(a) <= d.cached_pfns and not set(b) & d.cached_pfns
    assert all(d.find_iova(p) is None for p in b)


def test_free_iova_rcaches_frees_without_returning_pfns() -> None:
    d = _dom("6.12")
    _fill(d, 4 * 4)
    n_mags = sum(1 for _ in d.iter_magazines())
    d.ops.clear()
    alive = d.put_iova_domain()
    assert alive == []  # every allocated range was cached
    assert sum(1 for op in d.ops if op[0] == "mag_free") == n_mags
    assert not [op for op in d.ops if op[0] == "free_pfns"]


@pytest.mark.parametrize("name,every", [("boot_strict", 1), ("boot_strict-6.12", 1), ("lazy_v7-6.12", 97),
                                        ("strict_v7", 97)])
def test_validators_on_real_traces(shared_data, name: str, every: int) -> None:
    """Every invariant holds after every event of the boot traces, and every 97th of the workload traces
    (whose learned domains hold ~10^4 nodes: a full check per event would take minutes)."""
    res = replay_trace(str(shared_data / "traces-lab" / name / "trace.dat"), extensions=False, check_every=every)
    assert res.events > 0 and res.fidelity.predicted > 0
