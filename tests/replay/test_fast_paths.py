"""The replay's fast paths against their plain counterparts.

* ``RcacheDomain.take_predicted_top`` (commit of a predicted loaded-magazine top) vs ``alloc_iova_fast``;
* ``UnmapTracker.indexed`` (per-pfn count of ring indexes, which lets ``realloc`` stop early) vs a recount, and
  ``realloc`` vs a scan of every ring;
* ``ReplayDriver._run_plain`` (no deadline compare once none is pending) vs the general loop of ``run``, on a lab
  trace with deadlines (ring-buffer losses, ``--at``) and without.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace.replay.gaps import UnmapTracker
from iovatrace.replay.profiles import profile_for, with_overrides
from iovatrace.replay.rcache import RcacheDomain

LIMIT = 0xFFFFF


def _layout(d: RcacheDomain) -> list[list[int]]:
    return [list(m.pfns) for _w, _b, _c, m in d.iter_magazines()]


def _index(d: RcacheDomain) -> dict[int, int]:
    """The pfn→magazine index, magazines named by their place in iter_magazines()."""
    where = {id(m): i for i, (_w, _b, _c, m) in enumerate(d.iter_magazines())}
    return {pfn: where[id(m)] for pfn, m in d._mag_of.items()}


ops = st.lists(st.tuples(st.sampled_from(["alloc", "alloc", "free", "free", "flush"]), st.integers(0, 1),
                         st.sampled_from([1, 2, 3, 4, 8]), st.integers(0, 10**6)), max_size=150)


@settings(max_examples=80, deadline=None)
@given(kernel=st.sampled_from(["6.1", "6.12"]), steps=ops, low_limit=st.booleans())
def test_take_predicted_top_equals_alloc_iova_fast(kernel: str, steps: list[tuple[str, int, int, int]],
                                                   low_limit: bool) -> None:
    p = with_overrides(profile_for(kernel), mag_size=3)
    d = RcacheDomain(p, 2)
    ref = RcacheDomain(p, 2)
    live: list[tuple[int, int]] = []
    for op, cpu, size, pick in steps:
        if op == "alloc":
            limit = LIMIT if not low_limit or pick % 2 else 0x400 + pick % 0x400
            pred, _src = d.predict_alloc_iova_fast(cpu, size, limit)
            top = d.predicted_top
            expected = ref.alloc_iova_fast(cpu, size, limit)
            if top is not None:
                assert pred == expected
                got = d.take_predicted_top(top)
            else:
                got = d.alloc_iova_fast(cpu, size, limit)
            assert got == expected and d.last_source == ref.last_source
            if got:
                live.append((got, size))
        elif op == "free" and live:
            pfn, size = live.pop(pick % len(live))
            d.free_iova_fast(cpu, pfn, size)
            ref.free_iova_fast(cpu, pfn, size)
        elif op == "flush":
            d.free_cpu_cached_iovas(cpu)
            ref.free_cpu_cached_iovas(cpu)
        assert _layout(d) == _layout(ref)
        assert d.cached_pfns == ref.cached_pfns and _index(d) == _index(ref)
        assert list(d._lo) == list(ref._lo)


# ------------------------------------------------------------------------------------------- UnmapTracker.indexed

def _recount(um: UnmapTracker) -> Counter[int]:
    c: Counter[int] = Counter()
    for r in um.rings.values():
        c.update(list(r.index))  # the keys
    return c


def _realloc_scan(um: UnmapTracker, owner: Any, pfn: int) -> int:
    """realloc's answer from a scan of the owner's and the unknown-owner rings (no early exit)."""
    n = 0
    for key, r in list(um.rings.items()):
        if key[0] is owner or key[0] is None:
            e = r.index.get(pfn)
            if e is not None and e.open:
                n += 1
    return n


tracker_ops = st.lists(st.tuples(
    st.sampled_from(["announce", "unmap", "unmap", "free", "free", "alloc", "realloc", "attribute", "older",
                     "unknown_open", "forget"]),
    st.integers(0, 1), st.integers(0, 2), st.integers(0, 7)), max_size=120)


@settings(max_examples=150, deadline=None)
@given(steps=tracker_ops, ring_limit=st.sampled_from([3, 4096]))
def test_indexed_counts_and_realloc_match_a_scan(steps: list[tuple[str, int, int, int]], ring_limit: int) -> None:
    import iovatrace.replay.gaps as gaps

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gaps, "RING_LIMIT", ring_limit)
        mp.setattr(gaps, "STRICT_MIN", 1)
        plain = _tracker_steps(steps, False)
        assert _tracker_steps(steps, True) == plain  # unmap_event, the driver's route, does what unmap() does


class _Ev:
    """An iommu:unmap event as UnmapTracker.unmap_event reads it."""

    def __init__(self, cpu: int, pfn: int, pages: int, ts: int) -> None:
        self.cpu = cpu
        self.ts_ns = ts
        self.fields = {"iova": pfn << 12, "size": pages * 4096 - 5}


def _state(um: UnmapTracker) -> Any:
    def entry(e: Any) -> Any:
        return None if e is None else (e.pfn, e.pages, e.owner, e.ts, e.open, e.seq)
    rings = {k: ([entry(e) for e in r.q], {p: entry(e) for p, e in r.index.items()}, r.seq)
             for k, r in um.rings.items()}
    return (rings, dict(um.indexed), {c: entry(e) for c, e in um.last_unmap.items()}, dict(um.next_owner),
            dict(um.strict_evidence), set(um.lazy))


def _tracker_steps(steps: list[tuple[str, int, int, int]], by_event: bool) -> Any:
    owners = ["dom-a", "dom-b", None]
    um = UnmapTracker()
    um.dev_owner.update({"dev-a": "dom-a", "dev-b": "dom-b"})
    ts = 0
    for op, cpu, who, pfn in steps:
        ts += 1
        owner = owners[who]
        if op == "announce":
            um.announce(cpu, ["dev-a", "dev-b", "dev-x"][who])
        elif op == "unmap":
            if by_event:
                um.unmap_event(_Ev(cpu, pfn, 1 + who, ts), ("iova", "size"))
            else:
                um.unmap(cpu, pfn, 1 + who, ts)
        elif op == "free":
            um.free(owner, cpu, pfn, ts)
        elif op == "alloc" and owner is not None:
            list(um.alloc(owner, cpu))
        elif op == "realloc" and owner is not None:
            expected = _realloc_scan(um, owner, pfn)
            assert um.realloc(owner, pfn) == expected
        elif op == "attribute":
            um.attribute(cpu, ["dev-a", "dev-b", "dev-x"][who], pfn)
        elif op == "older":
            um.older_unknown(cpu, ts - pfn)
        elif op == "unknown_open":
            um.unknown_open(cpu)
        elif op == "forget" and owner is not None:
            um.forget(owner)
            um.dev_owner.update({"dev-a": "dom-a", "dev-b": "dom-b"})
        assert um.indexed == dict(_recount(um))
        assert all(um.unknown_ring[c] is r for (o, c), r in um.rings.items() if o is None)
    return _state(um)


# ------------------------------------------------------------------------------------------- the driver's loop

def _lab_events(shared_data: Path, name: str) -> tuple[Any, list[Any], set[str], int]:
    from iovatrace.parsers import open_trace
    from iovatrace.replay.commands import open_event_stream
    from iovatrace.replay.driver import ReplayDriver
    from iovatrace.replay.profiles import detect_profile

    path = shared_data / "traces-lab" / name / "trace.dat"
    if not path.exists():
        pytest.skip(f"{path} not found")
    tr = open_trace(path)
    available = {k for k, n in tr.event_counts().items() if n}
    profile, _ = detect_profile(tr.meta.kernel_release, available)
    ncpus = tr.meta.cpus or 1
    wanted = sorted(ReplayDriver(profile, ncpus, available=available).wanted_events() & available)
    return profile, list(open_event_stream(tr, wanted)[0]), available, ncpus


def _result(profile: Any, ncpus: int, available: set[str], events: Any, general: bool, **kw: Any) -> str:
    from iovatrace.replay.driver import ReplayDriver
    from iovatrace.replay.summary import result_to_dict

    drv = ReplayDriver(profile, ncpus, available=available, **kw)
    # A progress callback sends run() through its general loop, which compares every event with the deadline.
    res = drv.run(events, progress=(lambda n: None) if general else None)
    return json.dumps(result_to_dict(res), sort_keys=True, default=str)


@pytest.mark.parametrize("name", ["lazy_v7-6.12", "strict_v7"])
def test_plain_loop_equals_general_loop(shared_data: Path, name: str) -> None:
    profile, events, available, ncpus = _lab_events(shared_data, name)
    first, last = events[0].ts_ns, events[-1].ts_ns
    span = last - first
    losses = [(first + span // 3, 0, 5), (first + span // 2, 1, -1)]
    for kw in ({}, {"lost_events": losses}, {"at_ns": first + span // 4},
               {"lost_events": losses, "at_ns": first + 2 * span // 3}):
        expected = _result(profile, ncpus, available, events, True, **kw)
        assert _result(profile, ncpus, available, events, False, **kw) == expected, kw
        assert _result(profile, ncpus, available, iter(events), False, **kw) == expected, kw


# ------------------------------------------------------------------------------------------- the walk's numpy copy

_TREE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.sampled_from([1, 1, 1, 2, 3, 4, 8, 16, 33]),
                  st.sampled_from([0x3ff, 0x7ff, 0xfffff, 0xffffffff]), st.booleans()),
        st.tuples(st.just("free"), st.integers(0, 10_000), st.just(0), st.just(False)),
        st.tuples(st.just("reserve"), st.integers(0, 0x7ff), st.integers(0, 8), st.just(False)),
        st.tuples(st.just("put"), st.just(0), st.just(0), st.just(False)),
    ),
    min_size=50, max_size=500,
)


def _tree_run(ops: list[tuple[str, int, int, bool]], py_steps: int, mirror_after: int, check: bool) -> Any:
    import iovatrace.replay.iova as iova_mod
    from iovatrace.replay.iova import IovaDomain

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(iova_mod, "_PY_STEPS", py_steps)
        mp.setattr(iova_mod, "_MIRROR_AFTER", mirror_after)
        mp.setattr(iova_mod, "_MIRROR_LOG", 40)  # dropped and rebuilt now and then, too
        dom = IovaDomain(4096, 1)
        results: list[Any] = []
        live: list[int] = []
        for kind, a, b, aligned in ops:
            if kind == "alloc":
                pfn = dom.alloc_iova(a, b, aligned)
                results.append(pfn)
                if pfn is not None:
                    live.append(pfn)
            elif kind == "free" and live:
                dom.free_iova(live.pop(a % len(live)))
            elif kind == "reserve":
                results.append(dom.reserve_iova(a, a + b))
            elif kind == "put":
                dom.put_iova_domain()
                live.clear()
            if check and dom._mirror is not None:
                nodes = dom._nodes_np()
                assert nodes is not None
                assert list(zip(nodes[0].tolist(), nodes[1].tolist())) == list(dom.iter_nodes())
        return results, list(dom.iter_nodes())


@settings(max_examples=60, deadline=None)
@given(ops=_TREE_OPS)
def test_walk_over_numpy_copy_equals_python_walk(ops: list[tuple[str, int, int, bool]]) -> None:
    expected = _tree_run(ops, 10**9, 10**9, False)  # the plain Python walk
    assert _tree_run(ops, 0, 0, True) == expected  # every numpy scan over the (updated) copy
    assert _tree_run(ops, 0, 10**9, False) == expected  # chunk by chunk, never the copy
