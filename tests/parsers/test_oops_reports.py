"""The oops parser on real IOMMU/IOVA crash reports from mailing lists and on a lab console log.

Expected titles come from syzkaller's rules as recorded in the data folder's README (computed with a port of
syzkaller's parser, or predicted from its rules); structural facts (RIP, registers, module list, ``?`` frames)
are re-derived from the raw text with simple, independent scans so that the parser is checked, not echoed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iovatrace.parsers.logs.oops import OopsReport, parse_oops

TS = re.compile(r"^(?:kernel: )?\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])? ?")


def verbatim(path: Path) -> str:
    """The log part of a reports/ file: drop the leading '#' provenance block."""
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    return "\n".join(lines[i:])


@pytest.fixture(scope="module")
def ml(shared_data: Path) -> Path:
    return shared_data / "reports" / "mailing-lists"


def _one(path: Path) -> tuple[str, list[OopsReport]]:
    text = verbatim(path)
    return text, parse_oops(text, path=path.name).reports


def test_every_report_file_parses(shared_data: Path) -> None:
    files = sorted(p for p in (shared_data / "reports").rglob("*") if p.is_file() and p.name != "README.md")
    assert len(files) >= 9
    for p in files:
        res = parse_oops(p.read_bytes(), path=str(p))
        tables = res.tables()
        assert tables["reports"].num_rows == len(res.reports)
        assert tables["frames"].num_rows == sum(len(r.frames) for r in res.reports)


def test_dheeraj_null_deref_free_iova_rcaches(ml: Path) -> None:
    path = next(ml.glob("03_*"))
    text, reps = _one(path)
    assert len(reps) == 1
    r = reps[0]
    assert r.kind == "null_deref"
    assert r.title == "BUG: unable to handle kernel NULL pointer dereference in free_iova_rcaches"
    assert r.type == "NULL-POINTER-DEREFERENCE" and not r.corrupted
    lines = text.split("\n")
    assert r.first_line == 1 + next(i for i, ln in enumerate(lines) if "BUG: kernel NULL pointer" in ln)
    assert r.last_line == 1 + next(i for i, ln in enumerate(lines) if "---[ end trace" in ln)
    f = r.fields
    assert (f.rip_symbol, f.rip_offset, f.rip_size, f.rip_module) == ("free_iova_rcaches", 0x9C, 0x110, None)
    # The header line was wrapped after "address: "; the address is on the next mail line.
    assert f.address == 0
    assert (f.cpu, f.pid, f.comm, f.kernel_release, f.taint) == (68, 3122, "avocado", "6.5.0-rc6-ChngDomainIssue", "")
    assert f.hardware == "Dell Inc. PowerEdge R6515/07PXPY, BIOS 2.3.6 07/06/2021"
    # Registers: values printed after a mail wrap ("RCX: \n0000000000000005") must be joined back.
    regs = {(g.dump, g.name): g.value for g in r.registers}
    assert regs[(0, "RAX")] == 0xFFFFFFFF9FA8C100
    assert regs[(0, "RCX")] == 5
    assert regs[(0, "R15")] == 0xFFFF9391144EBC00
    assert regs[(0, "CR4")] == 0x770EE0
    assert regs[(1, "RAX")] == 0xFFFFFFFFFFFFFFDA  # the user-mode register dump after the stack
    # Code: the faulting byte <48> is preceded by as many bytes as the text shows.
    code_text = text[text.index("RIP: 0010:free_iova_rcaches"):]
    code_text = code_text[code_text.index("Code: ") + 6:code_text.index("<48>")]
    n_before = len([t for t in code_text.split() if re.fullmatch(r"[0-9a-f]{2}", t)])
    assert r.code[0].fault_offset == n_before and r.code[0].unit == 1 and r.code[0].data[n_before] == 0x48
    # Mail-wrapped module list: every name between "Modules linked in:" and the next record.
    mod_text = text[text.index("Modules linked in:") + len("Modules linked in:"):text.index("CR2: 0000000000000000\n")]
    names = [t for ln in mod_text.split("\n") for t in TS.sub("", ln).split()]
    assert [m.name for m in r.modules] == names
    assert names[0] == "xt_CHECKSUM" and names[-1] == "wmi" and "i2c_piix4" in names
    # Every "?" frame is unreliable, every other frame reliable.
    q_lines = [i + 1 for i, ln in enumerate(text.split("\n")) if re.search(r"\]\s+\? \w+\+0x", ln)]
    assert sorted(fr.line for fr in r.frames if not fr.reliable) == q_lines
    stack_lines = [i + 1 for i, ln in enumerate(text.split("\n")) if re.search(r"\]\s+\w[\w.]*\+0x[0-9a-f]+/0x", ln)]
    assert sorted(fr.line for fr in r.frames if fr.reliable) == stack_lines
    assert [fr.symbol for fr in r.frames if fr.reliable][:2] == ["put_iova_domain", "iommu_put_dma_cookie"]
    assert {fr.section for fr in r.frames} == {"TASK"}


def test_lab_sysrq_panic_with_backtraces(shared_data: Path) -> None:
    path = shared_data / "reports" / "lab" / "sysrq_crash_console.log"
    text = path.read_text()
    reps = parse_oops(text).reports
    panic = [r for r in reps if r.kind == "panic"]
    assert len(panic) == 1
    p = panic[0]
    assert p.title == "kernel panic: sysrq triggered crash" and p.type == "DoS"
    assert p.header == "Kernel panic - not syncing: sysrq triggered crash"
    assert (p.fields.cpu, p.fields.pid, p.fields.comm, p.fields.kernel_release) == (1, 100, "guest.sh", "6.1.0-56-amd64")
    syms = [f.symbol for f in p.frames if f.reliable]
    assert syms[:4] == ["dump_stack_lvl", "panic", "sysrq_handle_crash", "__handle_sysrq.cold"]
    assert "_printk" in [f.symbol for f in p.frames if not f.reliable]
    # The sysrq-l all-CPU backtraces that precede the crash: one per CPU.
    bts = [r for r in reps if r.kind == "backtrace"]
    n_cpus = len(re.findall(r"NMI backtrace for cpu \d+", text))
    assert len(bts) == n_cpus == 2
    assert all(r.frames for r in bts)
    assert bts[-1].last_line < p.first_line


def test_hard_lockup_qi_submit_sync(ml: Path) -> None:
    _, reps = _one(next(ml.glob("04_*")))
    kinds = [r.kind for r in reps]
    assert kinds == ["hard_lockup", "panic"]
    hl, panic = reps
    assert hl.title == "BUG: hard lockup in qi_submit_sync" and hl.type == "HANG"
    assert hl.fields.rip_symbol == "qi_submit_sync" and (hl.fields.rip_offset, hl.fields.rip_size) == (0x2C0, 0x490)
    # The hand-wrapped "Tainted: G S\n OE" line is rejoined.
    assert hl.fields.cpu == 144 and hl.fields.comm == "irq/57-pciehp" and hl.fields.taint == "GSOE"
    assert panic.title == "kernel panic: Hard LOCKUP"  # the data README's prediction from syzkaller's rules
    assert "NMI" in {f.section for f in panic.frames}


@pytest.mark.parametrize("which", ["decoded", "qp"])
def test_rcu_stall_then_hard_lockup_6_18(ml: Path, which: str) -> None:
    text, reps = _one(next(ml.glob(f"05_*.{which}.txt")))
    stall = [r for r in reps if r.kind == "rcu_stall" and r.context == "C7"]
    assert stall, [(r.kind, r.title) for r in reps]
    s = stall[0]
    # No apic_timer_interrupt in an NMI backtrace: syzkaller's rule yields "corrupted" (README prediction).
    assert s.title == "INFO: rcu detected stall in corrupted" and s.corrupted and s.type == "HANG"
    assert s.fields.rip_symbol == "qi_submit_sync"
    if which == "decoded":
        assert "stall in vfio_group_fops_release" in s.alt_titles
        hl = [r for r in reps if r.kind == "hard_lockup" and r.context == "C8"]
        assert hl and hl[0].title == "BUG: hard lockup in qi_submit_sync"
        assert hl[0].fields.taint == "GSEL"


def test_lockdep_inconsistent_lock_state_i915_prefix(ml: Path) -> None:
    _, reps = _one(next(ml.glob("07_*")))
    assert len(reps) == 1
    r = reps[0]
    # "<4> [18.297089]" prefixes (level, space, timestamp) are stripped like any console prefix.
    assert r.title == "inconsistent lock state in iommu_flush_dev_iotlb"
    assert r.kind == "lockdep" and r.type == "LOCKDEP" and not r.corrupted
    irq = [f.symbol for f in r.frames if f.section == "IRQ" and f.reliable]
    assert "fq_flush_timeout" in irq and "intel_flush_iotlb_all" in irq


def test_kmemleak_reports_are_not_oopses(ml: Path) -> None:
    # Raw kmemleak output has no oops header (syzkaller only titles leaks its executor prefixed with BUG:).
    for p in ml.glob("0[126]_*"):
        _, reps = _one(p)
        assert reps == [], (p.name, [r.title for r in reps])


def test_quoted_in_a_mail_reply_gives_the_same_report(ml: Path) -> None:
    text = verbatim(next(ml.glob("03_*")))
    log = text[text.index("[  599.020261]"):text.index("---[ end trace")]
    plain = parse_oops(log).reports
    quoted = parse_oops("On Mon, someone wrote:\n" + "\n".join("> " + ln for ln in log.split("\n"))).reports
    assert len(plain) == len(quoted) == 1
    a, b = plain[0], quoted[0]
    assert (a.title, a.fields, len(a.modules)) == (b.title, b.fields, len(b.modules))
    assert [(f.symbol, f.reliable) for f in a.frames] == [(f.symbol, f.reliable) for f in b.frames]
    assert [(g.name, g.value) for g in a.registers] == [(g.name, g.value) for g in b.registers]


def test_reboot_ends_a_report(shared_data: Path) -> None:
    # Two boots of the lab VM in one console capture: the printk clock restarts at 0, and the second boot's
    # reports are found again instead of being swallowed by the first boot's panic.
    text = (shared_data / "reports" / "lab" / "sysrq_crash_console.log").read_text()
    one = parse_oops(text).reports
    two = parse_oops(text + text).reports
    n = len(text.split("\n")) - 1 if text.endswith("\n") else len(text.split("\n"))
    assert [(r.kind, r.title) for r in two] == [(r.kind, r.title) for r in one] * 2
    assert [r.first_line for r in two[len(one):]] == [r.first_line + n for r in one]
    assert all(r.last_line <= n for r in two[:len(one)])
