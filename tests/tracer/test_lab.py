"""End to end: the QEMU lab records one real trace from a Debian kernel, and the replay predicts it exactly.

Runs in CI (``.ci/extra-deps`` installs QEMU, busybox-static, cpio, kmod); skips with a reason only when those
tools are absent or the kernel package cannot be downloaded. The package cache is ``$IOVATRACE_LAB_CACHE`` when
set (reused between runs), else a temporary directory; the whole test (download, kallsyms boot, recorded boot)
must stay under 10 minutes on 2 cores without KVM.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from iovatrace.errors import CaptureError
from iovatrace.tracer.lab_run import check_tools, fetch_kernel_package, run_lab
from iovatrace.tracer.probes import parse_kprobe_line
from iovatrace.tracer.tracefs import parse_kprobe_profile

pytestmark = [pytest.mark.lab, pytest.mark.slow]

BUDGET_S = 600


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    missing = check_tools()
    if missing:
        pytest.skip(f"lab tools missing: Debian packages {' '.join(missing)} (.ci/extra-deps installs them)")
    work = Path(os.environ.get("IOVATRACE_LAB_CACHE") or tmp_path_factory.mktemp("labcache"))
    t0 = time.monotonic()
    try:
        fetch_kernel_package(None, None, work, print)
    except CaptureError as exc:
        pytest.skip(f"the kernel package cannot be had here: {exc}")
    out = tmp_path_factory.mktemp("lab") / "out"
    run_lab(workload="short", mode="strict", out_dir=out, work_dir=work, timeout=BUDGET_S - 60, log=print)
    return out, time.monotonic() - t0


def test_lab_cost_is_within_budget(lab_run: tuple[Path, float]) -> None:
    out, elapsed = lab_run
    timings = json.loads((out / "lab.json").read_text())["timings_s"]
    print("lab timings:", timings, "test total", round(elapsed, 1))
    assert elapsed < BUDGET_S


def test_guest_kernel_accepted_every_generated_probe(lab_run: tuple[Path, float]) -> None:
    out, _ = lab_run
    planned = {parse_kprobe_line(x) for x in json.loads((out / "lab.json").read_text())["planned_kprobes"]}
    listed = {parse_kprobe_line(x) for x in (out / "kprobe_events.txt").read_text().splitlines() if x.strip()}
    assert planned and listed == planned
    assert "kernel refused" not in (out / "record.log").read_text()
    # and the recorder put the guest's tracefs back: no probe, no event left enabled
    assert (out / "kprobe_events_after_restore.txt").read_text().strip() == ""
    assert (out / "set_event_after_restore.txt").read_text().strip() == ""


def test_trace_holds_what_the_kernel_counted(lab_run: tuple[Path, float], trace_cmd: str) -> None:
    """trace-cmd's report of the trace, iovatrace's reader, and the kernel's own kprobe hit counters agree."""
    out, _ = lab_run
    report = subprocess.run([trace_cmd, "report", "-i", str(out / "trace.dat")], capture_output=True, text=True,
                            check=True).stdout
    ref: dict[str, int] = {}
    for line in report.splitlines():
        parts = line.split()
        for i in range(1, len(parts)):
            if parts[i].endswith(":") and parts[i - 1].endswith(":") and parts[i - 1][:-1].replace(".", "").isdigit():
                ref[parts[i][:-1]] = ref.get(parts[i][:-1], 0) + 1
                break
    prof = parse_kprobe_profile((out / "kprobe_profile.txt").read_text())
    before = parse_kprobe_profile((out / "kprobe_profile.before.txt").read_text())
    assert ref.get("alloc_iova_fast", 0) > 100 and ref.get("init_iova_domain", 0) >= 1  # rescan: a new domain
    for name, (hits, misses) in prof.items():
        # kprobe_profile is read before trace-cmd starts and after it exits; trace-cmd stops tracing before it
        # disables the events, so a probe can fire (and be counted) in those short windows without being recorded.
        # Recorded + missed is therefore never more than the kernel's count, and short of it by a few hits at most.
        counted = hits - before.get(name, (0, 0))[0]
        seen = ref.get(name, 0) + misses
        assert seen <= counted <= seen + max(4, counted // 200), (name, seen, counted)
    from iovatrace.parsers import open_trace

    counts = open_trace(str(out / "trace.dat")).event_counts()
    ours = {k.split(":", 1)[1]: v for k, v in counts.items() if v}
    assert ours == ref


def test_replay_predicts_the_fully_observed_domain_exactly(lab_run: tuple[Path, float]) -> None:
    out, _ = lab_run
    from iovatrace.replay.commands import replay_trace

    fid = replay_trace(str(out / "trace.dat")).fidelity
    assert fid.predicted > 100            # the NVMe domain re-created by the rescan, observed from its creation
    assert fid.exact == fid.predicted and fid.mismatched == 0
