"""Fixtures of the tracer tests: a fake tracefs (a plain directory shaped like the lab's 6.12 guest's tracefs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Settings a machine might have before `record` runs: not the defaults, so a restore that writes defaults fails.
INITIAL = {
    "tracing_on": "1\n",
    "buffer_size_kb": "1408\n",
    "trace_clock": "local [global] counter uptime perf mono mono_raw boot x86-tsc\n",
    "current_tracer": "nop\n",
    "error_log": "",
    "kprobe_profile": "  foo_probe                                   7               0\n",
    "trace": "# tracer: nop\n",
}
PRE_EXISTING_KPROBE = "p:other/foo_probe do_sys_open dfd=%di:s32"
PRE_ENABLED = ["sched:sched_switch", "iommu:map"]


def make_fake_tracefs(root: Path, events: list[str], ncpus: int = 2) -> Path:
    """A plain directory with tracefs' files for ``events`` (``system:name``), some settings changed from their
    defaults, one kprobe of someone else's and two events already enabled."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in INITIAL.items():
        (root / name).write_text(text)
    for ev in sorted(set(events) | set(PRE_ENABLED) | {"other:foo_probe"}):
        system, name = ev.split(":")
        d = root / "events" / system / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "enable").write_text("1\n" if ev in PRE_ENABLED else "0\n")
        (d / "filter").write_text("none\n")
        (d / "format").write_text(f"name: {name}\nID: 1\nformat:\n")
    (root / "events" / "header_page").write_text("")
    (root / "events" / "header_event").write_text("")
    (root / "set_event").write_text("".join(e + "\n" for e in PRE_ENABLED))
    (root / "kprobe_events").write_text(PRE_EXISTING_KPROBE + "\n")
    for c in range(ncpus):
        d = root / "per_cpu" / f"cpu{c}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "trace_pipe_raw").write_bytes(b"")
        (d / "stats").write_text("entries: 0\noverrun: 0\n")
    return root


def tree_state(root: Path) -> dict[str, str]:
    """Every file and directory of a tree with its content: equality = nothing changed."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = ""
        for f in filenames:
            out[os.path.join(rel, f)] = (Path(dirpath) / f).read_text(errors="replace")
    return out


@pytest.fixture()
def lab612(shared_data: Path) -> Path:
    """The lab's 6.12 probe folder (events, kallsyms, kernel-checked probe results)."""
    return shared_data / "traces-lab" / "probe-6.12"


@pytest.fixture()
def fake_tracefs(tmp_path: Path, lab612: Path) -> Path:
    """A fake tracefs with the 6.12 guest's iommu/intel_iommu/dma events plus the kmem cache events."""
    events = [ln.strip() for ln in (lab612 / "iommu_events.txt").read_text().splitlines() if ":" in ln]
    events += ["kmem:kmem_cache_alloc", "kmem:kmem_cache_free"]
    return make_fake_tracefs(tmp_path / "tracefs", events)
