"""ftrace text on the command line: ``--formats`` and the trace.dat beside the text (parsers/text_source.py)."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from iovatrace.cli import cli

EXTRACT = "traces-lab/strict_extract"


def _json(args: list[str]) -> tuple[dict, str]:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), res.stderr


def test_replay_of_text_with_formats_matches_the_trace_dat(shared_data) -> None:
    d = shared_data / EXTRACT
    from_dat, _ = _json(["replay", "--json", str(d / "trace.dat")])
    given, err = _json(["replay", "--json", str(d / "trace.txt.gz"), "--formats", str(d / "trace.dat")])
    beside, note = _json(["replay", "--json", str(d / "trace.txt.gz")])
    assert "using the event formats of" not in err and "trace.dat" in note and "using the event formats" in note
    # the text and the binary recording of one run decode to the same events: same replay, same fidelity
    assert from_dat["fidelity"]["predicted"] > 0
    for other in (given, beside):
        assert other["fidelity"] == from_dat["fidelity"]
        assert other["totals"] == from_dat["totals"] and other["events"] == from_dat["events"]
        assert other["findings"] == from_dat["findings"]
        # text has no uname: the kernel (hence the profile) comes from the formats' trace.dat
        assert (other["kernel_release"], other["profile"]) == (from_dat["kernel_release"], from_dat["profile"])


def test_info_and_convert_of_text_use_the_formats(shared_data, tmp_path) -> None:
    d = shared_data / EXTRACT
    lone = tmp_path / "trace.txt.gz"
    shutil.copy(d / "trace.txt.gz", lone)  # no trace.dat beside it
    inferred, note = _json(["info", "--json", str(lone)])
    assert "without event formats" in note
    typed, _ = _json(["info", "--json", str(lone), "--formats", str(d / "trace.dat")])
    dat, _ = _json(["info", "--json", str(d / "trace.dat")])
    assert not any(k.startswith("unknown:") for k in typed["events"])
    assert typed["events"] == {k: n for k, n in dat["events"].items() if n}
    assert typed["events"] != inferred["events"]
    res = CliRunner().invoke(cli, ["convert", str(lone), "--formats", str(d / "trace.dat"), "-o", str(tmp_path / "o"),
                                   "--events", "iommu:*"])
    assert res.exit_code == 0, res.output
    import pyarrow.parquet as pq

    for name in ("map", "unmap"):
        assert pq.read_metadata(tmp_path / "o" / "iommu" / f"{name}.parquet").num_rows == dat["events"][f"iommu:{name}"]


def test_bad_formats_is_one_line(shared_data, tmp_path) -> None:
    bad = tmp_path / "formats.txt"
    bad.write_text("this is not a format file\n")
    res = CliRunner().invoke(cli, ["info", str(shared_data / EXTRACT / "trace.txt.gz"), "--formats", str(bad)])
    assert res.exit_code != 0 and res.stderr.count("\n") == 1 and res.stderr.startswith("iovatrace: error:")
