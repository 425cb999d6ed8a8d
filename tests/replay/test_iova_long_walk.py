"""The numpy long-walk shortcut of the allocator picks exactly what the plain Python walk picks.

``IovaDomain._walk`` steps through nodes in Python and, past ``_PY_STEPS`` nodes, evaluates the kernel's stop rule
over chunks of nodes in numpy (``_scan_down``). Here the same random operation sequence runs on two domains: one with
the shortcut taken at once (``_PY_STEPS = 0``) and one that never takes it; every allocation result and the final
trees must be identical. Small limits keep the trees dense so that second passes and exhaustion happen.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace.replay import iova as iova_mod
from iovatrace.replay.iova import IovaDomain

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.sampled_from([1, 1, 1, 2, 3, 4, 8, 16, 33]),
                  st.sampled_from([0x3ff, 0x7ff, 0xfffff, 0xffffffff]), st.booleans()),
        st.tuples(st.just("free"), st.integers(0, 10_000), st.just(0), st.just(False)),
    ),
    min_size=50, max_size=600,
)


def _run(ops: list[tuple[str, int, int, bool]], py_steps: int) -> tuple[list[int | None], list]:
    saved = iova_mod._PY_STEPS
    iova_mod._PY_STEPS = py_steps
    try:
        return _apply(ops)
    finally:
        iova_mod._PY_STEPS = saved


def _apply(ops: list[tuple[str, int, int, bool]]) -> tuple[list[int | None], list]:
    dom = IovaDomain(4096, 1)
    results: list[int | None] = []
    live: list[int] = []
    for kind, a, limit, aligned in ops:
        if kind == "alloc":
            pfn = dom.alloc_iova(a, limit, aligned)
            results.append(pfn)
            if pfn is not None:
                live.append(pfn)
        elif live:
            pfn = live.pop(a % len(live))
            dom.free_iova(pfn)
    return results, list(dom.iter_nodes())


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_numpy_walk_equals_python_walk(ops) -> None:
    fast = _run(ops, 0)
    slow = _run(ops, 10**9)
    assert fast == slow


def test_long_walks_happen(monkeypatch) -> None:
    """The property above is only meaningful if walks longer than a few nodes occur: a dense 1 K-page window."""
    ops = [("alloc", 1, 0x3ff, True)] * 900 + [("free", i * 7, 0, False) for i in range(300)] + \
          [("alloc", 4, 0x3ff, True)] * 200
    calls = []
    orig = IovaDomain._scan_down

    def spy(self, *args):
        calls.append(args)
        return orig(self, *args)

    monkeypatch.setattr(IovaDomain, "_scan_down", spy)
    fast = _run(ops, 0)
    monkeypatch.setattr(IovaDomain, "_scan_down", orig)
    slow = _run(ops, 10**9)
    assert calls, "the numpy path was never taken"
    assert fast == slow
    assert any(p is None for p in fast[0]), "the window never ran out, so no failing second pass was compared"
