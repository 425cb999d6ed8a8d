"""Benchmark: parse every file of syzkaller's report corpus with the oops parser (goal: < 2 s on one core).

Usage: ``python benchmarks/logs.py [CORPUS_DIR] [--repeat N]``. Without CORPUS_DIR the corpus is looked up in
``$IOVATRACE_SHARED_DATA/syzkaller/report`` or ``../shared/data/syzkaller/report`` beside the checkout.
Prints the best-of-N CPU time (``time.process_time``, what one core spends) and wall time, the number of files,
reports and lines, and the throughput. Files are read into memory first: only parsing is timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from iovatrace.parsers.logs.oops import parse_oops

ROOT = Path(__file__).resolve().parent.parent


def default_corpus() -> Path:
    env = os.environ.get("IOVATRACE_SHARED_DATA")
    base = Path(env) if env else ROOT.parent / "shared" / "data"
    return base / "syzkaller" / "report"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", nargs="?", type=Path, default=None, help="directory of corpus files")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = ap.parse_args(argv)
    corpus = args.corpus or default_corpus()
    if not corpus.is_dir():
        print(f"corpus not found: {corpus}", file=sys.stderr)
        return 2
    files = sorted(p for p in corpus.iterdir() if p.is_file() and p.name.isdigit())
    datas = [p.read_bytes() for p in files]
    size = sum(len(d) for d in datas)
    best_cpu = best_wall = float("inf")
    reports = lines = 0
    for _ in range(args.repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        reports = lines = 0
        for d in datas:
            res = parse_oops(d)
            reports += len(res.reports)
            lines += res.lines
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    print(f"oops parser: {len(files)} files, {lines} lines, {size / 1e6:.1f} MB, {reports} reports")
    print(f"  cpu  {best_cpu:.3f} s (best of {args.repeat})  {lines / best_cpu:,.0f} lines/s  "
          f"{'OK' if best_cpu < 2.0 else 'SLOW'} (goal < 2 s)")
    print(f"  wall {best_wall:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
