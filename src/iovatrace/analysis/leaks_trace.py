"""Leak diagnosis, step 3 (optional): correlate a report with a trace of the same run through the replay.

Theory of operation: the replay (``iovatrace.replay``) reconstructs the IOVA allocator, rcache and per-device
mapping ledger from a trace. Correlation asks it what was alive at the report's time: whether each reported
magazine sits in a depot or CPU rcache (then kmemleak's report is a false positive) or was freed, which domain each
reported IOVA range belonged to, and which mappings each device still held when its driver was released (to set
beside dma-debug's ``pending DMA allocations`` counts). Until the replay exposes a driver API this module raises
:class:`CorrelationUnavailableError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import IovatraceError

if TYPE_CHECKING:
    from .leaks import LeakDiagnosis

__all__ = ["CorrelationUnavailableError", "correlate_trace", "render_correlation"]


class CorrelationUnavailableError(IovatraceError):
    """``--trace`` was given but the replay cannot answer the questions correlation asks."""


def correlate_trace(trace: str, diag: "LeakDiagnosis") -> dict[str, Any]:
    """Replay ``trace`` and correlate it with the diagnosis.

    Args:
        trace: path of a trace.dat or ftrace text file of the same run.
        diag: the report's diagnosis.

    Returns:
        ``{"trace", "magazines", "iova_ranges", "devices"}``.

    Raises:
        CorrelationUnavailableError: the replay driver is not available in this build.
    """
    raise CorrelationUnavailableError(
        f"{trace}: Cannot correlate the report with a trace: correlation needs the replay driver "
        "(iovatrace.replay.driver), which this build does not provide yet; run without --trace")


def render_correlation(corr: dict[str, Any]) -> list[str]:
    """Text lines for the correlation section of the terminal report."""
    return [f"Trace {corr.get('trace')}: (no correlation)"]
