"""Parsers: trace.dat v6/v7, ftrace text, kernel logs (oops, kmemleak, dma-debug) into Arrow record batches.

:func:`open_trace` sniffs a trace file's first bytes and dispatches to the reader that claims it: the trace.dat
reader (:mod:`.tracedat`) or the ftrace text readers (:mod:`.text`, when installed). Readers are imported lazily
so that importing :mod:`iovatrace.parsers` stays cheap.
"""

from __future__ import annotations

import importlib
import os
from contextvars import ContextVar
from typing import Any

from ..errors import TraceFormatError

__all__ = ["open_trace", "TRACE_READERS", "TEXT_OPTIONS"]

#: Keywords for the ftrace text reader set by a command for its duration (``formats=`` from ``--formats`` or a
#: trace.dat beside the text; see :mod:`.text_source`), so that every ``open_trace`` it makes reads text the same way.
TEXT_OPTIONS: ContextVar[dict[str, Any]] = ContextVar("TEXT_OPTIONS", default={})

#: Sniffing registry: (module, class or factory name) tried in order; each module has ``sniff(head) -> bool``.
TRACE_READERS: list[tuple[str, str]] = [
    ("iovatrace.parsers.tracedat", "TraceDat"),
    ("iovatrace.parsers.text", "open_text"),
]

_SNIFF_BYTES = 4096


def open_trace(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Open a trace file (trace.dat v6/v7, or ftrace text when the text readers are installed).

    Args:
        path: the file.
        **kwargs: passed to the reader (e.g. ``strict=True``).

    Returns:
        A trace object (``.meta``, ``.formats``, ``.iter_batches()``, ``.read_tables()``, ``.lost_events()``,
        ``.event_counts()``, ``.damage``; see docs/ARCHITECTURE.md).

    Raises:
        TraceFormatError: if the file cannot be read or no reader recognises it.
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise TraceFormatError(f"Cannot open trace: {exc.strerror}", path=p) from None
    for modname, attr in TRACE_READERS:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue  # a reader that is not installed (yet)
        sniff = getattr(mod, "sniff", None)
        factory = getattr(mod, attr, None)
        if sniff is None or factory is None:
            continue
        if sniff(head):
            if attr == "open_text":
                kwargs = {**TEXT_OPTIONS.get(), **kwargs}
            return factory(p, **kwargs)
    raise TraceFormatError(
        "Not a trace: expected a trace.dat (magic 17 08 44 'tracing') or ftrace text", path=p, offset=0
    )
