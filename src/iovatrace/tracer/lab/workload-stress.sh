#!/bin/sh
# Stress workload (tracing is already on, so every domain created here is observed from its creation):
#  1 PCI remove + rescan of the NVMe disk and the e1000e NIC: new DMA domains (init_iova_domain in the trace)
#  2 traffic on both CPUs at once: pings of several sizes, a TFTP download, O_DIRECT dd from 4 KiB to 2 MiB
#  3 AIO bursts (/tmp/aioburst when present): thousands of 4 KiB requests in flight (rcache depot fill/overflow),
#    then misaligned 128 KiB requests (33-page IOVAs, freed to the tree; 32-bit space pressure with 1 GiB RAM)
#  4 NIC down on cpu1, up on cpu0 (its 256 RX buffers unmapped on one CPU, mapped on the other)
#  5 cpu1 offline during traffic (iova_cpuhp_dead), back online
#  6 NVMe group default-domain type changes with the driver unbound: DMA-FQ, identity, DMA, then rebound
T=/sys/kernel/tracing; GW=10.0.2.2
mark() { echo "lab: $*" > $T/trace_marker 2>/dev/null; echo "== $(cut -d' ' -f1 /proc/uptime) $*"; }
aio() { [ -x /tmp/aioburst ] && taskset "$@"; }
waitdev() { i=0; while [ $i -lt 60 ]; do [ -b /dev/nvme0n1 ] && [ -e /sys/class/net/eth0 ] && break; sleep 0.25; i=$((i+1)); done; }
nicup() { ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0 2>/dev/null; i=0
  while [ $i -lt 40 ] && [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ]; do sleep 0.25; i=$((i+1)); done; }
rd() { taskset $1 dd if=/dev/nvme0n1 of=/dev/null bs=$2 count=$3 skip=$4 iflag=direct 2>&1 | tail -1; }

NV=$(basename $(readlink -f /sys/class/nvme/nvme0/device)); NIC=$(basename $(readlink -f /sys/class/net/eth0/device))
mark "1 remove+rescan $NV $NIC"
echo 1 > /sys/bus/pci/devices/$NV/remove; echo 1 > /sys/bus/pci/devices/$NIC/remove
sleep 0.5; echo 1 > /sys/bus/pci/rescan; waitdev; nicup
NV=$(basename $(readlink -f /sys/class/nvme/nvme0/device)); G=$(basename $(readlink /sys/bus/pci/devices/$NV/iommu_group))

mark "2 traffic on both cpus"
taskset 1 ping -q -A -s 1400 -w 6 $GW > /tmp/p1 2>&1 &
taskset 2 ping -q -A -s 8000 -w 6 $GW > /tmp/p2 2>&1 &
taskset 2 tftp -g -b 1468 -r blob.bin -l /dev/null $GW &
for bs in 4k 12k 64k 132k 512k 2M; do rd 1 $bs 24 0; rd 2 $bs 24 8192; done
wait; cat /tmp/p1 /tmp/p2 | grep transmitted

mark "3 aio bursts"
aio 1 /tmp/aioburst /dev/nvme0n1 3000 4096 & aio 2 /tmp/aioburst /dev/nvme0n1 3000 4096 0 w & wait; sleep 1
aio 1 /tmp/aioburst /dev/nvme0n1 2000 131072 512 & aio 2 /tmp/aioburst /dev/nvme0n1 2000 131072 512 & wait; sleep 0.5
aio 1 /tmp/aioburst /dev/nvme0n1 1500 4096 & aio 2 /tmp/aioburst /dev/nvme0n1 1500 8192 & wait

mark "4 nic moves between cpus"
for i in 1 2; do
  taskset 2 ping -q -A -s 1400 -c 100 $GW | grep transmitted
  taskset 2 ip link set eth0 down; sleep 0.3; taskset 1 ip link set eth0 up; nicup
done

mark "5 cpu1 offline during traffic"
taskset 1 ping -q -A -s 1400 -w 4 $GW > /tmp/p3 2>&1 &
rd 2 64k 200 0 &
sleep 1; echo 0 > /sys/devices/system/cpu/cpu1/online
aio 1 /tmp/aioburst /dev/nvme0n1 1500 4096; sleep 0.5
echo 1 > /sys/devices/system/cpu/cpu1/online; wait

mark "6 nvme group $G type changes"
for ty in DMA-FQ identity DMA; do
  echo $NV > /sys/bus/pci/drivers/nvme/unbind
  echo $ty > /sys/kernel/iommu_groups/$G/type || echo "type $ty refused"
  echo $NV > /sys/bus/pci/drivers/nvme/bind; waitdev
  mark "group $G is $(cat /sys/kernel/iommu_groups/$G/type)"
  rd 1 128k 16 0 & rd 2 4k 100 5000 & wait
done
sleep 1
mark "end"
