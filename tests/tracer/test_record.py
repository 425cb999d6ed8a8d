"""`iovatrace record` against a fake tracefs: probes installed, sidecars written, and everything put back --
after a normal end, a refused core probe, and SIGINT/SIGTERM in the middle of a recording (a real subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iovatrace.errors import CaptureError
from iovatrace.tracer.probes import parse_kprobe_line
from iovatrace.tracer.record import record, sidecar_paths
from iovatrace.tracer.tracefs import TraceFS, parse_kprobe_profile

from .conftest import PRE_EXISTING_KPROBE, tree_state

R612 = "6.12.107+deb13-amd64"


def _record_args(fake: Path, lab612: Path, out: Path) -> dict:
    return dict(tracefs=fake, kallsyms=str(lab612 / "kallsyms_iova.txt"), release=R612, backend="raw",
                log=lambda s: None, out=out)


def test_record_installs_then_restores(fake_tracefs: Path, lab612: Path, tmp_path: Path) -> None:
    before = tree_state(fake_tracefs)
    seen: dict[str, object] = {}
    tfs = TraceFS(fake_tracefs)

    def during() -> None:   # look at tracefs while the "workload" runs
        seen["kprobes"] = tfs.kprobe_lines()
        seen["set_event"] = tfs.read("set_event").split()
        seen["tracing_on"] = tfs.read("tracing_on").strip()
        seen["filter"] = tfs.read("events/kmem/kmem_cache_alloc/filter").strip()
        seen["buffer"] = tfs.read("buffer_size_kb").strip()

    import iovatrace.tracer.record as rec

    orig = rec._run_until
    rec._run_until = lambda cmd, duration, log: during()  # type: ignore[assignment]
    try:
        res = record(**_record_args(fake_tracefs, lab612, tmp_path / "t.dat"), buffer_kb=4096)
    finally:
        rec._run_until = orig  # type: ignore[assignment]
    assert tree_state(fake_tracefs) == before
    kernel_defs = {parse_kprobe_line(x) for x in (lab612 / "kprobe_events.txt").read_text().splitlines()}
    assert {parse_kprobe_line(x) for x in seen["kprobes"]} == kernel_defs | {parse_kprobe_line(PRE_EXISTING_KPROBE)}
    assert {"iova:alloc_iova_fast_ret", "dmaiommu:fq_ring_free_locked", "dma:dma_map_page",
            "kmem:kmem_cache_free", "sched:sched_switch"} <= set(seen["set_event"])  # type: ignore[arg-type]
    assert seen["tracing_on"] == "1" and seen["buffer"] == "4096"
    assert str(seen["filter"]).startswith("bytes_req == 1024 && call_site >= 0x")
    side = sidecar_paths(tmp_path / "t.dat")
    assert {parse_kprobe_line(x) for x in side["kprobe_events"].read_text().splitlines()} >= kernel_defs
    assert side["profile_before"].exists() and side["profile_after"].exists() and side["probes"].exists()
    assert res.trace is not None and res.trace.exists() and not res.restore_problems
    assert len(res.installed) == len(kernel_defs)


def test_refused_core_probe_stops_and_restores(fake_tracefs: Path, lab612: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree_state(fake_tracefs)
    real_write = TraceFS.write

    def refusing(self: TraceFS, rel: str, text: str, *, append: bool = False) -> None:
        if rel == "kprobe_events" and text.startswith("r:iova/alloc_iova_fast_ret"):
            raise CaptureError("kprobe_events: kernel refused it: Invalid argument")
        real_write(self, rel, text, append=append)

    monkeypatch.setattr(TraceFS, "write", refusing)
    with pytest.raises(CaptureError, match="core probe iova/alloc_iova_fast_ret"):
        record(**_record_args(fake_tracefs, lab612, tmp_path / "t.dat"), duration=0.1)
    assert tree_state(fake_tracefs) == before


def test_no_tracefs_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="not a tracefs directory"):
        record(tmp_path / "t.dat", tracefs=tmp_path, log=lambda s: None)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killed_mid_run_restores_everything(fake_tracefs: Path, lab612: Path, tmp_path: Path, sig: int) -> None:
    before = tree_state(fake_tracefs)
    out = tmp_path / "t.dat"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from iovatrace.cli import main; main()", "record", "-o", str(out),
         "--tracefs", str(fake_tracefs), "--kallsyms", str(lab612 / "kallsyms_iova.txt"), "--kernel", R612,
         "--backend", "raw", "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    set_event = fake_tracefs / "set_event"
    while time.monotonic() < deadline and "dmaiommu:" not in set_event.read_text():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert "iova/alloc_iova_fast" in (fake_tracefs / "kprobe_events").read_text()
    time.sleep(0.3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and f"stopped by signal {int(sig)}" in stderr
    assert "tracefs restored" in stdout
    assert tree_state(fake_tracefs) == before
    assert sidecar_paths(out)["profile_after"].exists()


def test_kprobe_profile_hits_are_the_recorded_events(shared_data: Path) -> None:
    """A real stress run: the kernel's hit counter of each probe equals the events trace-cmd found in trace.dat
    (misses are not in the trace), so hits/misses beside a trace tell the replay exactly what was dropped."""
    d = shared_data / "traces-lab" / "stress_strict-6.1"
    prof = parse_kprobe_profile((d / "kprobe_profile.txt").read_text())
    counts = {ln.split()[1].rstrip(":"): int(ln.split()[0])
              for ln in (d / "event_counts.txt").read_text().splitlines() if ln.strip()}
    assert len(prof) >= 20
    for name, (hits, _) in prof.items():
        assert counts.get(name, 0) == hits, name
    assert prof["free_iova_fast"] == (150283, 2043)


FAKE_TRACE_CMD = """#!/bin/sh
# stands in for trace-cmd: logs its arguments, and like `trace-cmd record` finishes its file on SIGINT
echo "$@" > "$FAKE_TC_LOG"
out=; prev=; for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
trap 'echo data > "$out"; echo INT >> "$FAKE_TC_LOG"; exit 0' INT
while :; do sleep 0.05; done
"""


def test_trace_cmd_backend_gets_sigint_and_restores(fake_tracefs: Path, lab612: Path, tmp_path: Path) -> None:
    """With trace-cmd: the events and filters it is given, SIGTERM to us becomes SIGINT to it (it finishes its
    file), and tracefs is restored after it exits."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "trace-cmd").write_text(FAKE_TRACE_CMD)
    (bindir / "trace-cmd").chmod(0o755)
    log = tmp_path / "tc.log"
    before = tree_state(fake_tracefs)
    out = tmp_path / "t.dat"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_TC_LOG": str(log)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from iovatrace.cli import main; main()", "record", "-o", str(out),
         "--tracefs", str(fake_tracefs), "--kallsyms", str(lab612 / "kallsyms_iova.txt"), "--kernel", R612,
         "--backend", "trace-cmd"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not log.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    args = log.read_text().splitlines()
    assert args[-1] == "INT" and out.read_text() == "data\n"
    argv = args[0]
    for ev in ("-e iommu", "-e intel_iommu", "-e dma", "-e iova", "-e dmaiommu", "-b 32768", f"-o {out}",
               "-e kmem:kmem_cache_alloc -f bytes_req == 1024 && call_site >= 0x"):
        assert ev in argv, ev
    assert tree_state(fake_tracefs) == before
