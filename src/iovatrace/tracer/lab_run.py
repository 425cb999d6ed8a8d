"""``iovatrace lab run``: record a real trace from a Debian kernel booted under QEMU with an emulated Intel IOMMU.

Theory of operation
-------------------
1. **Kernel** (:mod:`.lab_debian`): ``apt-get download`` the kernel package (default: what ``linux-image-amd64``
   depends on) into the work cache and unpack it with ``dpkg-deb -x`` -- never installed. For another Debian suite
   (``--suite trixie``) the apt source is derived at run time from this machine's own apt configuration with the
   suite changed, written into a private apt directory (``-o Dir::Etc::sourcelist=... -o Dir::State::Lists=...``):
   the machine's apt setup is left as it was, and no archive host is written anywhere in the project.
2. **Probes**: the package's ``System.map`` is the kernel's symbol table, so :func:`record.build_plan` checks
   every probe against the real kernel before it boots, and :func:`script.render_script` turns the plan into the
   shell recorder the guest runs (the guest has no Python): the definitions have one source.
3. **initramfs** (:mod:`.lab_initramfs`): static busybox, trace-cmd with its shared libraries and libtraceevent
   plugins, and the module closure of e1000e/nvme/9p/virtio (decompressed: busybox modprobe cannot load ``.ko.xz``),
   ``depmod``-ed.
4. **Boot**: ``qemu-system-x86_64`` q35 + ``intel-iommu`` (``caching-mode=on`` for strict; lazy needs it off,
   otherwise the guest forces strict mode), e1000e on user networking (TFTP served from the share), an NVMe disk,
   the 9p share carrying ``guest.sh``, the recorder and the workload. KVM when ``/dev/kvm`` works and the CPU has
   vmx/svm, else software emulation (TCG).
5. **Results** in OUTPUT: ``trace.dat`` (+ ``trace.txt`` with ``--text``), the kprobe sidecars (definitions as the
   kernel listed them, ``kprobe_profile`` before/after = hits and misses), ring statistics, dmesg, IOMMU groups,
   the console log, and ``lab.json`` with the timings of each step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from ..errors import CaptureError
from .lab_debian import derive_sources, fetch_kernel_package, resolve_package, unpack_kernel
from .lab_initramfs import build_initramfs

__all__ = ["LabResult", "run_lab", "fetch_kernel_package", "default_work_dir", "derive_sources", "resolve_package",
           "check_tools", "build_initramfs", "kvm_usable"]

TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static", "cpio": "cpio",
         "depmod": "kmod", "modinfo": "kmod", "dpkg-deb": "dpkg", "apt-get": "apt"}


@dataclass
class LabResult:
    """What a lab run brought back.

    Attributes:
        out_dir: the output directory.
        release: the guest kernel release.
        trace: trace.dat path, or None if the guest wrote none.
        timings: seconds per step (download, unpack, initramfs, boot_and_workload, total).
        files: names of the files in ``out_dir``.
    """

    out_dir: Path
    release: str
    trace: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the CLI."""
        t = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        return (f"lab: kernel {self.release}: {self.trace or 'NO trace.dat'}; {len(self.files)} files in "
                f"{self.out_dir} ({t})")


def default_work_dir() -> Path:
    """The lab's cache directory (``$IOVATRACE_LAB_CACHE`` or ``~/.cache/iovatrace/lab``)."""
    env = os.environ.get("IOVATRACE_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "iovatrace" / "lab"


def check_tools() -> list[str]:
    """Debian packages providing lab tools that are missing (empty = all there)."""
    return sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})


# ---------------------------------------------------------------------------------------------------------------
# 4. boot
# ---------------------------------------------------------------------------------------------------------------


def kvm_usable() -> bool:
    """KVM needs /dev/kvm AND vmx/svm in this CPU (nested KVM without them hangs)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(vmx|svm)\b", flags))


def _share(share: Path, plan_script: str, work: Path) -> None:
    share.mkdir(parents=True, exist_ok=True)
    lab = files("iovatrace.tracer").joinpath("lab")
    for name in ("guest.sh", "workload-plain.sh", "workload-short.sh", "workload-stress.sh"):
        res = lab.joinpath(name)
        if res.is_file():
            (share / name).write_text(res.read_text())
    (share / "iovatrace-record.sh").write_text(plan_script)
    aio = work / "aioburst"
    src = lab.joinpath("aioburst.c")
    if src.is_file() and not aio.exists() and shutil.which("gcc"):
        (work / "aioburst.c").write_text(src.read_text())
        subprocess.run(["gcc", "-static", "-O2", "-o", str(aio), str(work / "aioburst.c")], capture_output=True)
    if aio.exists():
        shutil.copy2(aio, share / "aioburst")
    tftp = work / "tftp"
    tftp.mkdir(exist_ok=True)
    blob = tftp / "blob.bin"
    if not blob.exists():
        blob.write_bytes(os.urandom(8 << 20))


def _nvme_image(work: Path, mib: int = 256) -> Path:
    img = work / "nvme.img"
    if not img.exists() or img.stat().st_size != mib << 20:
        with open(img, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    return img


class _Boot:
    """One QEMU machine setup (kernel, initramfs, disk); :meth:`run` boots it once into an output directory."""

    def __init__(self, kdir: Path, kver: str, initrd: Path, img: Path, work: Path, kvm: bool, timeout: int,
                 log: Callable[[str], None]) -> None:
        self.kdir, self.kver, self.initrd, self.img, self.work = kdir, kver, initrd, img, work
        self.kvm, self.timeout, self.log = kvm, timeout, log

    def run(self, out: Path, mode: str, workload: str, text: bool, *, render_script: str | None) -> list[str]:
        """Boot once with ``workload``; the guest's results end up in ``out``. Returns the kernel arguments."""
        if out.exists():
            shutil.rmtree(out)
        share = out / "share"
        _share(share, render_script or "", self.work)
        cm = "on" if mode == "strict" else "off"
        # no_timer_check: under software emulation on a busy host the IO-APIC timer check through interrupt
        # remapping can time out and panic the boot ("timer doesn't work through Interrupt-remapped IO-APIC")
        args = ["console=ttyS0", "panic=-1", "no_timer_check", "intel_iommu=on",
                f"iommu.strict={1 if mode == 'strict' else 0}",
                f"lab.workload={workload}", f"lab.text={1 if text else 0}"]
        mem, drive = "2048", ""
        if workload == "stress":
            # 1 GiB RAM: q35's 32-bit PCI hole starts at 1 GiB, a small 32-bit IOVA space; deep NVMe queues and a
            # throttled drive keep thousands of commands (IOVAs) in flight
            mem, drive = "1024", ",throttling.iops-total=4000"
            args += ["nvme.io_queue_depth=2048", "nvme.write_queues=2"]
        accel = ["-accel", "kvm", "-cpu", "host"] if self.kvm else ["-accel", "tcg", "-cpu", "max"]
        qemu = ["qemu-system-x86_64", *accel, "-smp", "2", "-m", mem, "-machine", "q35,kernel-irqchip=split",
                "-device", f"intel-iommu,intremap=on,caching-mode={cm}",
                "-kernel", str(self.kdir / "boot" / f"vmlinuz-{self.kver}"), "-initrd", str(self.initrd),
                "-append", " ".join(args), "-display", "none", "-monitor", "none",
                "-serial", f"file:{out / 'console.log'}", "-no-reboot",
                "-virtfs", f"local,path={share},mount_tag=share,security_model=none",
                "-netdev", f"user,id=n0,restrict=on,tftp={self.work / 'tftp'}", "-device", "e1000e,netdev=n0",
                "-drive", f"file={self.img},if=none,id=d0,format=raw{drive}", "-device", "nvme,drive=d0,serial=lab0"]
        self.log(f"lab: booting {self.kver} ({'kvm' if self.kvm else 'tcg'}, {mode}, workload {workload})")
        try:
            subprocess.run(qemu, check=False, timeout=self.timeout, stdin=subprocess.DEVNULL, capture_output=True)
        except subprocess.TimeoutExpired:
            self.log(f"lab: warning: guest killed after {self.timeout}s")
        res_dir = share / "out"
        if res_dir.is_dir():
            for f in res_dir.iterdir():
                shutil.move(str(f), out / f.name)
        shutil.rmtree(share, ignore_errors=True)
        return args


def run_lab(*, package: str | None = None, suite: str | None = None, mode: str = "strict",
            workload: str = "plain", text: bool = False, out_dir: str | Path = "lab-out",
            work_dir: str | Path | None = None, accel: str = "auto", timeout: int = 600,
            log: Callable[[str], None] = print) -> LabResult:
    """Download, unpack and boot a Debian kernel under QEMU, record a workload, bring the results back.

    Args:
        package: kernel image package (default: the dependency of ``linux-image-amd64``).
        suite: Debian suite to take it from (private apt directory, source derived from the machine's).
        mode: ``strict`` (iommu.strict=1) or ``lazy`` (flush queues; caching-mode off).
        workload: ``plain``, ``short`` (CI) or ``stress``.
        text: also bring back the text of the same run.
        out_dir: where the results go (replaced).
        work_dir: cache of packages, unpacked kernels, initramfs images.
        accel: ``kvm``, ``tcg`` or ``auto``.
        timeout: seconds before the guest is killed.
        log: progress sink.

    Returns:
        :class:`LabResult`.

    Raises:
        CaptureError: a tool is missing, the package cannot be had, the guest brought back no trace.
    """
    from .record import build_plan
    from .script import render_script

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    missing = check_tools()
    if missing:
        raise CaptureError(f"the lab needs these Debian packages: {' '.join(missing)} (apt-get install them; "
                           f".ci/extra-deps does)")
    work = Path(work_dir) if work_dir else default_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(out_dir)
    pkg, deb = fetch_kernel_package(package, suite, work, log)
    timings["download"] = time.monotonic() - t0
    t = time.monotonic()
    kdir, kver = unpack_kernel(deb, work)
    timings["unpack"] = time.monotonic() - t
    t = time.monotonic()
    initrd = build_initramfs(kdir, kver, work, log)
    timings["initramfs"] = time.monotonic() - t
    img = _nvme_image(work)
    use_kvm = accel == "kvm" or (accel == "auto" and kvm_usable())
    boot = _Boot(kdir, kver, initrd, img, work, use_kvm, timeout, log)
    # Debian's System.map is a stub (the real one is in the -dbg package): the kernel's own kallsyms, read by one
    # short boot and cached, is what the probes are checked against.
    ks = kdir / "kallsyms.txt"
    if not ks.exists():
        t = time.monotonic()
        kout = work / "kallsyms-boot"
        boot.run(kout, "strict", "kallsyms", False, render_script=None)
        if not (kout / "kallsyms.txt").exists():
            raise CaptureError(f"the kallsyms boot of {kver} brought back no kallsyms (see {kout}/console.log)")
        shutil.move(str(kout / "kallsyms.txt"), ks)
        timings["kallsyms_boot"] = time.monotonic() - t
    plan, _ = build_plan(None, kallsyms=str(ks), release=kver, arch="x86_64")
    for w in plan.warnings:
        log(f"lab: warning: {w}")
    t = time.monotonic()
    args = boot.run(out, mode, workload, text, render_script=render_script(plan))
    timings["boot_and_workload"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t0
    trace = out / "trace.dat"
    (out / "lab.json").write_text(json.dumps({
        "package": pkg, "deb": deb.name, "release": kver, "mode": mode, "workload": workload,
        "accel": "kvm" if use_kvm else "tcg", "kernel_args": args, "planned_kprobes": plan.definitions,
        "plan_warnings": plan.warnings, "timings_s": {k: round(v, 1) for k, v in timings.items()}}, indent=1) + "\n")
    res = LabResult(out, kver, trace if trace.exists() else None, timings, sorted(p.name for p in out.iterdir()))
    if res.trace is None:
        console = (out / "console.log").read_text(errors="replace").splitlines()[-5:] \
            if (out / "console.log").exists() else []
        raise CaptureError(f"the guest brought back no trace.dat (see {out}/console.log: "
                           f"{' / '.join(console)})")
    return res
