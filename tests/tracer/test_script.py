"""The generated shell recorder (what the lab's busybox guest runs): same definitions as the catalogue, valid sh,
and run against a fake tracefs it installs the probes, computes the kmem filter the 6.12 kernel accepted, and
removes exactly what it added."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from iovatrace.tracer.probes import Kallsyms, parse_kprobe_line
from iovatrace.tracer.record import build_plan
from iovatrace.tracer.script import render_script

from .conftest import PRE_EXISTING_KPROBE, tree_state

R612 = "6.12.107+deb13-amd64"


@pytest.fixture()
def script612(lab612: Path, tmp_path: Path) -> Path:
    plan, _ = build_plan(None, kallsyms=str(lab612 / "kallsyms_iova.txt"), release=R612, arch="x86_64")
    p = tmp_path / "iovatrace-record.sh"
    p.write_text(render_script(plan))
    return p


def test_script_is_valid_sh_and_carries_the_plan(script612: Path, lab612: Path) -> None:
    sh = shutil.which("sh")
    assert sh
    subprocess.run([sh, "-n", str(script612)], check=True)
    body = script612.read_text()
    here = body.split("<<'IOVATRACE_KPROBES'\n", 1)[1].split("IOVATRACE_KPROBES\n", 1)[0]
    assert {parse_kprobe_line(x) for x in here.splitlines()} == {
        parse_kprobe_line(x) for x in (lab612 / "kprobe_events.txt").read_text().splitlines()}


def test_script_raw_mode_on_fake_tracefs(script612: Path, fake_tracefs: Path, lab612: Path, tmp_path: Path) -> None:
    """No trace-cmd on PATH: the script records text through tracefs, and its restore removes its own probes."""
    before = tree_state(fake_tracefs)
    slab = tmp_path / "slab"
    (slab / "iommu_iova_magazine").mkdir(parents=True)
    slabinfo = tmp_path / "slabinfo"
    slabinfo.write_text((lab612 / "slab_iova.txt").read_text().splitlines()[-1] + "\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "cat", "sed", "grep", "tr", "tail", "sort", "awk", "mktemp", "rm", "cut", "uname", "true"):
        exe = shutil.which(tool)
        assert exe, tool
        os.symlink(exe, bindir / tool)
    env = {"PATH": str(bindir), "TRACEFS": str(fake_tracefs), "KALLSYMS": str(lab612 / "kallsyms_iova.txt"),
           "SLABDIR": str(slab), "SLABINFO": str(slabinfo)}
    out = tmp_path / "run" / "trace.dat"
    out.parent.mkdir()
    r = subprocess.run(["sh", str(script612), "-o", str(out), "-b", "2048", "--", "true"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "no trace-cmd" in r.stderr
    assert (out.parent / "trace.txt").exists() and (out.parent / "kprobe_profile.txt").exists()
    # the kmem filter computed by the script from kallsyms is the one the 6.12 kernel accepted
    events = (out.parent / "events.txt").read_text()
    for line in (lab612 / "kmem_filters.txt").read_text().splitlines():
        if line.startswith("kmem_cache_"):
            assert f"-f '{line.split(': ', 1)[1].strip()}'" in events
    added = {parse_kprobe_line(x) for x in (out.parent / "kprobe_events.txt").read_text().splitlines()}
    assert added == {parse_kprobe_line(x) for x in (lab612 / "kprobe_events.txt").read_text().splitlines()} | {
        parse_kprobe_line(PRE_EXISTING_KPROBE)}
    # A plain directory has no kernel semantics: the script's removals show up as "-:group/event" lines. They must
    # name exactly the probes it added (not the pre-existing one).
    after = [x for x in (fake_tracefs / "kprobe_events").read_text().splitlines() if x.strip()]
    removed = {x[2:] for x in after if x.startswith("-:")}
    assert removed == {d.key for d in added} - {"other/foo_probe"}
    # everything else the script touched is back as it was
    for name in ("tracing_on", "buffer_size_kb", "current_tracer"):
        assert (fake_tracefs / name).read_text().strip() == before[f"./{name}"].strip(), name
    assert Kallsyms((lab612 / "kallsyms_iova.txt").read_text()).has("alloc_iova_fast")


def test_cli_emit_script_and_probes_with_tracefs(lab612: Path, fake_tracefs: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from iovatrace.cli import cli

    ks = str(lab612 / "kallsyms_iova.txt")
    out = tmp_path / "rec.sh"
    r = CliRunner().invoke(cli, ["record", "--emit-script", str(out), "--kallsyms", ks, "--kernel", R612])
    assert r.exit_code == 0, r.output
    plan, _ = build_plan(None, kallsyms=ks, release=R612, arch="x86_64")
    assert out.read_text() == render_script(plan) and os.access(out, os.X_OK)
    r = CliRunner().invoke(cli, ["probes", "--tracefs", str(fake_tracefs), "--kallsyms", ks, "--kernel", R612])
    assert r.exit_code == 0, r.output
    comments = [ln for ln in r.stdout.splitlines() if ln.startswith("#   ")]
    assert [c.split()[1] for c in comments] == ["iommu:*", "intel_iommu:*", "dma:*", "kmem:kmem_cache_alloc",
                                                "kmem:kmem_cache_free"]
