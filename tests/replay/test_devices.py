"""Topology and mapping ledger (replay/devices.py)."""

from __future__ import annotations

from iovatrace.replay.devices import DmaDirection, DmaMapping, Topology, direction_from_prot
from iovatrace.replay.findings import Certainty, Severity


def _m(dev: str, addr: int, t: int, **kw) -> DmaMapping:
    return DmaMapping(dev, addr, 4096, kw.pop("direction", DmaDirection.TO_DEVICE), t, "dma_map_page", (t, 0, t),
                      **kw)


def test_direction_from_values_names_and_prot_bits() -> None:
    assert DmaDirection.of(2) is DmaDirection.FROM_DEVICE
    assert DmaDirection.of("DMA_TO_DEVICE") is DmaDirection.TO_DEVICE
    assert DmaDirection.of(9) is DmaDirection.UNKNOWN
    # dma_info_to_prot: TO_DEVICE -> IOMMU_READ (1), FROM_DEVICE -> IOMMU_WRITE (2); +IOMMU_CACHE (4)
    assert direction_from_prot(5) is DmaDirection.TO_DEVICE
    assert direction_from_prot(6) is DmaDirection.FROM_DEVICE
    assert direction_from_prot(7) is DmaDirection.BIDIRECTIONAL


def test_ledger_follows_maps_and_unmaps_per_device() -> None:
    t = Topology()
    t.add_device_to_group(1, 3, "a")
    t.add_device_to_group(1, 4, "b")
    t.dma_map(_m("a", 0x1000, 2))
    t.dma_map(_m("b", 0x1000, 3))
    t.dma_map(_m("a", 0x2000, 4, phys=0x7000))
    assert len(t.ledger) == 3
    assert t.dma_unmap(5, "a", 0x1000, 4096, call="dma_unmap_page") == []
    assert t.dma_unmap(6, "a", None, None, call="dma_unmap_sg", phys=0x7000) == []
    assert [m.device for m in t.ledger.iter_live()] == ["b"]
    assert t.dma_unmap(7, "a", 0x9000, 4096, call="dma_unmap_page") == []  # made before the trace: no finding
    assert t.ledger.unmatched_unmaps == 1


def test_default_domain_change_moves_devices_and_frees_the_old_domain() -> None:
    t = Topology()
    t.add_device_to_group(1, 5, "nvme")
    t.attach_device_to_domain(2, "nvme", "0xd1")
    t.dma_map(_m("nvme", 0x1000, 3))
    assert t.ledger.live("nvme")[0].domain == "0xd1"
    t.dma_unmap(4, "nvme", 0x1000, 4096, call="dma_unmap_page")
    t.attach_device_to_domain(5, "nvme", "0xd2")  # sysfs type change: new default domain
    assert t.domain_free(6, "0xd1") == []
    assert t.groups[5].domain == "0xd2" and t.devices["nvme"].domain == "0xd2"
    assert t.domains["0xd1"].devices == set() and t.domains["0xd2"].devices == {"nvme"}


def test_domain_free_with_live_mappings_and_a_late_unmap() -> None:
    t = Topology()
    t.add_device_to_group(1, 5, "nvme")
    t.attach_device_to_domain(2, "nvme", "0xd1")
    t.dma_map(_m("nvme", 0x1000, 3))
    (f,) = t.domain_free(4, "0xd1")
    assert f.kind == "outstanding_mappings" and f.severity is Severity.ERROR and f.domain == "0xd1"
    (g,) = t.dma_unmap(5, "nvme", 0x1000, 4096, call="dma_unmap_page", key=(5, 0, 0))
    assert g.kind == "unmap_after_release" and "free of domain 0xd1" in g.message
    assert g.certainty is Certainty.EXACT


def test_map_after_release_and_fresh_start_after_re_add() -> None:
    t = Topology()
    t.add_device_to_group(1, 5, "nvme")
    t.remove_device_from_group(2, 5, "nvme")
    (f,) = t.dma_map(_m("nvme", 0x1000, 3))
    assert f.kind == "map_after_release"
    t.dma_unmap(4, "nvme", 0x1000, 4096, call="dma_unmap_page")
    t.add_device_to_group(5, 5, "nvme")  # PCI rescan
    assert t.dma_map(_m("nvme", 0x2000, 6)) == []
    assert t.devices["nvme"].releases == 1


def test_release_race_only_reported_in_bug_mode() -> None:
    for race, kinds in ((False, []), (True, ["attach_after_release"])):
        t = Topology(release_race=race)
        t.add_device_to_group(1, 5, "zpci")
        t.remove_device_from_group(2, 5, "zpci")
        assert [f.kind for f in t.attach_device_to_domain(3, "zpci", "0xd1")] == kinds


def test_reattach_names_a_new_domain_until_its_address_is_known() -> None:
    t = Topology()
    t.add_device_to_group(1, 5, "nvme")
    t.attach_device_to_domain(2, "nvme")
    first = t.devices["nvme"].domain
    t.attach_device_to_domain(3, "nvme")  # sysfs default-domain change: a new domain
    second = t.devices["nvme"].domain
    assert first == "group5#0" and second == "group5#1"
    t.rename_domain(second, "0xff00")
    assert t.devices["nvme"].domain == "0xff00" and t.groups[5].domain == "0xff00"
    assert t.domains["0xff00"].devices == {"nvme"} and first in t.domains


def test_validate_topology_names_what_disagrees() -> None:
    import pytest

    from iovatrace.errors import ModelError

    t = Topology()
    t.add_device_to_group(1, 5, "nvme")
    t.attach_device_to_domain(2, "nvme", "0xd1")
    t.dma_map(_m("nvme", 0x1000, 3))
    t.validate_topology()
    t.devices["nvme"].gid = 6
    with pytest.raises(ModelError, match="group 5 lists device nvme, which names group 6"):
        t.validate_topology()
    t.devices["nvme"].gid = 5
    t.domains["0xd2"] = type(t.domains["0xd1"])("0xd2", devices={"nvme"})
    with pytest.raises(ModelError, match="domain 0xd2 lists device nvme, which is attached to 0xd1"):
        t.validate_topology()
    del t.domains["0xd2"]
    t.ledger.by_device["nvme"][0x5000] = t.ledger.by_device["nvme"].pop(0x1000)
    with pytest.raises(ModelError, match="files a mapping of nvme at 0x1000 under 0x5000"):
        t.validate_topology()


def test_seed_traces_keep_the_topology_valid() -> None:
    from test_seeds_cde import seed_c_events, seed_e_events

    from iovatrace.replay.iommu_events import IommuLayer

    for events in (seed_c_events(), seed_e_events(attach_after=True)):
        layer = IommuLayer(None, bug_modes=["c", "e"])
        for ev in events:
            layer.step(ev)
            layer.topology.validate_topology()
            for c in layer.cookies.values():
                c.validate_fq()
