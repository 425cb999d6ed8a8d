"""Fidelity: how often the model predicted what the kernel did, and the consistency checks behind that figure.

Theory of operation: every ``alloc_iova_fast`` return in a fully observed domain is a prediction the trace can
check (``alloc_iova_fast_ret`` holds the kernel's own pfn). A prediction is *exact* when it matched and nothing the
trace lost could have influenced it, *uncertain* when a known gap could have (whether it matched or not), and
*mismatched* otherwise: an unexplained divergence, i.e. a model bug or an undetected gap. Learned (partially
observed) domains are counted apart and never as exact.

Besides the pfns, independent *checks* compare other model decisions with what the trace shows: an rcache miss
exactly where a nested ``alloc_iova`` appears, each ``iova_magazine_free_pfns``' ``mag_size``, the ``depot_size``
read by ``iova_depot_work_func``, the depot work running where the model scheduled it, and the magazine
allocations and frees (``kmem_cache_*`` of ``iommu_iova_magazine``) in number, order and address.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Check", "Fidelity"]


class Check:
    """One consistency check: agreements, disagreements and the first few disagreements."""

    __slots__ = ("name", "agree", "disagree", "examples")

    def __init__(self, name: str) -> None:
        self.name = name
        self.agree = 0
        self.disagree = 0
        self.examples: list[dict[str, Any]] = []

    def record(self, ok: bool, **example: Any) -> None:
        """Count one comparison; keep up to 10 examples of disagreement."""
        if ok:
            self.agree += 1
        else:
            self.disagree += 1
            if len(self.examples) < 10:
                self.examples.append(example)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"agree": self.agree, "disagree": self.disagree, "examples": self.examples}


class Fidelity:
    """Prediction counters over the whole replay.

    Attributes:
        predicted: alloc_iova_fast results predicted in fully observed domains.
        exact / uncertain / mismatched: their classification (they sum to ``predicted``).
        uncertain_matched: uncertain predictions that matched anyway.
        learned / learned_matched: predictions in partially observed domains.
        checks: consistency checks by name.
        mismatches: the first mismatches, for diagnosis.
    """

    CHECKS = ("rcache_miss", "free_pfns_size", "depot_size_at_work", "depot_work_scheduled", "magazines")

    def __init__(self) -> None:
        self.predicted = 0
        self.exact = 0
        self.uncertain = 0
        self.uncertain_matched = 0
        self.mismatched = 0
        self.learned = 0
        self.learned_matched = 0
        self.checks: dict[str, Check] = {n: Check(n) for n in self.CHECKS}
        self.mismatches: list[dict[str, Any]] = []

    @property
    def exact_rate(self) -> float | None:
        """exact / predicted, or ``None`` when nothing was predicted."""
        return self.exact / self.predicted if self.predicted else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``predicted``, ``exact``, ``uncertain``, ``mismatched`` and the checks)."""
        return {
            "predicted": self.predicted,
            "exact": self.exact,
            "uncertain": self.uncertain,
            "uncertain_matched": self.uncertain_matched,
            "mismatched": self.mismatched,
            "exact_rate": self.exact_rate,
            "learned": self.learned,
            "learned_matched": self.learned_matched,
            "checks": {n: c.to_dict() for n, c in self.checks.items()},
            "mismatch_examples": self.mismatches[:10],
        }
