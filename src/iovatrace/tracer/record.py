"""``iovatrace record``: install the probe plan, trace, and put tracefs back as it was -- Ctrl-C included.

Theory of operation
-------------------
1. **Plan**: kallsyms (``/proc/kallsyms`` or a file) + the kernel release -> :func:`probes.plan_probes`; the
   tracepoints present in ``events/`` -> :func:`probes.plan_tracepoints` (``dma:*`` preferred where present).
2. **Save** (:meth:`TraceFS.snapshot`) every setting we or trace-cmd may change, then **install** the kprobes one
   by one (a definition the kernel refuses is reported with tracefs ``error_log`` and left out; if the core
   ``alloc_iova_fast`` pair is refused, recording stops with :class:`CaptureError`).
3. **Trace** with one of two backends:
   * ``trace-cmd``: ``trace-cmd record`` (or ``start``/``stop``/``extract`` when the text of the same run is asked
     for: ``record`` consumes the ring buffer), running COMMAND or ``sleep DURATION``;
   * ``raw`` (no trace-cmd, or a tracefs that is not the system's): enable events through ``set_event``, run,
     then read ``per_cpu/cpuN/trace_pipe_raw`` and the metadata files and hand them to the project's trace.dat
     writer (``iovatrace.parsers.writer``).
4. **Sidecars** beside the trace (:func:`sidecar_paths`): ``kprobe_events.txt`` (as the kernel listed them: the
   replay's adapter reads them), ``kprobe_profile.before.txt`` / ``kprobe_profile.txt`` (hits and misses: kprobes
   hit while another kprobe runs on the CPU are dropped, and the replay must know how many) and ``probes.json``
   (plan, warnings, per-probe hit/miss deltas).
5. **Restore** in a ``finally`` with SIGINT/SIGTERM/SIGHUP turned into a clean stop: a signal ends the recording
   (trace-cmd gets SIGINT and finishes its file), then everything is put back, and further signals are ignored
   until it is.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CaptureError
from .probes import Kallsyms, ProbePlan, Tracepoint, parse_release, plan_probes, plan_tracepoints
from .tracefs import TraceFS, find_tracefs, parse_kprobe_profile

__all__ = ["RecordResult", "build_plan", "record", "sidecar_paths"]

CORE_PROBES = ("iova/alloc_iova_fast", "iova/alloc_iova_fast_ret")


class _Stop(BaseException):
    """A termination signal arrived: stop recording, then clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class RecordResult:
    """What a recording produced.

    Attributes:
        trace: the trace.dat path (None if none was written).
        sidecars: name -> path of the files written beside it.
        installed: kprobe definitions the kernel accepted.
        rejected: (definition, reason) the kernel refused.
        misses: ``event -> (hits, misses)`` during the recording (after - before).
        stopped_by: signal number that ended the recording early, or None.
        restore_problems: settings that could not be put back (empty = all restored).
        warnings: plan warnings (probes left out and what the replay loses).
    """

    trace: Path | None
    sidecars: dict[str, Path] = field(default_factory=dict)
    installed: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    misses: dict[str, tuple[int, int]] = field(default_factory=dict)
    stopped_by: int | None = None
    restore_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def sidecar_paths(out: Path) -> dict[str, Path]:
    """Paths of the files written beside ``out``.

    A trace named ``trace.dat`` gets the lab's folder convention (``kprobe_profile.txt``, ``kprobe_events.txt``
    in its directory: what the replay looks for); any other name prefixes them with its stem
    (``run1.dat`` -> ``run1.kprobe_profile.txt``) so several traces can share a directory.
    """
    stem = out.with_suffix("") if out.suffix == ".dat" else out
    pre = str(out.parent / "") + os.sep if stem.name == "trace" else str(stem) + "."
    return {
        "kprobe_events": Path(pre + "kprobe_events.txt"),
        "profile_before": Path(pre + "kprobe_profile.before.txt"),
        "profile_after": Path(pre + "kprobe_profile.txt"),
        "probes": Path(pre + "probes.json"),
        "text": Path(str(stem) + ".txt"),
    }


def build_plan(tfs: TraceFS | None, *, kallsyms: str | None = None, release: str | None = None,
               arch: str | None = None, btf_names: bool = False) -> tuple[ProbePlan, Kallsyms]:
    """The probe plan for the running kernel (or the given kallsyms/release), tracepoints included.

    Raises:
        CaptureError: kallsyms unreadable, release malformed, unknown arch.
    """
    ks_path = kallsyms or "/proc/kallsyms"
    try:
        text = Path(ks_path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CaptureError(f"{ks_path}: cannot read kallsyms ({exc.strerror})") from exc
    ks = Kallsyms(text, ks_path)
    if release is None and kallsyms is None:
        release = os.uname().release
    if arch is None:
        machine = os.uname().machine
        arch = {"aarch64": "arm64"}.get(machine, machine)
    plan = plan_probes(ks, release=release, arch=arch, btf_names=btf_names)
    version = parse_release(release) if release else plan.profile.version
    available = tfs.available_events() if tfs is not None else None
    mag = None
    if tfs is not None and tfs.kernel:
        mag = os.path.exists("/sys/kernel/slab/iommu_iova_magazine")
    tps, warns = plan_tracepoints(version, kallsyms=ks, available=available, magazine_cache=mag)
    plan.tracepoints = tps
    plan.warnings.extend(warns)
    return plan, ks


@contextmanager
def _signals_stop() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`_Stop` for the duration of the block."""
    def handler(signum: int, frame: Any) -> None:
        raise _Stop(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _event_args(tps: list[Tracepoint], groups: list[str]) -> list[str]:
    args: list[str] = []
    for t in tps:
        args += ["-e", t.system if t.name == "*" else t.key]
        if t.filter:
            args += ["-f", t.filter]
    for g in groups:
        args += ["-e", g]
    return args


def _stop_child(proc: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_until(cmd: list[str] | None, duration: float | None, log: Callable[[str], None]) -> None:
    """Run COMMAND (or sleep DURATION, or wait for a signal); a signal raises _Stop."""
    if cmd:
        proc = subprocess.Popen(cmd)
        try:
            proc.wait(timeout=duration)
        except subprocess.TimeoutExpired:
            log(f"duration {duration}s reached: stopping {cmd[0]}")
            _stop_child(proc, 10)
        except _Stop:
            _stop_child(proc, 10)
            raise
        return
    end = time.monotonic() + duration if duration else None
    while end is None or time.monotonic() < end:
        time.sleep(0.2 if end is None else max(0.0, min(0.2, end - time.monotonic())))


def record(out: str | Path = "trace.dat", *, command: list[str] | None = None, duration: float | None = None,
           tracefs: str | Path | None = None, kallsyms: str | None = None, release: str | None = None,
           arch: str | None = None, backend: str = "auto", buffer_kb: int = 32768, text: bool = False,
           btf_names: bool = False, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
           ) -> RecordResult:
    """Record IOVA-allocator events: install the probes, trace, restore tracefs.

    Args:
        out: trace.dat to write.
        command: run this under tracing (stops when it exits); None = ``duration`` or until a signal.
        duration: seconds to record (with ``command``: a time limit).
        tracefs: tracefs directory (default: the mounted one).
        kallsyms: kallsyms file (default /proc/kallsyms).
        release: kernel release (default: the running kernel's; with ``kallsyms``, inferred if omitted).
        arch: x86_64 or arm64 (default: this machine).
        backend: ``trace-cmd``, ``raw`` or ``auto`` (trace-cmd when installed and tracefs is the system's).
        buffer_kb: per-CPU ring buffer size.
        text: also save the text of the same run (``<stem>.txt``; trace-cmd start/stop/extract).
        btf_names: BTF-named probe arguments.
        log: progress sink.

    Returns:
        :class:`RecordResult`.

    Raises:
        CaptureError: no tracefs or no permission, core probes refused, trace-cmd failed, no way to write trace.dat.
    """
    out = Path(out)
    tfs = TraceFS(tracefs if tracefs is not None else find_tracefs())
    if backend == "auto":
        backend = "trace-cmd" if shutil.which("trace-cmd") and tfs.kernel and tracefs is None else "raw"
    if backend == "trace-cmd" and not shutil.which("trace-cmd"):
        raise CaptureError("trace-cmd not found (apt-get install trace-cmd), or use --backend raw")
    plan, _ = build_plan(tfs, kallsyms=kallsyms, release=release, arch=arch, btf_names=btf_names)
    for w in plan.warnings:
        log(f"warning: {w}")
    side = sidecar_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (out, *side.values()):   # a file left by an earlier run must not pass for this run's
        stale.unlink(missing_ok=True)
    res = RecordResult(trace=None, warnings=list(plan.warnings))
    filter_events = [f"{t.system}/{t.name}" for t in plan.tracepoints if t.name != "*"]
    state = tfs.snapshot(filter_events)
    before: dict[str, tuple[int, int]] = {}
    try:
        with _signals_stop():
            try:
                _install(tfs, plan, res, log)
                prof = tfs.read("kprobe_profile", "")
                side["profile_before"].write_text(prof)
                before = parse_kprobe_profile(prof)
                side["kprobe_events"].write_text("".join(ln + "\n" for ln in tfs.kprobe_lines()))
                log(f"recording {len(res.installed)} kprobes + {', '.join(t.key for t in plan.tracepoints)} "
                    f"({backend}) -> {out}")
                if backend == "trace-cmd":
                    _trace_cmd(tfs, plan, out, command, duration, buffer_kb, text, side, log)
                else:
                    _raw(tfs, plan, out, command, duration, buffer_kb, text, side, log, kallsyms)
            except _Stop as stop:
                res.stopped_by = stop.signum
                log(f"stopped by signal {stop.signum}; cleaning up")
            res.trace = out if out.exists() else side["text"] if side["text"].exists() else None
    finally:
        with _signals_ignored():
            try:
                after_text = tfs.read("kprobe_profile", "")
                if res.installed:
                    side["profile_after"].write_text(after_text)
                after = parse_kprobe_profile(after_text)
                res.misses = {k: (v[0] - before.get(k, (0, 0))[0], v[1] - before.get(k, (0, 0))[1])
                              for k, v in after.items() if k in before}
                _write_json(side["probes"], plan, res, backend)
            finally:
                res.restore_problems = tfs.restore(state)
    for k, (hits, miss) in sorted(res.misses.items()):
        if miss:
            log(f"warning: kprobe {k} missed {miss} of {hits + miss} hits (the replay treats them as lost events)")
    if res.restore_problems:
        raise CaptureError("tracefs not fully restored: " + "; ".join(res.restore_problems))
    res.sidecars = {k: p for k, p in side.items() if p.exists()}
    return res


def _install(tfs: TraceFS, plan: ProbePlan, res: RecordResult, log: Callable[[str], None]) -> None:
    for line, (spec, _func) in zip(plan.definitions, plan.specs):
        try:
            tfs.write("kprobe_events", line, append=True)
            res.installed.append(line)
        except CaptureError as exc:
            key = f"{spec.group}/{spec.event}"
            res.rejected.append((line, str(exc)))
            log(f"warning: kernel refused {key}: {exc}")
            if key in CORE_PROBES:
                raise CaptureError(f"the kernel refused the core probe {key}: {exc}") from exc


def _trace_cmd(tfs: TraceFS, plan: ProbePlan, out: Path, command: list[str] | None, duration: float | None,
               buffer_kb: int, text: bool, side: dict[str, Path], log: Callable[[str], None]) -> None:
    ev = _event_args(plan.tracepoints, plan.groups)
    if not text:
        cmd = ["trace-cmd", "record", "-b", str(buffer_kb), *ev, "-o", str(out)]
        if command:
            cmd += command
        elif duration:
            cmd += ["sleep", str(duration)]
        proc = subprocess.Popen(cmd)
        try:
            rc = proc.wait(timeout=duration if command and duration else None)
        except subprocess.TimeoutExpired:
            _stop_child(proc)
            rc = proc.returncode
        except _Stop:
            _stop_child(proc)
            raise
        if rc not in (0, -signal.SIGINT) and not out.exists():
            raise CaptureError(f"trace-cmd record failed (exit {rc}); see its messages above")
        return
    # text of the same run: record would consume the buffer, so start/stop/extract around a non-consuming read
    subprocess.run(["trace-cmd", "start", "-b", str(buffer_kb), *ev], check=True, stdout=subprocess.DEVNULL)
    try:
        _run_until(command, duration, log)
    finally:
        with _signals_ignored():
            subprocess.run(["trace-cmd", "stop"], check=False)
            shutil.copyfile(tfs.path("trace"), side["text"])
            r = subprocess.run(["trace-cmd", "extract", "-o", str(out)], check=False)
    if r.returncode != 0:
        raise CaptureError(f"trace-cmd extract failed (exit {r.returncode})")


def _raw(tfs: TraceFS, plan: ProbePlan, out: Path, command: list[str] | None, duration: float | None,
         buffer_kb: int, text: bool, side: dict[str, Path], log: Callable[[str], None],
         kallsyms: str | None) -> None:
    tfs.write("buffer_size_kb", str(buffer_kb))
    for t in plan.tracepoints:
        if t.filter:
            tfs.write(f"events/{t.system}/{t.name}/filter", t.filter)
        tfs.write("set_event", t.key, append=True)
    for g in plan.groups:
        tfs.write("set_event", f"{g}:*", append=True)
    tfs.write("tracing_on", "1")
    try:
        _run_until(command, duration, log)
    finally:
        with _signals_ignored():
            tfs.write("tracing_on", "0")
            from .rawcapture import capture_raw, write_capture, writer_available

            if text or not writer_available():
                # the text of the run (non-consuming read); without the writer it is the trace itself
                shutil.copyfile(tfs.path("trace"), side["text"])
            if writer_available():
                write_capture(capture_raw(tfs, plan, kallsyms), out)
            else:
                log(f"warning: no trace.dat writer in this installation and no trace-cmd: the events are saved as "
                    f"ftrace text in {side['text']} (iovatrace reads it like a trace.dat)")


def _write_json(path: Path, plan: ProbePlan, res: RecordResult, backend: str) -> None:
    doc = {
        "release": plan.release,
        "arch": plan.arch,
        "profile": plan.profile.name,
        "backend": backend,
        "installed": res.installed,
        "rejected": [{"definition": d, "reason": r} for d, r in res.rejected],
        "tracepoints": [{"event": t.key, "filter": t.filter} for t in plan.tracepoints],
        "warnings": plan.warnings,
        "kprobe_hits_misses": {k: {"hits": h, "misses": m} for k, (h, m) in sorted(res.misses.items())},
        "stopped_by_signal": res.stopped_by,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
