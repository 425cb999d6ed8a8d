"""``iovatrace oops LOG``: list the crash reports of a kernel log, as text, JSON, or Parquet tables.

Theory of operation: read the whole input (a file, or ``-`` for stdin), run
:func:`~iovatrace.parsers.logs.oops.parse_oops` once, then render what it found: one line per report
(``kind  title  (lines a-b)``), or with ``--json`` a JSON list of report dicts; ``-o DIR`` also writes the five
Arrow tables as ``DIR/oops_<table>.parquet``. Nothing here parses: rendering only formats parser output.
Unreadable input raises :class:`~iovatrace.errors.LogFormatError`, which the CLI prints as one line.
"""

from __future__ import annotations

import json
import os
import sys

from ..errors import LogFormatError
from .logs.io import read_log_bytes
from .logs.oops import OopsResult, parse_oops

__all__ = ["run_oops", "read_input", "format_report_line"]


def read_input(path: str) -> tuple[bytes, str]:
    """Read a log file, or stdin for ``-``.

    Args:
        path: a file path or ``-``.

    Returns:
        ``(data, name)``; name is the path or ``<stdin>``.

    Raises:
        LogFormatError: the file cannot be read.
    """
    return read_log_bytes(path, what="kernel log")


def format_report_line(name: str, rep: object) -> str:
    """One human-readable line for a report: ``name:first-last: kind: title [corrupted: why]``."""
    from .logs.oops import OopsReport

    assert isinstance(rep, OopsReport)
    where = f"{name}:{rep.first_line}-{rep.last_line}"
    extra = f"  [corrupted: {rep.corrupted_reason}]" if rep.corrupted else ""
    return f"{where}: {rep.kind}: {rep.title}{extra}"


def write_tables(result: OopsResult, out_dir: str) -> list[str]:
    """Write the report tables as Parquet files ``oops_<name>.parquet`` in ``out_dir``.

    Returns:
        The paths written.
    """
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, table in result.tables().items():
        p = os.path.join(out_dir, f"oops_{name}.parquet")
        pq.write_table(table, p)
        paths.append(p)
    return paths


def run_oops(log: str, *, as_json: bool = False, out_dir: str | None = None) -> OopsResult:
    """Parse LOG and print its reports (the ``iovatrace oops`` command).

    Args:
        log: path of the log, ``-`` for stdin.
        as_json: print a JSON list of reports (title, alt_titles, kind, type, corrupted, lines, fields).
        out_dir: also write the tables as Parquet into this directory.

    Returns:
        The parse result.

    Raises:
        LogFormatError: the input cannot be read, is empty or is binary.
    """
    data, name = read_input(log)
    if not data.strip():
        raise LogFormatError("Empty kernel log: expected kernel messages (dmesg, console or syslog text)", path=name)
    result = parse_oops(data, path=name)
    if out_dir:
        written = write_tables(result, out_dir)
    if as_json:
        json.dump([r.to_dict() for r in result.reports], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for rep in result.reports:
            print(format_report_line(name, rep))
        if not result.reports:
            print(f"{name}: no crash reports in {result.lines} lines")
        if out_dir:
            print(f"wrote {len(written)} tables to {out_dir}", file=sys.stderr)
    return result
