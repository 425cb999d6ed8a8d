"""df_* frames: hand-built cases with known answers, properties, and real lab traces checked against independent
references (the lab's event_counts.txt, trace-cmd's own decode in report.txt.gz, the 6.12 kernel's ring head/tail).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace.analysis import frames, frames_flush, frames_iova
from iovatrace.analysis.frames_iova import _largest_gap
from iovatrace.analysis.style import thin_steps
from iovatrace.analysis.tables import event_frame, pair_calls
from iovatrace.errors import MissingEventsError

# -- helpers -------------------------------------------------------------------------------------------------


def _table(rows: list[dict], key: str) -> pa.Table:
    """A minimal event table: common columns plus payload, as the parsers shape it."""
    base = {"ts_ns": pa.uint64(), "cpu": pa.uint32(), "seq": pa.uint64(), "pid": pa.int32()}
    cols: dict[str, list] = {c: [r[c] for r in rows] for c in rows[0]}
    arrays = {c: pa.array(v, pa.string() if isinstance(v[0], str) else base.get(c, pa.uint64()))
              for c, v in cols.items()}
    arrays["event"] = pa.array([key] * len(rows)).dictionary_encode()
    return pa.table(arrays)


def _event_counts(folder: Path) -> dict[str, int]:
    """The lab's own per-event counts (event_counts.txt), keyed by bare event name."""
    out = {}
    for line in (folder / "event_counts.txt").read_text().splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+):", line)
        if m:
            out[m.group(2)] = int(m.group(1))
    return out


_TABLES: dict[str, dict] = {}


def _lab_tables(shared_data: Path, name: str) -> dict:
    if name not in _TABLES:
        from iovatrace.parsers import open_trace

        _TABLES[name] = open_trace(shared_data / "traces-lab" / name / "trace.dat").read_tables()
    return _TABLES[name]


# -- pairing entry and return probes -------------------------------------------------------------------------


def test_pair_calls_honours_nesting_on_one_cpu() -> None:
    # cpu0: A( B( )B )A ; cpu1: C( )C interleaved in time with cpu0's calls.
    ent = pl.DataFrame({"ts_ns": [10, 20, 15], "cpu": [0, 0, 1], "seq": [0, 1, 0], "pid": [1, 1, 2],
                        "name": ["A", "B", "C"]})
    ret = pl.DataFrame({"ts_ns": [30, 40, 16], "cpu": [0, 0, 1], "seq": [2, 3, 1], "pid": [1, 1, 2],
                        "val": [200, 100, 300]})
    out = pair_calls(ent, ret, ret_columns=["val"])
    got = dict(zip(out["name"], out["val"]))
    assert got == {"A": 100, "B": 200, "C": 300}
    assert out["ret_ts_ns"].to_list() == [40, 30, 16]


def test_pair_calls_leaves_an_entry_without_return_unpaired() -> None:
    ent = pl.DataFrame({"ts_ns": [10, 50], "cpu": [0, 0], "seq": [0, 2], "pid": [1, 1]})
    ret = pl.DataFrame({"ts_ns": [20], "cpu": [0], "seq": [1], "pid": [1], "v": [7]})
    out = pair_calls(ent, ret, ret_columns=["v"])
    assert out["v"].to_list() == [7, None]


@st.composite
def _nested_calls(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, dict[int, int]]:
    """Random well-nested call trees on two CPUs; each call's id is its entry seq, its return carries the id."""
    entries, rets = [], []
    truth: dict[int, int] = {}
    for cpu in (0, 1):
        stack: list[int] = []
        seq = 0
        for op in draw(st.lists(st.booleans(), max_size=60)):
            if op or not stack:  # enter
                entries.append((seq * 10 + cpu, cpu, seq))
                stack.append(seq)
            else:
                call = stack.pop()
                rets.append((seq * 10 + cpu, cpu, seq, call))
                truth[call * 10 + cpu] = call
            seq += 1
    e = pl.DataFrame(entries, schema=["ts_ns", "cpu", "seq"], orient="row").with_columns(pl.lit(0).alias("pid"))
    r = pl.DataFrame(rets, schema=["ts_ns", "cpu", "seq", "call"], orient="row").with_columns(pl.lit(0).alias("pid"))
    return e, r, truth


@settings(max_examples=60, deadline=None)
@given(_nested_calls())
def test_pair_calls_matches_a_stack_on_random_nesting(case) -> None:
    e, r, truth = case
    if e.is_empty():
        return
    out = pair_calls(e, r.cast({"call": pl.Int64}) if not r.is_empty() else r, ret_columns=["call"])
    for ts, seq, call in out.select("ts_ns", "seq", "call").iter_rows():
        assert call == truth.get(ts), (ts, seq, call)


# -- requirements ---------------------------------------------------------------------------------------------


def test_missing_events_name_the_events_and_the_recorder() -> None:
    tables = {"iommu:map": _table([{"ts_ns": 1, "cpu": 0, "seq": 0, "pid": 1, "iova": 0, "size": 4096}], "iommu:map")}
    with pytest.raises(MissingEventsError) as exc:
        frames_flush.df_flush_queue(tables)
    msg = str(exc.value)
    assert "dmaiommu:fq_ring_free (or dmaiommu:fq_ring_free_locked)" in msg
    assert "iova:free_iova_fast" in msg and "iovatrace record" in msg
    assert exc.value.missing[0].startswith("dmaiommu:fq_ring_free")


# -- small exact cases ----------------------------------------------------------------------------------------


def _mapping_tables() -> dict:
    """Device D (dev 0xd0) maps IOVA 0xfff00000 at t=10 and unmaps at t=50; an unmap at t=30 of 0xffe00000
    belongs to a mapping made before the trace; 0xffd00000 is mapped at t=60 and never unmapped."""
    alloc = [{"ts_ns": 10, "cpu": 0, "seq": 0, "pid": 1, "domain": 0xAA, "size": 8192, "dma_limit": 2**64 - 1,
              "dev": 0xD0, "devname": "0000:00:04.0"},
             {"ts_ns": 60, "cpu": 0, "seq": 4, "pid": 1, "domain": 0xAA, "size": 4096, "dma_limit": 2**64 - 1,
              "dev": 0xD0, "devname": "0000:00:04.0"}]
    t = {
        "dmaiommu:iommu_dma_alloc_iova": _table(alloc, "x"),
        "dmaiommu:iommu_dma_alloc_iova_ret": _table(
            [{"ts_ns": 11, "cpu": 0, "seq": 1, "pid": 1, "iova": 0xFFF00000},
             {"ts_ns": 61, "cpu": 0, "seq": 5, "pid": 1, "iova": 0xFFD00000}], "x"),
        "dmaiommu:__iommu_dma_unmap": _table(
            [{"ts_ns": 30, "cpu": 1, "seq": 0, "pid": 0, "dev": 0xD0, "dma_addr": 0xFFE00010, "size": 100},
             {"ts_ns": 50, "cpu": 1, "seq": 1, "pid": 0, "dev": 0xD0, "dma_addr": 0xFFF00040, "size": 5000}], "x"),
    }
    return t


def test_df_mappings_pairs_unmaps_and_keeps_pretrace_ones() -> None:
    m = frames.df_mappings(_mapping_tables())
    rows = {r["iova"]: r for r in m.iter_rows(named=True)}
    assert rows[0xFFF00000]["unmap_ts_ns"] == 50 and rows[0xFFF00000]["lifetime_ns"] == 40
    assert rows[0xFFF00000]["size_pages"] == 2 and rows[0xFFF00000]["domain"] == "0xaa"
    assert rows[0xFFE00000]["origin"] == "before_trace" and rows[0xFFE00000]["size_bytes"] == 4096
    assert rows[0xFFE00000]["device"] == "0000:00:04.0"
    assert rows[0xFFD00000]["unmap_ts_ns"] is None
    live = frames.df_live_mappings(_mapping_tables())
    # The trace starts at t=10 (its first event): the pre-trace mapping and the first traced one are live
    # from there; -1 at 30 (pre-trace unmap); -1 at 50; +1 at 60.
    assert list(zip(live["ts_ns"], live["live"])) == [(10, 0), (10, 2), (30, 1), (50, 0), (60, 1)]
    out = frames.df_outstanding(_mapping_tables())
    assert out.row(0, named=True)["outstanding"] == 1 and out.row(0, named=True)["mapped"] == 2


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 400), st.integers(1, 40)), max_size=25), st.integers(2, 500))
def test_largest_gap_matches_brute_force(ranges, limit) -> None:
    lo = np.array([a for a, _ in ranges], dtype=np.int64)
    hi = lo + np.array([n for _, n in ranges], dtype=np.int64)
    used = np.zeros(limit + 1, dtype=bool)
    for a, b in zip(lo, hi):
        used[max(a, 1):min(b, limit)] = True
    best = run = 0
    for p in range(1, limit):
        run = 0 if used[p] else run + 1
        best = max(best, run)
    assert _largest_gap(lo, hi, 1, limit) == best


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=3000), st.integers(8, 400))
def test_thin_steps_keeps_ends_and_extremes(values, max_points) -> None:
    y = np.array(values, dtype=float)
    x = np.arange(len(y), dtype=float)
    tx, ty = thin_steps(x, y, max_points)
    assert tx[0] == x[0] and tx[-1] == x[-1]
    assert ty.max() == y.max() and ty.min() == y.min()
    assert np.all(np.diff(tx) > 0)
    assert len(tx) <= max(len(x), max_points)


# -- real lab traces, independent references ------------------------------------------------------------------


def test_mappings_account_for_every_alloc_and_unmap(shared_data: Path) -> None:
    folder = shared_data / "traces-lab" / "lazy_v7"
    counts = _event_counts(folder)
    m = frames.df_mappings(_lab_tables(shared_data, "lazy_v7"))
    traced = m.filter(pl.col("origin") == "traced")
    assert traced.height == counts["iommu_dma_alloc_iova_ret"]
    # Every unmap ends exactly one mapping: a traced one or one made before the trace.
    assert traced["unmap_ts_ns"].is_not_null().sum() + m.filter(pl.col("origin") == "before_trace").height \
        == counts["__iommu_dma_unmap"]
    assert (traced["lifetime_ns"].drop_nulls() >= 0).all()
    assert set(m["device"]) == {"0000:00:03.0", "0000:00:04.0"}  # the e1000e NIC and the NVMe disk (pci.txt)


def test_rcache_misses_are_the_rbtree_searches(shared_data: Path) -> None:
    """Every alloc_iova in these traces runs inside alloc_iova_fast (its only caller here), once per miss."""
    for name in ("lazy_v7", "strict_v7"):
        counts = _event_counts(shared_data / "traces-lab" / name)
        a = frames_iova.df_rcache_allocs(_lab_tables(shared_data, name))
        assert a.height == counts["alloc_iova_fast"]
        assert (~a["hit"]).sum() == counts["alloc_iova"]
        # Sizes above 32 pages always search the rbtree.
        assert not a.filter(~pl.col("cacheable"))["hit"].any()
    rate = frames_iova.df_rcache_hit_rate(_lab_tables(shared_data, "lazy_v7"))
    assert rate["hit_rate"].is_between(0, 1).all()
    assert rate["allocs"].sum() == frames_iova.df_rcache_allocs(_lab_tables(shared_data, "lazy_v7")).filter(
        "cacheable").height


def test_flush_queue_reconstruction_agrees_with_kernel_head_tail(shared_data: Path) -> None:
    """6.12 probes read the ring's head and tail; the event-only reconstruction must agree nearly everywhere."""
    q = frames_flush.df_flush_queue(_lab_tables(shared_data, "lazy_v7-6.12"))
    k = q.filter(pl.col("kernel_depth").is_not_null())
    # The reading is taken before the call's own add.
    before = k["reconstructed_depth"] - k["change"].clip(lower_bound=0)
    agree = float((before == k["kernel_depth"]).mean())
    assert k.height > 13_000 and agree >= 0.99, agree
    assert (q["depth"] >= 0).all() and q["depth"].max() <= 255  # a ring keeps one of its 256 slots empty


def test_flushes_and_timer(shared_data: Path) -> None:
    counts = _event_counts(shared_data / "traces-lab" / "lazy_v7")
    f = frames_flush.df_flushes(_lab_tables(shared_data, "lazy_v7"))
    assert f.height == counts["fq_flush_iotlb"]
    assert (f["trigger"] == "timer").sum() == counts["fq_flush_timeout"]
    # IOVA_FQ_TIMEOUT is 10 ms and msecs_to_jiffies rounds up at HZ=250: the typical delay is 12-16 ms.
    assert 10.0 <= float(f["timer_delay_ms"].median()) <= 20.0
    strict = _lab_tables(shared_data, "strict_v7")
    assert "dmaiommu:fq_flush_iotlb" not in strict or frames_flush.df_flushes(strict).is_empty()


def test_invalidations_match_trace_cmds_decode(shared_data: Path) -> None:
    """qi_submit descriptor types decoded from qw0 must match the names trace-cmd printed for the same events."""
    folder = shared_data / "traces-lab" / "strict_v7"
    ref: dict[str, int] = {}
    with gzip.open(folder / "report.txt.gz", "rt") as fh:
        for line in fh:
            m = re.search(r"qi_submit:\s+(\w+) ", line)
            if m:
                ref[m.group(1)] = ref.get(m.group(1), 0) + 1
    inv = frames_flush.df_invalidations(_lab_tables(shared_data, "strict_v7"))
    got: dict[str, int] = {}
    for kind, n in inv.group_by("kind").agg(pl.col("count").sum()).iter_rows():
        if kind.startswith("qi: "):
            name = kind[4:].split(" ")[0]
            got[name] = got.get(name, 0) + n
    assert got == ref
    # Every window of the trace is there, zeros included.
    w = inv.filter(pl.col("kind") == inv["kind"][0])["window_start_s"].to_numpy()
    assert np.allclose(np.diff(w), 1.0)


def test_iova_in_use_never_negative_and_domains_named(shared_data: Path) -> None:
    t = _lab_tables(shared_data, "lazy_v7")
    u = frames_iova.df_iova_in_use(t)
    assert (u["pages"] >= 0).all() and (u["pages_below_4g"] <= u["pages"]).all()
    labels = frames_iova.iovad_labels(t)
    assert any("0000:00:03.0" in v for v in labels.values()) and any("0000:00:04.0" in v for v in labels.values())
    g = frames_iova.df_iova_gaps(t, samples=20)
    # The NIC's domain lives through the trace; the NVMe's is destroyed (put_iova_domain) and re-created
    # (init_iova_domain) by the PCI remove + rescan, and is sampled only while it exists.
    per = dict(g.group_by("iovad").agg(pl.len()).iter_rows())
    nic = next(k for k, v in labels.items() if "0000:00:03.0" in v)
    put = t["iova:put_iova_domain"].column("ts_ns")[0].as_py()
    init = t["iova:init_iova_domain"].column("ts_ns")[0].as_py()
    put_dom = f"0x{t['iova:put_iova_domain'].column('iovad')[0].as_py():x}"
    init_dom = f"0x{t['iova:init_iova_domain'].column('iovad')[0].as_py():x}"
    assert per[nic] == 20 and 0 < per[put_dom] < 20 and 0 < per[init_dom] < 20
    assert g.filter(pl.col("iovad") == put_dom)["ts_ns"].max() <= put
    assert g.filter(pl.col("iovad") == init_dom)["ts_ns"].min() >= init
    assert (g["largest_gap_below_4g_pages"] <= 1 << 20).all() and (g["largest_gap_below_4g_pages"] > 0).all()


def test_magazines_6_12_kmem_and_depot(shared_data: Path) -> None:
    counts = _event_counts(shared_data / "traces-lab" / "lazy_v7-6.12")
    m = frames_iova.df_magazines(_lab_tables(shared_data, "lazy_v7-6.12"))
    series = set(m["series"])
    assert series == {"live magazine objects", "depot size (trim worker)", "pfns returned by magazine flushes"}
    live = m.filter(pl.col("series") == "live magazine objects")
    assert live.height == counts["kmem_cache_alloc"] + counts["kmem_cache_free"]
    assert (live["value"] >= 0).all()
    assert m.filter(pl.col("series") == "depot size (trim worker)").height == counts["iova_depot_work_func"]


def test_event_frame_of_absent_table_is_empty_with_columns() -> None:
    df = event_frame({}, "iova:alloc_iova_fast", ["size"], unsigned=["iovad"], strings=["devname"])
    assert df.is_empty() and df.columns == ["ts_ns", "cpu", "seq", "pid", "size", "iovad", "devname"]


def test_rcache_hits_agree_with_the_replay_model(shared_data: Path) -> None:
    """Two independent counts: hits from the events alone (no nested alloc_iova) and hits the replayed model
    produced. They must agree bin by bin on the lab's lazy 6.1 and 6.12 traces."""
    from iovatrace.replay.commands import replay_trace
    from iovatrace.replay.summary import hit_rates

    for name in ("lazy_v7", "lazy_v7-6.12"):
        res = replay_trace(str(shared_data / "traces-lab" / name / "trace.dat"))
        model = {r["bin"]: r["hits"] for r in hit_rates(res) if r["bin"] < 6}
        ev = (frames_iova.df_rcache_allocs(_lab_tables(shared_data, name)).filter("cacheable")
              .with_columns(pl.col("size_pages").log(2).ceil().cast(pl.Int64).alias("bin"))
              .group_by("bin").agg(pl.col("hit").sum()))
        events = {b: int(h) for b, h in ev.iter_rows()}
        assert {b: h for b, h in model.items() if h or b in events} == events, name


@st.composite
def _mapping_story(draw: st.DrawFn) -> list[tuple[str, int, int, int]]:
    """Events (kind, t, dev, iova): maps and unmaps of two devices, each in its own domain (a domain never hands
    out a mapped IOVA twice); some unmaps hit mappings from 'before'."""
    live: dict[tuple[int, int], bool] = {}
    events = []
    t = 100
    for _ in range(draw(st.integers(0, 40))):
        t += draw(st.integers(1, 5))
        dev = draw(st.sampled_from([0xD0, 0xE0]))
        iova = draw(st.sampled_from([0x1000, 0x2000, 0x3000, 0x4000]))
        if live.get((dev, iova)):
            events.append(("unmap", t, dev, iova))
            live[(dev, iova)] = False
        elif (dev, iova) not in live and draw(st.booleans()):
            events.append(("unmap", t, dev, iova))  # a mapping made before the trace
            live[(dev, iova)] = False
        else:
            events.append(("map", t, dev, iova))
            live[(dev, iova)] = True
    return events


@settings(max_examples=60, deadline=None)
@given(_mapping_story())
def test_live_mappings_match_a_replay_of_the_story(events) -> None:
    maps = [e for e in events if e[0] == "map"]
    unmaps = [e for e in events if e[0] == "unmap"]
    if not maps or not unmaps:
        return
    names = {0xD0: "dev-d", 0xE0: "dev-e"}
    seq = iter(range(10_000))
    t = {
        "dmaiommu:iommu_dma_alloc_iova": _table([
            {"ts_ns": ts, "cpu": 0, "seq": next(seq), "pid": 1, "domain": d + 1, "size": 4096, "dev": d,
             "devname": names[d]} for _, ts, d, _ in maps], "x"),
        "dmaiommu:iommu_dma_alloc_iova_ret": _table([
            {"ts_ns": ts, "cpu": 1, "seq": i, "pid": 1, "iova": iova} for i, (_, ts, _, iova) in enumerate(maps)], "x"),
        "dmaiommu:__iommu_dma_unmap": _table([
            {"ts_ns": ts, "cpu": 2, "seq": i, "pid": 0, "dev": d, "dma_addr": iova, "size": 4096}
            for i, (_, ts, d, iova) in enumerate(unmaps)], "x"),
    }
    # Pair each entry with its return on the same CPU: put both on CPU 0 in order.
    ents = t["dmaiommu:iommu_dma_alloc_iova"]
    rets = t["dmaiommu:iommu_dma_alloc_iova_ret"]
    t["dmaiommu:iommu_dma_alloc_iova"] = ents.set_column(2, "seq", pa.array([2 * i for i in range(len(maps))],
                                                                             pa.uint64()))
    t["dmaiommu:iommu_dma_alloc_iova_ret"] = rets.set_column(1, "cpu", pa.array([0] * len(maps), pa.uint32())) \
        .set_column(2, "seq", pa.array([2 * i + 1 for i in range(len(maps))], pa.uint64()))
    live = frames.df_live_mappings(t)
    # A device that never maps inside the trace is known only by its struct device pointer.
    mapped_devs = {d for _, _, d, _ in maps}
    names = {d: (n if d in mapped_devs else f"0x{d:x}") for d, n in names.items()}
    # Oracle: replay the story with a counter per device; a mapping from before the trace (an unmap with no
    # map before it) is live from the first event of the trace until its unmap.
    known: set[tuple[int, int]] = set()
    state = {n: 0 for n in names.values()}
    for k, _, d, i in events:
        if k == "map":
            known.add((d, i))
        elif (d, i) not in known:
            state[names[d]] += 1
    expect: dict[str, dict[int, int]] = {n: {} for n in names.values()}
    for k, ts, d, _ in events:
        state[names[d]] += 1 if k == "map" else -1
        expect[names[d]][ts] = state[names[d]]
    for dev, want in expect.items():
        got = live.filter(pl.col("group") == dev)
        if not want:
            assert got.is_empty()
            continue
        series = dict(zip(got["ts_ns"].to_list(), got["live"].to_list()))  # the last value at each timestamp
        assert {ts: series.get(ts) for ts in want} == want, dev
        assert got["live"].min() >= 0


def test_forcedac_allocates_above_4g_and_leaves_the_32bit_window_free(shared_data: Path) -> None:
    """iommu.forcedac=1 (lab README): every allocation tries the full range first, so nothing lands below 4 GiB;
    the gap below 4 GiB is the whole window (pfns 1..2^20-1) and the overall gap is smaller than the window."""
    t = _lab_tables(shared_data, "strict_forcedac_v7")
    a = frames_iova.df_rcache_allocs(t)
    assert (a["pfn"] >= 1 << 20).all()
    g = frames_iova.df_iova_gaps(t, samples=30)
    assert (g["largest_gap_below_4g_pages"] == (1 << 20) - 1).all()
    top = int(a["limit_pfn"].max())
    busy = g.filter(pl.col("ranges") > 0)
    assert busy.height and (busy["largest_gap_pages"] < top).all()


@pytest.mark.parametrize("name", ["lazy_v7", "strict_v7", "lazy_v7-6.12", "strict_v7-6.12"])
def test_steady_state_rings_end_as_they_began(shared_data: Path, name: str) -> None:
    """The NIC keeps its receive ring mapped and the NVMe its long-lived buffers: the mappings a device holds at
    the end equal those it held at the start (the pre-trace ones the trace sees unmapped). On 6.12 this needs the
    dma:* tracepoints to stand in for lost unmap kprobe hits, sg unmaps included, and the NVMe's new struct device
    after the rescan."""
    m = frames.df_mappings(_lab_tables(shared_data, name))
    before = dict(m.filter(pl.col("origin") == "before_trace").group_by("device").agg(pl.len()).iter_rows())
    out = dict(frames.df_outstanding(_lab_tables(shared_data, name)).select("device", "outstanding").iter_rows())
    assert out == before, (out, before)
    assert out["0000:00:03.0"] == 255  # e1000e: 256 receive descriptors, one always left unused
