"""Findings: kernel misbehaviour (or suspicious state) that the replay saw, with the events that prove it.

Every finding says how sure we are. A finding that depends on a gap in the trace (a lost kprobe hit, state that
existed before tracing started) is ``UNCERTAIN`` and names the gap; ``error`` severity is reserved for what the
events prove on their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Severity", "Certainty", "Finding"]


class Severity(enum.Enum):
    """How bad a finding is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Certainty(enum.Enum):
    """How much of the evidence the trace actually holds."""

    EXACT = "exact"  # every event the conclusion needs is in the trace
    LOWER_BOUND = "lower_bound"  # a count that can only be larger in reality
    UNCERTAIN = "uncertain"  # depends on a gap (lost events, unknown prior state); see Finding.gap


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding of the replay.

    Attributes:
        kind: a stable identifier (``double_free``, ``free_unknown_iova``, ``overlap``, ``iova_exhaustion``,
            ``rcache_flush_storm``, ``outstanding_mappings``, ``fq_entries_at_teardown``,
            ``depot_pop_transient_leak``, ``empty_depot_pop``, ``qi_reclaim_lockup``, ...).
        severity: :class:`Severity`.
        ts_ns: trace time the finding refers to.
        message: one human sentence.
        domain: iovad / domain address (hex string) or ``None``.
        device: device name (``0000:00:04.0``) or ``None``.
        certainty: :class:`Certainty`.
        gap: what missing information the certainty depends on, or ``None``.
        events: ``(ts_ns, cpu, seq)`` keys of the events that prove it.
        details: extra facts (pfns, sizes, counts) for tables and JSON.
    """

    kind: str
    severity: Severity
    ts_ns: int
    message: str
    domain: str | None = None
    device: str | None = None
    certainty: Certainty = Certainty.EXACT
    gap: str | None = None
    events: tuple[tuple[int, int, int], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": self.kind,
            "severity": self.severity.value,
            "ts_ns": self.ts_ns,
            "message": self.message,
            "domain": self.domain,
            "device": self.device,
            "certainty": self.certainty.value,
            "gap": self.gap,
            "events": [list(e) for e in self.events],
            "details": self.details,
        }
