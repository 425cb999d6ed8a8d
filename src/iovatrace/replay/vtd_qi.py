"""VT-d queued invalidation: the descriptor ring of one IOMMU and ``qi_submit_sync`` (drivers/iommu/intel/dmar.c).

Theory of operation
-------------------
The invalidation queue is a ring of ``QI_LENGTH`` (256) descriptors with a status word per slot
(``desc_status[]``: QI_FREE, QI_IN_USE, QI_DONE, QI_ABORT), ``free_head`` (next slot to fill), ``free_tail``
(oldest slot not yet reclaimed) and ``free_cnt``. ``qi_submit_sync(iommu, desc, count, options)``:

1. under ``q_lock``, waits for ``free_cnt >= count + 2`` (the descriptors, a wait descriptor, one gap slot);
2. writes ``count`` descriptors (IN_USE) and a wait descriptor at ``wait_index = head + count`` (IN_USE), moves
   ``free_head`` by ``count + 1`` and rings the doorbell;
3. spins, dropping the lock between polls with **interrupts still off**, until the hardware has written QI_DONE
   into ``desc_status[wait_index]``;
4. marks its slots and reclaims. This step differs by version (model_spec §5.3):

   * before 3cf74230c139 (≤ v6.11; bug mode (d), ``D_qi_reclaim_done``): the owner marks its ``count``
     invalidation slots QI_DONE and reclaim frees every slot from ``free_tail`` on that is QI_DONE or QI_ABORT.
     QI_DONE then means both "reclaimable" and "the hardware finished my wait": a submitter with ``count == 0``
     has no IN_USE slot in front of its wait slot, so another submitter's reclaim can walk into that wait slot
     and set it QI_FREE before its owner looked. The owner never sees QI_DONE and spins forever with IRQs off
     (``watchdog: BUG: soft lockup`` in ``qi_submit_sync``; CVE-2024-49993).
   * after 3cf74230c139 ("iommu/vt-d: Fix potential lockup if qi_submit_sync called with 0 count", v6.12): the
     owner sets its ``count + 1`` slots to QI_FREE itself, and reclaim advances only over QI_FREE slots while
     ``free_tail != free_head``. Only the owner ever turns its wait slot from DONE to FREE.

The hardware is modelled as completing every submitted descriptor, in ring order, as soon as the doorbell rings
(it is far faster than a poll loop that drops and retakes a spinlock); each waiter observes completion at its next
poll. The driver feeds submissions and returns in trace order (:meth:`QiRing.qi_submit_sync` at the
``qi_submit_sync`` kprobe, :meth:`QiRing.qi_submit_sync_return` at its return probe), so the interleaving of
waiters is the trace's. A wait slot freed by someone other than its owner is the ``qi_reclaim_lockup`` finding,
raised when it happens, with the two submissions as evidence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import ModelError
from .findings import Certainty, Finding, Severity

__all__ = ["QiStatus", "QiSubmission", "QiStats", "QiRing"]

EventKey = tuple[int, int, int]


class QiStatus(enum.IntEnum):
    """``desc_status`` values (drivers/iommu/intel/iommu.h). The v1 patch's QI_TO_BE_FREED never merged."""

    QI_FREE = 0
    QI_IN_USE = 1
    QI_DONE = 2
    QI_ABORT = 3


@dataclass(slots=True)
class QiSubmission:
    """One ``qi_submit_sync`` call in flight.

    Attributes:
        cpu: submitting CPU (one call per CPU at a time: it spins with IRQs off).
        count: invalidation descriptors (without the wait descriptor).
        index: first slot.
        wait_index: slot of its wait descriptor.
        ts_ns: when it was submitted.
        event: key of the submit event.
        state: ``"space"`` (waiting for free_cnt), ``"waiting"`` (for its wait slot), ``"done"``, ``"lockup"``.
    """

    cpu: int
    count: int
    index: int
    wait_index: int
    ts_ns: int
    event: EventKey | None
    state: str = "waiting"


@dataclass(slots=True)
class QiStats:
    """Counters of one ring.

    Attributes:
        submits: completed submissions.
        descriptors: invalidation descriptors submitted (waits excluded).
        zero_count_submits: submissions with ``count == 0`` (pure wait or drain): the ones the old reclaim can strand.
        space_waits: submissions that found ``free_cnt < count + 2``.
        lockups: waiters whose wait slot was reclaimed by another submitter.
        unmatched_returns: return probes with no submission in flight on that CPU (lost entry probe or before trace).
    """

    submits: int = 0
    descriptors: int = 0
    zero_count_submits: int = 0
    space_waits: int = 0
    lockups: int = 0
    unmatched_returns: int = 0


class QiRing:
    """``struct q_inval`` of one IOMMU plus the waiters spinning on it.

    Args:
        iommu: the IOMMU's name (``dmar0``).
        reclaim_fixed: use the post-3cf74230c139 reclaim (``False`` = bug mode (d)).
        length: QI_LENGTH.
    """

    def __init__(self, iommu: str, *, reclaim_fixed: bool, length: int = 256) -> None:
        self.iommu = iommu
        self.reclaim_fixed = reclaim_fixed
        self.length = length
        self.desc_status = [QiStatus.QI_FREE] * length
        self.wait_owner: dict[int, QiSubmission] = {}  # wait slot -> its submission
        self.free_head = 0
        self.free_tail = 0
        self.free_cnt = length
        self.hw_head = 0  # next slot the hardware will fetch
        self.inflight: dict[int, QiSubmission] = {}
        self.stuck: dict[int, QiSubmission] = {}
        self.stats = QiStats()

    # -- submission ---------------------------------------------------------------------------------------

    def qi_submit_sync(self, cpu: int, count: int, ts_ns: int, key: EventKey | None = None) -> list[Finding]:
        """A ``qi_submit_sync(iommu, desc, count, options)`` entry on ``cpu``: fill the ring and ring the doorbell.

        Returns:
            Findings (none today; a submission cannot itself strand anyone).

        Raises:
            ModelError: a second submission on a CPU that is still inside one (impossible with IRQs off).
        """
        if cpu in self.inflight:
            raise ModelError(f"{self.iommu}: qi_submit_sync on CPU {cpu} while its previous call is in flight")
        if count < 0 or count + 2 > self.length:
            raise ModelError(f"{self.iommu}: qi_submit_sync count={count}, expected 0..{self.length - 2}")
        if self.free_cnt < count + 2:
            # the real call spins here until other submitters reclaim; with instant hardware that only happens
            # when slots are stranded (lockup) or owners have not polled yet
            self.stats.space_waits += 1
            sub = QiSubmission(cpu, count, -1, -1, ts_ns, key, state="space")
            self.inflight[cpu] = sub
            return []
        self._fill(cpu, count, ts_ns, key)
        return []

    def _fill(self, cpu: int, count: int, ts_ns: int, key: EventKey | None) -> QiSubmission:
        index = self.free_head
        wait_index = (index + count) % self.length
        for i in range(count + 1):
            self.desc_status[(index + i) % self.length] = QiStatus.QI_IN_USE
        sub = QiSubmission(cpu, count, index, wait_index, ts_ns, key)
        self.wait_owner[wait_index] = sub
        self.inflight[cpu] = sub
        self.free_head = (self.free_head + count + 1) % self.length
        self.free_cnt -= count + 1
        self.stats.descriptors += count
        if count == 0:
            self.stats.zero_count_submits += 1
        self._hardware_run()
        return sub

    def _hardware_run(self) -> None:
        # fetch and execute up to the tail register; a wait descriptor writes QI_DONE into its own status slot
        while self.hw_head != self.free_head:
            if self.hw_head in self.wait_owner:
                self.desc_status[self.hw_head] = QiStatus.QI_DONE
            self.hw_head = (self.hw_head + 1) % self.length

    # -- completion ---------------------------------------------------------------------------------------

    def qi_submit_sync_return(self, cpu: int, ts_ns: int, key: EventKey | None = None) -> list[Finding]:
        """The waiter on ``cpu`` polls its wait slot, sees QI_DONE, marks its slots and reclaims.

        Returns:
            ``qi_reclaim_lockup`` findings for waiters whose wait slot this reclaim freed before they saw it.
        """
        sub = self.inflight.get(cpu)
        if sub is None:
            self.stats.unmatched_returns += 1
            return []
        if sub.state == "space":
            if self.free_cnt < sub.count + 2:
                raise ModelError(f"{self.iommu}: CPU {cpu} returned from qi_submit_sync without ring space")
            del self.inflight[cpu]
            sub = self._fill(cpu, sub.count, sub.ts_ns, sub.event)
        if sub.state == "lockup" or self.desc_status[sub.wait_index] is not QiStatus.QI_DONE:
            # the trace shows it returning although the model has it stranded: the model is wrong
            raise ModelError(f"{self.iommu}: CPU {cpu} returned from qi_submit_sync but its wait slot "
                             f"{sub.wait_index} is {self.desc_status[sub.wait_index].name} in the model")
        del self.inflight[cpu]
        self.wait_owner.pop(sub.wait_index, None)
        sub.state = "done"
        self.stats.submits += 1
        if self.reclaim_fixed:
            for i in range(sub.count + 1):
                self.desc_status[(sub.index + i) % self.length] = QiStatus.QI_FREE
        else:
            for i in range(sub.count):
                self.desc_status[(sub.index + i) % self.length] = QiStatus.QI_DONE
        return self.reclaim_free_desc(ts_ns, sub, key)

    def reclaim_free_desc(self, ts_ns: int, by: QiSubmission, key: EventKey | None) -> list[Finding]:
        """``reclaim_free_desc``: advance ``free_tail`` over reclaimable slots (which ones depends on the version)."""
        out: list[Finding] = []
        st = self.desc_status
        while True:
            t = self.free_tail
            if self.reclaim_fixed:
                if st[t] is not QiStatus.QI_FREE or t == self.free_head:
                    break
            else:
                if st[t] not in (QiStatus.QI_DONE, QiStatus.QI_ABORT):
                    break
                victim = self.wait_owner.get(t)
                if victim is not None and victim.state == "waiting":
                    out.append(self._lockup(ts_ns, victim, by, key))
                st[t] = QiStatus.QI_FREE
            self.free_tail = (t + 1) % self.length
            self.free_cnt += 1
        return out

    def _lockup(self, ts_ns: int, victim: QiSubmission, by: QiSubmission, key: EventKey | None) -> Finding:
        victim.state = "lockup"
        self.wait_owner.pop(victim.wait_index, None)
        self.inflight.pop(victim.cpu, None)
        self.stuck[victim.cpu] = victim
        self.stats.lockups += 1
        evs = tuple(e for e in (victim.event, by.event, key) if e is not None)
        return Finding(
            "qi_reclaim_lockup", Severity.ERROR, ts_ns,
            f"{self.iommu}: CPU {by.cpu}'s reclaim freed wait slot {victim.wait_index} of CPU {victim.cpu} "
            f"(qi_submit_sync count={victim.count}) before it saw QI_DONE; CPU {victim.cpu} spins forever with "
            "IRQs off (soft lockup; fixed by 3cf74230c139, v6.12)",
            domain=None, device=self.iommu, certainty=Certainty.EXACT, events=evs,
            details={"victim_cpu": victim.cpu, "victim_count": victim.count, "wait_index": victim.wait_index,
                     "reclaimer_cpu": by.cpu, "submitted_ns": victim.ts_ns})

    # -- validators ---------------------------------------------------------------------------------------

    def validate_qi(self) -> None:
        """Check ring accounting.

        Raises:
            ModelError: ``free_cnt`` disagrees with head/tail, or a slot between tail and head is FREE (post-fix
                only owners free slots, so a FREE slot inside the used window is allowed only until reclaim).
        """
        used = (self.free_head - self.free_tail) % self.length
        if self.free_cnt == self.length and used == 0:
            return
        if self.free_cnt != self.length - used:
            raise ModelError(f"{self.iommu}: free_cnt {self.free_cnt} but head {self.free_head} tail "
                             f"{self.free_tail} leave {self.length - used} free")
        i = self.free_head
        while i != self.free_tail:
            if self.desc_status[i] is not QiStatus.QI_FREE:
                raise ModelError(f"{self.iommu}: slot {i} outside the used window is {self.desc_status[i].name}")
            i = (i + 1) % self.length
