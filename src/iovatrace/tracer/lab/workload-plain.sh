#!/bin/sh
# DMA workload: e1000e (ICMP and a TFTP download from QEMU's user-net gateway), NVMe direct and buffered I/O of
# several sizes, a PCI remove + rescan of the NVMe function (domain torn down and re-created: observed from its
# creation), and cpu1 offline/online (iova_cpuhp_dead flushes its rcache).
set -x
ping -c 20 -A -s 1400 10.0.2.2 | tail -1
tftp -g -b 1468 -r blob.bin -l /tmp/blob.bin 10.0.2.2 && rm -f /tmp/blob.bin
for bs in 4k:1000 128k:100 1M:16; do
  dd if=/dev/nvme0n1 of=/dev/null bs=${bs%:*} count=${bs#*:} iflag=direct 2>&1 | tail -1; done
dd if=/dev/zero of=/dev/nvme0n1 bs=64k count=64 seek=2048 oflag=direct 2>&1 | tail -1
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/nvme0n1 of=/dev/null bs=1M count=32 2>&1 | tail -1
NV=$(basename $(readlink -f /sys/class/nvme/nvme0/device))
echo 1 > /sys/bus/pci/devices/$NV/remove
sleep 1
echo 1 > /sys/bus/pci/rescan
i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 40 ]; do sleep 0.25; i=$((i+1)); done
dd if=/dev/nvme0n1 of=/dev/null bs=4k count=200 iflag=direct 2>&1 | tail -1
echo 0 > /sys/devices/system/cpu/cpu1/online
sleep 1
echo 1 > /sys/devices/system/cpu/cpu1/online
ping -c 5 -A 10.0.2.2 | tail -1
sleep 1
