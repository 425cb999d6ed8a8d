"""Lab pieces that need no QEMU: the private apt source derived from a machine's apt configuration, the guest
scripts' syntax, and the missing-tools report."""

from __future__ import annotations

import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest

from iovatrace.errors import CaptureError
from iovatrace.tracer.lab_run import derive_sources

URI = "http://mirror.example/debian"   # not a real archive: only the text is used


def test_derive_sources_from_deb822(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: " + URI + "\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: " + URI + "-security\nSuites: bookworm-security\nComponents: main\n")
    text = derive_sources("trixie", tmp_path)
    assert text == (f"Types: deb\nURIs: {URI}\nSuites: trixie\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def test_derive_sources_from_one_line_format(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        f"# deb-src {URI} bookworm main\ndeb [signed-by=/k.gpg] {URI}-security bookworm-security main\n"
        f"deb [arch=amd64 signed-by=/k.gpg] {URI} bookworm main contrib\n")
    text = derive_sources("bookworm-backports", tmp_path)
    assert f"URIs: {URI}\n" in text and "Suites: bookworm-backports\n" in text
    assert "Components: main contrib\n" in text and "Signed-By: /k.gpg\n" in text


def test_derive_sources_without_any_source(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="Cannot derive an apt source"):
        derive_sources("trixie", tmp_path)


@pytest.mark.parametrize("name", ["init", "guest.sh", "workload-short.sh", "workload-plain.sh",
                                  "workload-stress.sh"])
def test_guest_scripts_are_valid_sh(name: str, tmp_path: Path) -> None:
    sh = shutil.which("sh")
    assert sh
    p = tmp_path / name
    p.write_text(files("iovatrace.tracer").joinpath("lab", name).read_text())
    subprocess.run([sh, "-n", str(p)], check=True)
