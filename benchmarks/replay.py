"""Replay throughput and memory on the lab traces: reading + merging, the sans-IO driver, and both end to end.

Usage: python benchmarks/replay.py [TRACE_DIR_OR_FILE ...] [--with-extensions] [--block-pages N] [--repeat N]
       [--long N ...]

Each trace runs in a fresh subprocess, so its peak RSS is its own. In that process, first the replay runs end to
end as ``replay_trace`` does it (trace.dat: per-CPU page blocks merged by time, filtered in Arrow, streamed
into the driver), and the peak RSS is taken right after; then the stream is read and merged alone into a list
(*read+merge s*), and that list is handed to a fresh driver (*driver s*: events per second of ``driver.run``,
parsing excluded). *end-to-end events/s* is events per second of the first, streamed run. ``--repeat N`` hands
the same list to N fresh drivers and keeps the fastest run (the shared machine's load makes single runs vary).

``--long 1 4 16`` builds lazy_v6 with its pages repeated 1x, 4x, 16x (``benchmarks/parse.py``'s
``build_repeated_v6``) and prints the peak RSS of the streamed replay against the old path (whole-trace
``read_tables`` then ``iter_events``), and of the streamed reading and merging alone: that one stays flat as
the trace grows; the replay adds the model's live state; the old path grows with the trace.

Without trace arguments it runs over every trace.dat under ``../shared/data/traces-lab`` (or
$IOVATRACE_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _traces(args: list[str]) -> list[Path]:
    if args:
        out = []
        for a in args:
            p = Path(a)
            out.append(p / "trace.dat" if p.is_dir() else p)
        return out
    return sorted((_shared() / "traces-lab").glob("*/trace.dat"))


def _shared() -> Path:
    return Path(os.environ.get("IOVATRACE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _setup(path: Path, extensions: bool, block_pages: int) -> tuple[Any, Any, list[str]]:
    from iovatrace.parsers import open_trace
    from iovatrace.replay.commands import REPLAY_BLOCK_PAGES, _extensions
    from iovatrace.replay.driver import ReplayDriver
    from iovatrace.replay.profiles import detect_profile

    import iovatrace.schema  # noqa: F401 - imports (pyarrow: 0.1 s) are not part of any figure
    import pyarrow.compute  # noqa: F401

    tr = open_trace(path)
    if hasattr(tr, "block_pages"):  # as replay_trace does, unless told otherwise
        tr.block_pages = block_pages or REPLAY_BLOCK_PAGES
    available = {k for k, n in tr.event_counts().items() if n}
    profile, _ = detect_profile(tr.meta.kernel_release, available)
    ncpus = tr.meta.cpus or 1
    exts = _extensions(profile, (), ncpus, available) if extensions else []
    drv = ReplayDriver(profile, ncpus, available=available, extensions=exts)
    return tr, drv, sorted(drv.wanted_events() & available)


def _events(tr: Any, wanted: list[str], mode: str) -> Any:
    from iovatrace.replay.commands import open_event_stream
    from iovatrace.schema import iter_events, prefilter_replay_tables

    if mode == "tables":  # the path before streaming: every wanted event's table in memory at once
        return iter_events(prefilter_replay_tables(tr.read_tables(wanted)))
    return open_event_stream(tr, wanted)[0]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(path: Path, extensions: bool, block_pages: int, mode: str, split: bool,
            driver: bool = True, repeat: int = 1) -> dict[str, Any]:
    """One trace, in this process: the end-to-end run first (for its peak RSS), then read+merge and driver."""
    rss0 = _peak_rss_mb()
    tr, drv, wanted = _setup(path, extensions, block_pages)
    t0 = time.perf_counter()
    c0 = time.process_time()
    if not driver:  # the reading and merging alone: events dropped as they come
        n = sum(1 for _ in _events(tr, wanted, mode))
        return {"events": n, "e2e_s": time.perf_counter() - t0, "rss_mb": _peak_rss_mb(), "rss0_mb": rss0}
    res = drv.run(_events(tr, wanted, mode))
    e2e, e2e_cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"events": res.events, "e2e_s": e2e, "e2e_cpu_s": e2e_cpu, "rss_mb": _peak_rss_mb(), "rss0_mb": rss0,
           "fidelity": f"{res.fidelity.exact}/{res.fidelity.predicted} exact, {res.fidelity.mismatched} mismatched"}
    if split:
        tr, drv, wanted = _setup(path, extensions, block_pages)
        t0 = time.perf_counter()
        events = list(_events(tr, wanted, mode))
        t1 = time.perf_counter()
        drv.run(events)
        best = time.perf_counter() - t1
        for _ in range(repeat - 1):  # fresh drivers over the same events; the fastest run counts
            drv = _setup(path, extensions, block_pages)[1]
            t2 = time.perf_counter()
            drv.run(events)
            best = min(best, time.perf_counter() - t2)
        out.update(read_s=t1 - t0, driver_s=best)
    return out


def _child(path: Path, a: argparse.Namespace, mode: str, split: bool, driver: bool = True) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(path), "--mode", mode, "--block-pages", str(a.block_pages),
           "--repeat", str(a.repeat)]
    if not driver:
        cmd.append("--no-driver")
    if a.with_extensions:
        cmd.append("--with-extensions")
    if not split:
        cmd.append("--no-split")
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"{path}: benchmark child failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _calibrate() -> float:
    """Seconds for 10^6 iterations of a trivial Python loop: the machine's speed right now (load matters)."""
    t = time.perf_counter()
    s = 0
    for i in range(1_000_000):
        s += i
    return time.perf_counter() - t


def _lab(a: argparse.Namespace) -> None:
    tot = {"events": 0, "read_s": 0.0, "driver_s": 0.0, "e2e_s": 0.0}
    peak = 0.0
    print(f"{'trace':22} {'events':>10} {'read+merge s':>12} {'driver s':>9} {'driver ev/s':>12} "
          f"{'end-to-end ev/s':>15} {'peak RSS MB':>11}  fidelity")
    for p in _traces(a.traces):
        r = _child(p, a, a.mode, True)
        for k in tot:
            tot[k] += r[k]
        peak = max(peak, r["rss_mb"])
        print(f"{p.parent.name:22} {r['events']:>10,} {r['read_s']:>12.2f} {r['driver_s']:>9.2f} "
              f"{r['events'] / r['driver_s']:>12,.0f} {r['events'] / r['e2e_s']:>15,.0f} {r['rss_mb']:>11.0f}  "
              f"{r['fidelity']}", flush=True)
    if tot["driver_s"]:
        print(f"{'TOTAL':22} {tot['events']:>10,} {tot['read_s']:>12.2f} {tot['driver_s']:>9.2f} "
              f"{tot['events'] / tot['driver_s']:>12,.0f} {tot['events'] / tot['e2e_s']:>15,.0f} {peak:>11.0f}  "
              f"(end-to-end {tot['e2e_s']:.2f} s; peak RSS: the largest)")
    cal = _calibrate()
    # An idle modern core runs the reference loop in ~0.04 s; scale the figure to compare loaded machines.
    if tot["driver_s"]:
        print(f"calibration: 10^6-iteration reference loop took {cal:.3f} s (driver events/s normalised to a "
              f"0.04 s machine: {tot['events'] / tot['driver_s'] * cal / 0.04:,.0f}; end to end: "
              f"{tot['events'] / tot['e2e_s'] * cal / 0.04:,.0f})")


def _long(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from parse import build_repeated_v6  # type: ignore[import-not-found]

    src = _shared() / "traces-lab" / "lazy_v6" / "trace.dat"
    with tempfile.TemporaryDirectory(prefix="iovatrace-long-") as tmp:
        print("peak RSS (MB) and end-to-end events/s; 'merge only': the streamed events are read, merged, dropped")
        print(f"{'lazy_v6 x':>9} {'events':>10} {'MB':>6} {'merge only RSS':>14} {'stream RSS':>10} "
              f"{'stream ev/s':>11} {'read_tables RSS':>15} {'read_tables ev/s':>16}")
        from iovatrace.parsers import open_trace

        n_src = sum(open_trace(src).event_counts().values())
        for reps in a.long:
            dst = Path(tmp) / f"lazy_v6_x{reps}.dat"
            build_repeated_v6(src, dst, min_events=n_src * reps)
            m = _child(dst, a, "stream", False, driver=False)
            s = _child(dst, a, "stream", False)
            t = _child(dst, a, "tables", False)
            print(f"{reps:>9} {s['events']:>10,} {dst.stat().st_size / 2**20:>6.0f} {m['rss_mb']:>14.0f} "
                  f"{s['rss_mb']:>10.0f} {s['events'] / s['e2e_s']:>11,.0f} {t['rss_mb']:>15.0f} "
                  f"{t['events'] / t['e2e_s']:>16,.0f}", flush=True)
            dst.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="*")
    ap.add_argument("--with-extensions", action="store_true", help="also step the dma-iommu/devices models")
    ap.add_argument("--block-pages", type=int, default=0,
                    help="trace.dat pages decoded at once (0: the replay's, REPLAY_BLOCK_PAGES)")
    ap.add_argument("--mode", choices=("stream", "tables"), default="stream",
                    help="stream: what replay does; tables: the old whole-trace read_tables path")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="time the driver N times over the same events (fresh drivers) and keep the fastest")
    ap.add_argument("--long", type=int, nargs="+", metavar="N", help="repeat lazy_v6 N times (e.g. 1 4 16)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--no-split", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-driver", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(Path(a.child), a.with_extensions, a.block_pages, a.mode, not a.no_split,
                                 not a.no_driver, max(1, a.repeat))))
    elif a.long:
        _long(a)
    else:
        _lab(a)


if __name__ == "__main__":
    sys.exit(main())
