"""Recording without trace-cmd: a fake tracefs whose ring buffer holds the real pages of a lab trace; `record
--backend raw` drains it and writes a trace.dat that trace-cmd (the independent reference) decodes to exactly the
events of the original."""

from __future__ import annotations

import mmap
import os
import re
import subprocess
from pathlib import Path

import pytest

from iovatrace.parsers.pages import iter_page_blocks
from iovatrace.parsers.tracedat_meta import read_meta
from iovatrace.tracer import record as rec

from .conftest import tree_state


def _real_trace_into_fake_tracefs(src: Path, root: Path) -> None:
    with open(src, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        meta = read_meta(buf, str(src))
        binfo = meta.buffers[0]
        size = os.fstat(f.fileno()).st_size
        for cd in binfo.cpus:
            raw = bytearray()
            for blk in iter_page_blocks(f.fileno(), size, meta, binfo, cd, sink=lambda d: None):
                raw += blk.data[:blk.npages * blk.page_size].tobytes()
            d = root / "per_cpu" / f"cpu{cd.cpu}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "trace_pipe_raw").write_bytes(bytes(raw))
            (d / "stats").write_text("entries: 0\n")
    for system, text in [("ftrace", t) for t in meta.ftrace_formats] + list(meta.event_formats):
        name = re.search(r"^name: (\S+)", text, re.M)
        assert name
        d = root / "events" / system / name.group(1)
        d.mkdir(parents=True, exist_ok=True)
        (d / "format").write_text(text)
        (d / "enable").write_text("0\n")
        (d / "filter").write_text("none\n")
    (root / "events" / "header_page").write_text(meta.header_page)
    (root / "events" / "header_event").write_text(meta.header_event)
    (root / "saved_cmdlines").write_bytes(meta.cmdlines_raw)
    (root / "trace_clock").write_text(f"[{meta.clock}] global counter\n")
    for name, text in {"tracing_on": "0\n", "buffer_size_kb": "1408\n", "current_tracer": "nop\n",
                       "set_event": "", "kprobe_events": "", "kprobe_profile": "", "trace": "",
                       "printk_formats": ""}.items():
        (root / name).write_text(text)


def _events(report: str) -> list[str]:
    """Event lines of a trace-cmd report (headers and CPU banners dropped)."""
    return [ln for ln in report.splitlines() if re.search(r"\[\d+\]\s+\d+\.\d+:", ln)]


def test_raw_backend_writes_what_the_ring_buffer_held(shared_data: Path, tmp_path: Path, trace_cmd: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    lab = shared_data / "traces-lab"
    src = lab / "boot_strict" / "trace.dat"     # 1,577 events of a real 6.1 boot, two CPUs
    fake = tmp_path / "tracefs"
    _real_trace_into_fake_tracefs(src, fake)
    monkeypatch.setattr(rec, "_run_until", lambda cmd, duration, log: None)
    # the drain reads every page: the state to compare is the one after, minus the emptied ring buffers
    res = rec.record(tmp_path / "out" / "trace.dat", tracefs=fake, kallsyms=str(lab / "probe" / "kallsyms_iova.txt"),
                     release="6.1.0-56-amd64", backend="raw", log=lambda s: None)
    assert res.trace == tmp_path / "out" / "trace.dat" and not res.restore_problems
    want = _events(subprocess.run([trace_cmd, "report", "-i", str(src)], capture_output=True, text=True,
                                  check=True).stdout)
    got = _events(subprocess.run([trace_cmd, "report", "-i", str(res.trace)], capture_output=True, text=True,
                                 check=True).stdout)
    assert len(want) == 1577
    assert got == want
    # and iovatrace's own reader agrees with the count
    from iovatrace.parsers import open_trace

    assert sum(open_trace(str(res.trace)).event_counts().values()) == len(want)
    assert "per_cpu/cpu0/trace_pipe_raw" in {k.lstrip("./") for k in tree_state(fake)}
