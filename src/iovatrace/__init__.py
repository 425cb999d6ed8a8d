"""iovatrace: find out what the Linux IOMMU DMA layer actually did.

Parsers turn ftrace (trace.dat v6/v7, text) and kernel logs (oops, kmemleak, dma-debug) into Arrow event streams,
which are replayed against a model of the IOVA allocator, rcache, flush queues and IOMMU domains to reconstruct
state, detect leaked magazines and outstanding mappings, and chart behaviour.
"""

from __future__ import annotations

from .errors import (
    CaptureError,
    InputError,
    IovatraceError,
    LogFormatError,
    MissingEventsError,
    ModelError,
    SchemaError,
    TraceFormatError,
)
from .event import Event

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Event",
    "IovatraceError",
    "InputError",
    "TraceFormatError",
    "LogFormatError",
    "SchemaError",
    "CaptureError",
    "ModelError",
    "MissingEventsError",
]
