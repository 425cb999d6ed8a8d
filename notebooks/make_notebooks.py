"""Write the example notebooks from code (run: ``python notebooks/make_notebooks.py``).

The notebooks are generated, not hand-edited, so they stay reviewable as Python and stay output-free in git.
Each one locates the bundled sample with ``iovatrace.cli.sample_trace_path()`` and the project's shared data
with ``$IOVATRACE_SHARED_DATA`` or the ``shared/data`` folder beside the checkout. ``tests/test_notebooks.py``
executes every notebook and checks that this script reproduces the committed files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
%matplotlib inline
import os
from pathlib import Path

import polars as pl
from IPython.display import display

pl.Config.set_tbl_rows(30)
pl.Config.set_tbl_width_chars(160)


def shared_data() -> Path:
    """The project's shared data: $IOVATRACE_SHARED_DATA, else shared/data beside the checkout."""
    env = os.environ.get("IOVATRACE_SHARED_DATA")
    here = Path.cwd().resolve()
    candidates = ([Path(env)] if env else []) + [p / "shared" / "data" for p in (here.parent.parent, here.parent)]
    for c in candidates:
        if (c / "traces-lab").is_dir():
            return c
    raise FileNotFoundError("shared data not found: set IOVATRACE_SHARED_DATA to the folder that holds traces-lab/")
'''


def _nb(cells: list) -> nbformat.NotebookNode:
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives the same file
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def replay_and_state() -> nbformat.NotebookNode:
    """01: replay the bundled trace and explore the state over time."""
    md, code = new_markdown_cell, new_code_cell
    return _nb([
        md("# Replaying a trace and exploring the IOVA state over time\n\n"
           "The bundled sample is a real Debian 6.1 kernel in lazy (flush-queue) mode under QEMU with an emulated "
           "VT-d IOMMU: an e1000e NIC (`0000:00:03.0`) and an NVMe disk (`0000:00:04.0`), ping/TFTP traffic, "
           "`dd` on the disk, a PCI remove + rescan of the NVMe function, and cpu1 offline/online.\n\n"
           "We replay it against the model of the IOVA allocator, then look at what the model and the raw events "
           "say about mappings, caches and flush queues."),
        code(SETUP),
        code("from iovatrace.cli import sample_trace_path\n"
             "from iovatrace.parsers import open_trace\n"
             "from iovatrace.replay.commands import replay_trace\n"
             "from iovatrace.replay.summary import render_text, hit_rates\n\n"
             "trace = sample_trace_path()\n"
             "tr = open_trace(trace)\n"
             "tables = tr.read_tables()\n"
             "print(tr.meta.kernel_release, tr.meta.version, tr.meta.compression, f'{tr.meta.cpus} CPUs')\n"
             "res = replay_trace(trace, timeline_ns=10_000_000)  # sample the model's state every 10 ms\n"
             "print(render_text(res))"),
        md("## The replayed allocator over time\n\n"
           "Per IOVA domain: ranges allocated in the rbtree and not parked in a magazine (mapped, or waiting in a "
           "flush queue), pfns held by the per-CPU and depot magazines, and magazines in the depot. The NVMe "
           "domain created by the rescan is the only one the trace sees from its `init_iova_domain`; the others "
           "existed before tracing began, so their counts are lower bounds."),
        code("from iovatrace.analysis.frames_iova import iovad_labels\n"
             "from iovatrace.analysis.frames_replay import df_replay_timeline\n"
             "from iovatrace.analysis.plots import plot_replay_state\n\n"
             "labels = iovad_labels(tables)\n"
             "state = df_replay_timeline(res)\n"
             "display(state.group_by('iovad').agg(pl.len().alias('samples'), pl.col('live').max().alias('max_live'),\n"
             "                                    pl.col('cached').max().alias('max_cached'),\n"
             "                                    pl.col('depot').max().alias('max_depot')))\n"
             "plot_replay_state(state, labels=labels, subtitle='sample_lazy_6.1.dat')"),
        md("## A snapshot at one instant\n\n`--at` (here `at_ns`) stops the clock at a trace time and reports the "
           "model's state there: each domain's rbtree size, the magazines loaded on each CPU and the depot."),
        code("snap = replay_trace(trace, at_ns=9_500_000_000).snapshot\n"
             "for d in snap['domains']:\n"
             "    print(d['iovad'], labels.get(d['iovad'], ''), 'live', d['live_iovas'], 'cached', d['cached_pfns'],\n"
             "          'certainty', d['certainty'])\n"
             "    for rc in d['rcaches']:\n"
             "        if any(rc['loaded']) or any(rc['prev']) or rc['depot_size']:\n"
             "            print(f\"   bin {rc['bin']}: loaded {rc['loaded']} prev {rc['prev']} depot {rc['depot_size']}\")"),
        md("## Findings\n\nThe replay reports kernel misbehaviour it can prove (or flags as uncertain when it "
           "depends on a gap in the trace). This clean run is expected to have none."),
        code("from iovatrace.analysis.frames_replay import df_findings\n"
             "findings = df_findings(res.findings)\n"
             "print(f'{findings.height} findings')\n"
             "findings.head(10)"),
        md("## Mappings per device\n\nFrom the dma-iommu probes alone (no model): each IOVA allocation with its "
           "device, paired with its unmap. The NIC keeps its receive ring of 255 buffers mapped all the time."),
        code("from iovatrace.analysis.frames import df_live_mappings, df_outstanding, df_mapping_lifetimes\n"
             "from iovatrace.analysis.plots import plot_live_mappings\n\n"
             "display(df_outstanding(tables))\n"
             "plot_live_mappings(df_live_mappings(tables, by='device'), subtitle='sample_lazy_6.1.dat')"),
        code("(df_mapping_lifetimes(tables)\n"
             " .group_by(['device', 'size_bin'])\n"
             " .agg(pl.len().alias('mappings'), pl.col('lifetime_us').median().alias('median_us'),\n"
             "      pl.col('lifetime_us').quantile(0.99).alias('p99_us'))\n"
             " .sort(['device', 'size_bin']))"),
        md("## rcache hit rates: two independent counts\n\n`df_rcache_allocs` decides hit or miss from the events "
           "alone (an `alloc_iova` inside the `alloc_iova_fast` call is a miss); the replay counts hits in its "
           "model. They should agree bin by bin."),
        code("from iovatrace.analysis.frames_iova import df_rcache_allocs\n"
             "events = (df_rcache_allocs(tables).filter('cacheable')\n"
             "          .with_columns(pl.col('size_pages').log(2).ceil().cast(pl.Int64).alias('bin'))\n"
             "          .group_by('bin').agg(pl.col('hit').sum().alias('hits_events'), pl.len().alias('allocs')))\n"
             "model = pl.DataFrame(hit_rates(res)).select('bin', pl.col('hits').alias('hits_model'))\n"
             "cmp = events.join(model, on='bin').sort('bin')\n"
             "display(cmp)\n"
             "assert (cmp['hits_events'] == cmp['hits_model']).all()"),
        md("## Flush queues\n\nIn lazy mode an unmapped IOVA waits in its CPU's flush queue until an IOTLB flush "
           "(normally the 10 ms timer) has completed."),
        code("from iovatrace.analysis.frames_flush import df_flush_queue, df_flushes\n"
             "from iovatrace.analysis.plots_flush import plot_flush_queue, plot_flush_intervals\n\n"
             "display(plot_flush_queue(df_flush_queue(tables), subtitle='sample_lazy_6.1.dat'))\n"
             "plot_flush_intervals(df_flushes(tables), subtitle='sample_lazy_6.1.dat')"),
    ])


def kmemleak_diagnosis() -> nbformat.NotebookNode:
    """02: the kmemleak report of seed thread (a)."""
    md, code = new_markdown_cell, new_code_cell
    return _nb([
        md("# Diagnosing the `iova_magazine` kmemleak report (seed thread (a))\n\n"
           "In December 2023 Ido Schimmel reported five `unreferenced object ... (size 1024)` records allocated "
           "under `free_iova_fast` from the flush-queue timer on v6.7. They turned out to be kmemleak false "
           "positives: v6.7 (911aa1245da8) threads the rcache depot as a list through the magazines' first word, "
           "and `iova_depot_pop()` overwrote the popped magazine's link while kmemleak was scanning. Catalin "
           "Marinas fixed it with `kmemleak_transient_leak()` (7591c127f3b1).\n\n"
           "`iovatrace leaks` decodes each object, links the objects into chains through their pointer words and "
           "gives each chain a verdict with its reasoning."),
        code(SETUP),
        code("from iovatrace.analysis.leaks import diagnose\n"
             "from iovatrace.analysis.leaks_cli import diagnosis_tables, render_text\n\n"
             "report = shared_data() / 'reports' / 'mailing-lists' / "
             "'01_idosch_2023-12-28_kmemleak_iova_magazine_free_iova_fast.txt'\n"
             "diag = diagnose(report.read_text(), path=report.name)\n"
             "print(render_text(diag))"),
        md("## The same as tables\n\nEvery object with its decoded role, and the chain with its verdict. The "
           "first word of each magazine is `next` in the v6.7+ depot list; the tail's is NULL."),
        code("t = {k: pl.from_arrow(v) for k, v in diagnosis_tables(diag).items()}\n"
             "hexed = [pl.col(c).map_elements(lambda v: f'{v:#x}', return_dtype=pl.String) for c in ('address', 'first_word')]\n"
             "display(t['leak_objects'].with_columns(hexed).select('object_id', 'address', 'kind', 'chain_id',\n"
             "                                                     'first_word', 'first_word_role', 'mag_size', 'verdict'))\n"
             "t['leak_chains'].select('chain_id', 'objects', 'shape', 'terminal', 'verdict')"),
        md("## Drawing the chain\n\nEach magazine points at the next; no reported object points at the head, which "
           "is what a list still reachable from `rcache->depot` looks like to kmemleak during the pop."),
        code("from iovatrace.analysis.style import new_figure\n\n"
             "chain = diag.chains[0]\n"
             "fig, (ax,) = new_figure(f'kmemleak chain {chain.chain_id}: {chain.shape} of {len(chain.members)} '\n"
             "                        'iova_magazine objects', size=(10, 2.6))\n"
             "for i, m in enumerate(chain.members):\n"
             "    ax.text(i, 0, f'{m.address:#x}\\n{m.kind}', ha='center', va='center', fontsize=8,\n"
             "            bbox=dict(boxstyle='round', fc='#E8F1FA', ec='#0072B2'))\n"
             "    if i:\n"
             "        ax.annotate('', xy=(i - 0.38, 0), xytext=(i - 0.62, 0), arrowprops=dict(arrowstyle='->'))\n"
             "ax.text(len(chain.members) - 0.5, 0, 'NULL', va='center')\n"
             "ax.set_xlim(-0.6, len(chain.members)); ax.set_ylim(-1, 1); ax.axis('off')\n"
             "ax.set_title('next pointers, head on the left (first word of each magazine)', fontsize=10)\n"
             "fig"),
        md("## What the depot does on a real 6.12 kernel\n\nThe lab's lazy 6.12 trace records magazine "
           "allocations and frees (`kmem_cache_alloc`/`free` of the `iommu_iova_magazine` cache, 6.9+) and the "
           "depot size each time the trim worker runs. Depot pops happen under normal load; on 6.7-6.12 each one "
           "opens the window in which kmemleak could misreport the list behind it."),
        code("from iovatrace.parsers import open_trace\n"
             "from iovatrace.analysis.frames_iova import df_magazines\n"
             "from iovatrace.analysis.plots import plot_magazines\n\n"
             "lab = open_trace(shared_data() / 'traces-lab' / 'lazy_v7-6.12' / 'trace.dat').read_tables()\n"
             "mags = df_magazines(lab)\n"
             "display(mags.group_by('series').agg(pl.len().alias('events'), pl.col('value').max().alias('max')))\n"
             "plot_magazines(mags, subtitle='lazy_v7-6.12/trace.dat')"),
    ])


def strict_vs_lazy() -> nbformat.NotebookNode:
    """03: the lab's strict and lazy traces of the same workload."""
    md, code = new_markdown_cell, new_code_cell
    return _nb([
        md("# Strict versus lazy mode on the same workload\n\n"
           "The lab ran the same workload twice on Debian's 6.1 kernel: `strict_v7` (every unmap invalidates the "
           "IOTLB before the IOVA is reused) and `lazy_v7` (`iommu.strict=0`: unmapped IOVAs wait in per-CPU flush "
           "queues and one flush every ~10 ms covers them all). What changes for the IOMMU, and for the IOVA "
           "allocator?"),
        code(SETUP),
        code("from iovatrace.parsers import open_trace\n\n"
             "lab = shared_data() / 'traces-lab'\n"
             "runs = {mode: open_trace(lab / f'{mode}_v7' / 'trace.dat').read_tables() for mode in ('strict', 'lazy')}\n"
             "pl.DataFrame([{'mode': m, 'events': sum(t.num_rows for t in tabs.values()),\n"
             "               'unmaps': tabs['dmaiommu:__iommu_dma_unmap'].num_rows} for m, tabs in runs.items()])"),
        md("## IOTLB invalidations\n\nStrict mode submits page-selective invalidations for every unmap; lazy mode "
           "a domain-selective one per flush-queue flush."),
        code("from iovatrace.analysis.frames_flush import df_invalidations\n"
             "from iovatrace.analysis.plots_flush import plot_invalidations\n\n"
             "inv = pl.concat([df_invalidations(t).with_columns(pl.lit(m).alias('mode')) for m, t in runs.items()])\n"
             "totals = inv.group_by(['mode', 'kind']).agg(pl.col('count').sum()).sort(['mode', 'kind'])\n"
             "unmaps = pl.DataFrame({'mode': list(runs), 'unmaps': [t['dmaiommu:__iommu_dma_unmap'].num_rows\n"
             "                                                      for t in runs.values()]})\n"
             "display(totals.join(unmaps, on='mode').with_columns((pl.col('count') / pl.col('unmaps'))\n"
             "        .round(3).alias('per_unmap')))\n"
             "for m, t in runs.items():\n"
             "    display(plot_invalidations(df_invalidations(t), subtitle=f'{m}_v7/trace.dat'))"),
        md("## The rcache\n\nIn lazy mode a freed IOVA reaches the rcache only when its flush-queue entry is "
           "released, in a burst at the timer; in strict mode it goes back at once. How often did an allocation "
           "find its size in the cache?"),
        code("from iovatrace.analysis.frames_iova import df_rcache_allocs\n"
             "from iovatrace.analysis.plots import SIZE_BIN_ORDER\n\n"
             "rates = pl.concat([\n"
             "    df_rcache_allocs(t).filter('cacheable').group_by('size_bin')\n"
             "    .agg(pl.len().alias('allocs'), pl.col('hit').mean().alias('hit_rate')).with_columns(pl.lit(m).alias('mode'))\n"
             "    for m, t in runs.items()])\n"
             "wide = rates.pivot(on='mode', index='size_bin', values=['hit_rate', 'allocs'])\n"
             "wide = wide.with_columns(pl.col('size_bin').replace_strict(SIZE_BIN_ORDER, list(range(7))).alias('o'))\n"
             "display(wide.sort('o').drop('o'))"),
        code("import numpy as np\n"
             "from iovatrace.analysis.style import new_figure, finish_axes, color_for\n\n"
             "bins = [b for b in SIZE_BIN_ORDER if b in set(rates['size_bin'])]\n"
             "fig, (ax,) = new_figure('rcache hit rate per size bin, strict vs lazy (6.1, same workload)')\n"
             "for i, m in enumerate(runs):\n"
             "    r = {b: v for b, v in rates.filter(pl.col('mode') == m).select('size_bin', 'hit_rate').iter_rows()}\n"
             "    ax.bar(np.arange(len(bins)) + (i - 0.5) * 0.38, [100 * r.get(b, np.nan) for b in bins], width=0.38,\n"
             "           label=m, color=color_for(m, list(runs)))\n"
             "ax.set_xticks(range(len(bins)), bins)\n"
             "finish_axes(ax, xlabel='allocation size (pages)', ylabel='served from rcache (%)', legend_title='mode')\n"
             "fig"),
        md("## Mapping lifetimes and the flush-queue timer\n\nMappings themselves live about as long in both modes "
           "(the devices decide that); what lazy mode adds is the wait in the flush queue, set by the timer."),
        code("from iovatrace.analysis.frames import df_mapping_lifetimes\n"
             "life = pl.concat([df_mapping_lifetimes(t).with_columns(pl.lit(m).alias('mode')) for m, t in runs.items()])\n"
             "display(life.group_by(['device', 'size_bin', 'mode']).agg(pl.len().alias('n'),\n"
             "        pl.col('lifetime_us').median().round(1).alias('median_us')).sort(['device', 'size_bin', 'mode']))"),
        code("from iovatrace.analysis.frames_flush import df_flushes\n"
             "from iovatrace.analysis.plots_flush import plot_flush_intervals\n\n"
             "fl = df_flushes(runs['lazy'])\n"
             "print('strict-mode flush-queue flushes:', runs['strict'].get('dmaiommu:fq_flush_iotlb', None) is not None\n"
             "      and runs['strict']['dmaiommu:fq_flush_iotlb'].num_rows or 0)\n"
             "print('lazy timer delay (ms): median', round(fl['timer_delay_ms'].median(), 2), ' p90',\n"
             "      round(fl['timer_delay_ms'].quantile(0.9), 2))\n"
             "plot_flush_intervals(fl, subtitle='lazy_v7/trace.dat')"),
    ])


NOTEBOOKS = {
    "01_replay_and_state.ipynb": replay_and_state,
    "02_kmemleak_diagnosis.ipynb": kmemleak_diagnosis,
    "03_strict_vs_lazy.ipynb": strict_vs_lazy,
}


def render(name: str) -> str:
    """The JSON text of one notebook, as written to disk."""
    return nbformat.writes(NOTEBOOKS[name](), version=4) + "\n"


def main(argv: list[str]) -> int:
    """Write every notebook next to this script (``--check``: only report whether they are up to date)."""
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date:", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
