"""``replay TRACE --report DIR`` writes the full chart report: every chart ``iovatrace chart`` draws."""

from __future__ import annotations

from click.testing import CliRunner

from iovatrace.cli import cli, sample_trace_path


def test_replay_report_holds_every_chart_of_iovatrace_chart(tmp_path) -> None:
    # the bundled sample: lazy 6.1 with flush-queue, rcache and IOMMU events, so the event charts have data
    rep, ch = tmp_path / "rep", tmp_path / "chart"
    res = CliRunner().invoke(cli, ["replay", "--report", str(rep)])
    assert res.exit_code == 0, res.output
    assert f"report written to {rep}" in res.stdout
    res = CliRunner().invoke(cli, ["chart", sample_trace_path(), "-o", str(ch)])
    assert res.exit_code == 0, res.output
    charts = {p.name for p in ch.glob("*.png")}
    assert len(charts) > 3  # event charts as well as the replay's own
    assert {p.name for p in rep.glob("*.png")} == charts
    html = (rep / "index.html").read_text()
    assert "the event charts need the trace" not in html
    for name in charts:
        assert name in html
