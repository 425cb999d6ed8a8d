"""IOMMU groups, devices and domains, and the ledger of live DMA mappings per device.

Theory of operation
-------------------
:class:`Topology` mirrors what the IOMMU core knows about devices (drivers/iommu/iommu.c): a device joins a
group (``iommu:add_device_to_group``), is attached to the group's domain (``iommu:attach_device_to_domain``),
gets a driver (bind) and loses it (unbind), and is finally released (``iommu:remove_device_from_group``, from
``iommu_release_device``). A default-domain change (sysfs ``iommu_groups/N/type``) allocates a new domain,
re-attaches every device and frees the old one (model_spec §8.2). Domains are named by their ``iommu_domain``
address when a probe shows it (``iommu_dma_alloc_iova domain=``), else by a synthetic ``group<N>#k`` name.

The :class:`MappingLedger` holds every DMA mapping the trace showed being made and not yet unmapped: address,
size, direction (from the ``dma:*`` ``dir`` field, or from the IOMMU prot bits of ``__iommu_dma_map``), time,
the mapping call, and its owner (a page_pool, when a ``page_pool_dma_map`` probe preceded it on the CPU).

Seed (c) lives here (model_spec §8.4): mappings still live when their device's driver is unbound, when the device
is released, or when its domain is destroyed are *outstanding*; an unmap arriving after the release is the crash
class (``iommu_get_dma_domain`` on a gone device, or a use-after-free of the freed iova_domain). Switch
``page_pool_dma_tracking`` models ee62ce7a1d90 (v6.15): ``page_pool_destroy`` then unmaps every page the pool
still has mapped, so nothing owned by a pool is outstanding at unbind.

Certainty: a mapping the trace showed being made and never unmapped is proven outstanding only if no event of
the kinds that would have unmapped it can have been lost. Mappings learned from kprobes are ``UNCERTAIN``
(kprobe hits can be dropped, see the lab README) and so is everything after a ring-buffer loss; mappings made
before the trace started are never invented.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import ModelError
from .findings import Certainty, Finding, Severity

__all__ = [
    "DmaDirection",
    "DmaMapping",
    "MappingLedger",
    "IommuDevice",
    "IommuGroup",
    "IommuDomainState",
    "Topology",
    "direction_from_prot",
]

EventKey = tuple[int, int, int]


class DmaDirection(enum.Enum):
    """``enum dma_data_direction`` (include/linux/dma-direction.h), plus UNKNOWN."""

    BIDIRECTIONAL = 0
    TO_DEVICE = 1
    FROM_DEVICE = 2
    NONE = 3
    UNKNOWN = -1

    @classmethod
    def of(cls, value: object) -> DmaDirection:
        """The direction for a raw ``dir`` value (int or the symbolic name); UNKNOWN when unreadable."""
        if type(value) is int:
            d = _DIRECTION_OF_INT.get(value)
            if d is not None:
                return d
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                return cls.UNKNOWN
        if isinstance(value, str):
            name = value.strip().upper().removeprefix("DMA_")
            if name in cls.__members__:
                return cls[name]
        return cls.UNKNOWN


# the ``dir`` values of the dma:* tracepoints (one lookup per event instead of an Enum call)
_DIRECTION_OF_INT: dict[int, DmaDirection] = {d.value: d for d in DmaDirection}
_DIRECTION_OF_RW = {1: DmaDirection.TO_DEVICE, 2: DmaDirection.FROM_DEVICE, 3: DmaDirection.BIDIRECTIONAL}


def direction_from_prot(prot: int) -> DmaDirection:
    """Direction implied by ``dma_info_to_prot`` bits: IOMMU_READ (1) = device reads = TO_DEVICE, IOMMU_WRITE (2)."""
    return _DIRECTION_OF_RW.get(prot & 3, DmaDirection.UNKNOWN)


@dataclass(slots=True)
class DmaMapping:
    """One live DMA mapping.

    Attributes:
        device: device name (``0000:00:03.0``).
        dma_addr: the handle the driver got (IOVA plus offset).
        size: bytes.
        direction: :class:`DmaDirection`.
        ts_ns: when it was mapped.
        call: the mapping call (``dma_map_page``, ``dma_map_sg``, ``__iommu_dma_map``, ``iommu_dma_map_sg``...).
        event: key of the mapping event.
        domain: domain name at map time.
        phys: physical address(es), when the event carries them (sg: first segment).
        owner: ``"page_pool:<addr>"`` when a page pool made it, else ``None``.
        exact: learned from a tracepoint (never dropped) rather than a kprobe.
    """

    device: str
    dma_addr: int
    size: int
    direction: DmaDirection
    ts_ns: int
    call: str
    event: EventKey | None = None
    domain: str | None = None
    phys: int | None = None
    owner: str | None = None
    exact: bool = True

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"device": self.device, "dma_addr": self.dma_addr, "size": self.size,
                "direction": self.direction.name, "ts_ns": self.ts_ns, "call": self.call,
                "domain": self.domain, "owner": self.owner}


class MappingLedger:
    """Live mappings per device, keyed by ``dma_addr``; sg mappings are also indexed by physical address
    (``dma:dma_unmap_sg`` carries only physical addresses).

    Several live sg mappings can share their first physical address (O_DIRECT AIO submits the same user buffer
    many times at once), so the index keeps every handle per address, oldest first; an sg unmap takes the oldest.
    Which of those handles the kernel unmapped is not in the event, but the number of live mappings stays exact.
    """

    def __init__(self) -> None:
        self.by_device: dict[str, dict[int, DmaMapping]] = {}
        self._by_phys: dict[tuple[str, int], list[int]] = {}
        self.mapped = 0
        self.unmapped = 0
        self.unmatched_unmaps = 0

    def map(self, m: DmaMapping) -> DmaMapping | None:
        """Record a mapping.

        Returns:
            A mapping it replaced at the same address (a map over a live handle: an unmap was lost), else ``None``.
        """
        dev = self.by_device.get(m.device)
        if dev is None:
            dev = self.by_device[m.device] = {}
        addr = m.dma_addr
        old = dev.get(addr)
        dev[addr] = m
        if old is not None:
            self._drop_phys(old)
        if m.phys is not None:
            pkey = (m.device, m.phys)
            handles = self._by_phys.get(pkey)
            if handles is None:
                self._by_phys[pkey] = [addr]
            else:
                handles.append(addr)
        self.mapped += 1
        return old

    def unmap(self, device: str, dma_addr: int) -> DmaMapping | None:
        """Remove the mapping of ``device`` at ``dma_addr``; ``None`` (and counted) if the ledger lacks it."""
        dev = self.by_device.get(device)
        m = dev.pop(dma_addr, None) if dev is not None else None
        if m is None:
            self.unmatched_unmaps += 1
            return None
        if m.phys is not None:
            self._drop_phys(m)
        self.unmapped += 1
        return m

    def _drop_phys(self, m: DmaMapping) -> None:
        if m.phys is None:
            return
        handles = self._by_phys.get((m.device, m.phys))
        if handles is None:
            return
        try:
            handles.remove(m.dma_addr)
        except ValueError:
            pass
        if not handles:
            del self._by_phys[(m.device, m.phys)]

    def unmap_phys(self, device: str, phys: int) -> DmaMapping | None:
        """Remove the (oldest live) sg mapping whose first segment has physical address ``phys``."""
        handles = self._by_phys.get((device, phys))
        if not handles:
            self.unmatched_unmaps += 1
            return None
        return self.unmap(device, handles[0])

    def live(self, device: str) -> list[DmaMapping]:
        """Live mappings of one device, oldest first."""
        return sorted(self.by_device.get(device, {}).values(), key=lambda m: m.ts_ns)

    def iter_live(self) -> Iterator[DmaMapping]:
        """Every live mapping."""
        for dev in self.by_device.values():
            yield from dev.values()

    def __len__(self) -> int:
        return sum(len(d) for d in self.by_device.values())


@dataclass(slots=True)
class IommuDevice:
    """A device the IOMMU core knows.

    Attributes:
        name: ``dev_name()``.
        gid: iommu group id, or ``None`` if the trace never showed it joining one.
        domain: attached domain name.
        bound: driver bound (``True``/``False``) or ``None`` when the trace did not show it.
        released: ``iommu_release_device`` ran (removed from its group).
        released_ns: when.
        dev_ptrs: ``struct device *`` values seen in kprobes.
        releases: how many times the trace showed it released (a PCI remove + rescan re-adds it).
    """

    name: str
    gid: int | None = None
    domain: str | None = None
    bound: bool | None = None
    released: bool = False
    released_ns: int | None = None
    dev_ptrs: set[int] = field(default_factory=set)
    releases: int = 0


@dataclass(slots=True)
class IommuGroup:
    """``struct iommu_group``: its devices and domains."""

    gid: int
    devices: set[str] = field(default_factory=set)
    default_domain: str | None = None
    domain: str | None = None


@dataclass(slots=True)
class IommuDomainState:
    """One ``iommu_domain``: its type and lifetime.

    Attributes:
        name: address (hex) or synthetic name.
        type: ``"DMA"``, ``"DMA-FQ"``, ``"identity"`` or ``None`` (unknown).
        gid: the group it is the default domain of.
        iovad: its iova_domain address, when learned.
        created_ns / freed_ns: lifetime (``None`` = before / after the trace).
        devices: devices attached now.
    """

    name: str
    type: str | None = None
    gid: int | None = None
    iovad: str | None = None
    created_ns: int | None = None
    freed_ns: int | None = None
    devices: set[str] = field(default_factory=set)


class Topology:
    """Groups, devices, domains and the mapping ledger, with the seed (c) and release-race checks.

    Args:
        page_pool_dma_tracking: model ee62ce7a1d90 (v6.15+): ``page_pool_destroy`` unmaps the pool's pages.
            ``False`` is bug mode (c) (≤6.14).
        release_race: bug mode (e), ``E_release_vs_attach_race`` (s390 before bf8d2dd2ed08 / 3dd59a7dcb97):
            report attach/detach of a released device.

    Every mutating method returns the findings it produced.
    """

    def __init__(self, *, page_pool_dma_tracking: bool = False, release_race: bool = False) -> None:
        self.page_pool_dma_tracking = page_pool_dma_tracking
        self.release_race = release_race
        self.devices: dict[str, IommuDevice] = {}
        self.groups: dict[int, IommuGroup] = {}
        self.domains: dict[str, IommuDomainState] = {}
        self.ledger = MappingLedger()
        self.dev_by_ptr: dict[int, str] = {}
        self.pools: dict[str, set[tuple[str, int]]] = {}  # pool -> {(device, dma_addr)}
        self.destroyed_pools: set[str] = set()
        self.scrubbed: set[tuple[str, int]] = set()  # unmapped by a modelled page_pool_scrub (6.15+)
        self.gaps: list[str] = []  # lost events etc.; any entry makes later findings uncertain
        self.events_seen = 0
        self._domain_seq: dict[int, int] = {}

    # -- objects ------------------------------------------------------------------------------------------

    def device(self, name: str) -> IommuDevice:
        """The device named ``name`` (created on first sight)."""
        d = self.devices.get(name)
        if d is None:
            d = self.devices[name] = IommuDevice(name)
        return d

    def domain(self, name: str) -> IommuDomainState:
        """The domain named ``name`` (created on first sight)."""
        d = self.domains.get(name)
        if d is None:
            d = self.domains[name] = IommuDomainState(name)
        return d

    def learn_dev_ptr(self, ptr: int, name: str) -> None:
        """Remember that kprobe value ``struct device *ptr`` is device ``name``."""
        self.dev_by_ptr[ptr] = name
        self.device(name).dev_ptrs.add(ptr)

    def note_gap(self, what: str) -> None:
        """Record a gap (lost events, a loss window); findings that depend on completeness become uncertain."""
        if what not in self.gaps:
            self.gaps.append(what)

    def _certainty(self, maps: list[DmaMapping]) -> tuple[Certainty, str | None]:
        reasons = list(self.gaps)
        if any(not m.exact for m in maps):
            reasons.append("mappings learned from kprobes, whose hits can be dropped")
        if reasons:
            return Certainty.UNCERTAIN, "; ".join(reasons)
        return Certainty.EXACT, None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def add_device_to_group(self, ts_ns: int, gid: int, name: str, key: EventKey | None = None) -> list[Finding]:
        """``iommu:add_device_to_group``: the device (re)appears; a re-added device starts fresh."""
        dev = self.device(name)
        if dev.released:
            dev.released = False
            dev.released_ns = None
            dev.bound = None
        dev.gid = gid
        grp = self.groups.setdefault(gid, IommuGroup(gid))
        grp.devices.add(name)
        return []

    def attach_device_to_domain(self, ts_ns: int, name: str, domain: str | None = None,
                                key: EventKey | None = None) -> list[Finding]:
        """``iommu:attach_device_to_domain`` (or a default-domain switch).

        Args:
            domain: the domain, if known; else the group's current domain, or a new synthetic one when the
                group's domain is being replaced (attach during a default-domain change).
        """
        out: list[Finding] = []
        dev = self.device(name)
        if dev.released and self.release_race:
            out.append(Finding(
                "attach_after_release", Severity.ERROR, ts_ns,
                f"{name} attached to a domain after iommu_release_device: release_device raced with attach_dev "
                "(s390/vfio, fixed by bf8d2dd2ed08 and 3dd59a7dcb97)",
                domain=domain, device=name, events=(key,) if key else (),
                details={"released_ns": dev.released_ns}))
        if domain is None:
            grp = self.groups.get(dev.gid) if dev.gid is not None else None
            if dev.domain is not None and not dev.released:
                # attached again while attached: a default-domain change (or a driver's own domain) allocated a
                # new domain; name it until a probe shows its address (rename_domain)
                seq = self._domain_seq[dev.gid or -1] = self._domain_seq.get(dev.gid or -1, 0) + 1
                domain = f"group{dev.gid}#{seq}"
            else:
                domain = grp.domain if grp and grp.domain else f"group{dev.gid}#0"
        if dev.domain and dev.domain != domain:
            self.domains.get(dev.domain, IommuDomainState(dev.domain)).devices.discard(name)
        dev.domain = domain
        dom = self.domain(domain)
        dom.devices.add(name)
        if dev.gid is not None:
            dom.gid = dev.gid
            grp = self.groups.setdefault(dev.gid, IommuGroup(dev.gid))
            grp.domain = domain
            grp.default_domain = grp.default_domain or domain
        return out

    def rename_domain(self, old: str, new: str) -> None:
        """A synthetic domain name (``group5#1``) turned out to be the domain at address ``new``."""
        if old == new or old not in self.domains:
            return
        dom = self.domains.pop(old)
        if new in self.domains:  # merge what is known under the address
            known = self.domains[new]
            known.devices |= dom.devices
            known.gid = known.gid if known.gid is not None else dom.gid
            dom = known
        dom.name = new
        self.domains[new] = dom
        for d in self.devices.values():
            if d.domain == old:
                d.domain = new
        for g in self.groups.values():
            g.domain = new if g.domain == old else g.domain
            g.default_domain = new if g.default_domain == old else g.default_domain
        for m in self.ledger.iter_live():
            if m.domain == old:
                m.domain = new

    def set_domain_type(self, domain: str, type_: str) -> None:
        """Record a domain's type (``DMA``, ``DMA-FQ``, ``identity``)."""
        self.domain(domain).type = type_

    def driver_bind(self, ts_ns: int, name: str, key: EventKey | None = None) -> list[Finding]:
        """A driver bound (``really_probe`` kprobe, uevent ``bind``)."""
        self.device(name).bound = True
        return []

    def driver_unbind(self, ts_ns: int, name: str, key: EventKey | None = None) -> list[Finding]:
        """A driver unbound (``device_release_driver_internal`` kprobe, uevent ``unbind``): dma-debug's check point.

        Returns:
            ``outstanding_mappings`` (warning) when the device still has live mappings.
        """
        self.device(name).bound = False
        return self._outstanding(ts_ns, name, "driver unbind", Severity.WARNING, key)

    def remove_device_from_group(self, ts_ns: int, gid: int | None, name: str,
                                 key: EventKey | None = None) -> list[Finding]:
        """``iommu:remove_device_from_group`` (``iommu_release_device``).

        Returns:
            ``outstanding_mappings`` (error) when the device still has live mappings: their later unmap will find
            no domain.
        """
        out = self._outstanding(ts_ns, name, "device release", Severity.ERROR, key)
        dev = self.device(name)
        dev.released = True
        dev.released_ns = ts_ns
        dev.releases += 1
        dev.bound = False
        grp = self.groups.get(gid if gid is not None else -1) or (self.groups.get(dev.gid) if dev.gid is not None
                                                                   else None)
        if grp is not None:
            grp.devices.discard(name)
        if dev.domain:
            self.domain(dev.domain).devices.discard(name)
        return out

    def domain_free(self, ts_ns: int, domain: str, key: EventKey | None = None) -> list[Finding]:
        """The domain is destroyed (``put_iova_domain`` / ``iommu_domain_free``).

        Returns:
            ``outstanding_mappings`` (error) for each device with mappings made in this domain still live.
        """
        dom = self.domain(domain)
        dom.freed_ns = ts_ns
        out: list[Finding] = []
        by_dev: dict[str, list[DmaMapping]] = {}
        for m in self.ledger.iter_live():
            if m.domain == domain:
                by_dev.setdefault(m.device, []).append(m)
        for dev, maps in sorted(by_dev.items()):
            out.append(self._finding_outstanding(ts_ns, dev, maps, f"domain {domain} destroyed", Severity.ERROR,
                                                 key, domain))
        return out

    def _outstanding(self, ts_ns: int, name: str, when: str, sev: Severity, key: EventKey | None) -> list[Finding]:
        maps = self.ledger.live(name)
        if not maps:
            return []
        return [self._finding_outstanding(ts_ns, name, maps, when, sev, key, self.device(name).domain)]

    def _finding_outstanding(self, ts_ns: int, dev: str, maps: list[DmaMapping], when: str, sev: Severity,
                             key: EventKey | None, domain: str | None) -> Finding:
        cert, gap = self._certainty(maps)
        pools = sorted({m.owner for m in maps if m.owner})
        evs = tuple(m.event for m in maps[:32] if m.event) + ((key,) if key else ())
        msg = (f"{len(maps)} DMA mapping(s) of {dev} still live at {when}"
               + (f" (held by {', '.join(pools)}; page_pool DMA tracking, ee62ce7a1d90 in v6.15, unmaps them)"
                  if pools else ""))
        return Finding("outstanding_mappings", sev if cert is Certainty.EXACT else Severity.WARNING, ts_ns, msg,
                       domain=domain, device=dev, certainty=cert, gap=gap, events=evs,
                       details={"count": len(maps), "bytes": sum(m.size for m in maps), "when": when,
                                "mappings": [m.to_dict() for m in maps[:32]]})

    # -- mappings -----------------------------------------------------------------------------------------

    def dma_map(self, m: DmaMapping) -> list[Finding]:
        """Record a mapping; the device's current domain is filled in when unset."""
        dev = self.devices.get(m.device) or self.device(m.device)
        if m.domain is None:
            m.domain = dev.domain
        self.ledger.map(m)
        if m.owner:
            self.pools.setdefault(m.owner, set()).add((m.device, m.dma_addr))
        if dev.released:
            cert, gap = self._certainty([m])
            return [Finding("map_after_release", Severity.ERROR if cert is Certainty.EXACT else Severity.WARNING,
                            m.ts_ns, f"{m.device} mapped 0x{m.dma_addr:x} after its release",
                            domain=m.domain, device=m.device, certainty=cert, gap=gap,
                            events=(m.event,) if m.event else ())]
        return []

    def dma_unmap(self, ts_ns: int, device: str, dma_addr: int | None, size: int | None, *, call: str,
                  key: EventKey | None = None, phys: int | None = None, exact: bool = True) -> list[Finding]:
        """Remove a mapping; report an unmap that arrives after the device was released or its domain freed.

        Args:
            dma_addr: the handle (``None`` with ``phys`` for ``dma_unmap_sg``).
            phys: first physical address, for sg unmaps.
            exact: the unmap came from a tracepoint.
        """
        if dma_addr is None and phys is not None:
            m = self.ledger.unmap_phys(device, phys)
        elif dma_addr is not None:
            m = self.ledger.unmap(device, dma_addr)
        else:
            m = None
        addr = dma_addr if dma_addr is not None else (m.dma_addr if m else None)
        if m is None and addr is not None and (device, addr) in self.scrubbed:
            self.scrubbed.discard((device, addr))  # the kernel's own page_pool_scrub unmap, already modelled
            self.ledger.unmatched_unmaps -= 1
            return []
        if m is not None and m.owner:
            self.pools.get(m.owner, set()).discard((device, m.dma_addr))
        dev = self.devices.get(device)
        gone = dev is not None and dev.released
        dom = self.domains.get(m.domain) if m and m.domain else (self.domains.get(dev.domain) if dev and
                                                                  dev.domain else None)
        dom_gone = dom is not None and dom.freed_ns is not None and dom.freed_ns <= ts_ns
        if not (gone or dom_gone):
            return []
        what = "its release" if gone else f"the free of domain {dom.name if dom else '?'}"
        evs = ((m.event,) if m and m.event else ()) + ((key,) if key else ())
        # the mapping itself may predate the trace; the unmap after release is proven by the two events alone
        cert = Certainty.EXACT if exact and not self.gaps else Certainty.UNCERTAIN
        gap = None if cert is Certainty.EXACT else "; ".join(self.gaps or ["unmap seen through a kprobe"])
        return [Finding("unmap_after_release", Severity.ERROR if cert is Certainty.EXACT else Severity.WARNING,
                        ts_ns, f"{device} unmapped 0x{(addr or 0):x} after {what}: iommu_get_dma_domain() has no "
                        "valid domain (crash or use-after-free of the iova_domain)",
                        domain=dom.name if dom else None, device=device, certainty=cert, gap=gap, events=evs,
                        details={"call": call, "size": size, "mapped_ns": m.ts_ns if m else None})]

    # -- validators ---------------------------------------------------------------------------------------

    def validate_topology(self) -> None:
        """Check that groups, domains, devices and the ledger agree with each other.

        Raises:
            ModelError: a group lists a device that names another group, a domain lists a device attached
                elsewhere, a live mapping is filed under the wrong device, or a released device is still in a group.
        """
        for gid, grp in self.groups.items():
            for name in grp.devices:
                dev = self.devices.get(name)
                if dev is None or dev.gid != gid:
                    raise ModelError(f"group {gid} lists device {name}, which names group "
                                     f"{dev.gid if dev else None}")
                if dev.released:
                    raise ModelError(f"group {gid} still lists released device {name}")
        for dname, dom in self.domains.items():
            for name in dom.devices:
                dev = self.devices.get(name)
                if dev is None or dev.domain != dname:
                    raise ModelError(f"domain {dname} lists device {name}, which is attached to "
                                     f"{dev.domain if dev else None}")
        for name, maps in self.ledger.by_device.items():
            for addr, m in maps.items():
                if m.device != name or m.dma_addr != addr:
                    raise ModelError(f"ledger of {name} files a mapping of {m.device} at 0x{m.dma_addr:x} under "
                                     f"0x{addr:x}")

    # -- page_pool (seed c) -------------------------------------------------------------------------------

    def page_pool_destroy(self, ts_ns: int, pool: str, key: EventKey | None = None) -> list[Finding]:
        """``page_pool_destroy``: with DMA tracking (v6.15+), ``page_pool_scrub`` unmaps every page still mapped."""
        if pool in self.destroyed_pools:
            return []
        self.destroyed_pools.add(pool)
        if not self.page_pool_dma_tracking:
            return []
        for dev, addr in sorted(self.pools.pop(pool, set())):
            if self.ledger.unmap(dev, addr) is not None:
                self.scrubbed.add((dev, addr))
        return []
