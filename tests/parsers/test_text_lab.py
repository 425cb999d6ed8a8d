"""Text traces of the lab runs against the binary trace.dat of the same run (acceptance of the text readers).

* ``trace.txt.gz`` (``/sys/kernel/tracing/trace``) must give the same events as ``trace.dat``: timestamps equal at
  the text's µs precision, flags/preempt/pid/comm equal, every field equal except the ones the kernel's text
  cannot carry (hashed ``%p``, ``__print_symbolic`` tables keyed by enum names), which must be null and counted.
* every ``report.txt.gz`` (``trace-cmd report``) parses with 0 skipped lines and its counts equal
  ``event_counts.txt`` (the lab's own count, made by ``trace-cmd report | awk`` at record time).
* ``trace-cmd report -R -t`` / ``-t`` / ``-l`` output, generated here from trace.dat, gives the binary values.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iovatrace.parsers import open_trace
from iovatrace.parsers.text import open_text

try:
    from .test_text_support import UNRECOVERABLE_REASONS, compare_tables
except ImportError:  # tests/parsers is not a package: pytest put it on sys.path
    from test_text_support import UNRECOVERABLE_REASONS, compare_tables

LAB = "traces-lab"
EXTRACTS = ["strict_extract", "strict_extract-6.12", "boot_strict", "boot_strict-6.12"]
REPORTS = ["boot_strict", "boot_strict-6.12", "lazy_v6", "lazy_v7", "lazy_v7-6.12", "strict_extract",
           "strict_extract-6.12", "strict_forcedac_v7", "strict_v7", "strict_v7-6.12"]


def _allowed_nulls(tt) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for label, n in tt.stats.nulls.items():
        field, reason = label.split(": ", 1)
        key, name = field.rsplit(".", 1)
        assert reason in UNRECOVERABLE_REASONS, f"{label}: {n} values null for an unexpected reason"
        out.setdefault(key, set()).add(name)
        out[key].add(f"field_{name}")
    return out


@pytest.fixture(scope="module")
def binary(shared_data: Path):
    cache: dict[str, tuple] = {}

    def get(folder: str):
        if folder not in cache:
            tr = open_trace(shared_data / LAB / folder / "trace.dat")
            cache[folder] = (tr, tr.read_tables())
        return cache[folder]

    return get


@pytest.mark.parametrize("folder", EXTRACTS)
def test_tracefs_text_equals_trace_dat(shared_data: Path, binary, folder: str) -> None:
    tr, ref = binary(folder)
    tt = open_text(shared_data / LAB / folder / "trace.txt.gz", formats=tr.formats, kallsyms=tr.kallsyms)
    got = tt.read_tables()
    assert tt.meta["skipped"] == {} and tt.meta["partial_bodies"] == {}
    assert tt.meta["ts_precision_ns"] == 1000 and tt.meta["flags"] == "text"
    assert tt.stats.bad == {}
    assert all(t.schema.metadata[b"iovatrace.typing"] == b"format" for t in got.values())
    counts = compare_tables(ref, got, precision=1000, allow_null=_allowed_nulls(tt))
    # same columns, types and field metadata (c_type, kind, fetch_type) as the binary reader
    for k in ref:
        assert all(ref[k].schema.field(i).equals(got[k].schema.field(i), check_metadata=True)
                   for i in range(len(ref[k].schema))), k
    assert sum(counts.values()) == tt.meta["entries"] == sum(t.num_rows for t in ref.values())
    # The fields the text can carry are all there: only the documented kinds of loss occur.
    if folder.endswith("6.12"):
        assert any("hashed %p" in k for k in tt.stats.nulls)
    else:
        assert tt.stats.nulls == {}


def _expected_counts(folder: Path) -> dict[str, int]:
    out = {}
    for line in (folder / "event_counts.txt").read_text().splitlines():
        if line.strip():
            n, name = line.split()
            out[name.rstrip(":")] = int(n)
    return out


@pytest.mark.parametrize("folder", REPORTS)
def test_report_parses_completely(shared_data: Path, folder: str) -> None:
    d = shared_data / LAB / folder
    tt = open_text(d / "report.txt.gz", strict=True)
    counts = tt.event_counts()
    assert tt.meta["skipped"] == {} and tt.meta["producer"] == "trace-cmd"
    # Without formats the system is unknown: keys are "unknown:<name>" and typing is inferred.
    assert all(k.startswith("unknown:") for k in counts)
    assert {k.split(":", 1)[1]: v for k, v in counts.items()} == _expected_counts(d)
    assert all(t.schema.metadata[b"iovatrace.typing"] == b"inferred" for t in tt.read_tables().values())


@pytest.mark.parametrize("folder", ["strict_extract", "strict_extract-6.12"])
def test_report_with_formats_equals_trace_dat(shared_data: Path, binary, folder: str) -> None:
    tr, ref = binary(folder)
    tt = open_text(shared_data / LAB / folder / "report.txt.gz", formats=tr.formats, kallsyms=tr.kallsyms, strict=True)
    got = tt.read_tables()
    assert tt.meta["flags"] == "absent" and tt.stats.nulls == {} and tt.meta["partial_bodies"] == {}
    compare_tables(ref, got, precision=1000, flags_mask=None)


@pytest.mark.parametrize("args,precision,kw", [
    (["-R", "-t"], 1, {"flags_mask": None}),
    (["-t"], 1, {"flags_mask": None}),
    # -l: comm cut to 8 characters; libtraceevent's latency column has no BH-disabled (0x80) bit.
    (["-l"], 1000, {"flags_mask": 0x7F, "comm_width": 8}),
])
def test_trace_cmd_report_variants(shared_data: Path, binary, trace_cmd: str, tmp_path: Path, args, precision,
                                   kw) -> None:
    folder = "boot_strict-6.12"
    tr, ref = binary(folder)
    out = tmp_path / "report.txt"
    with open(out, "w") as fh:
        subprocess.run([trace_cmd, "report", *args, "-i", str(shared_data / LAB / folder / "trace.dat")],
                       stdout=fh, stderr=subprocess.DEVNULL, check=True)
    tt = open_text(out, formats=tr.formats, kallsyms=tr.kallsyms, strict=True)
    got = tt.read_tables()
    assert tt.meta["ts_precision_ns"] == precision
    assert tt.meta["flags"] == ("libtraceevent" if "-l" in args else "absent")
    compare_tables(ref, got, precision=precision, allow_null=_allowed_nulls(tt), **kw)


def test_report_raw_arrays_and_strings(shared_data: Path, binary, trace_cmd: str, tmp_path: Path) -> None:
    """-R prints arrays as ARRAY[..] bytes and strings bare: the dma:* events of 6.12 carry both."""
    folder = "strict_extract-6.12"
    tr, ref = binary(folder)
    out = tmp_path / "report.txt"
    with open(out, "w") as fh:
        subprocess.run([trace_cmd, "report", "-R", "-t", "-F", "dma", "-i",
                        str(shared_data / LAB / folder / "trace.dat")], stdout=fh, stderr=subprocess.DEVNULL,
                       check=True)
    tt = open_text(out, formats=tr.formats, strict=True)
    got = tt.read_tables()
    want = {k: v for k, v in ref.items() if k.startswith("dma:")}
    assert sum(t.num_rows for t in got.values()) > 26000
    compare_tables(want, got, precision=1, flags_mask=None, match_seq=False)
    sg = got["dma:dma_map_sg"].column("phys_addrs").to_pylist()
    assert any(len(x) > 1 for x in sg)


@pytest.mark.parametrize("name,events", [
    ("lisa_trace_txt.txt", {"sched_switch", "sched_wakeup", "print", "sched_overutilized"}),
    ("trappy_doc_trace.txt", {"thermal_temperature", "cdev_update", "thermal_power_allocator"}),
])
def test_public_report_text(shared_data: Path, name: str, events: set[str]) -> None:
    """Older trace-cmd report text (LISA, trappy): every line is an event or a known header line."""
    path = shared_data / "traces-public" / name
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    headers = [ln for ln in lines if ln.startswith(("version = ", "cpus=", "CPU "))]
    tt = open_trace(path, strict=True)
    counts = tt.event_counts()
    assert tt.meta["skipped"] == {}
    assert sum(counts.values()) == len(lines) - len(headers)
    assert events <= {k.split(":", 1)[1] for k in counts}
    sw = tt.read_tables(["*sched_switch"]).get("unknown:sched_switch")
    if sw is not None:
        assert str(sw.schema.field("prev_pid").type) == "int64"
        assert sw.column("next_comm")[0].as_py() == "swapper/1"


def test_open_trace_sniffs_gzip_text(shared_data: Path) -> None:
    """parsers.open_trace reads the first 4 KiB of a file: a truncated gzip stream must still be recognised."""
    tt = open_trace(shared_data / LAB / "boot_strict" / "trace.txt.gz")
    assert sum(tt.event_counts().values()) == 1577


def test_formats_from_a_trace_dat_path(shared_data: Path, binary) -> None:
    """formats= may name the trace.dat of the same run: its formats and kallsyms are used."""
    d = shared_data / LAB / "boot_strict"
    tr, ref = binary("boot_strict")
    tt = open_text(d / "trace.txt.gz", formats=d / "trace.dat")
    compare_tables(ref, tt.read_tables(), precision=1000)
