"""The ``replay`` command: open a trace, choose the profile, run the driver, render the summary.

This is the one module of ``replay/`` that does IO (it imports neither pyarrow nor click: Arrow work goes through
:mod:`iovatrace.schema`): it reads the trace through :func:`iovatrace.parsers.open_trace` (filtering to the events
the replay uses *in Arrow*, before any per-event Python, and for trace.dat streaming each CPU's page blocks
through a time merge, so memory does not grow with the trace: :func:`open_event_stream`), the recorder's
``kprobe_profile.txt`` next to the trace when present (kprobe hits and misses), and an optional probe mapping
file; it then hands ``Iterable[Event]`` to the sans-IO :class:`~.driver.ReplayDriver` and renders its
:class:`~.driver.ReplayResult` as text or JSON, and as Parquet tables (through :mod:`iovatrace.schema`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import InputError, IovatraceError
from ..event import Event
from .adapter import EventMap, parse_mapping
from .driver import ReplayDriver, ReplayResult
from .profiles import detect_profile, profile_for
from .summary import render_text, result_to_dict

__all__ = ["replay_trace", "open_event_stream", "run_replay", "read_kprobe_profile", "parse_time"]


#: trace.dat pages decoded at once when the replay streams a trace: ~4 MB of ring buffer per CPU (the reader's
#: default, 8192, suits whole-table reads). Peak RSS on stress_lazy-6.12: 498 MB at 8192, 200 MB at 1024, 124 MB
#: at 256, where per-block work starts to cost CPU time.
REPLAY_BLOCK_PAGES = 1024


class _UsageError(IovatraceError):
    """A bad option value."""

    exit_code = 2


def read_kprobe_profile(path: str) -> dict[str, tuple[int, int]]:
    """Parse a kprobe_profile file (``name hits misses`` per line).

    Raises:
        InputError: a line that is not ``name int int``.
    """
    out: dict[str, tuple[int, int]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
                raise InputError("Cannot parse kprobe_profile line: expected 'name hits misses'", path=path,
                                 line=lineno, excerpt=line.strip())
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


def parse_time(text: str) -> int:
    """``--at`` value → ns: seconds (``12.5``) or nanoseconds with an ``ns`` suffix.

    Raises:
        _UsageError: not a number.
    """
    t = text.strip()
    try:
        if t.endswith("ns"):
            return int(t[:-2])
        return int(round(float(t.rstrip("s")) * 1e9))
    except ValueError:
        raise _UsageError(f"Cannot parse --at {text!r}: expected seconds (12.5) or nanoseconds (12500000000ns)") from None


def replay_trace(trace: str, *, kernel: str | None = None, bug_modes: tuple[str, ...] | list[str] = (),
                 mapping: str | None = None, at_ns: int | None = None, check_every: int = 0,
                 timeline_ns: int = 0, progress: bool = False, extensions: bool = True) -> ReplayResult:
    """Replay one trace file.

    Args:
        trace: trace.dat or ftrace text.
        kernel: profile name or release; default: detected from the trace.
        bug_modes: seed bug modes.
        mapping: probe mapping file.
        at_ns: snapshot time.
        check_every: run the validators every N events.
        timeline_ns: state sampling period (0: none).
        progress: show a tqdm bar on stderr.
        extensions: also run the dma-iommu/devices models when they are installed.

    Returns:
        The replay result.

    Raises:
        TraceFormatError: unreadable trace. InputError: bad mapping or kprobe_profile.
    """
    from ..parsers import open_trace
    from ..schema import lost_event_tuples

    tr = open_trace(trace)
    if hasattr(tr, "block_pages"):  # trace.dat: small page blocks, the replay holds about two per CPU
        tr.block_pages = REPLAY_BLOCK_PAGES
    meta = tr.meta
    # Events the trace actually holds (a format without records, e.g. kmem at boot, must not enable its checks).
    try:
        available = {k for k, n in tr.event_counts().items() if n}
    except Exception:  # a reader without counts: fall back to the formats
        available = set(tr.formats)
    if kernel:
        try:
            profile, how = profile_for(kernel), f"--kernel {kernel}"
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
    else:
        release = getattr(meta, "kernel_release", None) or getattr(meta, "uname", None)
        release = release or _formats_release()
        profile, how = detect_profile(release, available)
    emap = EventMap()
    if mapping:
        with open(mapping, encoding="utf-8") as fh:
            emap = EventMap(parse_mapping(fh.read(), source=mapping))
    misses: dict[str, tuple[int, int]] = {}
    prof_path = os.path.join(os.path.dirname(os.path.abspath(trace)), "kprobe_profile.txt")
    if os.path.exists(prof_path):
        misses = read_kprobe_profile(prof_path)
    ncpus = int(getattr(meta, "cpus", 0) or 1)
    exts = _extensions(profile, bug_modes, ncpus, available) if extensions else []
    lost = getattr(tr, "lost_events", None)
    losses = lost_event_tuples(lost()) if lost is not None else []
    drv = ReplayDriver(profile, ncpus, event_map=emap, bug_modes=bug_modes, available=available,
                       probe_misses=misses, check_every=check_every, at_ns=at_ns, timeline_ns=timeline_ns,
                       extensions=exts, lost_events=losses)
    wanted = sorted(drv.wanted_events() & available)
    events, total = open_event_stream(tr, wanted)
    bar = None
    cb = None
    if progress and total > 200_000:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="ev", file=sys.stderr, desc="replay", leave=False)

        def cb(n: int) -> None:
            bar.update(n - bar.n)

    try:
        res = drv.run(events, progress=cb)
    finally:
        if bar is not None:
            bar.close()
    res.profile_how = how
    _summarise_extensions(res, exts)
    if "flush_queue" not in res.extras and drv.fq_counts:
        res.extras["flush_queue"] = dict(drv.fq_counts)
    res.extras["trace"] = os.path.basename(trace)
    res.extras["kernel_release"] = getattr(meta, "kernel_release", None) or _formats_release()
    return res


def open_event_stream(tr: Any, wanted: list[str]) -> tuple[Iterator[Event], int]:
    """The replay's merged event stream from an open trace, with the events it consumes filtered in Arrow.

    A reader that streams one CPU at a time (``iter_batches(..., cpus=[c])``: trace.dat) is merged by
    :func:`iovatrace.schema.iter_stream_events`, holding about two page blocks per CPU, so memory follows the
    block size and the live model state, not the trace length. Other readers (ftrace text, already in memory)
    go through ``read_tables`` and :func:`iovatrace.schema.iter_events`. Both give the same events in the same
    order.

    Args:
        tr: a trace from :func:`iovatrace.parsers.open_trace`.
        wanted: the ``"system:name"`` keys to read (top buffer).

    Returns:
        ``(events, n)``: the iterator, and the number of events read before the Arrow filters (for progress).
    """
    from ..schema import iter_events, iter_stream_events, prefilter_replay_batch, prefilter_replay_tables

    if not _streams_per_cpu(tr):
        tables = prefilter_replay_tables(tr.read_tables(wanted))
        return iter_events(tables), sum(t.num_rows for t in tables.values())
    counts = tr.event_counts()
    top = [b for b in tr.meta.buffers if b.name == ""]
    cpus = [cd.cpu for cd in top[0].cpus] if top else []
    rank = _event_ids(tr.meta, wanted)
    streams = [tr.iter_batches(wanted, [""], cpus=[c]) for c in cpus]
    events = iter_stream_events(streams, rank, batch_filter=prefilter_replay_batch)
    return events, sum(counts.get(k, 0) for k in wanted)


_NAME_RE = re.compile(r"^name:\s*(\S+)\s*$", re.M)
_ID_RE = re.compile(r"^ID:\s*(\d+)\s*$", re.M)


def _event_ids(meta: Any, keys: list[str]) -> dict[str, int]:
    """Event id of each of ``keys`` from the trace's format files, read with two regexes (``tr.formats`` would
    parse all ~1400 formats: 0.2 s a replay). Within one page block the reader yields one batch per event type
    in increasing event id: the merge needs that rank to tell where a CPU's next block begins. A key that has
    two ids is left out (the merge then holds that CPU's whole stream: correct, not bounded)."""
    want = set(keys)
    texts = [("ftrace", t) for t in getattr(meta, "ftrace_formats", ())] + list(getattr(meta, "event_formats", ()))
    ids: dict[str, set[int]] = {}
    for system, text in texts:
        name, ev_id = _NAME_RE.search(text), _ID_RE.search(text)
        if name and ev_id and f"{system}:{name.group(1)}" in want:
            ids.setdefault(f"{system}:{name.group(1)}", set()).add(int(ev_id.group(1)))
    return {key: next(iter(v)) for key, v in ids.items() if len(v) == 1}


def _streams_per_cpu(tr: Any) -> bool:
    """Whether ``tr.iter_batches`` reads one CPU's stream at a time (``cpus=``) and the buffers are known."""
    import inspect

    fn = getattr(tr, "iter_batches", None)
    if fn is None or not hasattr(getattr(tr, "meta", None), "buffers"):
        return False
    try:
        return "cpus" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _formats_release() -> str | None:
    """ftrace text has no kernel release; the trace.dat its formats came from (``--formats``) has."""
    from ..parsers.text_source import formats_kernel_release

    return formats_kernel_release()


def _extensions(profile: Any, bug_modes: Any, ncpus: int, available: set[str]) -> list[Any]:
    """The dma-iommu / devices / VT-d QI models (replay/extensions.py), when installed."""
    try:
        from .extensions import make_extensions
    except ImportError:
        return []
    return list(make_extensions(profile, bug_modes, ncpus, event_names=available))


def _summarise_extensions(res: ReplayResult, exts: list[Any]) -> None:
    for ext in exts:
        summary = getattr(ext, "summary", None)
        if summary is None:
            continue
        s = summary()
        res.extras["iommu"] = s
        flushes: dict[str, int] = {}
        for c in (s.get("cookies") or {}).values():
            for why, n in (c.get("flushes") or {}).items():
                flushes[str(why)] = flushes.get(str(why), 0) + int(n)
        if flushes:
            res.extras["flush_queue"] = {f"flushes_{k}": v for k, v in sorted(flushes.items())}
        if "live_mappings" in s:
            res.extras["live_mappings"] = s["live_mappings"]


def run_replay(trace: str, kernel: str | None = None, at: str | None = None, bug_modes: tuple[str, ...] = (),
               out_dir: str | None = None, report_dir: str | None = None, as_json: bool = False,
               mapping: str | None = None, fail_on_findings: bool = False, **_: Any) -> None:
    """The ``replay`` CLI command: replay TRACE and print the summary (text or ``--json``).

    Raises:
        IovatraceError: unreadable input or bad options (the CLI prints one line).
    """
    modes = tuple(m.strip().lower() for m in bug_modes)
    for m in modes:
        if m not in {"a", "b", "c", "d", "e"}:
            raise _UsageError(f"Unknown --bug-mode {m!r}: expected one of a, b, c, d, e")
    at_ns = parse_time(at) if at else None
    res = replay_trace(trace, kernel=kernel, bug_modes=modes, mapping=mapping, at_ns=at_ns,
                       timeline_ns=10_000_000 if (out_dir or report_dir) else 0, progress=not as_json)
    notes: list[str] = []
    if out_dir:
        from ..schema import write_replay_tables

        os.makedirs(out_dir, exist_ok=True)
        written = write_replay_tables(res, out_dir)
        notes.append("wrote " + ", ".join(os.path.basename(w) for w in written))
    if report_dir:
        try:
            from ..analysis.report import write_report  # type: ignore[attr-defined]
        except ImportError:
            notes.append("--report: the analysis/report module is not installed in this build; "
                         "use -o DIR for the Parquet tables")
        else:
            # With the trace, the page holds every event chart ``iovatrace chart`` draws, not only the replay's.
            write_report(res, report_dir, trace=trace)
            notes.append(f"report written to {report_dir}")
    if as_json:
        d = result_to_dict(res)
        d["notes"] = notes
        sys.stdout.write(json.dumps(d, default=str) + "\n")
    else:
        sys.stdout.write(render_text(res) + "\n")
        for n in notes:
            sys.stdout.write(n + "\n")
    if fail_on_findings and any(f.severity.value == "error" for f in res.findings):
        sys.exit(3)
