"""Flush queues and IOTLB invalidations: how deep the queues got, when they were flushed, and what hit the IOMMU.

Theory of operation:

* **Queue depth (lazy mode).** ``queue_iova`` always starts with ``fq_ring_free`` (6.12: ``fq_ring_free_locked``)
  on the queue of the unmapping CPU, so an ``fq_ring_free`` whose previous relevant event on its CPU (among
  unmap, ring-free and timer events) is an ``__iommu_dma_unmap`` marks one entry added to that ``fq``. Inside a
  ring free, the kernel calls ``free_iova_fast`` once per flushed entry; a ``free_iova_fast`` whose previous
  unmap-or-ring-free on its CPU is a ring free is one entry removed from that ring free's ``fq``. Depth is the
  running sum per queue. Entries queued before tracing started show up as a negative dip; the series is lifted
  by that amount (the fewest entries the queue can have held at the start). 6.12 probes also read ``head`` and
  ``tail`` at each ring free: there the kernel's reading is the depth, and the tests check the reconstruction
  against it (99.8 % of ring frees agree on the lab's lazy 6.12 trace). The reconstruction does not assume what a
  flush frees; it counts what the trace shows freed. That exposes oddities rather than hiding them: in the lab's
  6.1 lazy trace the NVMe queue of CPU 1 takes 273 entries between two late timer runs (10.195 s and 10.227 s),
  more than the 255 a ring can hold, with no full-ring flush in the trace, and the second run frees only 137.
* **Flushes.** Every ``fq_flush_iotlb`` is one IOTLB flush of a cookie's domain. It was triggered by the timer
  when ``fq_flush_timeout`` ran just before it on the same CPU, otherwise by a full queue. The timer is armed by
  the first entry queued after the previous timeout, so ``timer_delay`` (timeout minus that first add) shows
  where the 10 ms timer really fires (jiffies granularity and timer slack included).
* **Invalidations.** ``intel_iommu:qi_submit`` descriptors are decoded from ``qw0`` (type in bits 0-3; for IOTLB
  invalidations the granularity in bits 4-5: global, domain-selective, page-selective) and counted per time
  window together with the dma-iommu flush events and the 6.12 ``cache_tag_flush_*`` tracepoints.
"""

from __future__ import annotations

import polars as pl

from .requires import Need, requires
from .tables import EventTables, event_frame, hex_column, trace_span_ns

__all__ = ["df_flush_queue", "df_flushes", "df_invalidations", "QI_TYPES", "OPTIONAL_EVENTS"]

_RING = ("dmaiommu:fq_ring_free", "dmaiommu:fq_ring_free_locked")

#: Events used when present (never required): every kind df_invalidations counts.
OPTIONAL_EVENTS = ("intel_iommu:qi_submit", "dmaiommu:fq_flush_iotlb", "dmaiommu:fq_flush_timeout",
                   "intel_iommu:cache_tag_flush_range", "intel_iommu:cache_tag_flush_all", *_RING)

#: VT-d queued-invalidation descriptor types (qw0 bits 0-3), as the kernel's qi_submit tracepoint names them.
QI_TYPES = {1: "cc_inv", 2: "iotlb_inv", 3: "dev_tlb_inv", 4: "iec_inv", 5: "inv_wait", 6: "p_iotlb_inv",
            7: "pc_inv", 8: "p_dev_tlb_inv", 9: "page_grp_resp"}
_IOTLB_GRAN = {1: "global", 2: "domain", 3: "page"}


def _ring_frees(tables: EventTables) -> pl.DataFrame:
    key = next((k for k in _RING if k in tables), _RING[0])
    return event_frame(tables, key, ["head", "tail", "mod_mask"], unsigned=["cookie", "fq"])


def _previous(targets: pl.DataFrame, context: pl.DataFrame, *, strict: bool = False) -> pl.DataFrame:
    """For each target row, ``_kind``/``_fq``/``_cookie`` of the newest context event before it on the same CPU.

    ``seq`` orders one CPU's stream, so the as-of join runs on ``seq`` within each CPU. With ``strict`` a
    target that is itself in the context does not find itself.
    """
    ctx = context.select(pl.col("seq").alias("_key"), "cpu", "_kind", "_fq", "_cookie").sort("_key")
    t = targets.with_columns((pl.col("seq") - (1 if strict else 0)).alias("_key")).sort("_key")
    out = t.join_asof(ctx, on="_key", by="cpu", strategy="backward", check_sortedness=False)
    return out.drop("_key").sort(["ts_ns", "cpu", "seq"])


@requires(
    Need(*_RING, why="the flush-queue ring free at each queue_iova and timer run"),
    Need("dmaiommu:__iommu_dma_unmap", why="the unmap that queues an entry"),
    Need("iova:free_iova_fast", why="each entry leaving the queue"),
)
def df_flush_queue(tables: EventTables) -> pl.DataFrame:
    """Depth of every per-CPU flush queue over time (lazy mode).

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        ``ts_ns``, ``time_s``, ``fq`` (hex), ``queue`` (``"CPU n"``: the CPU that fills it), ``depth`` (where the
        probe reads the ring: each reading counted down by the frees after it; else the reconstruction),
        ``reconstructed_depth`` (from the events alone; drifts where kprobe hits were lost), ``kernel_depth`` (6.12 only: ``(tail - head) & mod_mask`` read by the probe at ring-free
        entry, before that call's add; else null), ``change`` (+1 add, -1 remove, 0 a ring free that changed
        nothing). Empty for strict-mode traces.

    Raises:
        MissingEventsError: when the dma-iommu or IOVA probes were not recorded.
    """
    rf = _ring_frees(tables)
    un = event_frame(tables, "dmaiommu:__iommu_dma_unmap")
    tm = event_frame(tables, "dmaiommu:fq_flush_timeout")
    fr = event_frame(tables, "iova:free_iova_fast")
    # Events on one CPU are ordered by seq; ring frees carry their queue and cookie.
    ctx = pl.concat([
        rf.select("ts_ns", "cpu", "seq", pl.lit("R").alias("_kind"), pl.col("fq").alias("_fq"),
                  pl.col("cookie").alias("_cookie")),
        un.select("ts_ns", "cpu", "seq", pl.lit("U").alias("_kind"), pl.lit(None, pl.UInt64).alias("_fq"),
                  pl.lit(None, pl.UInt64).alias("_cookie")),
        tm.select("ts_ns", "cpu", "seq", pl.lit("T").alias("_kind"), pl.lit(None, pl.UInt64).alias("_fq"),
                  pl.lit(None, pl.UInt64).alias("_cookie")),
    ])
    # A ring free is an add when the event before it on its CPU (not itself) was an unmap.
    adds = (_previous(rf, ctx, strict=True).filter(pl.col("_kind") == "U")
            .select("ts_ns", "cpu", "seq", "fq", pl.lit(1).alias("change")))
    rem_ctx = ctx.filter(pl.col("_kind") != "T")
    removes = (_previous(fr, rem_ctx).filter(pl.col("_kind") == "R")
               .select("ts_ns", "cpu", "seq", pl.col("_fq").alias("fq"), pl.lit(-1).alias("change")))
    steps = pl.concat([adds, removes]).sort(["fq", "ts_ns", "cpu", "seq"])
    if steps.is_empty():
        return pl.DataFrame(schema={"ts_ns": pl.Int64, "time_s": pl.Float64, "fq": pl.String, "queue": pl.String,
                                    "depth": pl.Int64, "reconstructed_depth": pl.Int64, "kernel_depth": pl.Int64,
                                    "change": pl.Int64})
    steps = steps.with_columns(pl.col("change").cum_sum().over("fq").alias("depth"))
    # Entries queued before the trace make the running sum dip below zero; lift by the deepest dip.
    steps = steps.with_columns((pl.col("depth") - pl.col("depth").min().over("fq").clip(upper_bound=0)).alias("depth"))
    owner = adds.group_by("fq").agg(pl.col("cpu").mode().first().alias("_owner"))
    kernel = rf.filter(pl.col("mod_mask").is_not_null()).select(
        "ts_ns", "cpu", "seq", "fq", ((pl.col("tail") - pl.col("head")) & pl.col("mod_mask")).alias("kernel_depth"), "mod_mask")
    out = steps.join(kernel, on=["ts_ns", "cpu", "seq", "fq"], how="full", coalesce=True).sort(["fq", "ts_ns", "seq"])
    # Ring frees that neither added nor removed still carry the kernel's reading; carry the depth over them.
    out = out.with_columns(pl.col("depth").forward_fill().over("fq").fill_null(0), pl.col("change").fill_null(0))
    # Where the kernel's own reading exists it wins (a lost kprobe hit cannot skew it). The reading is taken at
    # ring-free entry, before this call's frees and add; the removes that follow count down from it until the
    # next reading, so the series never mixes the kernel's numbers with a drifting reconstruction.
    out = out.with_columns(pl.col("depth").alias("reconstructed_depth"),
                           pl.col("kernel_depth").is_not_null().cum_sum().over("fq").alias("_anchor"))
    grp = ["fq", "_anchor"]
    add = pl.col("change").clip(lower_bound=0).first().over(grp)
    idx = pl.int_range(pl.len()).over(grp)
    # The call frees first and adds last: at the ring free itself show the reading (plus the add when nothing
    # is freed), so a full ring reads 255, never 256.
    anchored = (
        pl.col("kernel_depth").first().over(grp)
        + pl.when((idx > 0) | (pl.len().over(grp) == 1)).then(add).otherwise(0)
        + pl.col("change").cum_sum().over(grp) - pl.col("change").first().over(grp)
    ).clip(lower_bound=0)
    # A full ring (reading == mod_mask) is flushed by a second ring free before the add lands; the add placed
    # on the first one would read one over the capacity, which the ring (one slot kept empty) cannot hold.
    anchored = pl.min_horizontal(anchored, pl.col("mod_mask").first().over(grp))
    out = out.with_columns(
        pl.when(pl.col("_anchor") > 0).then(anchored).otherwise(pl.col("depth")).alias("depth"))
    out = out.join(owner, on="fq", how="left")
    out = hex_column(out, "fq")
    return out.select(
        "ts_ns", (pl.col("ts_ns") / 1e9).alias("time_s"), "fq",
        pl.concat_str(pl.lit("CPU "), pl.col("_owner").cast(pl.String)).fill_null("CPU ?").alias("queue"),
        pl.col("depth").cast(pl.Int64), pl.col("reconstructed_depth").cast(pl.Int64),
        pl.col("kernel_depth").cast(pl.Int64), pl.col("change").cast(pl.Int64),
    ).sort(["queue", "ts_ns"])


@requires(
    Need("dmaiommu:fq_flush_iotlb", why="each flush-queue IOTLB flush"),
    Need("dmaiommu:fq_flush_timeout", why="the timer that triggers most flushes"),
    Need(*_RING, why="entries queued, which arm the timer"),
    Need("dmaiommu:__iommu_dma_unmap", why="the unmap that queues an entry"),
)
def df_flushes(tables: EventTables) -> pl.DataFrame:
    """Every flush-queue IOTLB flush with what triggered it and how long since the previous one.

    Args:
        tables: event tables keyed by ``system:name``.

    Returns:
        ``ts_ns``, ``time_s``, ``cpu``, ``cookie`` (hex), ``trigger`` (``timer`` or ``queue full``),
        ``interval_ms`` (since the previous flush of the same cookie; null for the first), ``timer_delay_ms``
        (timer flushes: since the first entry queued after the previous flush, i.e. since the timer was armed).
        Empty for strict-mode traces.

    Raises:
        MissingEventsError: when the dma-iommu probes were not recorded.
    """
    fl = event_frame(tables, "dmaiommu:fq_flush_iotlb", unsigned=["cookie"])
    tm = event_frame(tables, "dmaiommu:fq_flush_timeout")
    un = event_frame(tables, "dmaiommu:__iommu_dma_unmap")
    rf = _ring_frees(tables)
    none = pl.lit(None, pl.UInt64)
    ctx = pl.concat([
        tm.select("ts_ns", "cpu", "seq", pl.lit("T").alias("_kind"), none.alias("_fq"), none.alias("_cookie")),
        un.select("ts_ns", "cpu", "seq", pl.lit("U").alias("_kind"), none.alias("_fq"), none.alias("_cookie")),
    ])
    f = _previous(fl, ctx).with_columns(
        pl.when(pl.col("_kind") == "T").then(pl.lit("timer")).otherwise(pl.lit("queue full")).alias("trigger"))
    # Adds (ring frees right after an unmap) arm the timer; find the first add after each cookie's previous flush.
    rctx = pl.concat([
        rf.select("ts_ns", "cpu", "seq", pl.lit("R").alias("_kind"), pl.col("fq").alias("_fq"),
                  pl.col("cookie").alias("_cookie")),
        un.select("ts_ns", "cpu", "seq", pl.lit("U").alias("_kind"), none.alias("_fq"), none.alias("_cookie")),
    ])
    prev = _previous(rf, rctx, strict=True)
    adds = prev.filter(pl.col("_kind") == "U").select(pl.col("ts_ns").alias("_add_ts"), "cookie").sort("_add_ts")
    f = f.sort("ts_ns").with_columns(pl.col("ts_ns").shift(1).over("cookie").alias("_prev_flush"))
    f = f.with_columns(pl.col("_prev_flush").fill_null(0).alias("_from"))
    armed = f.sort("_from").join_asof(adds, left_on="_from", right_on="_add_ts", by="cookie", strategy="forward",
                                      check_sortedness=False)
    armed = armed.with_columns(
        pl.when((pl.col("trigger") == "timer") & (pl.col("_add_ts") <= pl.col("ts_ns")))
        .then((pl.col("ts_ns") - pl.col("_add_ts")) / 1e6).otherwise(None).alias("timer_delay_ms"),
        ((pl.col("ts_ns") - pl.col("_prev_flush")) / 1e6).alias("interval_ms"),
    )
    return hex_column(armed, "cookie").select(
        "ts_ns", (pl.col("ts_ns") / 1e9).alias("time_s"), "cpu", "cookie", "trigger", "interval_ms",
        "timer_delay_ms").sort("ts_ns")


@requires(Need("intel_iommu:qi_submit", "dmaiommu:fq_flush_iotlb", "intel_iommu:cache_tag_flush_range",
               "intel_iommu:cache_tag_flush_all", why="invalidations submitted or flushes requested"))
def df_invalidations(tables: EventTables, *, window_s: float = 1.0) -> pl.DataFrame:
    """IOTLB and other invalidations per time window, by kind.

    Args:
        tables: event tables keyed by ``system:name``.
        window_s: width of a window in seconds.

    Returns:
        Long form ``window_start_s``, ``kind``, ``count``, ``per_s`` (count / window), with every window of the
        trace for every kind seen (zeros included). Kinds:
        ``qi: iotlb_inv (page)`` and the other decoded descriptors, ``fq_flush_iotlb``, ``fq_flush_timeout``,
        ``cache_tag_flush_range``, ``cache_tag_flush_all``.

    Raises:
        MissingEventsError: when neither the VT-d tracepoints nor the flush-queue probes were recorded.
    """
    parts = []
    qi = event_frame(tables, "intel_iommu:qi_submit", unsigned=["qw0"])
    if not qi.is_empty():
        ty = (pl.col("qw0") % 16).cast(pl.Int64)
        gran = ((pl.col("qw0") // 16) % 4).cast(pl.Int64)
        name = ty.replace_strict(QI_TYPES, default="type?", return_dtype=pl.String)
        kind = (pl.when(ty == 2)
                .then(pl.concat_str(pl.lit("qi: iotlb_inv ("),
                                    gran.replace_strict(_IOTLB_GRAN, default="?", return_dtype=pl.String), pl.lit(")")))
                .otherwise(pl.concat_str(pl.lit("qi: "), name)))
        parts.append(qi.select("ts_ns", kind.alias("kind")))
    for key in ("dmaiommu:fq_flush_iotlb", "dmaiommu:fq_flush_timeout", "intel_iommu:cache_tag_flush_range",
                "intel_iommu:cache_tag_flush_all"):
        ev = event_frame(tables, key)
        if not ev.is_empty():
            parts.append(ev.select("ts_ns", pl.lit(key.split(":", 1)[1]).alias("kind")))
    if not parts:
        return pl.DataFrame(schema={"window_start_s": pl.Float64, "kind": pl.String, "count": pl.Int64,
                                    "per_s": pl.Float64})
    w = int(window_s * 1e9)
    counts = (
        pl.concat(parts)
        .with_columns((pl.col("ts_ns") // w).alias("_win"))
        .group_by(["_win", "kind"])
        .agg(pl.len().cast(pl.Int64).alias("count"))
    )
    # Every window of the trace for every kind: a window without events is a zero, not a gap.
    span = trace_span_ns(tables)
    lo, hi = (span[0] // w, span[1] // w) if span else (counts["_win"].min(), counts["_win"].max())
    grid = pl.DataFrame({"_win": pl.int_range(lo, hi + 1, eager=True)}).join(
        counts.select("kind").unique(), how="cross")
    return (
        grid.join(counts, on=["_win", "kind"], how="left")
        .with_columns(pl.col("count").fill_null(0))
        .select((pl.col("_win") * w / 1e9).alias("window_start_s"), "kind", "count",
                (pl.col("count") / window_s).alias("per_s"))
        .sort(["kind", "window_start_s"])
    )
