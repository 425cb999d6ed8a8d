"""dma-debug and page_pool warning parser, on report lines quoted in public kernel mail."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace.parsers.logs.dmadebug import dma_debug_table, parse_dma_debug

# Quoted in the fsl_enetc VF unbind fix (netdev): current "DMA-API: <driver> <device>:" order, no device address.
ENETC = """$ echo 0 > /sys/bus/pci/devices/0000\\:00\\:00.0/sriov_numvfs
DMA-API: pci 0000:00:01.0: device driver has pending DMA allocations while released from device [count=1]
One of leaked entries details: [size=2048 bytes] [mapped with DMA_BIDIRECTIONAL] [mapped as coherent]
WARNING: CPU: 0 PID: 2547 at kernel/dma/debug.c:853 dma_debug_device_change+0x174/0x1c8
(...)
Call trace:
 dma_debug_device_change+0x174/0x1c8
"""
# Quoted in the iavf mailbox fix (intel-wired-lan): function-name form, with a device address.
IAVF = """74626.583369: dma_debug_device_change: device driver has pending DMA allocations while released from device [count=32]
One of leaked entries details: [device address=0x0000000b27ff9000] [size=4096 bytes] [mapped with DMA_BIDIRECTIONAL] [mapped as coherent]
"""
# dmesg -T lines from a LibreQoS issue (6.8+ form with pool id) and the pre-6.8 form.
POOL = """[Tue Sep 24 22:56:32 2024] page_pool_release_retry() stalled pool shutdown: id 51, 4032 inflight 26825 sec
[  120.000000] page_pool_release_retry() stalled pool shutdown 12 inflight 60 sec
"""


def test_enetc_pending_without_device_address() -> None:
    (r,) = parse_dma_debug(ENETC)
    assert (r.kind, r.driver, r.device, r.count) == ("pending_at_release", "pci", "0000:00:01.0", 1)
    assert (r.device_address, r.size, r.mapped_with, r.mapped_as) == (None, 2048, "DMA_BIDIRECTIONAL", "coherent")
    assert r.direction == "bidirectional" and r.warn_location == "kernel/dma/debug.c:853"
    assert r.lines == [2, 3, 4]


def test_iavf_function_form_with_address() -> None:
    (r,) = parse_dma_debug(IAVF)
    assert (r.driver, r.device, r.count, r.device_address, r.size) == (None, None, 32, 0xB27FF9000, 4096)


def test_old_order_and_other_dma_api_errors() -> None:
    log = ("e1000e 0000:00:19.0: DMA-API: device driver has pending DMA allocations while released from device "
           "[count=3]\n"
           "DMA-API: mlx5_core 0000:08:00.0: device driver frees DMA memory with different size "
           "[device address=0x00000000fffff000] [map size=4096 bytes] [unmap size=2048 bytes]\n")
    a, b = parse_dma_debug(log)
    assert (a.driver, a.device, a.count) == ("e1000e", "0000:00:19.0", 3)
    assert b.kind == "dma_api" and b.message == "device driver frees DMA memory with different size"
    assert b.fields["unmap size"] == "2048 bytes" and b.device_address == 0xFFFFF000


def test_page_pool_both_forms() -> None:
    a, b = parse_dma_debug(POOL)
    assert (a.kind, a.pool_id, a.inflight, a.stalled_s) == ("page_pool_stalled", 51, 4032, 26825)
    assert (b.pool_id, b.inflight, b.stalled_s) == (None, 12, 60)


def test_details_line_far_away_is_not_attached() -> None:
    log = "DMA-API: pci 0000:00:01.0: device driver has pending DMA allocations while released from device " \
          "[count=1]\n" + "x\n" * 5 + "One of leaked entries details: [size=8 bytes]\n"
    (r,) = parse_dma_debug(log)
    assert r.size is None


def test_table() -> None:
    t = dma_debug_table(parse_dma_debug(ENETC + IAVF + POOL))
    assert t.num_rows == 4
    assert t.column("direction").to_pylist()[:2] == ["bidirectional", "bidirectional"]


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="DMA-API: []=count0x1 device address sizemapped withpage_pool inflight sec\n", max_size=300))
def test_fuzz_never_raises(text: str) -> None:
    parse_dma_debug(text)


def test_mapped_at_stack_after_the_warning_splat() -> None:
    # err_printk() WARNs, then dump_entry_trace() prints "DMA-API: Mapped at:" and the entry's stack.
    log = ("[  50.0] DMA-API: e1000e 0000:00:19.0: device driver has pending DMA allocations while released from "
           "device [count=2]\n"
           "[  50.0] One of leaked entries details: [device address=0x00000000fff00000] [size=2048 bytes] "
           "[mapped with DMA_FROM_DEVICE] [mapped as single]\n"
           "[  50.0] WARNING: CPU: 1 PID: 300 at kernel/dma/debug.c:1003 dma_debug_device_change+0x10/0x20\n"
           + "[  50.1] Call Trace:\n" + "[  50.1]  something+0x1/0x2\n" * 20 + "[  50.1] ---[ end trace ]---\n"
           "[  50.2] DMA-API: Mapped at:\n[  50.2]  debug_dma_map_page+0x6a/0x100\n"
           "[  50.2]  dma_map_page_attrs+0x90/0x250\n[  50.2]  e1000_alloc_rx_buffers+0x1a0/0x3c0 [e1000e]\n"
           "[  50.3] e1000e: eth0 NIC Link is Down\n")
    (r,) = parse_dma_debug(log)
    assert r.mapped_at == ["debug_dma_map_page", "dma_map_page_attrs", "e1000_alloc_rx_buffers"]
    assert r.warn_location == "kernel/dma/debug.c:1003"
    assert dma_debug_table([r]).column("mapped_at").to_pylist() == [r.mapped_at]
    from iovatrace.analysis.leaks import assess_dma_debug

    (text,) = assess_dma_debug([r])
    assert "mapped in e1000_alloc_rx_buffers" in text
