#!/bin/sh
# Short DMA workload (CI): NIC pings, NVMe O_DIRECT reads and writes, and a PCI remove + rescan of the NVMe
# function so the new DMA domain is observed from its creation (init_iova_domain) to the end of the trace.
set -x
ping -c 10 -A -s 1400 10.0.2.2 | tail -1
dd if=/dev/nvme0n1 of=/dev/null bs=4k count=300 iflag=direct 2>&1 | tail -1
NV=$(basename $(readlink -f /sys/class/nvme/nvme0/device))
echo 1 > /sys/bus/pci/devices/$NV/remove
sleep 0.5
echo 1 > /sys/bus/pci/rescan
i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 40 ]; do sleep 0.25; i=$((i+1)); done
dd if=/dev/nvme0n1 of=/dev/null bs=4k count=400 iflag=direct 2>&1 | tail -1
dd if=/dev/nvme0n1 of=/dev/null bs=128k count=40 iflag=direct 2>&1 | tail -1
dd if=/dev/zero of=/dev/nvme0n1 bs=64k count=32 seek=2048 oflag=direct 2>&1 | tail -1
dd if=/dev/nvme0n1 of=/dev/null bs=1M count=4 iflag=direct 2>&1 | tail -1
sleep 0.2
