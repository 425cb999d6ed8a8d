"""The lab's step 3: an initramfs with static busybox, trace-cmd and its libraries, and the guest's modules.

Modules are the closure of e1000e/nvme/9p/virtio, decompressed (busybox modprobe cannot load ``.ko.xz``) and
``depmod``-ed. See :mod:`.lab_run` for the whole lab.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from ..errors import CaptureError
from .lab_debian import run_tool

__all__ = ["GUEST_MODULES", "build_initramfs"]

GUEST_MODULES = ("e1000e", "nvme", "virtio_pci", "9p", "9pnet_virtio")


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
    for applet in run_tool([bb, "--list-full"], "busybox --list-full").stdout.split():
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
        deps = run_tool(["modinfo", "-F", "depends", str(plain)], f"modinfo {plain.name}").stdout.strip()
        for d in filter(None, deps.split(",")):
            add(d.strip())

    for m in GUEST_MODULES:
        add(m)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (md / name).exists():
            shutil.copy2(md / name, dst_md / name)
    run_tool(["depmod", "-b", str(root), kver], "depmod")
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
