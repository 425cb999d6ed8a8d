"""The event record the replay consumes, free of pyarrow so the model stays sans-IO.

:func:`iovatrace.schema.iter_events` and :func:`iovatrace.schema.iter_stream_events` build these from Arrow; the
replay only reads their attributes. ``Event`` is a :class:`typing.NamedTuple` rather than a frozen dataclass:
it is just as immutable and attribute access is as fast, but a C-level ``tuple.__new__(Event, row)`` builds one
in ~60 ns where the dataclass ``__init__`` took ~2 µs (millions are built per replay).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["Event"]


class Event(NamedTuple):
    """One event of the merged, time-ordered stream the replay consumes.

    Build it by keyword or position (``Event(ts_ns=..., cpu=..., seq=..., name=..., pid=..., fields={...})``);
    being a tuple, two events are equal when all six attributes are.

    Attributes:
        ts_ns: timestamp in nanoseconds.
        cpu: CPU of the ring buffer.
        seq: index within the CPU's stream.
        name: ``"system:name"`` (for probes: ``"iova:alloc_iova_fast"``...).
        pid: common_pid.
        fields: payload fields by name (Python ints, str, bytes, lists).
    """

    ts_ns: int
    cpu: int
    seq: int
    name: str
    pid: int
    fields: Mapping[str, Any]
