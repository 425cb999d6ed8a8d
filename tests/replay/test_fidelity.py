"""Fidelity on the lab traces: the model's alloc_iova_fast choices against the kernel's own (alloc_iova_fast_ret).

For every domain whose whole life the trace covers (its init_iova_domain is in the trace: every domain of the
boot_* traces, the NVMe domain re-created by the PCI rescan in the others), each predicted pfn must equal the
kernel's, 100 %, with no unexplained mismatch. The set of fully observed allocations is counted independently from
the Arrow tables (alloc_iova_fast entries whose iovad has an init_iova_domain), so a replay that silently skipped
predictions would fail. Partially observed domains may diverge (unknown prior state) but must never yield an error
finding. The consistency checks (rcache miss ⇔ nested alloc_iova, iova_magazine_free_pfns sizes, 6.12 magazine
kmem events) must agree everywhere.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from iovatrace.parsers import open_trace
from iovatrace.replay.commands import replay_trace
from iovatrace.replay.findings import Severity

LAB = [
    ("boot_strict", "6.0-6.6"),
    ("boot_strict-6.12", "6.12"),
    ("strict_v7", "6.0-6.6"),
    ("lazy_v7", "6.0-6.6"),
    ("lazy_v6", "6.0-6.6"),
    ("strict_extract", "6.0-6.6"),
    ("strict_forcedac_v7", "6.0-6.6"),
    ("strict_v7-6.12", "6.12"),
    ("lazy_v7-6.12", "6.12"),
    ("strict_extract-6.12", "6.12"),
]


def _fully_observed_allocs(path: str) -> int:
    """alloc_iova_fast calls in domains whose init_iova_domain is in the trace, counted in Arrow."""
    tr = open_trace(path)
    t = tr.read_tables(["iova:init_iova_domain", "iova:alloc_iova_fast"])
    inits = t.get("iova:init_iova_domain")
    allocs = t.get("iova:alloc_iova_fast")
    if inits is None or allocs is None:
        return 0
    total = 0
    # A domain is observed from its init on: count allocations at or after the first init of that iovad.
    for iovad in set(inits.column("iovad").to_pylist()):
        first = min(ts for ts, d in zip(inits.column("ts_ns").to_pylist(), inits.column("iovad").to_pylist())
                    if d == iovad)
        mask = pc.and_(pc.equal(allocs.column("iovad"), pa.scalar(iovad, pa.uint64())),
                       pc.greater_equal(allocs.column("ts_ns"), pa.scalar(first, pa.uint64())))
        total += pc.sum(mask.cast("int64")).as_py() or 0
    return total


@pytest.mark.parametrize("name,profile", LAB)
def test_fidelity_lab(shared_data, name: str, profile: str) -> None:
    path = str(shared_data / "traces-lab" / name / "trace.dat")
    res = replay_trace(path, extensions=False)
    fid = res.fidelity
    assert res.profile is not None and res.profile.name == profile
    expected = _fully_observed_allocs(path)
    assert expected > 0
    assert fid.predicted == expected
    assert fid.exact == fid.predicted, fid.mismatches[:3]
    assert fid.mismatched == 0 and fid.uncertain == 0
    assert not [f for f in res.findings if f.severity is Severity.ERROR]
    checks = fid.checks
    assert checks["rcache_miss"].disagree == 0
    assert checks["free_pfns_size"].disagree == 0
    if "boot" not in name:
        # rcache misses and CPU-offline flushes happen in the observed NVMe domain of every workload trace.
        assert checks["rcache_miss"].agree > 0
        assert checks["free_pfns_size"].agree > 0
    if name.endswith("6.12") and "boot" not in name:
        # Magazines of the observed domain: every kmem_cache_alloc/free of iommu_iova_magazine, in order, by address.
        assert checks["magazines"].agree > 0 and checks["magazines"].disagree == 0


def test_partial_domains_learn_without_errors(shared_data) -> None:
    """strict_v7's boot-time domains are learned: counted apart, never exact, never an error finding."""
    res = replay_trace(str(shared_data / "traces-lab" / "strict_v7" / "trace.dat"), extensions=False)
    partial = [d for d in res.domains if not d.observed]
    assert partial and all(d.pred_exact == 0 for d in partial)
    assert sum(d.prior_frees for d in partial) > 0
    assert res.fidelity.learned > res.fidelity.learned_matched > 0
    assert all(d.summary()["live_iovas_certainty"] == "lower_bound" for d in partial)
    assert not [f for f in res.findings if f.severity is Severity.ERROR]
