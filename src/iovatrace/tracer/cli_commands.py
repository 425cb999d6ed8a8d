"""The tracer's click commands: ``probes``, ``record`` and ``lab run``, registered on the main group by cli.py.

Each command parses its options and calls one library function (probes.plan_*, record.record, lab.run_lab); the
group turns :class:`~iovatrace.errors.IovatraceError` into one line on stderr.
"""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["register"]


def _probes_text(plan: Any) -> str:
    lines = [f"# iovatrace probes for {plan.release} ({plan.arch}, profile {plan.profile.name}): "
             f"{len(plan.definitions)} kprobes/kretprobes; append to kprobe_events ('#' lines are ignored)"]
    lines += plan.definitions
    lines.append("# tracepoints to enable with them (set_event / trace-cmd -e; -f = filter):")
    for t in plan.tracepoints:
        lines.append(f"#   {t.key}" + (f"  -f '{t.filter}'" if t.filter else "") + (f"   ({t.why})" if t.why else ""))
    return "\n".join(lines) + "\n"


@click.command("probes", short_help="Print the probe set the replay needs, for a kernel.")
@click.option("--kallsyms", "kallsyms", type=click.Path(exists=True, dir_okay=False),
              help="kallsyms or System.map of the kernel (default /proc/kallsyms).")
@click.option("--tracefs", "tracefs", type=click.Path(exists=True, file_okay=False),
              help="tracefs directory: tracepoints are checked against its events/.")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), default=None,
              help="Calling convention for the fetch-args (default: this machine).")
@click.option("--kernel", "release", help="Kernel release, e.g. 6.1.0-56-amd64 (default: running kernel; "
              "with --kallsyms: inferred from its symbols).")
@click.option("--btf-args", "btf", is_flag=True, help="Name plain arguments by their BTF names (6.6+ kernels).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--emit-script", "script", type=click.Path(dir_okay=False, writable=True),
              help="Also write the shell recorder for this kernel (see record --emit-script).")
def probes_cmd(kallsyms: str | None, tracefs: str | None, arch: str | None, release: str | None, btf: bool,
               as_json: bool, script: str | None) -> None:
    """Print the kprobe/kretprobe definitions and tracepoints the replay needs, for this kernel.

    Functions missing from kallsyms (inlined) are left out with a warning on stderr saying what the replay loses.
    """
    from .record import build_plan
    from .script import render_script
    from .tracefs import TraceFS

    tfs = TraceFS(tracefs, writable=False) if tracefs else None
    plan, _ = build_plan(tfs, kallsyms=kallsyms, release=release, arch=arch, btf_names=btf)
    for w in plan.warnings:
        click.echo(f"warning: {w}", err=True)
    if script:
        _write_script(script, render_script(plan))
    if as_json:
        click.echo(json.dumps({"release": plan.release, "arch": plan.arch, "profile": plan.profile.name,
                               "kprobes": plan.definitions,
                               "tracepoints": [{"event": t.key, "filter": t.filter} for t in plan.tracepoints],
                               "warnings": plan.warnings}, indent=1))
    else:
        click.echo(_probes_text(plan), nl=False)


def _write_script(path: str, text: str) -> None:
    import os

    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o755)


@click.command("record", context_settings={"ignore_unknown_options": True},
               short_help="Record the IOVA probe set while a command runs.")
@click.option("-o", "--output", "out", default="trace.dat", show_default=True, type=click.Path(dir_okay=False),
              help="trace.dat to write; sidecars (kprobe_profile before/after, kprobe_events, probes.json) beside.")
@click.option("--duration", type=float, default=None, help="Seconds to record (with COMMAND: a time limit).")
@click.option("--tracefs", "tracefs", type=click.Path(exists=True, file_okay=False),
              help="tracefs directory (default: the mounted one).")
@click.option("--kallsyms", type=click.Path(exists=True, dir_okay=False),
              help="kallsyms file (default /proc/kallsyms).")
@click.option("--kernel", "release", help="Kernel release the probes are for (default: running kernel).")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), default=None,
              help="Architecture whose calling convention the fetch-args use (default: this machine).")
@click.option("--backend", type=click.Choice(["auto", "trace-cmd", "raw"]), default="auto", show_default=True,
              help="trace-cmd, or read tracefs directly and write trace.dat with iovatrace's writer.")
@click.option("-b", "--buffer-kb", type=int, default=32768, show_default=True, help="Per-CPU ring buffer size.")
@click.option("--text", is_flag=True, help="Also save the text of the same run (<stem>.txt).")
@click.option("--btf-args", "btf", is_flag=True, help="BTF-named probe arguments (6.6+ kernels).")
@click.option("--emit-script", "script", type=click.Path(dir_okay=False),
              help="Do not record: write a POSIX-sh recorder with the same probes (for guests without Python).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record_cmd(out: str, duration: float | None, tracefs: str | None, kallsyms: str | None, release: str | None,
               arch: str | None, backend: str, buffer_kb: int, text: bool, btf: bool, script: str | None,
               command: tuple[str, ...]) -> None:
    """Install the probes, record IOVA-allocator events while COMMAND runs (or for --duration, or until
    Ctrl-C), and put tracefs back exactly as it was.

    Use `iovatrace record [OPTIONS] -- COMMAND ARGS...`. Needs root and tracefs; without them it stops with
    an error. Each probe's hits and misses are saved beside the trace so the replay knows what the kernel dropped.
    """
    from .record import build_plan, record
    from .script import render_script
    from .tracefs import TraceFS

    if script:
        tfs = TraceFS(tracefs, writable=False) if tracefs else None
        plan, _ = build_plan(tfs, kallsyms=kallsyms, release=release, arch=arch, btf_names=btf)
        for w in plan.warnings:
            click.echo(f"warning: {w}", err=True)
        _write_script(script, render_script(plan))
        click.echo(f"wrote {script} ({len(plan.definitions)} kprobes for {plan.release})")
        return
    cmd = list(command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    res = record(out, command=cmd or None, duration=duration, tracefs=tracefs, kallsyms=kallsyms, release=release,
                 arch=arch, backend=backend, buffer_kb=buffer_kb, text=text, btf_names=btf,
                 log=lambda s: click.echo(s, err=True))
    click.echo(f"{res.trace or 'no trace'}: {len(res.installed)} kprobes, "
               f"{sum(m for _, m in res.misses.values())} kprobe misses; tracefs restored"
               + (f" (stopped by signal {res.stopped_by})" if res.stopped_by else ""))


@click.group("lab", short_help="Record real traces from a Debian kernel under QEMU.")
def lab_group() -> None:
    """The QEMU lab: record real traces from a Debian kernel with an emulated Intel IOMMU."""


@lab_group.command("run")
@click.option("--kernel-package", "package", default=None,
              help="Debian kernel package (default: the one linux-image-amd64 depends on); unpacked, not installed.")
@click.option("--suite", default=None, help="Debian suite to take the package from (e.g. trixie); the apt source is "
              "derived from this machine's apt configuration, in a private apt directory.")
@click.option("--mode", type=click.Choice(["strict", "lazy"]), default="strict", show_default=True)
@click.option("--workload", type=click.Choice(["plain", "stress", "short"]), default="plain", show_default=True)
@click.option("--text", is_flag=True, help="Also bring back the text of the same run (trace.txt).")
@click.option("-o", "--output", "out_dir", default="lab-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--work", "work_dir", default=None, type=click.Path(file_okay=False),
              help="Cache for packages, unpacked kernels, initramfs (default: ~/.cache/iovatrace/lab).")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True)
@click.option("--timeout", type=int, default=600, show_default=True, help="Seconds before the guest is killed.")
def lab_run_cmd(package: str | None, suite: str | None, mode: str, workload: str, text: bool, out_dir: str,
                work_dir: str | None, accel: str, timeout: int) -> None:
    """Boot a Debian kernel under QEMU (intel-iommu), run a DMA workload under the generated recorder, and
    bring back trace.dat, kprobe misses, dmesg and the console log into OUTPUT."""
    from .lab_run import run_lab

    res = run_lab(package=package, suite=suite, mode=mode, workload=workload, text=text, out_dir=out_dir,
                  work_dir=work_dir, accel=accel, timeout=timeout, log=lambda s: click.echo(s, err=True))
    click.echo(res.summary())


def register(cli: click.Group) -> None:
    """Add ``probes``, ``record`` and ``lab`` to the main command group."""
    cli.add_command(probes_cmd)
    cli.add_command(record_cmd)
    cli.add_command(lab_group)
