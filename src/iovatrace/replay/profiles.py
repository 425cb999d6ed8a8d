"""Kernel version profiles: every version-dependent constant of the replay model, in one place.

Theory of operation: the model never tests a kernel version itself; it reads a :class:`KernelProfile`. A profile
covers a range of mainline versions in which the IOVA allocator, rcache, flush queues and VT-d QI behave alike
(model_spec.md §11.1). :func:`profile_for` maps a release string (``uname -r``, e.g. ``6.12.107+deb13-amd64``) to its
profile; :func:`detect_profile` does the same from a trace's metadata or, failing that, from the probe symbols the
trace holds. Every value can be overridden with :func:`dataclasses.replace` (vendor trees change them).

Sources: drivers/iommu/iova.c, drivers/iommu/dma-iommu.c, drivers/iommu/intel/dmar.c of the versions named; the
commit that changed each value is cited next to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

__all__ = [
    "KernelProfile",
    "PROFILES",
    "IOVA_RANGE_CACHE_MAX_SIZE",
    "IOVA_DEPOT_DELAY_NS",
    "IOVA_DEFAULT_FQ_SIZE",
    "IOVA_DEFAULT_FQ_TIMEOUT_NS",
    "IOVA_SINGLE_FQ_SIZE",
    "IOVA_SINGLE_FQ_TIMEOUT_NS",
    "QI_LENGTH",
    "parse_release",
    "profile_for",
    "detect_profile",
]

#: Number of rcache size bins (orders 0..5): sizes 1..32 granules are cacheable. All versions.
IOVA_RANGE_CACHE_MAX_SIZE = 6
#: Delay of the depot trim work, msecs_to_jiffies(100) (233045378dbb "iommu/iova: Manage the depot list size", v6.7).
IOVA_DEPOT_DELAY_NS = 100_000_000
#: Per-CPU flush queue: 256 entries (255 usable, one slot kept empty), 10 ms timeout (all versions with an FQ).
IOVA_DEFAULT_FQ_SIZE = 256
IOVA_DEFAULT_FQ_TIMEOUT_NS = 10_000_000
#: Single flush queue (32d5bc8b09c7, 9f5b681e2a3f, v6.7): one vmalloc'd ring of 32768 entries, 1000 ms timeout.
IOVA_SINGLE_FQ_SIZE = 32768
IOVA_SINGLE_FQ_TIMEOUT_NS = 1_000_000_000
#: VT-d invalidation queue length in descriptors (drivers/iommu/intel/iommu.h, all versions).
QI_LENGTH = 256


@dataclass(frozen=True, slots=True)
class KernelProfile:
    """The version-dependent behaviour of one range of kernels.

    Attributes:
        name: short name (``"6.0-6.6"``).
        first: first mainline version covered, ``(major, minor)``.
        last: last version covered (inclusive), ``(major, minor)``; ``(99, 99)`` = open-ended.
        mag_size: IOVA_MAG_SIZE: 128 up to v5.19, 127 from v6.0 ("iommu/iova: change IOVA_MAG_SIZE to 127").
        depot_kind: ``"array"`` (fixed ``depot[MAX_GLOBAL_MAGS]``, ≤6.6) or ``"list"`` (linked through the
            magazine's first word, 911aa1245da8, v6.7).
        max_global_mags: capacity of the array depot (32); unused for the list depot.
        depot_trim: the list depot is trimmed by ``iova_depot_work_func`` to ≤ num_online_cpus (v6.7+).
        depot_delay_ns: IOVA_DEPOT_DELAY.
        second_pass: the allocator's retry after a failed first pass: ``"none"`` (≤5.10), ``"anchor"``
            (5.11-5.12), ``"find_limit"`` (iova_find_limit, ≈5.13+).
        flush_global_on_fail: alloc_iova_fast's flush-and-retry also frees the depot (free_global_cached_iovas, 5.11+).
        mag_object_size: slab object size kmemleak reports for a magazine (2048 ≤5.19, 1024 from 6.0).
        mag_cache: ``"kmalloc"`` or ``"iommu_iova_magazine"`` (named kmem_cache, 84e6f56be9c6, v6.9).
        rcache_stride: sizeof(struct iova_rcache) on x86-64 without lock debugging (6.7+: 120, per the lab's 6.12
            kernel; 0 when the rcache has no work item).
        rcache_work_offset: offset of ``work`` inside struct iova_rcache (6.7+: 32).
        kmemleak_transient_fixed: iova_depot_pop() calls kmemleak_transient_leak() (7591c127f3b1, v6.13-rc1; also
            backported to 6.12-stable as 992ea37a8ada).
        fq_in_cookie: the flush queue lives in the dma-iommu cookie (5.17+), not in the iova_domain.
        fq_size / fq_timeout_ns: per-CPU flush queue size and timeout.
        single_fq: the single-queue option exists (v6.7+); single_fq_size / single_fq_timeout_ns its constants.
        fq_pow2_mask: the ring uses a power-of-two mask instead of ``%`` (v6.7).
        dma_trace_events: ``dma:*`` tracepoints exist (038eb433dc14, v6.12).
        detach_trace_event: ``iommu:detach_device_from_domain`` exists (removed in v6.3).
        qi_length: VT-d QI ring length.
        qi_reclaim_fixed: qi_submit_sync reclaims only QI_FREE slots (3cf74230c139, v6.12).
        page_pool_dma_tracking: page_pool unmaps its pages at destroy (ee62ce7a1d90, v6.15).
    """

    name: str
    first: tuple[int, int]
    last: tuple[int, int]
    mag_size: int
    depot_kind: str
    max_global_mags: int
    depot_trim: bool
    depot_delay_ns: int
    second_pass: str
    flush_global_on_fail: bool
    mag_object_size: int
    mag_cache: str
    rcache_stride: int
    rcache_work_offset: int
    kmemleak_transient_fixed: bool
    fq_in_cookie: bool
    fq_size: int = IOVA_DEFAULT_FQ_SIZE
    fq_timeout_ns: int = IOVA_DEFAULT_FQ_TIMEOUT_NS
    single_fq: bool = False
    single_fq_size: int = IOVA_SINGLE_FQ_SIZE
    single_fq_timeout_ns: int = IOVA_SINGLE_FQ_TIMEOUT_NS
    fq_pow2_mask: bool = False
    dma_trace_events: bool = False
    detach_trace_event: bool = False
    qi_length: int = QI_LENGTH
    qi_reclaim_fixed: bool = False
    page_pool_dma_tracking: bool = False
    rcache_range_max_size: int = IOVA_RANGE_CACHE_MAX_SIZE

    @property
    def list_depot(self) -> bool:
        """True for the v6.7+ linked-list depot."""
        return self.depot_kind == "list"

    def covers(self, version: tuple[int, int]) -> bool:
        """Whether ``(major, minor)`` falls in this profile's range."""
        return self.first <= version <= self.last


_OLD = dict(
    depot_kind="array", max_global_mags=32, depot_trim=False, depot_delay_ns=0, rcache_stride=0,
    rcache_work_offset=0, kmemleak_transient_fixed=False, detach_trace_event=True,
)
_NEW = dict(
    depot_kind="list", max_global_mags=0, depot_trim=True, depot_delay_ns=IOVA_DEPOT_DELAY_NS, rcache_stride=120,
    rcache_work_offset=32, fq_in_cookie=True, single_fq=True, fq_pow2_mask=True, second_pass="find_limit",
    flush_global_on_fail=True, mag_size=127, mag_object_size=1024,
)

#: The profiles, oldest first. Names are what ``--kernel`` accepts besides plain versions.
PROFILES: tuple[KernelProfile, ...] = (
    KernelProfile("5.10", (0, 0), (5, 10), mag_size=128, second_pass="none", flush_global_on_fail=False,
                  mag_object_size=2048, mag_cache="kmalloc", fq_in_cookie=False, **_OLD),  # type: ignore[arg-type]
    KernelProfile("5.11-5.12", (5, 11), (5, 12), mag_size=128, second_pass="anchor", flush_global_on_fail=True,
                  mag_object_size=2048, mag_cache="kmalloc", fq_in_cookie=False, **_OLD),  # type: ignore[arg-type]
    KernelProfile("5.13-5.16", (5, 13), (5, 16), mag_size=128, second_pass="find_limit", flush_global_on_fail=True,
                  mag_object_size=2048, mag_cache="kmalloc", fq_in_cookie=False, **_OLD),  # type: ignore[arg-type]
    KernelProfile("5.17-5.19", (5, 17), (5, 19), mag_size=128, second_pass="find_limit", flush_global_on_fail=True,
                  mag_object_size=2048, mag_cache="kmalloc", fq_in_cookie=True, **_OLD),  # type: ignore[arg-type]
    KernelProfile("6.0-6.6", (6, 0), (6, 6), mag_size=127, second_pass="find_limit", flush_global_on_fail=True,
                  mag_object_size=1024, mag_cache="kmalloc", fq_in_cookie=True,
                  **{**_OLD, "detach_trace_event": False}),  # type: ignore[arg-type]
    KernelProfile("6.7-6.8", (6, 7), (6, 8), mag_cache="kmalloc", kmemleak_transient_fixed=False,
                  **_NEW),  # type: ignore[arg-type]
    KernelProfile("6.9-6.11", (6, 9), (6, 11), mag_cache="iommu_iova_magazine", kmemleak_transient_fixed=False,
                  **_NEW),  # type: ignore[arg-type]
    # 6.12: dma:* tracepoints (038eb433dc14) and the VT-d QI reclaim fix (3cf74230c139). The kmemleak transient
    # fix is mainline 6.13 but 6.12-stable carries it (992ea37a8ada); pre-backport 6.12 kernels: --bug-mode a.
    KernelProfile("6.12", (6, 12), (6, 12), mag_cache="iommu_iova_magazine", kmemleak_transient_fixed=True,
                  dma_trace_events=True, qi_reclaim_fixed=True, **_NEW),  # type: ignore[arg-type]
    KernelProfile("6.13-6.14", (6, 13), (6, 14), mag_cache="iommu_iova_magazine", kmemleak_transient_fixed=True,
                  dma_trace_events=True, qi_reclaim_fixed=True, **_NEW),  # type: ignore[arg-type]
    KernelProfile("6.15+", (6, 15), (99, 99), mag_cache="iommu_iova_magazine", kmemleak_transient_fixed=True,
                  dma_trace_events=True, qi_reclaim_fixed=True, page_pool_dma_tracking=True,
                  **_NEW),  # type: ignore[arg-type]
)

_RELEASE = re.compile(r"^\s*(?:Linux\s+\S+\s+)?v?(\d+)\.(\d+)")


def parse_release(release: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a kernel release string, or ``None``.

    Args:
        release: ``"6.12.107+deb13-amd64"``, ``"6.1"``, ``"v5.15"``, or a full ``uname -a`` line.

    Returns:
        The version pair, or ``None`` if the string does not start with a version.
    """
    m = _RELEASE.match(release)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2))


def profile_for(kernel: str) -> KernelProfile:
    """The profile for a ``--kernel`` value: a profile name or any release string.

    Args:
        kernel: ``"6.1"``, ``"6.12.107+deb13-amd64"``, ``"6.0-6.6"``, ``"5.15"``...

    Returns:
        The matching profile.

    Raises:
        ValueError: the value names no known version.
    """
    for p in PROFILES:
        if p.name == kernel:
            return p
    version = parse_release(kernel)
    if version is None:
        names = ", ".join(p.name for p in PROFILES)
        raise ValueError(f"Cannot read a kernel version from {kernel!r}: expected e.g. 6.1, 6.12.107 or one of {names}")
    for p in PROFILES:
        if p.covers(version):
            return p
    raise ValueError(f"No profile covers kernel {kernel!r}")


def detect_profile(release: str | None, symbols: Iterable[str] = ()) -> tuple[KernelProfile, str]:
    """Choose a profile from what a trace says about its kernel.

    Args:
        release: the kernel release from the trace's metadata (trace.dat UNAME option), if any.
        symbols: event names (``"iova:iova_depot_work_func"``, ``"dma:dma_map_page"``...) present in the trace.

    Returns:
        ``(profile, how)`` where ``how`` says what decided it (``"uname 6.1.0-56-amd64"`` or ``"symbols: ..."``).
    """
    if release:
        v = parse_release(release)
        if v is not None:
            for p in PROFILES:
                if p.covers(v):
                    return p, f"uname {release.strip()}"
    names = set(symbols)
    by_name = {p.name: p for p in PROFILES}
    if any(n.startswith("dma:") for n in names):
        return by_name["6.12"], "symbols: dma:* tracepoints (v6.12+)"
    if any(n.endswith("iova_depot_work_func") for n in names):
        return by_name["6.9-6.11"], "symbols: iova_depot_work_func (v6.7+)"
    return by_name["6.0-6.6"], "default (no kernel release in the trace)"


def with_overrides(profile: KernelProfile, **changes: object) -> KernelProfile:
    """A copy of ``profile`` with some constants changed (vendor kernels).

    Args:
        profile: the base profile.
        **changes: field values to replace.

    Returns:
        The new profile.
    """
    return replace(profile, **changes)  # type: ignore[arg-type]
