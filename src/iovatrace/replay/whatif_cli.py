"""``iovatrace whatif``: read a trace, replay it under each policy × kernel profile, print/write the comparison.

The pure part lives in :mod:`.whatif`; this module does the IO: open the trace, pick profiles, render a table or
JSON, write ``whatif.csv``, ``whatif.json`` and charts (matplotlib, PNG and SVG) under ``-o``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import InputError
from .whatif import S390_COST, WHATIF_EVENTS, CostModel, add_throughput, extract_ops, parse_policy, run_policy, \
    scale_time

__all__ = ["run_whatif", "whatif_results", "DEFAULT_POLICIES"]

#: Compared when no --policy is given.
DEFAULT_POLICIES = ("strict", "lazy", "lazy:8192/100", "lazy:32768/4000", "single", "rollover")


def whatif_results(trace: str, *, policies: list[str], kernels: list[str],
                   flush_cost_us: float | None, time_scale: float = 1.0) -> dict[str, Any]:
    """Replay ``trace`` under every policy × kernel and return ``{"policies": [...], "trace": {...}}``.

    Args:
        trace: a trace file (trace.dat or text).
        policies: policy names (:func:`.whatif.parse_policy`); empty = :data:`DEFAULT_POLICIES`.
        kernels: profile names or versions; empty = the trace's own.
        flush_cost_us: cost of one global flush; ``None`` = the s390 model's (5800 × the per-operation cost).
        time_scale: multiply the trace's time gaps by this (< 1: a faster device issuing the same operations).

    Raises:
        InputError: a bad policy or kernel name, or a trace without the needed events.
    """
    from ..parsers import open_trace
    from ..schema import iter_events
    from .profiles import detect_profile, profile_for

    try:
        pols = [parse_policy(p) for p in (policies or DEFAULT_POLICIES)]
    except ValueError as exc:
        raise InputError(str(exc)) from None
    tr = open_trace(trace)
    tables = tr.read_tables(events=[e for e in WHATIF_EVENTS])
    tables = {k: v for k, v in tables.items() if k in WHATIF_EVENTS}
    missing = [e for e in ("iova:alloc_iova_fast", "iova:alloc_iova_fast_ret", "dmaiommu:__iommu_dma_unmap",
                           "dmaiommu:iommu_dma_alloc_iova") if e not in tables]
    if missing:
        raise InputError(f"Cannot replay what-ifs: the trace lacks {', '.join(missing)} (record the iova and "
                         "dmaiommu probe groups)", path=trace)
    meta = tr.meta
    if kernels:
        try:
            profs = [profile_for(k) for k in kernels]
        except ValueError as exc:
            raise InputError(str(exc)) from None
    else:
        profs = [detect_profile(getattr(meta, "kernel_release", None), tables.keys())[0]]
    ops, observed, skipped = extract_ops(iter_events(tables, list(tables)))
    if not time_scale > 0:
        raise InputError(f"Cannot scale time by {time_scale}: expected a positive factor")
    end_ns = observed.last_ns
    if time_scale != 1.0:
        ops = scale_time(ops, observed.first_ns, time_scale)
        end_ns = observed.first_ns + int((observed.last_ns - observed.first_ns) * time_scale)
    ncpus = int(getattr(meta, "cpus", 0) or 0) or 1 + max((op.cpu for op in ops), default=0)
    results = []
    for prof in profs:
        for pol in pols:
            results.append(run_policy(ops, pol, prof, ncpus=ncpus, start_ns=observed.first_ns, end_ns=end_ns))
    cost = S390_COST if flush_cost_us is None else CostModel(S390_COST.op_us, S390_COST.sync_us, flush_cost_us)
    add_throughput(results, cost)
    return {
        "trace": {"path": os.path.basename(trace), "kernel_release": getattr(meta, "kernel_release", None),
                  "duration_s": round((observed.last_ns - observed.first_ns) / 1e9, 6), "ops": len(ops),
                  "observed": {"fq_flushes": observed.fq_flushes, "fq_timeouts": observed.fq_timeouts,
                               "unmap_invalidations": observed.unmap_invalidations, "unmaps": observed.unmaps,
                               "lazy": observed.lazy},
                  "skipped": skipped, "time_scale": time_scale},
        "cost_model": {"op_us": cost.op_us, "sync_us": cost.sync_us, "flush_us": cost.flush_us,
                       "baseline": "rollover"},
        "policies": results,
    }


_COLS = [("policy", "policy", "{}"), ("kernel", "kernel", "{}"), ("invalidations", "inval", "{:,}"),
         ("invalidations_per_s", "inval/s", "{:,.1f}"), ("batching_factor", "batch", "{}"),
         ("iova_pages_in_use_peak", "pages peak", "{:,}"), ("iova_pages_in_use_mean", "pages mean", "{:,.0f}"),
         ("magazine_bytes_peak", "mag bytes", "{:,}"), ("depot_bytes_peak", "depot bytes", "{:,}"),
         ("rcache_hit_rate", "hit rate", "{:.2%}"), ("allocation_failures", "fail", "{}"),
         ("rcache_flushes", "rc flush", "{}"), ("relative_throughput", "rel tput", "{:.1%}")]


def _table(res: dict[str, Any]) -> str:
    rows = [[h for _k, h, _f in _COLS] + ["exposure p50/max"]]
    for r in res["policies"]:
        row = []
        for k, _h, fmt in _COLS:
            v = r.get(k)
            row.append("-" if v is None else fmt.format(v))
        e = r["exposure_us"]
        row.append(f"{e['p50'] / 1000:.2f}/{e['max'] / 1000:.2f} ms")
        rows.append(row)
    notes = [f"  {r['policy']} ({r['kernel']}): {r['throughput_caveat']}" for r in res["policies"]
             if r.get("throughput_caveat")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    t = res["trace"]
    o = t["observed"]
    head = (f"trace: {t['path']}  kernel: {t['kernel_release']}  span: {t['duration_s']:.3f} s  ops: {t['ops']:,}"
            f"  time scale: {t['time_scale']:g}\n"
            f"kernel's own invalidations: {o['fq_flushes']:,} flush-queue flushes, {o['unmap_invalidations']:,} "
            f"unmap invalidations, {o['unmaps']:,} unmaps ({'lazy' if o['lazy'] else 'strict'})\n"
            f"cost model: op {res['cost_model']['op_us']} us, strict sync {res['cost_model']['sync_us']} us, "
            f"global flush {res['cost_model']['flush_us']} us; throughput relative to rollover\n")
    return head + "\n".join(lines + (["caveats:"] + notes if notes else []))


def _charts(res: dict[str, Any], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pols = res["policies"]
    labels = [p["policy"] if len({q["kernel"] for q in pols}) == 1 else f"{p['policy']}\n{p['kernel']}"
              for p in pols]
    written = []
    specs = [
        ("whatif_throughput", "relative_throughput", "estimated throughput vs rollover", True),
        ("whatif_invalidations", "invalidations", "IOTLB invalidations", False),
        ("whatif_iova_pages", "iova_pages_in_use_peak", "peak IOVA pages in use", False),
    ]
    for name, key, title, pct in specs:
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(pols)), 4))
        vals = [(p.get(key) or 0) * (100 if pct else 1) for p in pols]
        # policies whose replay had failed allocations are hatched: their estimate does not cost the failures
        colors = ["#cc6677" if p.get("throughput_caveat") else "#4477aa" for p in pols]
        bars = ax.bar(range(len(pols)), vals, color=colors, hatch=None)
        for bar, p in zip(bars, pols):
            if p.get("throughput_caveat"):
                bar.set_hatch("//")
        ax.set_xticks(range(len(pols)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("% of rollover" if pct else key)
        ax.set_title(f"{title} — {res['trace']['path']}")
        if pct:
            ax.set_ylim(0, max(vals + [1]) * 1.2)  # room for the cost note above the bars
            c = res["cost_model"]
            ax.text(0.01, 0.97, f"op {c['op_us']} us, sync {c['sync_us']} us, flush {c['flush_us']} us; "
                    "hatched: allocations failed (not costed)", transform=ax.transAxes, va="top", fontsize=7)
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.1f}" if pct else f"{v:,.0f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                        va="bottom", fontsize=7)
        fig.tight_layout()
        for ext in ("png", "svg"):
            p = os.path.join(out_dir, f"{name}.{ext}")
            fig.savefig(p)
            written.append(p)
        plt.close(fig)
    # exposure-window distribution
    fig, ax = plt.subplots(figsize=(7, 4))
    for p, lab in zip(pols, labels):
        h = p["exposure_hist"]
        ax.plot(list(h), list(h.values()), marker="o", label=lab.replace("\n", " "))
    ax.set_yscale("symlog")
    ax.set_xlabel("exposure window (unmap → invalidation)")
    ax.set_ylabel("IOVAs")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    for ext in ("png", "svg"):
        path = os.path.join(out_dir, f"whatif_exposure.{ext}")
        fig.savefig(path)
        written.append(path)
    plt.close(fig)
    return written


def run_whatif(trace: str, *, policies: list[str], kernels: list[str], flush_cost_us: float | None,
               out_dir: str | None, as_json: bool, time_scale: float = 1.0) -> None:
    """The ``whatif`` CLI command: print a table (or JSON), write tables and charts under ``out_dir``.

    Raises:
        IovatraceError: unreadable trace, bad policy or kernel (the CLI prints one line).
    """
    import click

    res = whatif_results(trace, policies=policies, kernels=kernels, flush_cost_us=flush_cost_us,
                         time_scale=time_scale)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "whatif.json"), "w") as fh:
            json.dump(res, fh, indent=1)
        import csv

        with open(os.path.join(out_dir, "whatif.csv"), "w", newline="") as fh:
            w = csv.writer(fh)
            keys = [k for k, _h, _f in _COLS] + ["exposure_p50_us", "exposure_max_us"]
            w.writerow(keys)
            for r in res["policies"]:
                w.writerow([r.get(k) for k, _h, _f in _COLS] + [r["exposure_us"]["p50"], r["exposure_us"]["max"]])
        _charts(res, out_dir)
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(_table(res))
        if out_dir:
            click.echo(f"wrote whatif.json, whatif.csv and charts to {out_dir}")
