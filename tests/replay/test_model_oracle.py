"""Hypothesis state machine: the IOVA/rcache model against a dict-based oracle, for each depot profile.

The oracle knows only what a caller of alloc_iova_fast/free_iova_fast can know: which ranges it holds. It checks
that every allocation is size-aligned, inside [start_pfn, limit], disjoint from every live allocation and reserved
range; that the tree holds exactly live + cached + reserved ranges; that cached pfns come back only in their bin;
and the magazine's LIFO rule (a free immediately followed by an allocation of the same bin on the same CPU gets the
same pfn back). The validators run after every step. Small magazines (4 pfns, depot of 2) reach the depot, the ≤6.6
overflow and the ≥6.7 trim within a few dozen steps.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from iovatrace.replay.iova import order_base_2, roundup_pow_of_two
from iovatrace.replay.profiles import profile_for, with_overrides
from iovatrace.replay.rcache import RcacheDomain
from iovatrace.replay.validate import validate_domain

DMA32 = (1 << 20) - 1  # inclusive 32-bit limit in 4 KiB pfns
SMALL_SPACE = 0x3FF  # a tiny 32-bit-like window to exercise exhaustion, fast-fail and the second pass


def _machine(kernel: str):
    base = profile_for(kernel)
    profile = with_overrides(base, mag_size=4, max_global_mags=2 if not base.list_depot else 0)

    class Model(RuleBasedStateMachine):
        @initialize(reserve=st.booleans())
        def setup(self, reserve: bool) -> None:
            self.dom = RcacheDomain(profile, ncpus=2, iovad=0xFFFF888000001000)
            self.live: dict[int, int] = {}  # pfn -> rounded size held by the caller
            self.reserved: dict[int, int] = {}
            self.last_free: dict[tuple[int, int], int] = {}  # (cpu, bin) -> pfn freed by the previous op
            if reserve:
                self.dom.reserve_iova(0x300, 0x33F)
                self.reserved[0x300] = 0x40
            self.now = 0

        def _tick(self) -> None:
            self.now += 7_000_000
            self.dom.now = self.now

        @rule(cpu=st.integers(0, 1), size=st.sampled_from([1, 2, 3, 4, 8, 16, 32, 33, 40]),
              small=st.booleans(), flush=st.booleans())
        def alloc(self, cpu: int, size: int, small: bool, flush: bool) -> None:
            self._tick()
            limit = SMALL_SPACE if small else DMA32
            rsize = roundup_pow_of_two(size) if size < 32 else size
            bin_ = order_base_2(rsize)
            expect = self.last_free.get((cpu, bin_))
            before_cached = set(self.dom.cached_pfns)
            pred, _src = self.dom.predict_alloc_iova_fast(cpu, size, limit)
            pfn = self.dom.alloc_iova_fast(cpu, size, limit, flush)
            self.last_free.clear()
            if pred:
                assert pfn == pred, "predict_alloc_iova_fast disagrees with alloc_iova_fast"
            if pfn == 0:
                return
            assert pfn >= self.dom.start_pfn and pfn + rsize - 1 <= limit
            assert pfn % roundup_pow_of_two(rsize) == 0, "start not size-aligned"
            for lo, n in [*self.live.items(), *self.reserved.items()]:
                assert pfn + rsize - 1 < lo or pfn > lo + n - 1, f"{pfn:#x}+{rsize} overlaps {lo:#x}+{n}"
            if pfn in before_cached:
                assert self.dom.node_hi(pfn) == pfn + rsize - 1, "cached pfn returned for another bin"
            if expect is not None and expect + rsize - 1 <= limit:
                assert pfn == expect, "magazine is not LIFO"
            self.live[pfn] = rsize

        @precondition(lambda self: self.live)
        @rule(cpu=st.integers(0, 1), data=st.data())
        def free(self, cpu: int, data) -> None:
            self._tick()
            pfn = data.draw(st.sampled_from(sorted(self.live)))
            rsize = self.live.pop(pfn)
            self.dom.free_iova_fast(cpu, pfn, rsize)
            self.last_free.clear()
            if order_base_2(rsize) < 6:
                self.last_free[(cpu, order_base_2(rsize))] = pfn
                assert self.dom.is_cached(pfn)
            else:
                assert self.dom.find_iova(pfn) is None

        @precondition(lambda self: self.live)
        @rule(cpu=st.integers(0, 1), data=st.data())
        def free_then_alloc(self, cpu: int, data) -> None:
            """A free followed at once by an allocation of the same bin on the same CPU: LIFO."""
            self.free(cpu, data)
            if self.last_free:
                (_, bin_), pfn = next(iter(self.last_free.items()))
                self.alloc(cpu, 1 << bin_, False, True)

        @rule(cpu=st.integers(0, 1))
        def flush_cpu(self, cpu: int) -> None:
            self.dom.free_cpu_cached_iovas(cpu)
            self.last_free.clear()

        @rule()
        def flush_global(self) -> None:
            self.dom.free_global_cached_iovas()
            self.last_free.clear()

        @precondition(lambda self: profile.list_depot)
        @rule(bin_=st.integers(0, 5), online=st.integers(0, 2))
        def depot_work(self, bin_: int, online: int) -> None:
            self.dom.online = set(range(online))
            before = self.dom.depot_sizes()[bin_]
            self.dom.iova_depot_work_func(bin_, 0)
            after = self.dom.depot_sizes()[bin_]
            assert after == (before - 1 if before > online else before)
            self.dom.online = {0, 1}
            self.last_free.clear()

        @invariant()
        def tree_is_live_plus_cached(self) -> None:
            validate_domain(self.dom)
            nodes = dict(self.dom.iter_nodes())
            expected = set(self.live) | set(self.dom.cached_pfns) | set(self.reserved)
            assert set(nodes) == expected
            for pfn, n in self.live.items():
                assert nodes[pfn] == pfn + n - 1
            assert not (set(self.live) & self.dom.cached_pfns)

    Model.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
    return Model


@pytest.mark.parametrize("kernel", ["5.15", "6.1", "6.12"])
def test_model_against_oracle(kernel: str) -> None:
    _machine(kernel).TestCase("runTest").runTest()
