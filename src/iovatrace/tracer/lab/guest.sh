#!/bin/sh
# Guest side of `iovatrace lab run` (runs from the 9p share, /mnt). Kernel command line:
#   lab.workload=plain|short|stress|kallsyms   lab.text=0|1 (also the text of the same run)   lab.buf=KiB (ring buffer per CPU)
# Brings the NIC (e1000e, 10.0.2.15) and the NVMe disk up, then runs the workload under the recorder that
# `iovatrace record --emit-script` generated for this kernel (/mnt/iovatrace-record.sh); results go to /mnt/out.
for kv in $(cat /proc/cmdline); do case $kv in lab.*=*) k=${kv%%=*}; eval "LAB_${k#lab.}=${kv#*=}";; esac; done
W=${LAB_workload:-plain}; BUF=${LAB_buf:-32768}
O=/mnt/out; mkdir -p $O
echo "LAB: workload=$W text=${LAB_text:-0} kernel=$(uname -r)"
cat /proc/cmdline > $O/cmdline.txt; uname -a > $O/uname.txt
# kallsyms mode: the host checks its probe catalogue against this kernel's symbols (Debian's System.map is a stub)
[ $W = kallsyms ] && { cat /proc/kallsyms > $O/kallsyms.txt; exit 0; }
modprobe e1000e; modprobe nvme
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
i=0; while [ $i -lt 40 ]; do
  [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] && [ -b /dev/nvme0n1 ] && break; sleep 0.25; i=$((i+1)); done
echo "LAB: eth0 carrier=$(cat /sys/class/net/eth0/carrier 2>/dev/null) nvme=$(ls /dev/nvme0n1 2>&1)"
for g in /sys/kernel/iommu_groups/*; do echo "$(basename $g) $(cat $g/type) $(ls $g/devices | tr '\n' ' ')"; done > $O/iommu_groups.txt
[ -x /mnt/aioburst ] && cp /mnt/aioburst /tmp/aioburst && chmod +x /tmp/aioburst
mkdir -p /tmp/rec; OPTS="-o /tmp/rec/trace.dat -b $BUF"; [ "${LAB_text:-0}" = 1 ] && OPTS="$OPTS -t"
[ $W = stress ] && OPTS="$OPTS -e cpuhp"
T0=$(cut -d' ' -f1 /proc/uptime)
sh /mnt/iovatrace-record.sh $OPTS -- sh /mnt/workload-$W.sh > $O/record.log 2>&1
echo "LAB: recorder rc=$? after $(cut -d' ' -f1 /proc/uptime) - $T0 s"
for g in /sys/kernel/iommu_groups/*; do echo "$(basename $g) $(cat $g/type) $(ls $g/devices | tr '\n' ' ')"; done > $O/iommu_groups_after.txt
cat /sys/kernel/tracing/kprobe_events > $O/kprobe_events_after_restore.txt
cat /sys/kernel/tracing/set_event > $O/set_event_after_restore.txt
cp /tmp/rec/* $O/   # trace.dat (+ trace.txt) and the recorder's sidecars
dmesg > $O/dmesg.txt
ls -la $O
sync
