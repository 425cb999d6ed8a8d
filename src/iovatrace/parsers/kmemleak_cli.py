"""``iovatrace kmemleak LOG``: list the kmemleak objects of a log, one line each, as JSON, or as Parquet.

Theory of operation: read the whole input (a file or ``-`` for stdin; logs are small), parse it with
:func:`~iovatrace.parsers.logs.kmemleak.parse_kmemleak` (strict: a damaged record is an error naming its line),
then render. Rendering only formats what the parser found; it never re-parses. Unusable input raises
:class:`~iovatrace.parsers.logs.kmemleak.UnusableReportError`, which the CLI turns into one line and exit status 2.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from .logs.io import read_log_bytes
from .logs.kmemleak import KmemleakObject, UnusableReportError, kmemleak_tables, parse_kmemleak

__all__ = ["read_log_input", "run_kmemleak", "object_json", "top_frame"]

# Allocator internals that sit above the interesting caller in every kmemleak backtrace.
_ALLOC_PREFIXES = ("kmem_cache_", "__kmem_cache_", "kmalloc", "__kmalloc", "kmemleak_", "create_object",
                   "slab_", "__slab_", "kzalloc", "kcalloc", "__alloc_percpu", "pcpu_", "krealloc", "kvmalloc",
                   "__kvmalloc", "alloc_pages", "__alloc_pages", "kmem_", "___slab_alloc", "kstrdup")


def read_log_input(path: str) -> tuple[bytes, str]:
    """Read a log file, or stdin for ``-``.

    Args:
        path: a file path or ``-``.

    Returns:
        ``(data, name)`` where name is the path or ``<stdin>``.

    Raises:
        UnusableReportError: the file cannot be read.
    """
    return read_log_bytes(path, error=UnusableReportError, what="log")


def top_frame(obj: KmemleakObject) -> str | None:
    """The first backtrace frame below the allocator internals (the allocating caller), or ``None``."""
    for f in obj.frames:
        if f.symbol and not f.symbol.startswith(_ALLOC_PREFIXES):
            return f.symbol
    return obj.frames[0].symbol if obj.frames else None


def object_json(obj: KmemleakObject, object_id: int) -> dict[str, Any]:
    """One record as a JSON-ready dict (hex dump as a hex string, addresses as ``0x…`` strings)."""
    return {
        "object_id": object_id,
        "line": obj.line,
        "address": f"0x{obj.address:x}",
        "size": obj.size,
        "comm": obj.comm,
        "pid": obj.pid,
        "jiffies": obj.jiffies,
        "age_ms": obj.age_ms,
        "crc": None if obj.crc is None else f"{obj.crc:08x}",
        "hexdump_len": obj.hexdump_len,
        "hexdump": obj.hexdump.hex() if obj.hexdump_len is not None else None,
        "format": obj.format,
        "prefixed": obj.prefixed,
        "frames": [
            {"symbol": f.symbol, "offset": f.offset, "size": f.size, "module": f.module,
             "address": None if f.address is None else f"0x{f.address:x}", "address_kind": f.address_kind,
             "address_text": f.address_text, "file": f.file, "line": f.line, "inline": f.inline}
            for f in obj.frames
        ],
        "issues": list(obj.issues),
    }


def _age(obj: KmemleakObject) -> str:
    return "-" if obj.age_ms is None else f"{obj.age_ms / 1000:.3f}s"


def run_kmemleak(log: str, *, as_json: bool, out_dir: str | None) -> None:
    """Parse LOG and print its kmemleak objects (the ``iovatrace kmemleak`` command).

    Args:
        log: a file path or ``-`` for stdin.
        as_json: print one JSON list of objects instead of the text listing.
        out_dir: if given, write ``kmemleak_objects.parquet`` and ``kmemleak_frames.parquet`` there.

    Raises:
        UnusableReportError: unreadable input, a damaged record (named by line), or no kmemleak record at all.
    """
    data, name = read_log_input(log)
    report = parse_kmemleak(data, path=name)
    if not report.objects:
        raise UnusableReportError("Cannot find any kmemleak record: expected 'unreferenced object 0x… (size N):'",
                                  path=name)
    if out_dir:
        import pyarrow.parquet as pq

        os.makedirs(out_dir, exist_ok=True)
        for tname, table in kmemleak_tables(report.objects).items():
            pq.write_table(table, os.path.join(out_dir, f"{tname}.parquet"))
    if as_json:
        click.echo(json.dumps([object_json(o, i) for i, o in enumerate(report.objects)], indent=1))
        return
    for o in report.objects:
        dump = o.hexdump[:16].hex(" ") if o.hexdump else "-"
        click.echo(f"{name}:{o.line}: 0x{o.address:x} size={o.size} comm={o.comm!r} pid={o.pid} age={_age(o)} "
                   f"format={o.format} frames={len(o.frames)} in={top_frame(o) or '-'} dump[{len(o.hexdump)}]={dump}")
    if report.summary_counts:
        click.echo(f"# console summaries: {', '.join(map(str, report.summary_counts))} new suspected leaks")
    if out_dir:
        click.echo(f"# wrote kmemleak_objects.parquet, kmemleak_frames.parquet to {out_dir}")
