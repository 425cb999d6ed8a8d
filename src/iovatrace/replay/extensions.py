"""The dma-iommu / devices / VT-d QI models as a :class:`~.driver.ReplayDriver` extension.

Theory of operation: the replay driver steps every extension with every merged event (after its own handler) and
asks for findings at the end. :class:`IommuExtension` forwards the events :class:`~.iommu_events.IommuLayer`
wants, fires the layer's predicted timers first (trace time), and collects findings. ``make_extensions`` is what
``replay/commands.py`` imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..event import Event
from .findings import Finding
from .iommu_events import _HANDLERS, _ROUTES, BUG_MODES, IommuLayer, _route

__all__ = ["IommuExtension", "make_extensions", "default_bug_modes"]

# kprobe groups users put the optional probes in (qi_submit_sync, bind/unbind, page_pool)
_GROUPS = ("probe", "kprobes", "dmaiommu", "iovatrace", "driver", "page_pool", "intel_iommu")
_FNS = ("qi_submit_sync", "qi_submit_sync_ret", "really_probe", "device_unbind_cleanup",
        "device_release_driver_internal_ret", "__device_release_driver_ret", "page_pool_dma_map",
        "page_pool_destroy", "bind", "unbind")


def default_bug_modes(profile: Any) -> set[str]:
    """The seed bug modes a kernel profile has by itself: ``c`` before v6.15, ``d`` before v6.12."""
    modes = set()
    if profile is not None and not getattr(profile, "page_pool_dma_tracking", False):
        modes.add("c")
    if profile is not None and not getattr(profile, "qi_reclaim_fixed", True):
        modes.add("d")
    return modes


class IommuExtension:
    """Adapter of :class:`IommuLayer` to the driver's extension protocol.

    Args:
        layer: the layer to drive (``.layer`` stays public for validators: ``layer.iter_queued_pfns(iovad)``).
    """

    __slots__ = ("layer", "findings", "_last")

    def __init__(self, layer: IommuLayer) -> None:
        self.layer = layer
        self.findings: list[Finding] = []
        self._last: Event | None = None  # the last event the layer consumed (its time ends the trace for finish)

    def events(self) -> Iterable[str]:
        """Event names the layer consumes (exact names; optional probes under common group names)."""
        names = set(_HANDLERS)
        names |= {"page_pool:page_pool_release", "driver:bind", "driver:unbind"}
        names |= {f"{g}:{f}" for g in _GROUPS for f in _FNS}
        names |= {f"intel_iommu:{n}" for n in ("cache_tag_flush_all", "cache_tag_flush_range",
                                                "cache_tag_flush_range_np")}
        return sorted(names)

    def step(self, event: Event) -> None:
        """Apply one event (timers due before it fire first)."""
        # The driver steps every extension with every event: this is the hottest path of the extension models.
        # Every decision that depends only on the event's name is memoised in its route (iommu_events._route);
        # events the layer does not consume stop at the first test.
        route = _ROUTES.get(event.name) or _route(event.name)
        if not route[0]:
            return
        self._last = event
        layer = self.layer
        if not layer.timer_observed:
            fired = layer.fire_timers(event.ts_ns)
            if fired:
                self.findings += fired
        out = layer._apply(event, route)
        if out:
            self.findings += out

    @property
    def last_ns(self) -> int:
        """Time of the last event the layer consumed (0 before the first)."""
        return self._last.ts_ns if self._last is not None else 0

    def finish(self) -> list[Finding]:
        """All findings, plus the end-of-trace ones."""
        return self.findings + self.layer.finish(self.last_ns)

    def summary(self) -> dict[str, Any]:
        """Figures for ``ReplayResult.extras`` under the keys ``summary.py`` renders: ``flush_queue`` (flat
        counters over every cookie) and ``live_mappings`` (the ledger's size), plus ``iommu`` (the full summary)."""
        full = self.layer.summary()
        cookies = full["cookies"].values()
        fq = {
            "cookies": len(full["cookies"]),
            "lazy": sum(1 for c in cookies if c["lazy"]),
            "timeouts": sum(c["timer_fires"] for c in cookies),
            "ring_full_flushes": sum(c["flushes"]["full"] for c in cookies),
            "strict_syncs": sum(c["strict_syncs"] for c in cookies),
            "queued": sum(c["queued"] for c in cookies),
            "peak_queued": max((c["peak_queued"] for c in cookies), default=0),
            "unmatched_frees": sum(c["free_mismatch"] for c in cookies),
        }
        return {"flush_queue": fq, "live_mappings": full["live_mappings"], "iommu": full}


def make_extensions(profile: Any, bug_modes: Iterable[str] | None, ncpus: int,
                    event_names: Iterable[str] | None = None) -> list[IommuExtension]:
    """Build the extensions for one replay.

    Args:
        profile: the kernel profile.
        bug_modes: the user's ``--bug-mode`` values; those in ``c``, ``d``, ``e`` are added to the profile's own.
        ncpus: possible CPUs.
        event_names: event names the trace holds, if known.

    Returns:
        ``[IommuExtension]``.
    """
    modes = default_bug_modes(profile) | ({m.lower() for m in bug_modes or ()} & set(BUG_MODES))
    layer = IommuLayer(profile, bug_modes=modes, event_names=event_names, possible_cpus=range(max(1, ncpus)))
    return [IommuExtension(layer)]
