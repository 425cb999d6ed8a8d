"""VT-d queued invalidation ring (replay/vtd_qi.py): accounting, the two reclaim versions, a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace.errors import ModelError
from iovatrace.replay.vtd_qi import QiRing, QiStatus


def test_submit_fills_count_plus_wait_and_hardware_marks_only_the_wait_done() -> None:
    r = QiRing("dmar0", reclaim_fixed=True)
    r.qi_submit_sync(0, 2, 10)
    assert r.desc_status[:4] == [QiStatus.QI_IN_USE, QiStatus.QI_IN_USE, QiStatus.QI_DONE, QiStatus.QI_FREE]
    assert (r.free_head, r.free_tail, r.free_cnt) == (3, 0, 253)
    assert r.qi_submit_sync_return(0, 20) == []
    assert (r.free_head, r.free_tail, r.free_cnt) == (3, 3, 256)
    r.validate_qi()


def test_old_reclaim_walks_done_slots_and_leaves_in_use_ones() -> None:
    r = QiRing("dmar0", reclaim_fixed=False)
    r.qi_submit_sync(0, 1, 1)  # slots 0 (inv), 1 (wait)
    r.qi_submit_sync(1, 3, 2)  # slots 2,3,4 (inv), 5 (wait)
    assert r.qi_submit_sync_return(0, 3) == []
    # T1 marked slot 0 DONE and reclaimed 0..1; T2's IN_USE slot 2 stopped the walk
    assert r.free_tail == 2 and r.desc_status[5] is QiStatus.QI_DONE
    assert r.qi_submit_sync_return(1, 4) == []
    assert r.free_tail == 6 and r.free_cnt == 256
    r.validate_qi()


def test_return_for_an_unknown_submission_is_counted_not_fatal() -> None:
    r = QiRing("dmar0", reclaim_fixed=True)
    assert r.qi_submit_sync_return(3, 1) == []
    assert r.stats.unmatched_returns == 1


def test_model_errors_are_located() -> None:
    r = QiRing("dmar0", reclaim_fixed=True)
    r.qi_submit_sync(0, 0, 1)
    with pytest.raises(ModelError, match="CPU 0 while its previous call"):
        r.qi_submit_sync(0, 0, 2)
    with pytest.raises(ModelError, match="count=300"):
        r.qi_submit_sync(1, 300, 2)


def test_ring_space_wait_when_owners_have_not_polled() -> None:
    r = QiRing("dmar0", reclaim_fixed=True, length=8)
    r.qi_submit_sync(0, 4, 1)  # 5 slots, free_cnt 3
    r.qi_submit_sync(1, 2, 2)  # needs 4: waits for space
    assert r.stats.space_waits == 1 and r.inflight[1].state == "space"
    r.qi_submit_sync_return(0, 3)
    assert r.qi_submit_sync_return(1, 4) == []
    assert r.free_cnt == 8


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans()), max_size=120))
def test_property_fixed_reclaim_never_strands_a_waiter(ops) -> None:
    """After 3cf74230c139 any interleaving of submissions (count 0..3) and polls on 4 CPUs completes every
    submission, keeps the ring accounting, and never reports a lockup."""
    r = QiRing("dmar0", reclaim_fixed=True, length=32)
    t = 0
    for cpu, count, poll in ops:
        t += 1
        if poll or cpu in r.inflight:
            if cpu in r.inflight:
                sub = r.inflight[cpu]
                if sub.state == "space" and r.free_cnt < sub.count + 2:
                    continue
                assert r.qi_submit_sync_return(cpu, t) == []
        else:
            r.qi_submit_sync(cpu, count, t)
        r.validate_qi()
    for cpu in sorted(r.inflight):
        if r.inflight.get(cpu) is not None and r.inflight[cpu].state == "waiting":
            assert r.qi_submit_sync_return(cpu, t + 1) == []
    assert r.stats.lockups == 0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans()), max_size=120))
def test_property_old_reclaim_strands_only_zero_count_waiters(ops) -> None:
    """Before the fix a lockup needs a count == 0 waiter (model_spec §5.3): never a waiter with descriptors."""
    r = QiRing("dmar0", reclaim_fixed=False, length=32)
    t = 0
    for cpu, count, poll in ops:
        t += 1
        if cpu in r.stuck:
            continue
        if poll or cpu in r.inflight:
            sub = r.inflight.get(cpu)
            if sub is None or (sub.state == "space" and r.free_cnt < sub.count + 2):
                continue
            for f in r.qi_submit_sync_return(cpu, t):
                assert f.kind == "qi_reclaim_lockup" and f.details["victim_count"] == 0
                assert f.details["reclaimer_cpu"] != f.details["victim_cpu"]
        else:
            r.qi_submit_sync(cpu, count, t)
