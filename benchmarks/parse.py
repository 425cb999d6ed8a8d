#!/usr/bin/env python3
"""Parse benchmark: ``iovatrace convert`` (Parquet, Arrow IPC) against ``trace-cmd report``, v6 and v7 zstd.

Builds a large trace.dat from a real lab trace by repeating its ring-buffer pages, each repetition's page
timestamps shifted past the previous one (records inside a page are deltas, so they follow), keeping the metadata
(formats, cmdlines, kallsyms) untouched. The v7 zstd twin is made by ``trace-cmd convert``. trace-cmd must read
the built file and print exactly as many events as we decode (checked before timing).

Every measurement is a whole process (``os.wait4`` gives its own wall time, CPU time and peak RSS):

* ``trace-cmd report FILE > /dev/null``
* ``iovatrace convert FILE -o DIR`` (Parquet) and ``--format arrow``

Usage::

    python benchmarks/parse.py                    # >= 5 M events, v6 and v7 zstd
    python benchmarks/parse.py --events 20000000  # more
    python benchmarks/parse.py --big              # also a >= 2 GB v6 file: peak RSS of convert stays < 1 GB
    python benchmarks/parse.py --repeat 5         # best of 5 alternating runs of each tool (default 3)

The machine's load matters (wall time); CPU time is printed too, and ratios are given for both. The package's
bytecode is compiled first (``compileall``), as ``pip install`` does: with an editable install and
``PYTHONDONTWRITEBYTECODE`` set, every run would otherwise compile iovatrace's sources again (≈ 0.1 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "traces-lab" / "lazy_v6" / "trace.dat"


def build_repeated_v6(src: Path, dst: Path, min_events: int = 0, min_bytes: int = 0) -> int:
    """Write ``dst``: ``src`` (a v6 trace.dat) with its CPU pages repeated until both minimums are met.

    Returns:
        The number of events in ``dst`` (repetitions × events of ``src``).
    """
    from iovatrace.parsers.tracedat import TraceDat

    tr = TraceDat(src)
    meta = tr.meta
    if meta.version != 6 or len(meta.buffers) != 1:
        raise SystemExit(f"{src}: need a v6 trace.dat with one buffer")
    n_src = sum(tr.event_counts().values())
    e = "<" if meta.endian == "little" else ">"
    ps = meta.page_size
    blob = src.read_bytes()
    cpus = meta.buffers[0].cpus
    first_data = min(cd.offset for cd in cpus if cd.size)
    tag = blob.rfind(b"flyrecord\0", 0, first_data)
    table_at = tag + 10
    table_end = table_at + 16 * meta.cpus
    # time span of the source, to shift each repetition past the previous one
    ts_lo, ts_hi = None, 0
    for cd in cpus:
        for off in range(cd.offset, cd.offset + cd.size, ps):
            t = struct.unpack_from(e + "Q", blob, off)[0]
            ts_lo = t if ts_lo is None else min(ts_lo, t)
            ts_hi = max(ts_hi, t)
    span = (ts_hi - (ts_lo or 0)) + 10**9  # pages may hold 1 s of records after their own timestamp
    data_bytes = sum(cd.size for cd in cpus)
    reps = max(1, -(-min_events // max(n_src, 1)), -(-min_bytes // max(data_bytes, 1)))
    head = bytearray(blob[:table_end]) + blob[table_end:first_data]
    offsets = []
    at = len(head)
    at = (at + ps - 1) // ps * ps
    for cd in cpus:
        offsets.append((at, cd.size * reps))
        at += cd.size * reps
        at = (at + ps - 1) // ps * ps
    for i, (o, sz) in enumerate(offsets):
        struct.pack_into(e + "QQ", head, table_at + 16 * i, o if sz else 0, sz)
    with open(dst, "wb") as fh:
        fh.write(head)
        for cd, (o, sz) in zip(cpus, offsets):
            fh.seek(o)
            pages = bytearray(blob[cd.offset:cd.offset + cd.size])
            npages = len(pages) // ps
            base = [struct.unpack_from(e + "Q", pages, p * ps)[0] for p in range(npages)]
            for r in range(reps):
                for p in range(npages):
                    struct.pack_into(e + "Q", pages, p * ps, base[p] + r * span)
                fh.write(pages)
        fh.truncate(max(o + sz for o, sz in offsets))
    return n_src * reps


def measure(cmd: list[str], stdout=subprocess.DEVNULL) -> dict[str, float]:
    """Run ``cmd`` as one process; return wall seconds, CPU seconds and peak RSS (MB) of that process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}


def trace_cmd_count(path: Path) -> int:
    """Events ``trace-cmd report`` prints (lines after the ``cpus=`` header)."""
    p = subprocess.Popen(["trace-cmd", "report", str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    n = 0
    assert p.stdout is not None
    for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
        n += chunk.count(b"\n")
    p.wait()
    return n - 1  # "cpus=N"


def _compile_bytecode() -> None:
    """Byte-compile the iovatrace package, so no timed run pays for compiling its sources."""
    import compileall

    import iovatrace

    compileall.compile_dir(str(Path(iovatrace.__file__).parent), quiet=1)


def run(src: Path, work: Path, min_events: int, big: bool, verify: bool, repeat: int = 1) -> None:
    from iovatrace.parsers import open_trace

    _compile_bytecode()
    exe = Path(sys.executable).parent / "iovatrace"
    iovatrace = [str(exe)] if exe.exists() else [sys.executable, "-c", "from iovatrace.cli import main; main()"]
    v6 = work / "bench.v6.dat"
    n = build_repeated_v6(src, v6, min_events=min_events)
    v7 = work / "bench.v7zstd.dat"
    subprocess.run(["trace-cmd", "convert", "--file-version", "7", "--compression", "zstd", "-i", str(v6),
                    "-o", str(v7)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = [("v6", v6), ("v7 zstd", v7)]
    print(f"source {src} → {n:,} events; v6 {v6.stat().st_size / 1e6:.0f} MB, v7 zstd {v7.stat().st_size / 1e6:.0f} MB")
    for label, f in files:
        ours = sum(open_trace(f).event_counts().values())
        if ours != n:
            raise SystemExit(f"{label}: we decode {ours} events, expected {n}")
        if verify:
            theirs = trace_cmd_count(f)
            print(f"{label}: trace-cmd report prints {theirs:,} events, iovatrace decodes {ours:,}: "
                  f"{'equal' if theirs == ours else 'DIFFERENT'}")
            if theirs != ours:
                raise SystemExit(1)
    rows = []
    load0 = os.getloadavg()[0]
    for label, f in files:
        out = work / "out"
        runs: dict[str, list[dict[str, float]]] = {"trace-cmd": [], "parquet": [], "arrow": []}
        for _ in range(repeat):  # alternate the tools so that a change of load hits them alike
            runs["trace-cmd"].append(measure(["trace-cmd", "report", str(f)]))
            for fmt in ("parquet", "arrow"):
                shutil.rmtree(out, ignore_errors=True)
                runs[fmt].append(measure(iovatrace + ["convert", str(f), "-o", str(out), "--format", fmt]))
        tc = _best(runs["trace-cmd"])
        for fmt in ("parquet", "arrow"):
            rows.append((label, fmt, _best(runs[fmt]), tc))
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n{os.cpu_count()} CPUs; load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"best of {repeat} run(s) each (lowest wall; its CPU and RSS)")
    print(f"{'file':8} {'tool':22} {'wall s':>7} {'cpu s':>7} {'Mev/s wall':>10} {'Mev/s cpu':>9} {'RSS MB':>7}"
          f" {'× trace-cmd (wall)':>18} {'(cpu)':>6}")
    done = set()
    for label, fmt, m, tc in rows:
        if label not in done:
            done.add(label)
            print(f"{label:8} {'trace-cmd report':22} {tc['wall']:7.2f} {tc['cpu']:7.2f} {n / tc['wall'] / 1e6:10.2f}"
                  f" {n / tc['cpu'] / 1e6:9.2f} {tc['rss_mb']:7.0f}")
        print(f"{label:8} {'iovatrace convert ' + fmt:22} {m['wall']:7.2f} {m['cpu']:7.2f} {n / m['wall'] / 1e6:10.2f}"
              f" {n / m['cpu'] / 1e6:9.2f} {m['rss_mb']:7.0f} {tc['wall'] / m['wall']:18.1f} {tc['cpu'] / m['cpu']:6.1f}")
    small = ROOT.parent / "shared" / "data" / "traces-lab" / "boot_strict" / "trace.dat"
    if small.exists():
        ms = [measure(iovatrace + ["info", str(small)]) for _ in range(max(3, repeat))]
        best = _best(ms)
        print(f"\ncold start: iovatrace info {small.name} of boot_strict ({small.stat().st_size / 1e6:.1f} MB): "
              f"{best['wall']:.2f} s wall (best of {len(ms)}; median {sorted(m['wall'] for m in ms)[len(ms) // 2]:.2f} s),"
              f" {best['cpu']:.2f} s cpu")
    if big:
        vb = work / "bench.big.v6.dat"
        nb = build_repeated_v6(src, vb, min_bytes=2 << 30)
        out = work / "out"
        for fmt in ("parquet", "arrow"):
            shutil.rmtree(out, ignore_errors=True)
            m = measure(iovatrace + ["convert", str(vb), "-o", str(out), "--format", fmt])
            print(f"big v6: {vb.stat().st_size / 2**30:.2f} GiB, {nb:,} events: iovatrace convert ({fmt}) "
                  f"{m['wall']:.1f} s wall, {m['cpu']:.1f} s cpu, peak RSS {m['rss_mb']:.0f} MB")
        shutil.rmtree(out, ignore_errors=True)
        vb.unlink()


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the lowest wall time (the least disturbed by other work on the machine)."""
    return min(runs, key=lambda m: m["wall"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="a v6 trace.dat to repeat")
    ap.add_argument("--events", type=int, default=5_000_000, help="minimum events in the built file")
    ap.add_argument("--big", action="store_true", help="also build a >= 2 GiB v6 file and measure convert's RSS")
    ap.add_argument("--no-verify", action="store_true", help="skip counting trace-cmd's events")
    ap.add_argument("--workdir", type=Path, help="where to build the files (default: a temporary directory)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool, alternating; the best is shown")
    a = ap.parse_args()
    if shutil.which("trace-cmd") is None:
        raise SystemExit("trace-cmd is not installed")
    if a.workdir:
        a.workdir.mkdir(parents=True, exist_ok=True)
        run(a.source, a.workdir, a.events, a.big, not a.no_verify, a.repeat)
    else:
        with tempfile.TemporaryDirectory(prefix="iovatrace-bench-") as d:
            run(a.source, Path(d), a.events, a.big, not a.no_verify, a.repeat)


if __name__ == "__main__":
    main()
