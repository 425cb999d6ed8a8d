"""plot_* functions on small hand-made frames: titles, labelled axes, legends, the "no data" path, findings."""

from __future__ import annotations

import polars as pl
import pytest
from matplotlib.figure import Figure

from iovatrace.analysis import plots, plots_flush
from iovatrace.analysis.frames_replay import df_findings, df_replay_timeline
from iovatrace.analysis.report import write_report
from iovatrace.replay.findings import Certainty, Finding, Severity


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _labelled(fig: Figure) -> None:
    assert fig._suptitle is not None and fig._suptitle.get_text()
    assert any(ax.get_xlabel() for ax in fig.axes) and all(ax.get_ylabel() for ax in fig.axes if ax.axison)


LIVE = pl.DataFrame({"ts_ns": [0, 1_000_000_000, 2_000_000_000] * 2, "time_s": [0.0, 1.0, 2.0] * 2,
                     "group": ["a"] * 3 + ["b"] * 3, "live": [0, 2, 1, 0, 5, 0], "live_bytes": [0, 8192, 4096, 0, 20480, 0]})


def test_live_mappings_has_one_line_per_group_and_a_legend() -> None:
    fig = plots.plot_live_mappings(LIVE, by="device", subtitle="t")
    _labelled(fig)
    top = fig.axes[0]
    assert [ln.get_label() for ln in top.get_lines()] == ["a", "b"]
    assert top.get_legend() is not None
    assert max(ln.get_ydata().max() for ln in fig.axes[1].get_lines()) == pytest.approx(20480 / 2**20)


@pytest.mark.parametrize("fn,cols", [
    (plots.plot_live_mappings, LIVE.clear()),
    (plots.plot_iova_in_use, pl.DataFrame(schema={"ts_ns": pl.Int64, "time_s": pl.Float64, "iovad": pl.String,
                                                  "pages": pl.Int64, "pages_below_4g": pl.Int64})),
    (plots_flush.plot_flush_queue, pl.DataFrame(schema={"ts_ns": pl.Int64, "time_s": pl.Float64, "fq": pl.String,
                                                        "queue": pl.String, "depth": pl.Int64})),
    (plots_flush.plot_invalidations, pl.DataFrame(schema={"window_start_s": pl.Float64, "kind": pl.String,
                                                          "count": pl.Int64, "per_s": pl.Float64})),
    (plots_flush.plot_findings, df_findings([])),
    (plots.plot_replay_state, df_replay_timeline(None)),
])
def test_empty_frames_say_so(fn, cols) -> None:
    fig = fn(cols)
    assert isinstance(fig, Figure) and fig._suptitle.get_text()
    assert any("no " in t for t in _texts(fig)), _texts(fig)


def test_rcache_hit_rate_orders_bins_and_reports_overall_rates() -> None:
    df = pl.DataFrame({"window_start_s": [1.0, 2.0, 1.0], "size_bin": ["2 pages", "2 pages", "1 page"],
                       "allocs": [10, 30, 4], "hits": [5, 30, 1], "hit_rate": [0.5, 1.0, 0.25]})
    fig = plots.plot_rcache_hit_rate(df)
    _labelled(fig)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["1 page: 25.0% of 4", "2 pages: 87.5% of 40"]


def _finding(kind: str, ts: int, sev: Severity) -> Finding:
    return Finding(kind, sev, ts, f"{kind} at {ts}", device="0000:00:04.0", certainty=Certainty.EXACT,
                   events=((ts, 0, 1),))


def test_findings_frame_and_timeline() -> None:
    fs = [_finding("double_free", 3_000_000_000, Severity.ERROR), _finding("overlap", 1_000_000_000, Severity.WARNING),
          _finding("double_free", 2_000_000_000, Severity.ERROR)]
    df = df_findings(fs)
    assert df["ts_ns"].to_list() == [1_000_000_000, 2_000_000_000, 3_000_000_000]
    assert df["severity"].to_list() == ["warning", "error", "error"] and df["events"].to_list() == [1, 1, 1]
    fig = plots_flush.plot_findings(df)
    _labelled(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["double_free (2)", "overlap (1)"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 3


def test_write_report_from_a_result_alone(tmp_path) -> None:
    """What `replay TRACE --report DIR` gets when only the result is passed: summary, findings, no event charts."""
    from iovatrace.replay.driver import ReplayResult

    res = ReplayResult()
    res.findings = [_finding("double_free", 5, Severity.ERROR)]
    res.timeline = [(1_000, 0xAB08, 3, 1, 0, 3, 0), (2_000, 0xAB08, 2, 2, 1, 3, 1)]
    index = write_report(res, tmp_path)
    page = index.read_text()
    assert "double_free" in page and "findings.png" in page and "replay_state.png" in page
    assert (tmp_path / "replay_state.svg").exists()
    assert "the event charts need the trace" in page


def test_package_exports_every_public_frame_and_plot() -> None:
    import iovatrace.analysis as analysis

    for name in analysis.__all__:
        assert callable(getattr(analysis, name)), name
        assert getattr(analysis, name).__doc__, f"{name} has no docstring"
