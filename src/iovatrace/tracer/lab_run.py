"""``iovatrace lab run``: record a real trace from a Debian kernel booted under QEMU with an emulated Intel IOMMU.

Theory of operation
-------------------
1. **Kernel**: ``apt-get download`` the kernel package (default: what ``linux-image-amd64`` depends on) into the
   work cache and unpack it with ``dpkg-deb -x`` -- never installed. For another Debian suite (``--suite trixie``)
   the apt source is derived at run time from this machine's own apt configuration with the suite changed, written
   into a private apt directory (``-o Dir::Etc::sourcelist=... -o Dir::State::Lists=...``): the machine's apt
   setup is left as it was, and no archive host is written anywhere in the project.
2. **Probes**: the package's ``System.map`` is the kernel's symbol table, so :func:`record.build_plan` checks
   every probe against the real kernel before it boots, and :func:`script.render_script` turns the plan into the
   shell recorder the guest runs (the guest has no Python): the definitions have one source.
3. **initramfs**: static busybox, trace-cmd with its shared libraries and libtraceevent plugins, and the module
   closure of e1000e/nvme/9p/virtio (decompressed: busybox modprobe cannot load ``.ko.xz``), ``depmod``-ed.
4. **Boot**: ``qemu-system-x86_64`` q35 + ``intel-iommu`` (``caching-mode=on`` for strict; lazy needs it off,
   otherwise the guest forces strict mode), e1000e on user networking (TFTP served from the share), an NVMe disk,
   the 9p share carrying ``guest.sh``, the recorder and the workload. KVM when ``/dev/kvm`` works and the CPU has
   vmx/svm, else software emulation (TCG).
5. **Results** in OUTPUT: ``trace.dat`` (+ ``trace.txt`` with ``--text``), the kprobe sidecars (definitions as the
   kernel listed them, ``kprobe_profile`` before/after = hits and misses), ring statistics, dmesg, IOMMU groups,
   the console log, and ``lab.json`` with the timings of each step.
"""

from __future__ import annotations

import gzip
import json
import lzma
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

__all__ = ["LabResult", "run_lab", "fetch_kernel_package", "default_work_dir", "derive_sources", "resolve_package",
           "check_tools", "build_initramfs", "kvm_usable"]

GUEST_MODULES = ("e1000e", "nvme", "virtio_pci", "9p", "9pnet_virtio")
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


def _run(cmd: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise CaptureError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        raise CaptureError(f"{what} failed (exit {exc.returncode}): {' / '.join(tail)}") from exc


# ---------------------------------------------------------------------------------------------------------------
# 1. kernel package
# ---------------------------------------------------------------------------------------------------------------


def derive_sources(suite: str, apt_etc: Path = Path("/etc/apt")) -> str:
    """A deb822 sources text for ``suite``, derived from this machine's apt configuration.

    The first source that carries the machine's main archive (its first ``deb`` entry whose suite has no ``-``
    suffix such as ``-security``/``-updates``) is copied with its suite replaced; URIs, components and keyring are
    the machine's own.

    Raises:
        CaptureError: no usable ``deb`` source in the machine's apt configuration.
    """
    stanzas: list[dict[str, str]] = []
    parts = sorted((apt_etc / "sources.list.d").glob("*.sources")) if (apt_etc / "sources.list.d").is_dir() else []
    for p in parts:
        for block in re.split(r"\n\s*\n", p.read_text(encoding="utf-8", errors="replace")):
            d: dict[str, str] = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, _, v = line.partition(":")
                d[k.strip()] = v.strip()
            if d.get("Types", "").split() and "deb" in d["Types"].split() and d.get("URIs") and d.get("Suites"):
                stanzas.append(d)
    lists = [apt_etc / "sources.list"] + (sorted((apt_etc / "sources.list.d").glob("*.list"))
                                          if (apt_etc / "sources.list.d").is_dir() else [])
    for p in lists:
        if not p.is_file():
            continue
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line)
            if m:
                d = {"Types": "deb", "URIs": m.group(2), "Suites": m.group(3), "Components": m.group(4).strip()}
                opts = m.group(1) or ""
                k = re.search(r"signed-by=(\S+?)\]?(\s|$)", opts)
                if k:
                    d["Signed-By"] = k.group(1).rstrip("]")
                stanzas.append(d)
    for d in stanzas:
        if any("-" not in s and "/" not in s for s in d["Suites"].split()):
            out = dict(d)
            out["Suites"] = suite
            out["Components"] = d.get("Components", "main")
            return "".join(f"{k}: {v}\n" for k, v in out.items() if k in
                           ("Types", "URIs", "Suites", "Components", "Signed-By"))
    raise CaptureError(f"Cannot derive an apt source for suite {suite!r}: no main-archive 'deb' source in "
                       f"{apt_etc}/sources.list(.d)")


def _apt_opts(suite: str | None, work: Path, log: Callable[[str], None]) -> list[str]:
    if not suite:
        return []
    d = work / "apt" / suite
    (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (d / "sources.list.d").mkdir(exist_ok=True)
    src = d / "private.sources"
    src.write_text(derive_sources(suite))
    opts = ["-o", f"Dir::Etc::sourcelist={src}", "-o", f"Dir::Etc::sourceparts={d / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}"]
    stamp = d / "lists" / ".updated"
    if not stamp.exists() or time.time() - stamp.stat().st_mtime > 6 * 3600:
        log(f"lab: apt-get update for suite {suite} (private apt directory {d})")
        (d / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        _run(["apt-get", *opts, "-q", "update"], f"apt-get update ({suite})")
        stamp.touch()
    return opts


def resolve_package(package: str | None, opts: list[str]) -> str:
    """The concrete kernel image package: ``package`` itself, or what ``linux-image-amd64`` depends on.

    Raises:
        CaptureError: apt does not know the package.
    """
    name = package or "linux-image-amd64"
    out = _run(["apt-cache", *opts, "depends", name], f"apt-cache depends {name}").stdout
    if package and not package.endswith("-amd64") and not package.endswith("-unsigned"):
        return package
    if name == "linux-image-amd64" or not re.search(r"linux-image-\d", name):
        m = re.search(r"Depends:\s*(linux-image-\d\S*)", out)
        if not m:
            raise CaptureError(f"apt-cache depends {name}: no linux-image-<version> dependency found")
        return m.group(1)
    return name


def _download(pkg: str, opts: list[str], work: Path, log: Callable[[str], None]) -> Path:
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    have = sorted(debs.glob(f"{pkg}_*_amd64.deb"))
    if have:
        return have[-1]
    log(f"lab: apt-get download {pkg}")
    _run(["apt-get", *opts, "-q", "download", pkg], f"apt-get download {pkg}", cwd=debs)
    have = sorted(debs.glob(f"{pkg}_*_amd64.deb"))
    if not have:
        raise CaptureError(f"apt-get download {pkg} left no {pkg}_*_amd64.deb in {debs}")
    return have[-1]


def fetch_kernel_package(package: str | None, suite: str | None, work: Path,
                         log: Callable[[str], None] = print) -> tuple[str, Path]:
    """Resolve and download (or find in the cache) the kernel image package.

    Returns:
        (package name, path of its .deb).

    Raises:
        CaptureError: apt cannot resolve or download it.
    """
    opts = _apt_opts(suite, work, log)
    try:
        pkg = resolve_package(package, opts)
    except CaptureError:
        if opts or os.geteuid() != 0:
            raise
        log("lab: apt does not know the package: apt-get update")  # fresh containers ship without package lists
        _run(["apt-get", "-q", "update"], "apt-get update")
        pkg = resolve_package(package, opts)
    return pkg, _download(pkg, opts, work, log)


def _unpack(deb: Path, work: Path) -> tuple[Path, str]:
    kdir = work / "kernels" / deb.stem
    if not (kdir / ".unpacked").exists():
        shutil.rmtree(kdir, ignore_errors=True)
        kdir.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(kdir)], f"dpkg-deb -x {deb.name}")
        (kdir / ".unpacked").touch()
    vmlinuz = sorted((kdir / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise CaptureError(f"{deb.name}: no boot/vmlinuz-* inside (not a kernel image package?)")
    return kdir, vmlinuz[-1].name[len("vmlinuz-"):]


# ---------------------------------------------------------------------------------------------------------------
# 3. initramfs
# ---------------------------------------------------------------------------------------------------------------


def _modules_dir(kdir: Path, kver: str) -> Path:
    for cand in (kdir / "lib" / "modules" / kver, kdir / "usr" / "lib" / "modules" / kver):
        if cand.is_dir():
            return cand
    raise CaptureError(f"no modules for {kver} under {kdir} (lib/modules or usr/lib/modules)")


def _decompress(src: Path) -> bytes:
    data = src.read_bytes()
    if src.suffix == ".xz":
        return lzma.decompress(data)
    if src.suffix == ".gz":
        return gzip.decompress(data)
    if src.suffix == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _copy_with_libs(binary: str, root: Path) -> None:
    dst = root / binary.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, dst)
    out = subprocess.run(["ldd", binary], text=True, capture_output=True).stdout
    for lib in re.findall(r"(/\S+)", out):
        if os.path.exists(lib):
            target = root / lib.lstrip("/")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(lib), target)


def build_initramfs(kdir: Path, kver: str, work: Path, log: Callable[[str], None]) -> Path:
    """Build (or reuse) the lab initramfs for one unpacked kernel.

    Raises:
        CaptureError: a tool or module is missing.
    """
    init_src = files("iovatrace.tracer").joinpath("lab/init").read_text()
    out = work / f"initramfs-{kver}.cpio.gz"
    stamp = work / f"initramfs-{kver}.init"
    if out.exists() and stamp.exists() and stamp.read_text() == init_src:
        return out
    log(f"lab: building the initramfs for {kver}")
    root = work / f"initramfs-root-{kver}"
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "proc", "sys", "dev", "tmp", "mnt", "etc",
              "run", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    bb = shutil.which("busybox")
    if bb is None:
        raise CaptureError("busybox not found (apt-get install busybox-static)")
    if "not a dynamic" not in subprocess.run(["ldd", bb], text=True, capture_output=True).stdout + \
            subprocess.run(["ldd", bb], text=True, capture_output=True).stderr:
        _copy_with_libs(bb, root)  # a dynamic busybox: bring its libraries (busybox-static needs none)
    shutil.copy2(bb, root / "bin" / "busybox")
    for applet in _run([bb, "--list-full"], "busybox --list-full").stdout.split():
        p = root / applet
        if not p.exists() and not p.is_symlink():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to("/bin/busybox")
    tc = shutil.which("trace-cmd")
    if tc:
        _copy_with_libs(tc, root)
        for plug_dir in Path("/usr/lib").glob("*/traceevent/plugins"):
            dst = root / str(plug_dir).lstrip("/")
            shutil.copytree(plug_dir, dst, dirs_exist_ok=True)
            for so in plug_dir.glob("*.so"):
                _copy_with_libs(str(so), root)
    else:
        log("lab: warning: no trace-cmd on this machine: the guest records text only (no trace.dat)")
    md = _modules_dir(kdir, kver)
    dst_md = root / "lib" / "modules" / kver
    index = {}
    for f in md.rglob("*.ko*"):
        base = f.name.split(".ko")[0]
        index[base] = f
        index[base.replace("-", "_")] = f
    seen: set[str] = set()

    def add(mod: str) -> None:
        key = mod.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        f = index.get(key) or index.get(mod)
        if f is None:
            return  # built into the kernel
        rel = f.relative_to(md)
        plain = dst_md / str(rel).split(".ko")[0]
        plain = plain.with_name(plain.name + ".ko")
        plain.parent.mkdir(parents=True, exist_ok=True)
        plain.write_bytes(_decompress(f))
        deps = _run(["modinfo", "-F", "depends", str(plain)], f"modinfo {plain.name}").stdout.strip()
        for d in filter(None, deps.split(",")):
            add(d.strip())

    for m in GUEST_MODULES:
        add(m)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (md / name).exists():
            shutil.copy2(md / name, dst_md / name)
    _run(["depmod", "-b", str(root), kver], "depmod")
    (root / "init").write_text(init_src)
    (root / "init").chmod(0o755)
    with open(out, "wb") as fo:
        find = subprocess.Popen(["find", "."], cwd=root, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, stdin=find.stdout,
                                stdout=subprocess.PIPE)
        assert find.stdout is not None and cpio.stdout is not None
        find.stdout.close()
        with gzip.GzipFile(fileobj=fo, mode="wb", compresslevel=1) as gz:
            shutil.copyfileobj(cpio.stdout, gz)
        if cpio.wait() != 0 or find.wait() != 0:
            raise CaptureError("cpio failed while packing the initramfs")
    stamp.write_text(init_src)
    shutil.rmtree(root, ignore_errors=True)
    return out


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
    kdir, kver = _unpack(deb, work)
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
