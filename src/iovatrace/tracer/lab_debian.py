"""The lab's step 1: a Debian kernel package, downloaded with apt and unpacked, never installed.

For another Debian suite the apt source is derived at run time from this machine's own apt configuration with the
suite changed, written into a private apt directory: the machine's apt setup is left as it was, and no archive
host is written anywhere in the project. See :mod:`.lab_run` for the whole lab.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import CaptureError

__all__ = ["derive_sources", "resolve_package", "fetch_kernel_package", "unpack_kernel", "run_tool"]


def run_tool(cmd: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a lab tool; a missing tool or a failure becomes one CaptureError naming the step."""
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise CaptureError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        raise CaptureError(f"{what} failed (exit {exc.returncode}): {' / '.join(tail)}") from exc


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
        run_tool(["apt-get", *opts, "-q", "update"], f"apt-get update ({suite})")
        stamp.touch()
    return opts


def resolve_package(package: str | None, opts: list[str]) -> str:
    """The concrete kernel image package: ``package`` itself, or what ``linux-image-amd64`` depends on.

    Raises:
        CaptureError: apt does not know the package.
    """
    name = package or "linux-image-amd64"
    out = run_tool(["apt-cache", *opts, "depends", name], f"apt-cache depends {name}").stdout
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
    run_tool(["apt-get", *opts, "-q", "download", pkg], f"apt-get download {pkg}", cwd=debs)
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
        run_tool(["apt-get", "-q", "update"], "apt-get update")
        pkg = resolve_package(package, opts)
    return pkg, _download(pkg, opts, work, log)


def unpack_kernel(deb: Path, work: Path) -> tuple[Path, str]:
    kdir = work / "kernels" / deb.stem
    if not (kdir / ".unpacked").exists():
        shutil.rmtree(kdir, ignore_errors=True)
        kdir.mkdir(parents=True)
        run_tool(["dpkg-deb", "-x", str(deb), str(kdir)], f"dpkg-deb -x {deb.name}")
        (kdir / ".unpacked").touch()
    vmlinuz = sorted((kdir / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise CaptureError(f"{deb.name}: no boot/vmlinuz-* inside (not a kernel image package?)")
    return kdir, vmlinuz[-1].name[len("vmlinuz-"):]
