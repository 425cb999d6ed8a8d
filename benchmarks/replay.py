"""Replay throughput on the lab traces: events/s of the sans-IO driver alone (parsing excluded).

Usage: python benchmarks/replay.py [TRACE_DIR_OR_FILE ...] [--with-extensions]

Each trace is read once (only the events the replay consumes, filtered in Arrow), merged into a list of
``Event`` objects, then replayed; the figure is events handed to the driver per second of ``driver.run``.
Without arguments it runs over every trace.dat under ``../shared/data/traces-lab`` (or $IOVATRACE_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _traces(args: list[str]) -> list[Path]:
    if args:
        out = []
        for a in args:
            p = Path(a)
            out.append(p / "trace.dat" if p.is_dir() else p)
        return out
    root = Path(os.environ.get("IOVATRACE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return sorted((root / "traces-lab").glob("*/trace.dat"))


def bench(path: Path, extensions: bool) -> tuple[int, float, float, str]:
    from iovatrace.parsers import open_trace
    from iovatrace.replay.commands import _extensions
    from iovatrace.replay.driver import ReplayDriver
    from iovatrace.replay.profiles import detect_profile
    from iovatrace.schema import iter_events, prefilter_replay_tables

    tr = open_trace(path)
    available = {k for k, n in tr.event_counts().items() if n}
    profile, _ = detect_profile(tr.meta.kernel_release, available)
    ncpus = tr.meta.cpus or 1
    exts = _extensions(profile, (), ncpus, available) if extensions else []
    drv = ReplayDriver(profile, ncpus, available=available, extensions=exts)
    t0 = time.perf_counter()
    tables = prefilter_replay_tables(tr.read_tables(sorted(drv.wanted_events() & available)))
    events = list(iter_events(tables))
    t1 = time.perf_counter()
    res = drv.run(events)
    t2 = time.perf_counter()
    fid = res.fidelity
    return len(events), t1 - t0, t2 - t1, f"{fid.exact}/{fid.predicted} exact, {fid.mismatched} mismatched"


def _calibrate() -> float:
    """Seconds for 10^6 iterations of a trivial Python loop: the machine's speed right now (load matters)."""
    t = time.perf_counter()
    s = 0
    for i in range(1_000_000):
        s += i
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="*")
    ap.add_argument("--with-extensions", action="store_true", help="also step the dma-iommu/devices models")
    a = ap.parse_args()
    total_ev = 0
    total_t = 0.0
    print(f"{'trace':28} {'events':>10} {'read+merge s':>12} {'replay s':>9} {'events/s':>10}  fidelity")
    for p in _traces(a.traces):
        n, tread, trep, fid = bench(p, a.with_extensions)
        total_ev += n
        total_t += trep
        print(f"{p.parent.name:28} {n:>10,} {tread:>12.2f} {trep:>9.2f} {n / trep:>10,.0f}  {fid}", flush=True)
    if total_t:
        print(f"{'TOTAL':28} {total_ev:>10,} {'':>12} {total_t:>9.2f} {total_ev / total_t:>10,.0f}")
    cal = _calibrate()
    # An idle modern core runs the reference loop in ~0.04 s; scale the figure to compare loaded machines.
    print(f"calibration: 10^6-iteration reference loop took {cal:.3f} s "
          f"(events/s normalised to a 0.04 s machine: {total_ev / total_t * cal / 0.04:,.0f})")


if __name__ == "__main__":
    sys.exit(main())
