"""The ``replay`` command end to end: text, --json, -o Parquet, --at, --kernel, --bug-mode, mapping files, errors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from iovatrace.cli import cli
from iovatrace.errors import InputError
from iovatrace.event import Event
from iovatrace.replay.adapter import EventMap, parse_mapping
from iovatrace.replay.driver import ReplayDriver
from iovatrace.replay.profiles import profile_for
from iovatrace.schema import REPLAY_DOMAINS, REPLAY_FINDINGS, REPLAY_STATE


@pytest.fixture(scope="module")
def sample_json() -> dict:
    res = CliRunner().invoke(cli, ["replay", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_json_shape_on_bundled_sample(sample_json: dict) -> None:
    d = sample_json
    assert isinstance(d["findings"], list)
    fid = d["fidelity"]
    for key in ("predicted", "exact", "uncertain", "mismatched"):
        assert isinstance(fid[key], int)
    # The sample is lazy_v7 (6.1): the re-created NVMe domain is fully observed, 222 allocations, all exact.
    assert d["profile"] == "6.0-6.6" and d["kernel_release"].startswith("6.1.")
    assert fid["predicted"] == fid["exact"] == 222
    assert fid["checks"]["rcache_miss"]["disagree"] == 0
    assert {"0000:00:03.0", "0000:00:04.0"} <= set(d["devices"])
    assert len(d["rcache_hit_rate"]) == 7
    assert d["totals"]["certainty"] == "lower_bound"  # the trace starts after boot
    assert d["flush_queue"]  # lazy: flush-queue activity is reported
    assert not [f for f in d["findings"] if f["severity"] == "error"]


def test_text_summary() -> None:
    res = CliRunner().invoke(cli, ["replay"])
    assert res.exit_code == 0, res.output
    out = res.output
    for needle in ("profile: 6.0-6.6", "domains:", "rcache hit rate per bin", "fidelity: 222/222 exact",
                   "live IOVAs at end", "findings:", "flush queues:"):
        assert needle in out


def test_output_parquet_and_snapshot(tmp_path) -> None:
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["replay", "--json", "-o", str(out), "--at", "10.5"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["snapshot"]["ts_ns"] == 10_500_000_000 and d["snapshot"]["domains"]
    f = pq.read_table(out / "findings.parquet")
    s = pq.read_table(out / "state.parquet")
    dm = pq.read_table(out / "domains.parquet")
    assert f.schema.equals(REPLAY_FINDINGS, check_metadata=False)
    assert s.schema.equals(REPLAY_STATE, check_metadata=False)
    assert dm.schema.equals(REPLAY_DOMAINS, check_metadata=False)
    assert s.num_rows > 10 and dm.num_rows == len(d["domains"])
    assert sum(dm.column("predicted_exact").to_pylist()) == d["fidelity"]["exact"]


def test_kernel_override_and_bad_values() -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["replay", "--kernel", "banana"])
    assert res.exit_code == 2 and "Cannot read a kernel version" in res.output
    res = runner.invoke(cli, ["replay", "--bug-mode", "z"])
    assert res.exit_code == 2 and "Unknown --bug-mode" in res.output
    res = runner.invoke(cli, ["replay", "--at", "soon"])
    assert res.exit_code == 2 and "Cannot parse --at" in res.output


def test_report_is_written_or_explained(tmp_path) -> None:
    res = CliRunner().invoke(cli, ["replay", "--json", "--report", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    notes = json.loads(res.output)["notes"]
    # Either the analysis package wrote the report, or the replay says clearly why not.
    assert any("report written" in n for n in notes) and (tmp_path / "rep" / "index.html").exists() or \
        any("--report:" in n for n in notes)


def test_bad_trace_is_one_line_error(tmp_path) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x17\x08\x44tracing6" + b"\0" * 20)
    res = CliRunner().invoke(cli, ["replay", str(bad)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.output.startswith("iovatrace: error:")


def test_mapping_file_renames_probes() -> None:
    """Another probe naming scheme: the same operations under other event and field names."""
    text = """
        # my probes
        init_iova_domain = p:iovainit  iovad=dom granule=g start_pfn=start
        alloc_iova_fast = p:aif iovad=dom size=n limit_pfn=lim flush_rcache=fl
        alloc_iova_fast_ret = p:aif_ret pfn=ret
    """
    emap = EventMap(parse_mapping(text))
    assert emap.event_of("alloc_iova_fast") == "p:aif"
    drv = ReplayDriver(profile_for("6.1"), 1, event_map=emap)
    evs = [Event(1, 0, 0, "p:iovainit", 0, {"dom": 7, "g": 4096, "start": 1})]
    for i in range(3):
        evs.append(Event(10 + 2 * i, 0, 1 + 2 * i, "p:aif", 0, {"dom": 7, "n": 1, "lim": 0xFFFFF, "fl": 1}))
        evs.append(Event(11 + 2 * i, 0, 2 + 2 * i, "p:aif_ret", 0, {"ret": 0xFFFFF - i}))
    res = drv.run(evs)
    assert res.fidelity.predicted == res.fidelity.exact == 3


@pytest.mark.parametrize("text,msg", [
    ("alloc_iova_fast p:aif", "expected 'operation = system:event"),
    ("no_such_op = p:x", "Unknown operation"),
    ("alloc_iova_fast = aif", "expected a 'system:event'"),
    ("alloc_iova_fast = p:aif bogus=x", "has no field 'bogus'"),
])
def test_bad_mapping_lines(text: str, msg: str) -> None:
    with pytest.raises(InputError, match=msg) as ei:
        parse_mapping(text, source="m.txt")
    assert "m.txt:1" in str(ei.value)


def test_replay_package_is_sans_io() -> None:
    """The model, driver and command modules import neither pyarrow, click nor pathlib (ARCHITECTURE.md)."""
    import subprocess
    import sys

    # Site hooks of some interpreters import pathlib at start-up; forget such modules first so that only what
    # importing the replay pulls in is measured.
    code = ("import sys\n"
            "bad = {'pyarrow', 'click', 'pathlib'}\n"
            "for m in [m for m in sys.modules if m.split('.')[0] in bad]: del sys.modules[m]\n"
            "import iovatrace.replay.driver, iovatrace.replay.commands, iovatrace.replay.summary, "
            "iovatrace.replay.validate\n"
            "found = sorted(bad & set(sys.modules)); print(found); sys.exit(1 if found else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
