"""DMA mappings as the dma-iommu layer made them: who mapped what, for how long, and what is still mapped.

Theory of operation: one mapping is one IOVA allocation of the dma-iommu layer. ``iommu_dma_alloc_iova`` names
the device (``devname``), its ``struct device`` pointer, the ``iommu_domain`` and the size in bytes; its return
probe gives the IOVA. ``__iommu_dma_unmap`` (also reached from ``iommu_dma_unmap_sg``) releases it, naming the
device pointer and a DMA address inside the first page; on 6.12+ the ``dma:dma_unmap_page`` tracepoint (by device
name) covers unmaps whose kprobe hit was lost, and the first of the two to arrive ends the mapping. An unmap belongs to the newest earlier allocation of the
same device and IOVA page (an as-of join by ``(dev, iova)``); unmaps without one are mappings made before
tracing started. Those are kept as ``origin == "before_trace"`` rows: they were live from the start of the trace
until their unmap, so live counts over time are exact lower bounds (a pre-trace mapping that is never unmapped
inside the trace stays invisible, and the frames say so in their docstrings rather than guessing).

Everything here works on whole columns (polars joins and cumulative sums); nothing loops over events.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from .requires import Need, requires
from .tables import PAGE_SHIFT, EventTables, cached, event_frame, hex_column, pair_calls, trace_span_ns

__all__ = [
    "MAPPING_NEEDS",
    "OPTIONAL_EVENTS",
    "df_mappings",
    "df_live_mappings",
    "df_mapping_lifetimes",
    "df_outstanding",
    "size_bin_label",
]

MAPPING_NEEDS = (
    Need("dmaiommu:iommu_dma_alloc_iova", why="device name, domain and size of each IOVA allocation"),
    Need("dmaiommu:iommu_dma_alloc_iova_ret", why="the IOVA the allocation returned"),
    Need("dmaiommu:__iommu_dma_unmap", why="the end of each mapping"),
)

#: Events used when present (never required): 6.12+ tracepoints that stand in for lost unmap kprobe hits.
OPTIONAL_EVENTS = ("dma:dma_unmap_page", "dma:dma_map_sg", "dma:dma_unmap_sg")

_PAGE_MASK = ~((1 << PAGE_SHIFT) - 1) & 0xFFFF_FFFF_FFFF_FFFF


def size_bin_label(pages: pl.Expr) -> pl.Expr:
    """The power-of-two page-count bin of a size, as the rcache sees it (``1``, ``2``, ``4-``...``32``, ``>32``).

    Args:
        pages: size in pages (integer expression).

    Returns:
        A string expression: ``"1 page"``, ``"2 pages"``, ``"3-4 pages"``, ... , ``">32 pages"``.
    """
    order = (pages.cast(pl.Float64).log(2).ceil()).cast(pl.Int64)
    lo = (pl.lit(2).pow(order - 1) + 1).cast(pl.Int64)
    hi = pl.lit(2).pow(order).cast(pl.Int64)
    return (
        pl.when(pages <= 1).then(pl.lit("1 page"))
        .when(pages == 2).then(pl.lit("2 pages"))
        .when(pages > 32).then(pl.lit(">32 pages"))
        .otherwise(pl.concat_str(lo.cast(pl.String), pl.lit("-"), hi.cast(pl.String), pl.lit(" pages")))
    )


@requires(*MAPPING_NEEDS)
def df_mappings(tables: EventTables) -> pl.DataFrame:
    """Every dma-iommu IOVA mapping of the trace, with its unmap.

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        One row per mapping: ``ts_ns`` (allocation; null for ``before_trace``), ``cpu``, ``device`` (name),
        ``dev`` (``struct device *``), ``domain`` (``iommu_domain *`` as hex), ``iova``, ``size_bytes``,
        ``size_pages``, ``unmap_ts_ns`` (null while mapped), ``lifetime_ns``, ``origin`` (``traced`` or
        ``before_trace``: unmapped here, mapped before tracing started), ``released_by_ns`` (for a mapping with no
        unmap in the trace whose IOVA the same domain hands out again later: the time by which it must have been
        released, i.e. its unmap probe hit was lost; else null). Failed allocations (IOVA 0) are left out.

    Raises:
        MissingEventsError: when the dma-iommu probes were not recorded.
    """
    return cached(tables, "df_mappings", lambda: _mappings(tables))


def _mappings(tables: EventTables) -> pl.DataFrame:
    ent = event_frame(tables, "dmaiommu:iommu_dma_alloc_iova", ["size"], unsigned=["dev", "domain"],
                      strings=["devname"])
    ret = event_frame(tables, "dmaiommu:iommu_dma_alloc_iova_ret", unsigned=["iova"])
    alloc = pair_calls(ent, ret, ret_columns=["iova"]).filter(pl.col("iova").is_not_null() & (pl.col("iova") != 0))
    # Device names and domains by device pointer, for unmaps of mappings made before the trace.
    names = (ent.group_by("dev").agg(pl.col("devname").last().alias("device"), pl.col("domain").last()))
    alloc = alloc.select(
        "ts_ns", "cpu", "dev", "domain", pl.col("devname").alias("device"), "iova",
        pl.col("size").alias("size_bytes"), pl.col("ret_ts_ns").alias("_at"),
    ).with_row_index("_m")

    unmap = event_frame(tables, "dmaiommu:__iommu_dma_unmap", ["size"], unsigned=["dev", "dma_addr"])
    # 6.12+: the dma:dma_unmap_page tracepoint never loses a hit the way a nested kprobe can; name -> pointer.
    dup = event_frame(tables, "dma:dma_unmap_page", ["size"], unsigned=["addr"], strings=["device"])
    if not dup.is_empty():
        dup = _dev_at(dup, ent).select("ts_ns", "cpu", "seq", "pid", "size", "dev", pl.col("addr").alias("dma_addr"))
        unmap = pl.concat([unmap, dup.select(unmap.columns)]).sort(["ts_ns", "cpu", "seq"])
    sg = _sg_unmaps(tables, ent)
    if not sg.is_empty():
        unmap = pl.concat([unmap, sg.select(unmap.columns)]).sort(["ts_ns", "cpu", "seq"])
    unmap = unmap.select(
        pl.col("ts_ns").alias("unmap_ts_ns"), "dev", (pl.col("dma_addr") & pl.lit(_PAGE_MASK, pl.UInt64)).alias("iova"),
        # The caller's length counts from the DMA address, which may start inside the first page.
        (pl.col("size") + (pl.col("dma_addr") & pl.lit((1 << PAGE_SHIFT) - 1, pl.UInt64)).cast(pl.Int64))
        .alias("unmap_size"),
    )
    # The newest allocation of the same (dev, iova) at or before each unmap.
    matched = unmap.sort("unmap_ts_ns").join_asof(
        alloc.select("_m", "_at", "dev", "iova").sort("_at"),
        left_on="unmap_ts_ns", right_on="_at", by=["dev", "iova"], strategy="backward", check_sortedness=False,
    )
    # A second unmap of the same allocation is not a release of it (a double unmap, or a lost allocation probe).
    first = matched.filter(pl.col("_m").is_not_null()).sort("unmap_ts_ns").unique("_m", keep="first")
    # Unmaps of pre-trace mappings: one per (dev, iova) -- the tracepoint and the kprobe may both have seen it.
    matched = pl.concat([matched.filter(pl.col("_m").is_not_null()),
                         matched.filter(pl.col("_m").is_null()).sort("unmap_ts_ns").unique(["dev", "iova"],
                                                                                           keep="first")])
    traced = alloc.join(first.select("_m", "unmap_ts_ns"), on="_m", how="left")
    before = (
        matched.filter(pl.col("_m").is_null())
        .join(names, on="dev", how="left")
        .select(
            pl.lit(None, pl.Int64).alias("ts_ns"), pl.lit(None, pl.Int64).alias("cpu"), "dev", "domain",
            pl.col("device"), "iova",
            # Round the unmapped length up to whole pages, as the allocation did.
            (((pl.col("unmap_size") + (1 << PAGE_SHIFT) - 1) // (1 << PAGE_SHIFT)) * (1 << PAGE_SHIFT))
            .alias("size_bytes"),
            "unmap_ts_ns",
        )
    )
    out = pl.concat(
        [
            traced.select("ts_ns", "cpu", "dev", "domain", "device", "iova", "size_bytes", "unmap_ts_ns")
            .with_columns(pl.lit("traced").alias("origin")),
            before.with_columns(pl.lit("before_trace").alias("origin")),
        ],
        how="vertical_relaxed",
    )
    # A device that never allocated inside the trace is named by its struct device pointer.
    out = hex_column(out.with_columns(pl.col("dev").alias("_devhex")), "_devhex")
    out = hex_column(out.with_columns(pl.coalesce("device", "_devhex").alias("device")), "domain")
    # The same IOVA handed out again in the same domain proves the earlier mapping was released, even when its
    # unmap probe hit was lost: such a mapping ended by then at the latest.
    out = out.sort(["ts_ns"], nulls_last=False).with_columns(
        pl.col("ts_ns").shift(-1).over(["domain", "iova"]).alias("_next"))
    out = out.with_columns(
        pl.when(pl.col("unmap_ts_ns").is_null() & (pl.col("origin") == "traced"))
        .then(pl.col("_next")).otherwise(None).alias("released_by_ns"))
    return out.with_columns(
        (pl.col("size_bytes") // (1 << PAGE_SHIFT)).alias("size_pages"),
        (pl.col("unmap_ts_ns") - pl.col("ts_ns")).alias("lifetime_ns"),
    ).select("ts_ns", "cpu", "device", "dev", "domain", "iova", "size_bytes", "size_pages", "unmap_ts_ns",
             "lifetime_ns", "origin", "released_by_ns").sort(["ts_ns", "unmap_ts_ns"], nulls_last=False)


def _sg_unmaps(tables: EventTables, ent: pl.DataFrame) -> pl.DataFrame:
    """6.12+ scatterlist unmaps as (dev, dma_addr) rows.

    ``dma:dma_unmap_sg`` records the pages' physical addresses only; the newest ``dma:dma_map_sg`` of the same
    device that started at the same physical address gives the DMA address (the IOVA) it was mapped at.
    """
    mt, ut = tables.get("dma:dma_map_sg"), tables.get("dma:dma_unmap_sg")
    if mt is None or ut is None or mt.num_rows == 0 or ut.num_rows == 0:
        return pl.DataFrame()
    if not {"phys_addrs", "dma_addrs", "lengths"} <= set(mt.column_names) or "addrs" not in ut.column_names:
        return pl.DataFrame()
    m = pl.from_arrow(mt.select(["ts_ns", "device", "phys_addrs", "dma_addrs", "lengths"]))
    u = pl.from_arrow(ut.select(["ts_ns", "cpu", "seq", "pid", "device", "addrs"]))
    assert isinstance(m, pl.DataFrame) and isinstance(u, pl.DataFrame)
    m = m.select(pl.col("ts_ns").cast(pl.Int64).alias("_mts"), "device",
                 pl.col("phys_addrs").list.first().cast(pl.UInt64).alias("_phys"),
                 pl.col("dma_addrs").list.first().cast(pl.UInt64).alias("dma_addr"),
                 pl.col("lengths").list.sum().cast(pl.Int64).alias("size")).drop_nulls(["_phys", "dma_addr"])
    u = u.select(pl.col("ts_ns").cast(pl.Int64), pl.col("cpu").cast(pl.Int64), pl.col("seq").cast(pl.Int64),
                 pl.col("pid").cast(pl.Int64), "device", pl.col("addrs").list.first().cast(pl.UInt64).alias("_phys"))
    j = u.sort("ts_ns").join_asof(m.sort("_mts"), left_on="ts_ns", right_on="_mts", by=["device", "_phys"],
                                  strategy="backward", check_sortedness=False).drop_nulls("dma_addr")
    return _dev_at(j, ent).select("ts_ns", "cpu", "seq", "pid", "size", "dev", "dma_addr")


def _dev_at(df: pl.DataFrame, ent: pl.DataFrame) -> pl.DataFrame:
    """Add ``dev``: the ``struct device *`` a device name had at each row's time.

    A PCI remove + rescan gives the same name a new pointer, so the name is resolved as of the row's time (the
    newest allocation by that name before it; for rows before any, the first one after).
    """
    ptr = ent.select(pl.col("ts_ns").alias("_pts"), pl.col("devname").alias("device"), pl.col("dev").alias("_ptr"))
    ptr = ptr.drop_nulls().sort("_pts")
    out = df.sort("ts_ns")
    for strategy in ("backward", "forward"):
        out = out.join_asof(ptr, left_on="ts_ns", right_on="_pts", by="device", strategy=strategy,
                            check_sortedness=False)
        out = out.with_columns(pl.coalesce("dev", "_ptr").alias("dev") if "dev" in out.columns
                               else pl.col("_ptr").alias("dev")).drop("_pts", "_ptr")
    return out.drop_nulls("dev")


@requires(*MAPPING_NEEDS)
def df_live_mappings(tables: EventTables, *, by: Literal["device", "domain"] = "device") -> pl.DataFrame:
    """How many mappings (and bytes) each device or domain holds over time.

    Mappings made before the trace and unmapped inside it count as live from the first event of the trace; a
    pre-trace mapping never unmapped in the trace cannot be seen, so the values are lower bounds.

    Args:
        tables: event tables keyed by ``system:name``.
        by: ``"device"`` or ``"domain"``.

    Returns:
        A step series per group: ``ts_ns``, ``time_s``, ``group``, ``live`` (mappings), ``live_bytes``; the first
        row of each group is at the start of the trace.

    Raises:
        MissingEventsError: when the dma-iommu probes were not recorded.
    """
    if by not in ("device", "domain"):
        raise ValueError(f"by must be 'device' or 'domain', not {by!r}")
    m = df_mappings(tables)
    span = trace_span_ns(tables)
    start = span[0] if span else 0
    if by == "domain":
        # Label a domain by the devices that used it, so a legend reads "0xff..590 (0000:00:03.0)".
        devs = m.group_by("domain").agg(pl.col("device").unique().sort().str.join(", ").alias("_devs"))
        m = m.join(devs, on="domain").with_columns(
            pl.concat_str(pl.col("domain"), pl.lit(" ("), pl.col("_devs"), pl.lit(")")).alias("group"))
    else:
        m = m.with_columns(pl.col("device").alias("group"))
    ups = m.select(pl.col("ts_ns").fill_null(start), "group", pl.lit(1).alias("d"), pl.col("size_bytes").alias("b"))
    # A mapping whose unmap was lost ends, at the latest, when its IOVA is handed out again.
    downs = m.with_columns(pl.coalesce("unmap_ts_ns", "released_by_ns").alias("_end")).filter(
        pl.col("_end").is_not_null()).select(
        pl.col("_end").alias("ts_ns"), "group", pl.lit(-1).alias("d"), (-pl.col("size_bytes")).alias("b"))
    steps = pl.concat([ups, downs]).sort(["group", "ts_ns", "d"], descending=[False, False, True])
    steps = steps.with_columns(
        pl.col("d").cum_sum().over("group").alias("live"), pl.col("b").cum_sum().over("group").alias("live_bytes"))
    # One point per timestamp and group (the last), plus a zero-length start point.
    steps = steps.group_by(["group", "ts_ns"], maintain_order=True).agg(pl.col("live").last(), pl.col("live_bytes").last())
    first = steps.group_by("group").agg(pl.lit(start, pl.Int64).alias("ts_ns"), pl.lit(0, pl.Int64).alias("live"),
                                         pl.lit(0, pl.Int64).alias("live_bytes"))
    out = pl.concat([first.select(steps.columns), steps], how="vertical_relaxed").sort(
        ["group", "ts_ns"], maintain_order=True)  # the zero start point stays before a step at the same time
    return out.with_columns((pl.col("ts_ns") / 1e9).alias("time_s")).select(
        "ts_ns", "time_s", "group", "live", "live_bytes")


@requires(*MAPPING_NEEDS)
def df_mapping_lifetimes(tables: EventTables) -> pl.DataFrame:
    """Lifetime (map to unmap) of every mapping made and released inside the trace.

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        ``ts_ns``, ``device``, ``size_bytes``, ``size_pages``, ``size_bin`` (see :func:`size_bin_label`),
        ``lifetime_us``.

    Raises:
        MissingEventsError: when the dma-iommu probes were not recorded.
    """
    m = df_mappings(tables).filter((pl.col("origin") == "traced") & pl.col("unmap_ts_ns").is_not_null())
    return m.select(
        "ts_ns", "device", "size_bytes", "size_pages", size_bin_label(pl.col("size_pages")).alias("size_bin"),
        (pl.col("lifetime_ns") / 1e3).alias("lifetime_us"),
    )


@requires(*MAPPING_NEEDS)
def df_outstanding(tables: EventTables) -> pl.DataFrame:
    """Mappings still in place at the end of the trace, per device.

    Only mappings made inside the trace can be seen; a mapping made before tracing started and never unmapped
    is not counted.

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        One row per device (most outstanding first): ``device``, ``domain``, ``outstanding``,
        ``outstanding_bytes``, ``oldest_ts_ns``, ``oldest_age_s`` (at the last event of the trace), ``mapped``
        (all mappings the device made in the trace), ``unmap_lost`` (mappings with no unmap in the trace whose
        IOVA was handed out again, so their unmap probe hit was lost; not counted as outstanding).

    Raises:
        MissingEventsError: when the dma-iommu probes were not recorded.
    """
    m = df_mappings(tables).filter(pl.col("origin") == "traced")
    span = trace_span_ns(tables)
    end = span[1] if span else 0
    open_ = pl.col("unmap_ts_ns").is_null() & pl.col("released_by_ns").is_null()
    return (
        m.group_by("device")
        .agg(
            pl.col("domain").last(),
            open_.sum().alias("outstanding"),
            pl.col("size_bytes").filter(open_).sum().alias("outstanding_bytes"),
            pl.col("ts_ns").filter(open_).min().alias("oldest_ts_ns"),
            pl.len().alias("mapped"),
            pl.col("released_by_ns").is_not_null().sum().alias("unmap_lost"),
        )
        .with_columns(((pl.lit(end) - pl.col("oldest_ts_ns")) / 1e9).alias("oldest_age_s"))
        .sort(["outstanding", "device"], descending=[True, False])
    )
