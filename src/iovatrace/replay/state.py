"""Per-domain replay bookkeeping around the pure model: how much of the domain the trace saw, counters, gaps.

Theory of operation: the model (:class:`~.rcache.RcacheDomain`) is what the kernel holds; :class:`DomainState`
is what the replay knows *about* it. ``observed`` is True only when the trace holds the domain's
``init_iova_domain``: then the model starts from the kernel's exact state and its predictions can be exact.
Domains first seen mid-life are *learned*: the model fills in prior state as the trace reveals it (a free of an
unknown pfn adds the node it must have had) and nothing it reports about them is exact. ``gap`` names the last
information loss that touched the domain (a lost kprobe hit, a re-synchronisation); ``taint_left`` counts how many
further predictions still depend on it and are reported as uncertain.
"""

from __future__ import annotations

from .profiles import IOVA_RANGE_CACHE_MAX_SIZE
from .rcache import RcacheDomain

__all__ = ["DomainState", "UNCACHED_BIN"]

#: Index of the "uncached" size class (≥ 33 pages) in per-bin counters.
UNCACHED_BIN = IOVA_RANGE_CACHE_MAX_SIZE


class DomainState:
    """What the replay knows about one iova_domain.

    Attributes:
        dom: the model.
        iovad: kernel address of the iova_domain.
        observed: the trace holds its init_iova_domain (fully observed).
        created_ns / destroyed_ns: trace times (``None`` when not seen).
        gap: description of the last gap that affected it, or ``None``.
        taint_left: number of further predictions reported uncertain because of ``gap``.
        allocs / frees / free_iova_calls / failures / fail32: operation counters.
        hits / misses: rcache hits and misses per bin (index 6: uncached sizes).
        prior_frees: frees of pfns allocated before the trace (learned domains only).
        rcache_flushes: alloc_iova_fast flush-and-retry events.
        max_depot: largest depot_size seen per bin.
        devices: device names that allocated in it (from iommu_dma_alloc_iova).
        kmem_model / kmem_trace: magazine allocations and frees, model vs trace (``("A"|"F", mag|ptr)``).
        fp_model / fp_trace: sizes of iova_magazine_free_pfns, model vs trace.
        pred_exact / pred_mismatch / pred_uncertain / uncertain_match / learned / learned_match: prediction
            counters (the driver sums them into its Fidelity at the end).
        depot_pops_with_successors: seed (a) windows: pops that left magazines behind in the depot.
        alive_at_put: ranges still allocated at put_iova_domain.
    """

    __slots__ = (
        "dom", "iovad", "observed", "created_ns", "destroyed_ns", "gap", "taint_left", "allocs", "frees",
        "free_iova_calls", "failures", "fail32", "hits", "misses", "prior_frees", "rcache_flushes", "max_depot",
        "devices", "kmem_model", "kmem_trace", "fp_model", "fp_trace", "pred_exact", "pred_mismatch",
        "pred_uncertain", "uncertain_match", "learned", "learned_match", "depot_pops_with_successors",
        "alive_at_put", "ops",
        "lazy", "flush_times", "findings_gap", "recon", "lost_frees", "suspect_frees", "resync_run",
    )

    def __init__(self, dom: RcacheDomain, iovad: int, observed: bool, created_ns: int | None) -> None:
        self.dom = dom
        self.iovad = iovad
        self.observed = observed
        self.created_ns = created_ns
        self.destroyed_ns: int | None = None
        self.gap: str | None = None if observed else "domain created before the trace began"
        self.taint_left = 0
        self.allocs = 0
        self.frees = 0
        self.free_iova_calls = 0
        self.failures = 0
        self.fail32 = 0
        self.hits = [0] * (UNCACHED_BIN + 1)
        self.misses = [0] * (UNCACHED_BIN + 1)
        self.prior_frees = 0
        self.rcache_flushes = 0
        self.max_depot = [0] * IOVA_RANGE_CACHE_MAX_SIZE
        self.devices: set[str] = set()
        self.kmem_model: list[tuple[str, object]] = []
        self.kmem_trace: list[tuple[str, int]] = []
        self.fp_model: list[int] = []
        self.fp_trace: list[int] = []
        self.pred_exact = 0
        self.pred_mismatch = 0
        self.pred_uncertain = 0
        self.uncertain_match = 0  # uncertain predictions that matched anyway
        self.learned = 0
        self.learned_match = 0
        self.depot_pops_with_successors: list[tuple[int, int, int, int]] = []
        self.alive_at_put: int | None = None
        self.ops: list[tuple] = []
        dom.ops = self.ops
        self.lazy = False
        self.flush_times: list[int] = []
        self.findings_gap: str | None = None
        self.recon: set[int] = set()  # pfns whose lost free the replay reconstructed (predictions on them: uncertain)
        self.lost_frees = 0
        self.resync_run = 0
        self.suspect_frees = 0  # frees of unexpected pfns explained by gaps (not reported as findings)

    @property
    def name(self) -> str:
        """The iovad address as hex."""
        return f"{self.iovad:#x}"

    def taint(self, gap: str, predictions: int) -> None:
        """Record a gap; the next ``predictions`` predictions are uncertain."""
        self.gap = gap
        self.findings_gap = gap
        self.taint_left = max(self.taint_left, predictions)

    def live_iovas(self) -> int:
        """Allocated ranges not in any magazine, reserved ranges excluded (a lower bound for learned domains)."""
        dom = self.dom
        return len(dom) - len(dom.cached_pfns) - len(dom.reserved)

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary of this domain."""
        dom = self.dom
        return {
            "iovad": self.name,
            "observed": "full" if self.observed else "partial",
            "created_ns": self.created_ns,
            "destroyed_ns": self.destroyed_ns,
            "devices": sorted(self.devices),
            "allocs": self.allocs,
            "frees": self.frees,
            "free_iova": self.free_iova_calls,
            "alloc_failures": self.failures,
            "rcache_hits": self.hits,
            "rcache_misses": self.misses,
            "rcache_flushes": self.rcache_flushes,
            "prior_frees": self.prior_frees,
            "depot_sizes": dom.depot_sizes(),
            "max_depot": self.max_depot,
            "live_iovas": self.live_iovas() if self.destroyed_ns is None else 0,
            "live_iovas_certainty": "exact" if self.observed and self.gap is None else "lower_bound",
            "cached_pfns": len(dom.cached_pfns),
            "alive_at_put": self.alive_at_put,
            "predictions": {"exact": self.pred_exact, "mismatched": self.pred_mismatch,
                            "uncertain": self.pred_uncertain, "learned": self.learned,
                            "learned_matched": self.learned_match},
            "lost_frees_reconstructed": self.lost_frees,
            "suspect_frees_after_gaps": self.suspect_frees,
            "gap": self.gap,
        }
