"""``iovatrace oops``: text lines, --json, Parquet tables, stdin, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from iovatrace import schema
from iovatrace.cli import cli

LOG = """\
[  599.020261] BUG: kernel NULL pointer dereference, address: 0000000000000000
[  599.022770] Oops: 0000 [#1] PREEMPT SMP NOPTI
[  599.023365] CPU: 68 PID: 3122 Comm: avocado Not tainted 6.5.0-rc6 #16
[  599.024571] RIP: 0010:free_iova_rcaches+0x9c/0x110
[  599.025170] Code: 49 8b 7f 08 <48> 8b 07
[  599.027075] RAX: ffffffff9fa8c100 RBX: 0000000000000080 RCX: 0000000000000005
[  599.032878] Call Trace:
[  599.033512]  <TASK>
[  599.034140]  ? show_regs+0x6e/0x80
[  599.041460]  put_iova_domain+0x32/0xa0
[  599.042041]  iommu_put_dma_cookie+0x177/0x1b0
[  599.057738]  </TASK>
[  599.058227] Modules linked in: xt_CHECKSUM(E) wmi
[  600.000000] WARNING: CPU: 1 PID: 7 at drivers/iommu/iova.c:612 iova_magazine_free+0x1/0x2
[  600.000001] RIP: 0010:iova_magazine_free+0x1/0x2
[  600.000002] Call Trace:
[  600.000003]  free_iova_rcaches+0x9c/0x110
[  600.000004]  put_iova_domain+0x32/0xa0
"""


def test_text_output(tmp_path: Path) -> None:
    p = tmp_path / "console.log"
    p.write_text(LOG)
    res = CliRunner().invoke(cli, ["oops", str(p)])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().split("\n")
    assert lines == [
        f"{p}:1-13: null_deref: BUG: unable to handle kernel NULL pointer dereference in free_iova_rcaches",
        f"{p}:14-18: warning: WARNING in iova_magazine_free",
    ]


def test_json_and_parquet(tmp_path: Path) -> None:
    out = tmp_path / "tables"
    res = CliRunner().invoke(cli, ["oops", "-", "--json", "-o", str(out)], input=LOG)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [d["title"] for d in data] == ["BUG: unable to handle kernel NULL pointer dereference in free_iova_rcaches",
                                          "WARNING in iova_magazine_free"]
    for d in data:
        assert {"title", "alt_titles", "kind", "corrupted", "first_line", "last_line"} <= d.keys()
    assert data[0]["alt_titles"] == ["bad-access in free_iova_rcaches"] and data[0]["corrupted"] is False
    want = {"reports": schema.OOPS_REPORTS, "frames": schema.OOPS_FRAMES, "registers": schema.OOPS_REGISTERS,
            "modules": schema.OOPS_MODULES, "code": schema.OOPS_CODE}
    for name, sch in want.items():
        t = pq.read_table(out / f"oops_{name}.parquet")
        assert t.schema.equals(sch, check_metadata=False), name
    frames = pq.read_table(out / "oops_frames.parquet").to_pylist()
    assert [(f["report_id"], f["symbol"], f["reliable"]) for f in frames] == [
        (0, "show_regs", False), (0, "put_iova_domain", True), (0, "iommu_put_dma_cookie", True),
        (1, "free_iova_rcaches", True), (1, "put_iova_domain", True)]
    mods = pq.read_table(out / "oops_modules.parquet").to_pylist()
    assert [(m["name"], m["flags"]) for m in mods] == [("xt_CHECKSUM", "E"), ("wmi", "")]
    code = pq.read_table(out / "oops_code.parquet").to_pylist()
    assert code[0]["data"] == bytes.fromhex("498b7f08488b07") and code[0]["fault_offset"] == 4


def test_errors_are_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["oops", str(tmp_path / "missing.log")])
    assert res.exit_code != 0 and "missing.log" in res.output
    binary = tmp_path / "trace.dat"
    binary.write_bytes(b"\x17\x08\x44tracing6\x00" + bytes(100))
    res = CliRunner().invoke(cli, ["oops", str(binary)])
    assert res.exit_code == 2  # unusable input
    assert "Cannot read kernel log: binary data" in res.output and "Traceback" not in res.output


def test_no_reports(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["oops", "-"], input="[ 0.0] Linux version 6.1.0\n[ 0.1] hello\n")
    assert res.exit_code == 0 and "no crash reports in 2 lines" in res.output
