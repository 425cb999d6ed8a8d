"""The event record the replay consumes, free of pyarrow so the model stays sans-IO.

:func:`iovatrace.schema.iter_events` and :func:`iovatrace.schema.iter_stream_events` build these from Arrow; the
replay only reads their attributes. A frozen slotted dataclass, not a ``NamedTuple``: in CPython 3.11 a slot is
read ~2x faster than a named-tuple field (the driver reads ~10 per event), and ``schema`` builds events in bulk
through the slot descriptors, bypassing the dataclass ``__init__`` (~2 µs an event) but not immutability.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the merged, time-ordered stream the replay consumes.

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
