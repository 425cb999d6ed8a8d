"""``iovatrace info`` and ``iovatrace convert``: the library side of the two trace-file commands.

Theory of operation: both open the trace through :func:`iovatrace.parsers.open_trace`. ``info`` needs only the
metadata and one counting pass over the records (numpy only: no pyarrow import, so it starts fast); ``convert``
streams record batches into one writer per event type (Parquet or Arrow IPC), buffering a bounded number of rows
per type so files get reasonable row groups while peak memory stays independent of the input size.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

__all__ = ["trace_info", "run_info", "run_convert"]

#: Rows buffered per event type before they are written out.
FLUSH_ROWS = 1 << 18
#: Bytes buffered over all event types before everything is written out.
FLUSH_BYTES = 128 << 20


def _meta_dict(tr: Any) -> dict[str, Any]:
    meta = getattr(tr, "meta", None)
    if meta is None:
        return {}
    if hasattr(meta, "as_dict"):
        return dict(meta.as_dict())
    if isinstance(meta, dict):
        return dict(meta)
    return {k: v for k, v in vars(meta).items() if isinstance(v, (int, str, float, bool, list))}


def _lost_rows(tr: Any) -> list[dict[str, Any]]:
    if hasattr(tr, "lost_summary"):
        return list(tr.lost_summary())
    t = tr.lost_events()
    return t.to_pylist() if hasattr(t, "to_pylist") else list(t)


def trace_info(path: str) -> dict[str, Any]:
    """Describe a trace: format, compression, CPUs, clock, events with counts, losses and damage.

    Args:
        path: a trace.dat (or ftrace text, when that reader is installed).

    Returns:
        A JSON-friendly dict with at least ``version``, ``compression``, ``cpus``, ``clock``, ``events``
        (``"system:name"`` → count), ``lost_events`` (total count known lost; rows whose count is unknown are
        counted in ``lost_events_unknown``), ``lost_events_detail`` and ``damage``.

    Raises:
        TraceFormatError: if the trace cannot be read.
    """
    from . import open_trace

    tr = open_trace(path)
    try:
        info: dict[str, Any] = {"path": path, "size_bytes": os.path.getsize(path)}
        info.update(_meta_dict(tr))
        info.setdefault("version", None)
        info.setdefault("compression", "none")
        info.setdefault("cpus", None)
        counts = tr.event_counts()
        info["events"] = dict(counts)
        info["total_events"] = sum(counts.values())
        lost = _lost_rows(tr)
        info["lost_events"] = sum(r["count"] for r in lost if r["count"] > 0)
        info["lost_events_unknown"] = sum(1 for r in lost if r["count"] < 0)
        info["lost_events_detail"] = lost
        info["damage"] = [{k: v for k, v in d.items()} for d in getattr(tr, "damage", [])]
        return info
    finally:
        if hasattr(tr, "close"):
            tr.close()


def run_info(path: str, *, as_json: bool = False) -> None:
    """Print :func:`trace_info` as text (default) or one JSON object.

    Args:
        path: the trace.
        as_json: print JSON.
    """
    info = trace_info(path)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
        return
    w = sys.stdout.write
    w(f"file:        {info['path']} ({info['size_bytes']} bytes)\n")
    w(f"format:      trace.dat v{info['version']}, compression {info['compression']}"
      f"{' ' + info['compression_version'] if info.get('compression_version') else ''}\n"
      if info.get("version") else f"format:      {info.get('format', 'text')}\n")
    if "endian" in info:
        w(f"host:        {info['endian']}-endian, kernel long {info.get('kernel_long_size')} bytes, "
          f"page size {info.get('page_size')}\n")
    w(f"cpus:        {info['cpus']}\n")
    w(f"clock:       {info.get('clock', '?')}\n")
    if info.get("uname"):
        w(f"uname:       {info['uname']}\n")
    if info.get("buffers") and info["buffers"] != [""]:
        w(f"buffers:     {', '.join(b or '(top)' for b in info['buffers'])}\n")
    w(f"events:      {info['total_events']} in {len(info['events'])} types\n")
    width = max((len(k) for k in info["events"]), default=0)
    for k, n in sorted(info["events"].items(), key=lambda kv: (-kv[1], kv[0])):
        w(f"  {k:<{width}}  {n:>10}\n")
    unk = f" (+{info['lost_events_unknown']} losses of unknown size)" if info["lost_events_unknown"] else ""
    w(f"lost events: {info['lost_events']}{unk}\n")
    for r in info["lost_events_detail"][:20]:
        w(f"  cpu {r['cpu']} at {r['ts_ns']} ns: {r['count'] if r['count'] >= 0 else 'unknown'} ({r['source']})\n")
    if info["damage"]:
        w(f"damage:      {len(info['damage'])} place(s) could not be read\n")
        for d in info["damage"][:20]:
            off = d.get("offset")
            w(f"  {'@0x%x' % off if isinstance(off, int) else '@?'}: {d.get('reason')}\n")


def _out_path(out_dir: str, key: str, ext: str) -> str:
    buf, _, ev = key.rpartition("/")
    system, _, name = ev.partition(":")
    parts = [out_dir] + ([buf] if buf else []) + [system or "unknown", f"{name or system}.{ext}"]
    return os.path.join(*parts)


class _Writers:
    """One open writer per event type, with bounded buffering."""

    def __init__(self, out_dir: str, fmt: str) -> None:
        self.out_dir = out_dir
        self.fmt = fmt
        self.writers: dict[str, Any] = {}
        self.pending: dict[str, list[Any]] = {}
        self.pending_rows: dict[str, int] = {}
        self.pending_bytes = 0
        self.files: dict[str, str] = {}

    def _open(self, key: str, schema: Any) -> Any:
        import pyarrow as pa

        path = _out_path(self.out_dir, key, "parquet" if self.fmt == "parquet" else "arrow")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.files[key] = path
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            # Dictionary-encoding every integer column costs 3x the decode itself and rarely pays: keep it for
            # strings (comm, event, device names...), and statistics for the columns queries filter on.
            strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_dictionary(f.type)]
            return pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=strings,
                                    write_statistics=["ts_ns", "cpu", "seq", "pid"])
        return pa.ipc.new_file(path, schema)

    def _flush(self, key: str) -> None:
        import pyarrow as pa

        batches = self.pending.pop(key, [])
        self.pending_rows.pop(key, None)
        if not batches:
            return
        w = self.writers.get(key)
        if w is None:
            w = self.writers[key] = self._open(key, batches[0].schema)
        t = pa.Table.from_batches(batches)
        self.pending_bytes -= sum(b.nbytes for b in batches)
        w.write_table(t, row_group_size=FLUSH_ROWS)

    def add(self, key: str, batch: Any) -> None:
        if self.fmt == "arrow":  # IPC batches need no row groups: write as they come
            w = self.writers.get(key)
            if w is None:
                w = self.writers[key] = self._open(key, batch.schema)
            w.write_batch(batch)
            return
        self.pending.setdefault(key, []).append(batch)
        self.pending_rows[key] = self.pending_rows.get(key, 0) + batch.num_rows
        self.pending_bytes += batch.nbytes
        if self.pending_rows[key] >= FLUSH_ROWS:
            self._flush(key)
        elif self.pending_bytes > FLUSH_BYTES:
            for k in list(self.pending):
                self._flush(k)

    def close(self) -> None:
        for k in list(self.pending):
            self._flush(k)
        for w in self.writers.values():
            w.close()


def run_convert(path: str, out_dir: str, *, events: list[str] | None = None, fmt: str = "parquet",
                progress: bool | None = None) -> dict[str, str]:
    """Convert a trace into one typed table file per event type, plus ``lost_events``.

    Writes ``DIR/<system>/<name>.parquet`` (or ``.arrow``, Arrow IPC file format); instance events go to
    ``DIR/<instance>/<system>/<name>.*``; losses to ``DIR/lost_events.*``; damage (if any) is listed in
    ``DIR/damage.json`` and summarised on stderr.

    Args:
        path: the trace.
        out_dir: output directory (created).
        events: glob patterns on ``"system:name"``; default all.
        fmt: ``"parquet"`` or ``"arrow"``.
        progress: show a tqdm bar on stderr (default: when stderr is a terminal and the input is large).

    Returns:
        key → written file path.

    Raises:
        TraceFormatError: if the trace cannot be read (or, for a damaged file, never: damage is reported).
    """
    import pyarrow as pa

    from . import open_trace

    if fmt not in ("parquet", "arrow"):
        raise ValueError(f"format must be parquet or arrow, not {fmt!r}")
    tr = open_trace(path)
    os.makedirs(out_dir, exist_ok=True)
    size = os.path.getsize(path)
    if progress is None:
        progress = sys.stderr.isatty() and size > (64 << 20)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc="convert", file=sys.stderr)
    writers = _Writers(out_dir, fmt)
    try:
        last = 0
        for key, batch in tr.iter_batches(events or None, None) if hasattr(tr, "iter_batches") else []:
            writers.add(key, batch)
            if bar is not None and hasattr(tr, "progress_offset"):
                pos = tr.progress_offset()
                if pos > last:
                    bar.update(pos - last)
                    last = pos
        writers.close()
        lost = tr.lost_events()
        lpath = os.path.join(out_dir, "lost_events." + ("parquet" if fmt == "parquet" else "arrow"))
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(lost, lpath)
        else:
            with pa.ipc.new_file(lpath, lost.schema) as w:
                w.write_table(lost)
        writers.files["lost_events"] = lpath
        damage = list(getattr(tr, "damage", []))
        if damage:
            with open(os.path.join(out_dir, "damage.json"), "w") as fh:
                json.dump(damage, fh, indent=2, default=str)
            sys.stderr.write(f"iovatrace: warning: {path}: {len(damage)} damaged place(s); see damage.json\n")
    finally:
        if bar is not None:
            bar.update(max(0, size - bar.n))
            bar.close()
        if hasattr(tr, "close"):
            tr.close()
    return writers.files
