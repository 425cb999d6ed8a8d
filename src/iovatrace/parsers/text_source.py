"""Event formats for ftrace text given on the command line: ``--formats PATH`` or a trace.dat beside the text.

Theory of operation: ftrace text prints each event's fields but not their types, sizes or the event's print
format, so without formats the text reader can only infer columns (keys come out ``unknown:*`` when a line's
event name cannot be tied to a system). A trace.dat of the same run carries every format (and kallsyms for
``sym+off`` pointers). :func:`text_formats` resolves what a command should use, once, and sets
:data:`iovatrace.parsers.TEXT_OPTIONS` for the command's duration so that every
:func:`~iovatrace.parsers.open_trace` the command makes (replay, report, charts) reads the text the same way.
A trace.dat input ignores formats: it carries its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from ..errors import TraceFormatError

__all__ = ["text_formats", "formats_beside", "formats_kernel_release"]

_MAGIC = b"\x17\x08\x44tracing"
#: The kernel release of the trace.dat whose formats are in use (text has none; the replay's profile needs it).
_RELEASE: ContextVar[str | None] = ContextVar("_RELEASE", default=None)


def _head(path: str, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise TraceFormatError(f"Cannot open trace: {exc.strerror}", path=path) from None


def formats_beside(trace: str) -> str | None:
    """The ``trace.dat`` in the directory of a text trace (the lab records both), if there is one.

    Args:
        trace: the text trace's path.

    Returns:
        The trace.dat path, or ``None``.
    """
    cand = os.path.join(os.path.dirname(os.path.abspath(trace)), "trace.dat")
    if os.path.isfile(cand) and not os.path.samefile(cand, trace) and _head(cand, 16).startswith(_MAGIC):
        return cand
    return None


def _load(formats: str) -> dict[str, Any]:
    """Reader keywords for one formats source, read once (a trace.dat gives its formats and kallsyms)."""
    if not os.path.exists(formats):
        raise TraceFormatError("Cannot read --formats: no such file or directory", path=formats)
    if os.path.isfile(formats) and _head(formats, 16).startswith(_MAGIC):
        from .tracedat import TraceDat

        dat = TraceDat(formats)
        meta = dat.meta
        release = getattr(meta, "kernel_release", None) or getattr(meta, "uname", None)
        return {"formats": dict(dat.formats), "kallsyms": dat.kallsyms, "_release": release or None}
    from .text_formats import load_formats_dir

    fmts = load_formats_dir(formats)
    if not fmts:
        raise TraceFormatError("No event format in --formats: expected a trace.dat, a tracefs events directory "
                               "(<system>/<name>/format) or concatenated format files", path=formats)
    return {"formats": fmts}


@contextmanager
def text_formats(trace: str, formats: str | None = None, *, note: TextIO | None = None) -> Iterator[str | None]:
    """Use ``formats`` (or a trace.dat beside ``trace``) for ftrace text opened inside the ``with`` block.

    Args:
        trace: the command's input.
        formats: ``--formats``: a trace.dat of the same run, a tracefs ``events/`` directory or a concatenated
            format file; ``None`` to look for ``trace.dat`` beside a text ``trace``.
        note: where to say which formats were used (default: stderr).

    Yields:
        The formats path in use, or ``None`` (a trace.dat input, or text without formats).

    Raises:
        TraceFormatError: ``formats`` cannot be read as formats or as a trace.dat, or ``trace`` cannot be opened.
    """
    out = note if note is not None else sys.stderr
    head = _head(trace)
    if head.startswith(_MAGIC):  # checked first: a trace.dat command must not import the text readers (start-up)
        if formats:
            out.write("iovatrace: note: --formats ignored: a trace.dat carries its own event formats\n")
        yield None
        return
    from . import TEXT_OPTIONS
    from .text import sniff

    if not sniff(head):
        yield None
        return
    path = formats
    if path is None:
        path = formats_beside(trace)
        if path is not None:
            out.write(f"iovatrace: note: text trace: using the event formats of {path} (override with --formats)\n")
    if path is None:
        out.write("iovatrace: note: text trace without event formats: columns are inferred; give --formats "
                  "(a trace.dat of the same run, or a tracefs events directory) for typed events\n")
        yield None
        return
    opts = _load(path)
    rtoken = _RELEASE.set(opts.pop("_release", None))
    token = TEXT_OPTIONS.set(opts)
    try:
        yield path
    finally:
        TEXT_OPTIONS.reset(token)
        _RELEASE.reset(rtoken)


def formats_kernel_release() -> str | None:
    """Inside :func:`text_formats`: the kernel release of the trace.dat whose formats are used, else ``None``."""
    return _RELEASE.get()
