"""`iovatrace chart`: the charts a lab trace supports, each with data, labelled axes and a title, and the HTML page.

The lazy 6.1 lab trace is charted once per session (module fixture); the CLI itself runs on the small boot trace.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from iovatrace.analysis.report import CHARTS, build_charts, write_html
from iovatrace.cli import cli


def _has_data(ax: Axes) -> bool:
    """Something drawn from data: a line with points, a scatter, bars/boxes."""
    for line in ax.get_lines():
        x = line.get_xdata()
        if len(x) > 1 and line.get_linestyle() not in ("None", ""):
            return True
        if len(x) >= 1 and line.get_marker() not in (None, "None", ""):
            return True
    if any(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")):
        return True
    return any(p.get_height() > 0 or p.get_width() > 0 for p in ax.patches if hasattr(p, "get_height"))


def _check_figure(fig: Figure, name: str) -> None:
    assert fig._suptitle is not None and fig._suptitle.get_text().strip(), f"{name}: no title"
    data_axes = [ax for ax in fig.axes if _has_data(ax)]
    assert data_axes, f"{name}: no axes with data"
    for ax in data_axes:
        assert ax.get_ylabel().strip(), f"{name}: an axes with data has no y label"
    # The bottom axes of a column carries the x label (shared time axes label only the last row).
    assert any(ax.get_xlabel().strip() for ax in fig.axes), f"{name}: no x label"
    if any(len(ax.get_lines()) + len(ax.collections) > 1 for ax in data_axes) and name != "flush_intervals":
        assert any(ax.get_legend() is not None for ax in fig.axes) or len(fig.axes) > 1, f"{name}: no legend"


@pytest.fixture(scope="module")
def lazy_report(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    from iovatrace.parsers import open_trace

    tables = open_trace(shared_data / "traces-lab" / "lazy_v7" / "trace.dat").read_tables()
    results = build_charts(tables, subtitle="lazy_v7/trace.dat")
    out = tmp_path_factory.mktemp("chart")
    index = write_html(out, results, title="lazy_v7/trace.dat")
    return results, out, index


def test_lazy_trace_supports_at_least_eight_charts(lazy_report) -> None:
    results, out, _ = lazy_report
    drawn = [r for r in results if r.figure is not None]
    assert len(drawn) >= 8, [(r.chart.name, r.skipped) for r in results]
    # The lazy trace has everything the parser-only charts need.
    assert {r.chart.name for r in drawn} == {c.name for c in CHARTS}
    for r in drawn:
        _check_figure(r.figure, r.chart.name)
        for ext in ("png", "svg"):
            f = out / f"{r.chart.name}.{ext}"
            assert f.stat().st_size > 5_000, f
        assert (out / f"{r.chart.name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_index_html_shows_every_chart(lazy_report) -> None:
    results, out, index = lazy_report
    page = index.read_text()
    imgs = set(re.findall(r"<img src='([^']+)'", page))
    assert imgs == {f"{r.chart.name}.png" for r in results if r.figure is not None}
    assert "<h2>Replay summary</h2>" in page and "<h2>Findings</h2>" in page
    for r in results:
        assert r.chart.caption.split(":")[0][:20] in page


def test_strict_trace_skips_flush_queue_charts_with_a_reason(shared_data: Path) -> None:
    from iovatrace.parsers import open_trace

    tables = open_trace(shared_data / "traces-lab" / "strict_v7" / "trace.dat").read_tables(
        events=["dmaiommu:fq_ring_free", "dmaiommu:__iommu_dma_unmap", "iova:free_iova_fast",
                "dmaiommu:fq_flush_iotlb", "dmaiommu:fq_flush_timeout", "intel_iommu:qi_submit"])
    names = {"flush_queue_depth", "flush_intervals", "invalidations"}
    results = {r.chart.name: r for r in build_charts(tables, charts=[c for c in CHARTS if c.name in names])}
    # Strict mode: no flush queue at all; the VT-d invalidations are there (two per unmap).
    assert results["invalidations"].figure is not None
    for n in ("flush_queue_depth", "flush_intervals"):
        assert results[n].figure is None and results[n].skipped


def test_chart_cli_on_the_boot_trace(shared_data: Path, tmp_path: Path) -> None:
    """boot_strict has only part of the probes: the CLI draws what it can and names what is missing."""
    res = CliRunner().invoke(cli, ["chart", str(shared_data / "traces-lab" / "boot_strict" / "trace.dat"),
                                   "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "index.html" in res.output
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "live_mappings_device.png" not in pngs  # no __iommu_dma_unmap probe in the boot capture
    line = next(ln for ln in res.output.splitlines() if "skipped live_mappings_device" in ln)
    assert "Cannot compute df_live_mappings: the trace lacks" in line
    assert "dmaiommu:__iommu_dma_unmap" in line and "record them with `iovatrace record`" in line
    assert "iova_addresses.png" not in pngs and (tmp_path / "index.html").exists()
    assert "invalidations.png" in pngs


def test_chart_cli_rejects_a_non_trace(tmp_path: Path) -> None:
    bad = tmp_path / "x.dat"
    bad.write_bytes(b"not a trace at all\n" * 10)
    res = CliRunner().invoke(cli, ["chart", str(bad), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "iovatrace: error:" in res.output


def test_report_reads_every_event_the_frames_use() -> None:
    """run_chart reads only needed_events(); every event key a frame module names must be in it, or a chart
    silently loses an input (as the 6.12 scatterlist unmaps once did)."""
    import iovatrace.analysis as pkg
    from iovatrace.analysis.report import needed_events

    keys: set[str] = set()
    for mod in ("frames", "frames_iova", "frames_flush"):
        text = (Path(pkg.__file__).parent / f"{mod}.py").read_text()
        keys |= set(re.findall(r'"((?:iommu|intel_iommu|iova|dmaiommu|dma|kmem|cpuhp):\w+)"', text))
    assert keys and keys <= needed_events(), keys - needed_events()
