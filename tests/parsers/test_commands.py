"""``iovatrace info`` and ``iovatrace convert`` on real traces, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from iovatrace.cli import cli
from iovatrace.parsers import open_trace


def _recorded_counts(folder: Path) -> dict[str, int]:
    """event_counts.txt (written by the lab from trace-cmd's report): event name -> count."""
    out: dict[str, int] = {}
    for line in (folder / "event_counts.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            name = parts[1].rstrip(":")
            out[name] = out.get(name, 0) + int(parts[0])
    return out


def test_info_json(shared_data):
    d = shared_data / "traces-lab" / "boot_strict-6.12"
    res = CliRunner().invoke(cli, ["info", "--json", str(d / "trace.dat")])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["version"] == 7 and info["compression"] == "zstd" and info["cpus"] == 2
    assert info["clock"] == "global"
    assert info["lost_events"] == 0 and info["damage"] == []
    by_name: dict[str, int] = {}
    for k, v in info["events"].items():
        assert ":" in k
        by_name[k.split(":")[1]] = by_name.get(k.split(":")[1], 0) + v
    assert by_name == _recorded_counts(d)
    assert info["kernel_release"] == (d / "uname.txt").read_text().split()[2]


def test_info_text(shared_data):
    res = CliRunner().invoke(cli, ["info", str(shared_data / "traces-public" / "trappy_trace.dat")])
    assert res.exit_code == 0, res.output
    assert "trace.dat v6, compression none" in res.output
    assert "kernel long 4 bytes" in res.output
    assert "events:      525 in" in res.output


def test_info_cold_start_is_fast(shared_data):
    """``iovatrace info`` on a small trace: under 0.5 s of CPU for the whole process (CPU, not wall time, so a
    loaded CI machine does not make it flaky)."""
    p = shared_data / "traces-lab" / "boot_strict" / "trace.dat"
    proc = subprocess.Popen([sys.executable, "-c", "from iovatrace.cli import main; main()", "info", str(p)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    assert proc.stdout is not None and "events:      1577 in 12 types" in proc.stdout.read().decode()
    assert ru.ru_utime + ru.ru_stime < 0.5


def test_info_does_not_import_pyarrow(shared_data):
    code = ("import sys; from iovatrace.parsers.commands import trace_info; "
            f"trace_info({str(shared_data / 'traces-lab' / 'boot_strict' / 'trace.dat')!r}); "
            "print('pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_convert_parquet(shared_data, tmp_path):
    d = shared_data / "traces-lab" / "boot_strict"
    res = CliRunner().invoke(cli, ["convert", str(d / "trace.dat"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    tr = open_trace(d / "trace.dat")
    counts = {}
    for key, n in tr.event_counts().items():
        system, name = key.split(":")
        t = pq.read_table(tmp_path / "out" / system / f"{name}.parquet")
        assert t.num_rows == n
        assert t.schema.names == tr.schema_for(tr.formats[key]).names
        counts[name] = n
    assert counts == _recorded_counts(d)
    lost = pq.read_table(tmp_path / "out" / "lost_events.parquet")
    assert lost.num_rows == 0 and "count" in lost.schema.names
    assert not (tmp_path / "out" / "damage.json").exists()


def test_convert_arrow_and_event_filter(shared_data, tmp_path):
    src = shared_data / "traces-lab" / "lazy_v7" / "trace.dat"
    res = CliRunner().invoke(cli, ["convert", str(src), "-o", str(tmp_path), "--format", "arrow",
                                   "--events", "iova:*", "--events", "iommu:map"])
    assert res.exit_code == 0, res.output
    systems = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert systems == ["iommu", "iova"]
    assert [p.name for p in (tmp_path / "iommu").iterdir()] == ["map.arrow"]
    with pa.ipc.open_file(tmp_path / "iommu" / "map.arrow") as r:
        t = r.read_all()
    ref = open_trace(src).read_tables(["iommu:map"])["iommu:map"]
    assert t.equals(ref)


def test_convert_damaged_file_reports_damage(shared_data, tmp_path):
    src = shared_data / "traces-public" / "lisa_sched_load.dat"
    blob = src.read_bytes()
    p = tmp_path / "cut.dat"
    p.write_bytes(blob[: len(blob) - 100_000])
    res = CliRunner().invoke(cli, ["convert", str(p), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    damage = json.loads((tmp_path / "out" / "damage.json").read_text())
    assert damage and all("offset" in d and "reason" in d for d in damage)
    res = CliRunner().invoke(cli, ["info", "--json", str(p)])
    assert json.loads(res.output)["damage"] == damage


def test_not_a_trace_is_one_line_error(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_bytes(b"\x00\x01 definitely not a trace\n" * 4)
    res = CliRunner().invoke(cli, ["info", str(p)])
    assert res.exit_code == 2  # unusable input
    assert res.output.count("\n") == 1 and "iovatrace: error:" in res.output and "notes.txt" in res.output
