"""Declared event requirements of the analyses (LISA's ``@requires_events``, done small).

Theory of operation: every ``df_*`` function states the events it reads with :func:`requires`, as a list of
:class:`Need` groups. A group is satisfied when *any* of its alternative event keys is present in the tables
(``fq_ring_free`` on 6.1 and ``fq_ring_free_locked`` on 6.12 are one need). Presence means "the trace recorded
this event type", so a table with zero rows satisfies a need: a strict-mode trace that never ran the flush-queue
timer is not a badly recorded trace. When a need is not met the function raises
:class:`~iovatrace.errors.MissingEventsError` naming the absent events and the ``iovatrace record`` option that
collects them, before it touches any column. The declared needs are kept on the function (``fn.requirements``)
so the chart report can ask which analyses a trace supports without running them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import MissingEventsError

__all__ = ["Need", "RECORD_HINTS", "record_hint", "requires", "missing_events", "check_events", "requirements_of"]

F = TypeVar("F", bound=Callable[..., Any])

#: How to collect each event system with the recorder. Keyed by the system part of ``system:name``.
RECORD_HINTS: dict[str, str] = {
    "iommu": "`iovatrace record` (it always records the iommu:* tracepoints)",
    "intel_iommu": "`iovatrace record` on a VT-d (Intel IOMMU) machine (intel_iommu:* tracepoints)",
    "iova": "`iovatrace record` (it installs the `iova` kprobe group; `iovatrace probes` shows which of them "
            "this kernel can probe)",
    "dmaiommu": "`iovatrace record` (it installs the `dmaiommu` kprobe group; `iovatrace probes` shows which of "
                "them this kernel can probe)",
    "dma": "`iovatrace record` on a 6.12+ kernel (dma:* tracepoints)",
    "kmem": "`iovatrace record` on a 6.9+ kernel with kallsyms readable (magazine kmem_cache events are filtered "
            "by call site)",
    "cpuhp": "`iovatrace record` (cpuhp:* tracepoints)",
}


def record_hint(keys: Iterable[str]) -> str:
    """The recorder option(s) that would collect ``keys``.

    Args:
        keys: ``system:name`` event keys.

    Returns:
        One hint per distinct system, joined with ``"; "`` (empty when no system is known).
    """
    hints: list[str] = []
    for key in keys:
        hint = RECORD_HINTS.get(key.split(":", 1)[0])
        if hint and hint not in hints:
            hints.append(hint)
    return "; ".join(hints)


@dataclass(frozen=True)
class Need:
    """One required event, given as alternatives: satisfied when any of ``keys`` is present.

    Attributes:
        keys: ``system:name`` keys, in order of preference.
        why: what the analysis uses it for (shown in ``--help``-like listings).
    """

    keys: tuple[str, ...]
    why: str = ""

    def __init__(self, *keys: str, why: str = "") -> None:
        if not keys:
            raise ValueError("Need() requires at least one event key")
        object.__setattr__(self, "keys", tuple(keys))
        object.__setattr__(self, "why", why)

    def is_met(self, present: Iterable[str]) -> bool:
        """Whether any alternative is in ``present``."""
        have = set(present)
        return any(k in have for k in self.keys)

    def label(self) -> str:
        """``a`` or ``a (or b)`` for messages."""
        return self.keys[0] if len(self.keys) == 1 else f"{self.keys[0]} (or {' or '.join(self.keys[1:])})"


def missing_events(needs: Iterable[Need], present: Iterable[str]) -> list[Need]:
    """The needs that ``present`` does not meet.

    Args:
        needs: declared requirements.
        present: the event keys a trace holds.

    Returns:
        The unmet needs, in declaration order.
    """
    have = set(present)
    return [n for n in needs if not n.is_met(have)]


def check_events(analysis: str, needs: Iterable[Need], present: Iterable[str]) -> None:
    """Raise when ``present`` lacks any of ``needs``.

    Args:
        analysis: name shown in the error (``df_flush_queue``).
        needs: declared requirements.
        present: the event keys a trace holds.

    Raises:
        MissingEventsError: naming every absent event and how to record it.
    """
    unmet = missing_events(needs, present)
    if unmet:
        raise MissingEventsError(analysis, [n.label() for n in unmet], record_hint(k for n in unmet for k in n.keys))


def requirements_of(fn: Callable[..., Any]) -> tuple[Need, ...]:
    """The needs declared on ``fn`` with :func:`requires` (empty when none)."""
    return tuple(getattr(fn, "requirements", ()))


def requires(*needs: Need) -> Callable[[F], F]:
    """Declare the events a ``df_*`` function needs; check them on every call.

    The decorated function must take the event tables (a mapping keyed by ``system:name``) as its first
    argument.

    Args:
        needs: the requirement groups.

    Returns:
        A decorator; the wrapped function raises :class:`~iovatrace.errors.MissingEventsError` when its first
        argument lacks a need, and carries ``requirements`` for :func:`requirements_of`.
    """

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(tables: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
            check_events(fn.__name__, needs, tables.keys())
            return fn(tables, *args, **kwargs)

        wrapper.requirements = needs  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
