"""The IOVA allocator seen through its kprobes: rcache hits, IOVA space in use and its gaps, magazines.

Theory of operation:

* **rcache hits.** ``alloc_iova_fast`` first tries the per-CPU rcache; on a miss it calls ``alloc_iova`` (the
  rbtree search). A call whose interval (entry to return, same CPU) contains no ``alloc_iova`` entry was served
  from the rcache. Sizes above 32 pages (``IOVA_RANGE_CACHE_MAX_SIZE`` = 6 bins) are never cached; they are kept
  with ``cacheable == False`` so a reader sees them but hit rates leave them out.
* **IOVA space in use.** A range is in use from ``alloc_iova_fast``'s return to the ``free_iova_fast`` of the same
  ``(iovad, pfn)``: mapped by a device or waiting in a flush queue. Ranges parked in rcache magazines are still
  allocated in the kernel's rbtree but not counted here (the replay state has them). A ``free_iova_fast`` with no
  allocation in the trace freed a range allocated before tracing started, which was therefore in use from the
  first event on; ``put_iova_domain`` ends every range its domain still held. Gaps are computed at sampled instants over the in-use ranges of one domain: sort the ranges,
  take the running maximum of their ends, and the largest hole between that and the next start.
* **Magazines.** 6.12 kernels allocate magazines from their own kmem cache, so ``kmem_cache_alloc``/``free``
  (filtered to the IOVA call sites by the recorder) count live magazines; ``iova_depot_work_func`` reports the
  depot size when the trim worker runs; ``iova_magazine_free_pfns`` (all kernels) shows full magazines handed
  back to the rbtree.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .frames import size_bin_label
from .requires import Need, requires
from .tables import EventTables, cached, event_frame, hex_column, pair_calls, trace_span_ns

__all__ = [
    "RCACHE_MAX_PAGES",
    "OPTIONAL_EVENTS",
    "df_rcache_allocs",
    "df_rcache_hit_rate",
    "df_iova_in_use",
    "df_iova_gaps",
    "df_magazines",
    "iovad_labels",
]

#: Largest allocation (pages) the rcache serves: bins 0..5 hold 1..32 pages.
RCACHE_MAX_PAGES = 32

#: Events used when present (never required): domain lifetimes, magazine objects, depot size, magazine flushes,
#: and the dma-iommu call that names a domain's device.
OPTIONAL_EVENTS = ("iova:init_iova_domain", "iova:put_iova_domain", "kmem:kmem_cache_alloc", "kmem:kmem_cache_free",
                   "iova:iova_depot_work_func", "iova:iova_magazine_free_pfns", "dmaiommu:iommu_dma_alloc_iova")

#: pfn of 4 GiB with 4 KiB pages: everything below is the 32-bit DMA window.
PFN_4G = 1 << 20

_FAST = (Need("iova:alloc_iova_fast", why="requested size, limit and domain"),
         Need("iova:alloc_iova_fast_ret", why="the pfn the kernel chose (0 = failure)"))


_RCACHE = _FAST + (Need("iova:alloc_iova", why="the rbtree search that marks an rcache miss"),)


@requires(*_RCACHE)
def df_rcache_allocs(tables: EventTables) -> pl.DataFrame:
    """Every ``alloc_iova_fast`` call with whether the rcache served it.

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        ``ts_ns``, ``cpu``, ``iovad``, ``size_pages``, ``size_bin``, ``limit_pfn``, ``pfn`` (null when the return
        was not seen), ``failed`` (pfn 0), ``cacheable`` (size at most 32 pages), ``hit`` (no ``alloc_iova``
        inside the call; null when the return was not seen).

    Raises:
        MissingEventsError: when the IOVA kprobes were not recorded.
    """
    return cached(tables, "df_rcache_allocs", lambda: _rcache_allocs(tables))


def _rcache_allocs(tables: EventTables) -> pl.DataFrame:
    ent = event_frame(tables, "iova:alloc_iova_fast", ["size"], unsigned=["iovad", "limit_pfn"])
    ret = event_frame(tables, "iova:alloc_iova_fast_ret", unsigned=["pfn"])
    calls = pair_calls(ent, ret, ret_columns=["pfn"]).with_row_index("_c")
    slow = event_frame(tables, "iova:alloc_iova").select(pl.col("seq").alias("_slow_seq"), "cpu")
    # Each rbtree search belongs to the newest alloc_iova_fast entered before it on its CPU, if still running.
    # Order within a CPU is seq, not ts: several events can share one timestamp.
    owner = slow.sort("_slow_seq").join_asof(
        calls.select("_c", "cpu", "seq", "ret_seq").sort("seq"), left_on="_slow_seq", right_on="seq", by="cpu",
        strategy="backward", check_sortedness=False)
    misses = owner.filter(pl.col("ret_seq").is_not_null() & (pl.col("_slow_seq") < pl.col("ret_seq")))
    missed = misses.select("_c").unique().with_columns(pl.lit(True).alias("_miss"))
    out = calls.join(missed, on="_c", how="left")
    return out.select(
        "ts_ns", "cpu", "iovad", pl.col("size").alias("size_pages"), size_bin_label(pl.col("size")).alias("size_bin"),
        "limit_pfn", "pfn",
        (pl.col("pfn") == 0).alias("failed"),
        (pl.col("size") <= RCACHE_MAX_PAGES).alias("cacheable"),
        pl.when(pl.col("pfn").is_null()).then(None).otherwise(pl.col("_miss").is_null()).alias("hit"),
    )


@requires(*_RCACHE)
def df_rcache_hit_rate(tables: EventTables, *, window_s: float = 1.0) -> pl.DataFrame:
    """rcache hit rate per size bin and time window (cacheable sizes only).

    Args:
        tables: event tables keyed by ``system:name``.
        window_s: width of a time window in seconds.

    Returns:
        ``window_start_s``, ``size_bin``, ``allocs``, ``hits``, ``hit_rate`` (0..1), one row per window and bin
        that had allocations.

    Raises:
        MissingEventsError: when the IOVA kprobes were not recorded.
    """
    a = df_rcache_allocs(tables).filter(pl.col("cacheable") & pl.col("hit").is_not_null())
    w = int(window_s * 1e9)
    return (
        a.with_columns(((pl.col("ts_ns") // w) * w / 1e9).alias("window_start_s"))
        .group_by(["window_start_s", "size_bin"])
        .agg(pl.len().alias("allocs"), pl.col("hit").sum().alias("hits"))
        .with_columns((pl.col("hits") / pl.col("allocs")).alias("hit_rate"))
        .sort(["size_bin", "window_start_s"])
    )


_INUSE = _FAST + (Need("iova:free_iova_fast", why="the end of each range's use"),)


def _ranges(tables: EventTables) -> tuple[pl.DataFrame, int]:
    """In-use ranges: iovad, pfn, size_pages, start_ns (trace start for pre-trace ones), end_ns (null: still)."""
    span = trace_span_ns(tables)
    return cached(tables, "iova_ranges", lambda: _build_ranges(tables, span)), (span[0] if span else 0)


def _build_ranges(tables: EventTables, span: tuple[int, int] | None) -> pl.DataFrame:
    start = span[0] if span else 0
    ent = event_frame(tables, "iova:alloc_iova_fast", ["size"], unsigned=["iovad"])
    ret = event_frame(tables, "iova:alloc_iova_fast_ret", unsigned=["pfn"])
    alloc = (pair_calls(ent, ret, ret_columns=["pfn"]).filter(pl.col("pfn").is_not_null() & (pl.col("pfn") != 0))
             .select("iovad", "pfn", pl.col("size").alias("size_pages"), pl.col("ret_ts_ns").alias("start_ns"))
             .with_row_index("_a"))
    free = event_frame(tables, "iova:free_iova_fast", ["size"], unsigned=["iovad", "pfn"]).select(
        pl.col("ts_ns").alias("end_ns"), "iovad", "pfn", pl.col("size").alias("_fsize"))
    matched = free.join_asof(alloc.select("_a", "start_ns", "iovad", "pfn"), left_on="end_ns", right_on="start_ns",
                             by=["iovad", "pfn"], strategy="backward", check_sortedness=False)
    first = matched.filter(pl.col("_a").is_not_null()).unique("_a", keep="first")
    traced = alloc.join(first.select("_a", "end_ns"), on="_a", how="left").drop("_a")
    before = matched.filter(pl.col("_a").is_null()).select(
        "iovad", "pfn", pl.col("_fsize").alias("size_pages"), pl.lit(start, pl.Int64).alias("start_ns"), "end_ns")
    r = pl.concat([traced, before], how="vertical_relaxed")
    # put_iova_domain releases whatever the domain still holds, without one free per range.
    put = event_frame(tables, "iova:put_iova_domain", unsigned=["iovad"]).select(pl.col("ts_ns").alias("_put"), "iovad")
    if not put.is_empty():
        r = (r.sort("start_ns")
             .join_asof(put.sort("_put"), left_on="start_ns", right_on="_put", by="iovad", strategy="forward",
                        check_sortedness=False)
             .with_columns(pl.coalesce("end_ns", "_put").alias("end_ns")).drop("_put"))
    return r


@requires(*_INUSE)
def df_iova_in_use(tables: EventTables) -> pl.DataFrame:
    """IOVA pages in use (mapped or queued for a flush) per domain over time.

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        A step series per ``iovad`` (hex): ``ts_ns``, ``time_s``, ``iovad``, ``pages``, ``pages_below_4g``.

    Raises:
        MissingEventsError: when the IOVA kprobes were not recorded.
    """
    r, _ = _ranges(tables)
    below = pl.when(pl.col("pfn") < PFN_4G).then(pl.col("size_pages")).otherwise(0)
    ups = r.select(pl.col("start_ns").alias("ts_ns"), "iovad", pl.col("size_pages").alias("d"), below.alias("d4"))
    downs = r.filter(pl.col("end_ns").is_not_null()).select(
        pl.col("end_ns").alias("ts_ns"), "iovad", (-pl.col("size_pages")).alias("d"), (-below).alias("d4"))
    s = (pl.concat([ups, downs]).sort(["iovad", "ts_ns"])
         .with_columns(pl.col("d").cum_sum().over("iovad").alias("pages"),
                       pl.col("d4").cum_sum().over("iovad").alias("pages_below_4g"))
         .group_by(["iovad", "ts_ns"], maintain_order=True).agg(pl.col("pages").last(), pl.col("pages_below_4g").last()))
    return hex_column(s, "iovad").select("ts_ns", (pl.col("ts_ns") / 1e9).alias("time_s"), "iovad", "pages",
                                         "pages_below_4g")


def _largest_gap(lo: np.ndarray, hi: np.ndarray, start: int, limit: int) -> int:
    """Largest run of free pfns in [start, limit) around the half-open ranges [lo, hi) (whole arrays, no loop)."""
    keep = (hi > start) & (lo < limit)
    if not keep.any():
        return limit - start
    order = np.argsort(lo[keep], kind="stable")
    los = np.clip(lo[keep][order], start, limit)
    his = np.maximum.accumulate(np.clip(hi[keep][order], start, limit))
    gaps = np.concatenate(([los[0] - start], los[1:] - his[:-1], [limit - his[-1]]))
    return int(max(gaps.max(), 0))


@requires(*_INUSE)
def df_iova_gaps(tables: EventTables, *, samples: int = 200) -> pl.DataFrame:
    """Largest free IOVA gap below 4 GiB and overall, per domain, at evenly spaced instants.

    Only in-use ranges (see the module docstring) are holes' borders; rcache-held ranges are not, so this is
    the fragmentation the devices' own mappings cause.

    Args:
        tables: event tables keyed by ``system:name``.
        samples: number of instants over the trace.

    Returns:
        ``ts_ns``, ``time_s``, ``iovad`` (hex), ``ranges`` (in use), ``largest_gap_below_4g_pages``,
        ``largest_gap_pages`` (up to the highest ``limit_pfn`` the domain was asked for). A domain is sampled only
        while it exists (from ``init_iova_domain`` to ``put_iova_domain`` where the trace shows them).

    Raises:
        MissingEventsError: when the IOVA kprobes were not recorded.
    """
    r, start = _ranges(tables)
    span = trace_span_ns(tables)
    if span is None or r.is_empty():
        return pl.DataFrame(schema={"ts_ns": pl.Int64, "time_s": pl.Float64, "iovad": pl.String, "ranges": pl.Int64,
                                    "largest_gap_below_4g_pages": pl.Int64, "largest_gap_pages": pl.Int64})
    limits = event_frame(tables, "iova:alloc_iova_fast", unsigned=["iovad", "limit_pfn"]).group_by("iovad").agg(
        pl.col("limit_pfn").max())
    # A domain exists from its init_iova_domain (or the trace start) to its put_iova_domain (or the trace end).
    born = dict(event_frame(tables, "iova:init_iova_domain", unsigned=["iovad"]).group_by("iovad").agg(
        pl.col("ts_ns").min()).iter_rows())
    gone = dict(event_frame(tables, "iova:put_iova_domain", unsigned=["iovad"]).group_by("iovad").agg(
        pl.col("ts_ns").max()).iter_rows())
    times = np.linspace(span[0], span[1], samples).astype(np.int64)
    rows: list[dict[str, object]] = []
    for (iovad,), g in r.join(limits, on="iovad", how="left").group_by(["iovad"]):
        lo = g["pfn"].cast(pl.Int64).to_numpy()
        hi = lo + g["size_pages"].to_numpy()
        st = g["start_ns"].to_numpy()
        en = g["end_ns"].fill_null(np.iinfo(np.int64).max).to_numpy()
        top = int(g["limit_pfn"].max() or PFN_4G - 1) + 1
        lo_t, hi_t = born.get(iovad, span[0]), gone.get(iovad, span[1])
        # One pass per sampled instant (not per event): the live set is a boolean mask over all ranges.
        for t in times[(times >= lo_t) & (times <= hi_t)]:
            live = (st <= t) & (en > t)
            rows.append({
                "ts_ns": int(t), "iovad": f"0x{int(iovad):x}", "ranges": int(live.sum()),
                "largest_gap_below_4g_pages": _largest_gap(lo[live], hi[live], 1, PFN_4G),
                "largest_gap_pages": _largest_gap(lo[live], hi[live], 1, max(top, PFN_4G)),
            })
    return pl.DataFrame(rows).with_columns((pl.col("ts_ns") / 1e9).alias("time_s")).select(
        "ts_ns", "time_s", "iovad", "ranges", "largest_gap_below_4g_pages", "largest_gap_pages").sort(["iovad", "ts_ns"])


@requires(Need("iova:iova_magazine_free_pfns", "kmem:kmem_cache_alloc", "iova:iova_depot_work_func",
               why="magazines freed to the rbtree, magazine objects, depot size"))
def df_magazines(tables: EventTables) -> pl.DataFrame:
    """Magazine activity over time, from whatever the kernel exposes.

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        Long form ``ts_ns``, ``time_s``, ``series``, ``value`` with series
        ``"live magazine objects"`` (6.9+: kmem cache alloc minus free, lifted by the fewest magazines that must
        have existed before the trace), ``"depot size (trim worker)"`` (6.7+), and
        ``"pfns returned by magazine flushes"`` (cumulative ``mag_size`` of ``iova_magazine_free_pfns``).

    Raises:
        MissingEventsError: when none of those events was recorded.
    """
    parts: list[pl.DataFrame] = []
    ka = event_frame(tables, "kmem:kmem_cache_alloc", unsigned=["ptr"])
    kf = event_frame(tables, "kmem:kmem_cache_free", unsigned=["ptr"])
    if not ka.is_empty() or not kf.is_empty():
        s = (pl.concat([ka.select("ts_ns", pl.lit(1).alias("d")), kf.select("ts_ns", pl.lit(-1).alias("d"))])
             .sort("ts_ns").with_columns(pl.col("d").cum_sum().alias("value")))
        # Frees of magazines allocated before the trace pull the running sum below zero: lift it by the
        # deepest dip, the fewest magazines that must have existed at the start.
        s = s.with_columns(pl.col("value") - min(int(s["value"].min() or 0), 0))
        parts.append(s.select("ts_ns", pl.lit("live magazine objects").alias("series"), pl.col("value").cast(pl.Int64)))
    dw = event_frame(tables, "iova:iova_depot_work_func", ["depot_size"])
    if not dw.is_empty():
        parts.append(dw.select("ts_ns", pl.lit("depot size (trim worker)").alias("series"),
                               pl.col("depot_size").alias("value")))
    mf = event_frame(tables, "iova:iova_magazine_free_pfns", ["mag_size"])
    if not mf.is_empty():
        parts.append(mf.select("ts_ns", pl.lit("pfns returned by magazine flushes").alias("series"),
                               pl.col("mag_size").cum_sum().alias("value")))
    if not parts:
        return pl.DataFrame(schema={"ts_ns": pl.Int64, "time_s": pl.Float64, "series": pl.String, "value": pl.Int64})
    return pl.concat(parts).with_columns((pl.col("ts_ns") / 1e9).alias("time_s")).select(
        "ts_ns", "time_s", "series", "value")


def iovad_labels(tables: EventTables) -> dict[str, str]:
    """Readable names for IOVA domains: ``"0xff..208 (0000:00:04.0)"``.

    ``alloc_iova_fast`` runs inside ``iommu_dma_alloc_iova`` on the same CPU, so the newest
    ``iommu_dma_alloc_iova`` before it (by ``seq``) names the device. Without the dma-iommu probes the labels
    are the bare addresses.

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        ``{"0x<iovad>": label}`` for every domain ``alloc_iova_fast`` or ``free_iova_fast`` saw.
    """
    fast = event_frame(tables, "iova:alloc_iova_fast", unsigned=["iovad"])
    outer = event_frame(tables, "dmaiommu:iommu_dma_alloc_iova", strings=["devname"])
    ids = set(fast.get_column("iovad").unique().to_list())
    ids |= set(event_frame(tables, "iova:free_iova_fast", unsigned=["iovad"]).get_column("iovad").unique().to_list())
    labels = {f"0x{int(v):x}": f"0x{int(v):x}" for v in ids if v is not None}
    if fast.is_empty() or outer.is_empty():
        return labels
    j = fast.select("seq", "cpu", "iovad").sort("seq").join_asof(
        outer.select("seq", "cpu", "devname").sort("seq"), on="seq", by="cpu", strategy="backward",
        check_sortedness=False)
    names = j.drop_nulls("devname").group_by("iovad").agg(pl.col("devname").unique().sort().str.join(", "))
    for iovad, devs in names.iter_rows():
        key = f"0x{int(iovad):x}"
        labels[key] = f"{key} ({devs})"
    return labels
