"""Event adapter: which trace events mean which model operation, and under which field names.

Theory of operation: the replay speaks in *operations* named after kernel functions (``alloc_iova_fast``,
``free_iova_fast``, ``iova_depot_work_func``...), each with canonical argument names. A trace names them by its
probe definitions: the lab's ``kprobe_events.txt`` uses ``iova:alloc_iova_fast`` with fields ``iovad``, ``size``,
``limit_pfn``, ``flush_rcache`` and so on (:data:`DEFAULT_OPS`). Other naming schemes are declared in a mapping
file, one operation per line::

    # operation = system:event  canonical_field=trace_field ...
    alloc_iova_fast = myprobes:aif  iovad=dom size=npages
    alloc_iova_fast_ret = myprobes:aif_ret  pfn=ret

Fields not renamed keep their canonical names. :class:`EventMap` resolves the mapping once into a dict
``event name → (operation, field-name tuple)`` so the driver's hot loop does one dict lookup per event and reads
fields by position, with no per-event renaming.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_OPS", "OpSpec", "EventMap", "parse_mapping"]

#: operation → (default event name, canonical field names in the order the driver reads them).
DEFAULT_OPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "init_iova_domain": ("iova:init_iova_domain", ("iovad", "granule", "start_pfn")),
    "iova_domain_init_rcaches": ("iova:iova_domain_init_rcaches", ("iovad",)),
    "reserve_iova": ("iova:reserve_iova", ("iovad", "pfn_lo", "pfn_hi")),
    "alloc_iova_fast": ("iova:alloc_iova_fast", ("iovad", "size", "limit_pfn", "flush_rcache")),
    "alloc_iova_fast_ret": ("iova:alloc_iova_fast_ret", ("pfn",)),
    "free_iova_fast": ("iova:free_iova_fast", ("iovad", "pfn", "size")),
    "free_iova_fast_ret": ("iova:free_iova_fast_ret", ()),
    "alloc_iova": ("iova:alloc_iova", ("iovad", "size", "limit_pfn", "size_aligned")),
    "alloc_iova_ret": ("iova:alloc_iova_ret", ("iova", "pfn_hi", "pfn_lo")),
    "free_iova": ("iova:free_iova", ("iovad", "pfn")),
    "__free_iova": ("iova:__free_iova", ("iovad", "iova", "pfn_hi", "pfn_lo")),
    "put_iova_domain": ("iova:put_iova_domain", ("iovad",)),
    "free_iova_rcaches": ("iova:free_iova_rcaches", ("iovad",)),
    "free_cpu_cached_iovas": ("iova:free_cpu_cached_iovas", ("cpu", "iovad")),
    "iova_magazine_free_pfns": ("iova:iova_magazine_free_pfns", ("mag", "iovad", "mag_size")),
    "iova_cpuhp_dead": ("iova:iova_cpuhp_dead", ("cpu",)),
    "iova_depot_work_func": ("iova:iova_depot_work_func", ("work", "iovad", "depot_size", "depot", "rcaches")),
    "kmem_cache_alloc": ("kmem:kmem_cache_alloc", ("call_site", "ptr", "bytes_req")),
    "kmem_cache_free": ("kmem:kmem_cache_free", ("call_site", "ptr", "name")),
    "kmalloc": ("kmem:kmalloc", ("call_site", "ptr", "bytes_req")),
    "kfree": ("kmem:kfree", ("call_site", "ptr")),
    "cpuhp_enter": ("cpuhp:cpuhp_enter", ("cpu", "target", "idx")),
    "cpuhp_multi_enter": ("cpuhp:cpuhp_multi_enter", ("cpu", "target", "idx")),
    "iommu_map": ("iommu:map", ("iova", "paddr", "size")),
    "iommu_unmap": ("iommu:unmap", ("iova", "size", "unmapped_size")),
    "iommu_dma_alloc_iova": ("dmaiommu:iommu_dma_alloc_iova", ("domain", "size", "dma_limit", "dev", "devname")),
    "iommu_dma_alloc_iova_ret": ("dmaiommu:iommu_dma_alloc_iova_ret", ("iova",)),
    "fq_ring_free": ("dmaiommu:fq_ring_free", ("cookie", "fq")),
    "fq_ring_free_locked": ("dmaiommu:fq_ring_free_locked", ("cookie", "fq")),
    "fq_flush_iotlb": ("dmaiommu:fq_flush_iotlb", ("cookie",)),
    "fq_flush_timeout": ("dmaiommu:fq_flush_timeout", ("timer",)),
    "__iommu_dma_unmap": ("dmaiommu:__iommu_dma_unmap", ("dev", "dma_addr", "size")),
    "dma_unmap_page": ("dma:dma_unmap_page", ("device", "addr", "size")),
    "dma_unmap_sg": ("dma:dma_unmap_sg", ("device",)),
    "dma_map_page": ("dma:dma_map_page", ("device", "dma_addr", "size")),
    "dma_map_sg": ("dma:dma_map_sg", ("device", "dma_addrs")),
}


#: Columns every event table starts with (iovatrace.schema.COMMON_COLUMNS); a payload field with one of these names
#: is stored as ``field_<name>`` (e.g. the ``cpu`` argument of iova_cpuhp_dead becomes ``field_cpu``).
COMMON_NAMES = frozenset({"ts_ns", "cpu", "seq", "pid", "comm", "flags", "preempt", "event"})


def _column(name: str) -> str:
    return f"field_{name}" if name in COMMON_NAMES else name


@dataclass(frozen=True, slots=True)
class OpSpec:
    """How one operation appears in the trace.

    Attributes:
        op: operation name (kernel function, ``_ret`` for return probes).
        event: ``"system:name"`` in the trace.
        fields: trace field names, in the canonical order of :data:`DEFAULT_OPS`.
    """

    op: str
    event: str
    fields: tuple[str, ...]


def parse_mapping(text: str, *, source: str = "<mapping>") -> dict[str, tuple[str, dict[str, str]]]:
    """Parse a mapping file.

    Args:
        text: the file's content (``op = system:event field=tracefield ...`` lines, ``#`` comments).
        source: file name for error messages.

    Returns:
        ``op → (event, {canonical: trace field})``.

    Raises:
        InputError: a line that does not follow the syntax, or an unknown operation or field.
    """
    from ..errors import InputError

    out: dict[str, tuple[str, dict[str, str]]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise InputError("Cannot parse mapping line: expected 'operation = system:event [field=name ...]'",
                             path=source, line=lineno, excerpt=raw.strip())
        op, rest = (s.strip() for s in line.split("=", 1))
        if op not in DEFAULT_OPS:
            raise InputError(f"Unknown operation {op!r}; known: {', '.join(sorted(DEFAULT_OPS))}",
                             path=source, line=lineno)
        parts = rest.split()
        if not parts or ":" not in parts[0]:
            raise InputError("Cannot parse mapping line: expected a 'system:event' name after '='",
                             path=source, line=lineno, excerpt=raw.strip())
        renames: dict[str, str] = {}
        for p in parts[1:]:
            if "=" not in p:
                raise InputError(f"Cannot parse field rename {p!r}: expected canonical=trace_field",
                                 path=source, line=lineno)
            canon, name = p.split("=", 1)
            if canon not in DEFAULT_OPS[op][1]:
                raise InputError(f"Operation {op} has no field {canon!r}; fields: {', '.join(DEFAULT_OPS[op][1])}",
                                 path=source, line=lineno)
            renames[canon] = name
        out[op] = (parts[0], renames)
    return out


class EventMap:
    """The resolved mapping: event name → :class:`OpSpec`.

    Args:
        overrides: from :func:`parse_mapping`; operations not named keep their defaults.
    """

    def __init__(self, overrides: Mapping[str, tuple[str, Mapping[str, str]]] | None = None) -> None:
        self.by_op: dict[str, OpSpec] = {}
        for op, (event, fields) in DEFAULT_OPS.items():
            renames: Mapping[str, str] = {}
            if overrides and op in overrides:
                event, renames = overrides[op]
            self.by_op[op] = OpSpec(op, event, tuple(_column(renames.get(f, f)) for f in fields))
        self.by_event: dict[str, OpSpec] = {s.event: s for s in self.by_op.values()}

    def events(self, ops: Iterable[str] | None = None) -> set[str]:
        """Event names for the given operations (all by default)."""
        if ops is None:
            return set(self.by_event)
        return {self.by_op[o].event for o in ops if o in self.by_op}

    def event_of(self, op: str) -> str:
        """The trace event name of an operation."""
        return self.by_op[op].event
