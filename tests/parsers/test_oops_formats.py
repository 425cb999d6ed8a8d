"""Per-architecture and per-format details of the oops parser: frames, registers, code, modules, prefixes.

Real reports come from syzkaller's corpus (arm64, arm, riscv64, powerpc64 files); expected values are read off
the text with independent scans. Small synthetic snippets follow the kernel's printk formats exactly and check
one rule each (title sanitizing and crash types are syzkaller's documented rules).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iovatrace.parsers.logs.frames import parse_frame_line
from iovatrace.parsers.logs.oops import parse_oops
from iovatrace.parsers.logs.titles import sanitize_title, title_to_type

from test_syzkaller_corpus import load_case  # same directory (pytest puts it on sys.path)


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> Path:
    return shared_data / "syzkaller" / "report"


def _first(corpus: Path, name: str):  # type: ignore[no-untyped-def]
    case = load_case(corpus / name)
    rep = parse_oops(case.log).reports[0]
    return case, rep


def test_arm64_registers_code_frames(corpus: Path) -> None:
    case, r = _first(corpus, "524")
    text = case.log.decode()
    assert r.title == case.title
    assert (r.fields.rip_symbol, r.fields.rip_offset, r.fields.rip_size) == ("__raw_readb", 0x18, 0x2C)
    regs = {g.name: g.value for g in r.registers if g.dump == 0}
    for name, val in re.findall(r"\b(x\d+): ([0-9a-f]{16})", text):
        assert regs[name] == int(val, 16)
    code = re.search(r"Code: ((?:[0-9a-f]{8} )+)\(([0-9a-f]{8})\)", text)
    assert code
    words = code.group(1).split()
    assert r.code[0].unit == 4 and r.code[0].fault_offset == 4 * len(words)
    assert r.code[0].data == bytes.fromhex("".join(words) + code.group(2))
    trace = text[text.index("Call trace:"):]
    expected = re.findall(r"\]\s+([\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+", trace)
    got = [f.symbol for f in r.frames if f.section == "Call Trace"]
    assert got[:len(expected)][:5] == expected[:5]


def test_arm32_from_frames(corpus: Path) -> None:
    case, r = _first(corpus, "236")
    text = case.log.decode()
    callees = re.findall(r"^\[<([0-9a-f]+)>\] \(([\w.]+)[+)]", text, re.M)
    got = [(f"{f.address:08x}", f.symbol) for f in r.frames]
    assert got[:len(callees)] == callees[:len(got)] and len(got) >= 5


def test_riscv_frames_and_registers(corpus: Path) -> None:
    case, r = _first(corpus, "545")
    text = case.log.decode()
    assert r.title == case.title
    regs = {g.name: g.value for g in r.registers if g.dump == 0}
    assert regs["epc"] == int(re.search(r"epc: ([0-9a-f]+)", text).group(1), 16)  # type: ignore[union-attr]
    assert regs["badaddr"] == 0 and regs["cause"] == 3
    addrs = [int(a, 16) for a in re.findall(r"\[<([0-9a-f]+)>\] \w", text)]
    assert [f.address for f in r.frames][:5] == addrs[:5]


def test_powerpc_gpr_and_unreliable(corpus: Path) -> None:
    case, r = _first(corpus, "431")
    text = case.log.decode()
    assert r.title == case.title
    regs = {g.name: g.value for g in r.registers if g.dump == 0}
    row = re.search(r"GPR04: ((?:[0-9a-f]{16} ?){4})", text).group(1).split()  # type: ignore[union-attr]
    assert [regs[f"GPR{n:02d}"] for n in range(4, 8)] == [int(v, 16) for v in row]
    n_unrel = len(re.findall(r"\(unreliable\)\s*$", text, re.M))
    assert sum(not f.reliable for f in r.frames) == n_unrel


def test_kasan_sections(corpus: Path) -> None:
    case, r = _first(corpus, "105")
    assert r.title == case.title or r.title in case.alts
    sections = [f.section for f in r.frames]
    assert "Allocated by" in sections and "Freed by" in sections
    assert sections.index("Allocated by") < sections.index("Freed by")


@pytest.mark.parametrize("line,expected", [
    (" ? free_iova_rcaches+0x91/0x110", ("free_iova_rcaches", 0x91, 0x110, None, None, False)),
    (" put_iova_domain+0x32/0xa0", ("put_iova_domain", 0x32, 0xA0, None, None, True)),
    (" vfio_group_fops_release+0x3e/0x80 [vfio]", ("vfio_group_fops_release", 0x3E, 0x80, "vfio", None, True)),
    (" nvme_irq+0x1/0x2 [nvme_core 0123456789abcdef]", ("nvme_irq", 1, 2, "nvme_core", None, True)),
    (" [<ffffffff81234567>] ? foo.isra.7+0x1/0x2", ("foo.isra.7", 1, 2, None, 0xFFFFFFFF81234567, False)),
    (" [<ffffffff81234567>] foo+0x1/0x2 kernel/x.c:12", ("foo", 1, 2, None, 0xFFFFFFFF81234567, True)),
    ("  el0t_64_sync+0x1a0/0x1a4 (P)", ("el0t_64_sync", 0x1A0, 0x1A4, None, None, True)),
    (" __dev_queue_xmit include/linux/netdevice.h:3012 [inline]", ("__dev_queue_xmit", None, None, None, None, True)),
    ("[<c0123456>] (foo+0x1/0x2 [m]) from [<c0100000>] (bar+0x3/0x4)", ("foo", 1, 2, "m", 0xC0123456, True)),
    ("[c00000007a3ef970] [c00000000022d784] func+0x54/0x90 (unreliable)",
     ("func", 0x54, 0x90, None, 0xC00000000022D784, False)),
    ("RIP: 0010:free_iova_rcaches+0x9c/0x110", None),
    ("Modules linked in: a b c", None),
])
def test_frame_line_formats(line: str, expected: tuple | None) -> None:  # type: ignore[type-arg]
    assert parse_frame_line(line) == expected


def test_modules_and_taint_flags() -> None:
    log = ("[ 1.0] BUG: unable to handle page fault for address: ffffc90000001000\n"
           "[ 1.0] Modules linked in: nvidia(POE) iova_test(OE) loop [last unloaded: vfio_pci(E)]\n"
           "[ 1.0] CPU: 3 UID: 0 PID: 77 Comm: kworker/3:1 Tainted: G        W  OE      6.12.0-rc1 #2\n"
           "[ 1.0] RIP: 0010:iova_magazine_free+0x10/0x40 [iova_test]\n"
           "[ 1.0] Call Trace:\n[ 1.0]  <TASK>\n[ 1.0]  free_iova_rcaches+0x9c/0x110\n[ 1.0]  </TASK>\n")
    r = parse_oops(log).reports[0]
    assert [(m.name, m.flags, m.last_unloaded) for m in r.modules] == [
        ("nvidia", "POE", False), ("iova_test", "OE", False), ("loop", "", False), ("vfio_pci", "E", True)]
    f = r.fields
    assert (f.cpu, f.pid, f.comm, f.taint, f.kernel_release) == (3, 77, "kworker/3:1", "GWOE", "6.12.0-rc1")
    assert (f.rip_symbol, f.rip_module, f.address) == ("iova_magazine_free", "iova_test", 0xFFFFC90000001000)
    assert r.title == "BUG: unable to handle kernel paging request in iova_magazine_free"


def test_caller_tags_separate_interleaved_tasks() -> None:
    log = ("[ 5.0][ T100] WARNING: CPU: 0 PID: 100 at drivers/iommu/iova.c:42 free_iova_fast+0x1/0x2\n"
           "[ 5.0][ T200] unrelated: bar+0x1/0x2\n"
           "[ 5.0][ T100] RIP: 0010:free_iova_fast+0x1/0x2\n"
           "[ 5.0][ T200] BUG: scheduling while atomic: x/200/0x00000002\n"
           "[ 5.0][ T100] Call Trace:\n"
           "[ 5.0][ T200] Call Trace:\n"
           "[ 5.0][ T100]  fq_ring_free_locked+0x1/0x2\n"
           "[ 5.0][ T200]  schedule+0x1/0x2\n"
           "[ 5.0][ T200]  do_nanosleep+0x1/0x2\n"
           "[ 5.0][ T100]  fq_flush_timeout+0x1/0x2\n")
    reps = parse_oops(log).reports
    assert [(r.title, r.context) for r in reps] == [
        ("WARNING in free_iova_fast", "T100"), ("BUG: scheduling while atomic in do_nanosleep", "T200")]
    assert [f.symbol for f in reps[0].frames] == ["fq_ring_free_locked", "fq_flush_timeout"]


def test_sending_nmi_accepts_other_cpus() -> None:
    log = ("[ 9.0][    C0] rcu: INFO: rcu_sched self-detected stall on CPU\n"
           "[ 9.0][    C0] Sending NMI from CPU 0 to CPUs 1:\n"
           "[ 9.0][    C1] NMI backtrace for cpu 1\n"
           "[ 9.0][    C1] RIP: 0010:qi_submit_sync+0x6cf/0x8d0\n"
           "[ 9.0][    C0]  <IRQ>\n"
           "[ 9.0][    C0]  apic_timer_interrupt+0x1/0x2\n"
           "[ 9.0][    C0] RIP: 0010:qi_submit_sync+0x6cf/0x8d0\n"
           "[ 9.0][    C0]  qi_flush_dev_iotlb+0x1/0x2\n"
           "[ 9.0][    C0]  process_one_work+0x1/0x2\n")
    r = parse_oops(log).reports[0]
    assert r.title == "INFO: rcu detected stall in qi_flush_dev_iotlb"
    assert r.last_line == 9 and {f.section for f in r.frames} == {"IRQ"}


@pytest.mark.parametrize("raw,clean", [
    ("WARNING in free_iova_fast+0x1f/0x90", "WARNING in free_iova_fast"),
    ("BUG: soft lockup - CPU#12 stuck for 22s! [kworker/12:1:1234]", "BUG: soft lockup - CPU stuck for 22s! [kworker/NUM:NUM:NUM]"),
    ("kernel panic: Attempted to kill init! exitcode=0x00000009", "kernel panic: Attempted to kill init! exitcode=ADDR"),
    ("WARNING: drivers/iommu/iova.c:123 at 0x0, CPU#1", "WARNING: drivers/iommu/iova.c:LINE at 0x0, CPU"),
    ("INFO: task syz-executor.3:1234 blocked", "INFO: task syz-executor blocked"),
    # 120 *input* characters are kept, then tabs become spaces, control bytes go, spaces collapse.
    ("x\t\t y\x01z" + "a" * 200, "x yz" + "a" * 113),
])
def test_sanitize_title(raw: str, clean: str) -> None:
    assert sanitize_title(raw) == clean


@pytest.mark.parametrize("title,typ", [
    ("BUG: unable to handle kernel NULL pointer dereference in free_iova_rcaches", "NULL-POINTER-DEREFERENCE"),
    ("BUG: unable to handle kernel paging request in f", "MEMORY_SAFETY_BUG"),
    ("KASAN: slab-use-after-free Read in f", "KASAN-USE-AFTER-FREE-READ"),
    ("INFO: rcu detected stall in f", "HANG"), ("BUG: hard lockup in qi_submit_sync", "HANG"),
    ("inconsistent lock state in f", "LOCKDEP"), ("general protection fault in f", "DoS"),
    ("kernel panic: Hard LOCKUP", "DoS"), ("WARNING in f", "WARNING"), ("memory leak in f", "LEAK"),
    ("something else", "UNKNOWN"),
])
def test_title_to_type(title: str, typ: str) -> None:
    assert title_to_type(title) == typ


@pytest.mark.parametrize("log,kind,title", [
    ("Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008\n"
     "pc : iova_magazine_pop+0x1c/0x40\nCall trace:\n iova_magazine_pop+0x1c/0x40\n alloc_iova_fast+0x40/0x1f0\n",
     "null_deref", "BUG: unable to handle kernel NULL pointer dereference in iova_magazine_pop"),
    ("divide error: 0000 [#1] PREEMPT SMP\nRIP: 0010:iova_rcache_get+0x12/0x30\n", "trap",
     "divide error in iova_rcache_get"),
    ("INFO: task kworker/0:1:12 blocked for more than 120 seconds.\nCall Trace:\n __schedule+0x1/0x2\n"
     " schedule+0x1/0x2\n rwsem_down_write_slowpath+0x1/0x2\n down_write+0x1/0x2\n"
     " iommu_group_store_type+0x1/0x2\n kernfs_fop_write_iter+0x1/0x2\n", "hung_task",
     "INFO: task hung in iommu_group_store_type"),
    ("watchdog: BUG: soft lockup - CPU#3 stuck for 26s! [vfio_test:4242]\nRIP: 0010:qi_submit_sync+0x1/0x2\n"
     "Call Trace:\n <IRQ>\n qi_flush_dev_iotlb+0x1/0x2\n vfio_group_fops_release+0x1/0x2\n __fput+0x1/0x2\n",
     "soft_lockup", "BUG: soft lockup in vfio_group_fops_release"),
    ("kernel BUG at drivers/iommu/iova.c:731!\nRIP: 0010:iova_depot_pop+0x1/0x2\nCall Trace:\n f+0x1/0x2\n",
     "kernel_bug", "kernel BUG in iova_depot_pop"),
])
def test_kinds_and_titles(log: str, kind: str, title: str) -> None:
    r = parse_oops(log).reports[0]
    assert (r.kind, r.title) == (kind, title)


@pytest.mark.parametrize("mangled,plain", [
    # Rust v0 symbols from Rust-for-Linux stacks; renderings follow the v0 scheme (impls as <T> / <T as Trait>).
    ("_RNvCscSpY9Juk0HT_7___rustc17rust_begin_unwind", "__rustc::rust_begin_unwind"),
    ("_RNvMs3_NtCshgDM7dBCdno_11rust_binder7processNtB5_7Process10update_ref",
     "<rust_binder::process::Process>::update_ref"),
    ("_RNvXs1_CscPPBqWtAqum_11ashmem_rustNtB5_6AshmemNtNtCs43vyB533jt3_6kernel10miscdevice10MiscDevice4mmap",
     "<ashmem_rust::Ashmem as kernel::miscdevice::MiscDevice>::mmap"),
    ("_RNvXs1b_NtCs9jEwPDbx20M_4core3fmtRNtNtNtB8_5panic10panic_info9PanicInfoNtB6_7Display3fmtCs43vyB533jt3_6kernel",
     "<&core::panic::panic_info::PanicInfo as core::fmt::Display>::fmt"),
    ("_Z8fakeNameiii", "fakeName"), ("_ZN3foo3barEv", "foo::bar"),
    ("_RNvXs1_", "_RNvXs1_"), ("_RB9999_", "_RB9999_"), ("free_iova_rcaches", "free_iova_rcaches"),
])
def test_demangle(mangled: str, plain: str) -> None:
    from iovatrace.parsers.logs.demangle import demangle

    assert demangle(mangled) == plain


def test_rust_frames_are_titled_demangled() -> None:
    log = ("rust_kernel: panicked at drivers/android/binder/process.rs:1234:5:\n"
           "attempt to subtract with overflow\n"
           "Call Trace:\n"
           " _RNvCscSpY9Juk0HT_7___rustc17rust_begin_unwind+0x1/0x2\n"
           " _RNvNtCs9jEwPDbx20M_4core9panicking9panic_fmt+0x1/0x2\n"
           " _RNvMs3_NtCshgDM7dBCdno_11rust_binder7processNtB5_7Process10update_ref+0x1/0x2\n")
    r = parse_oops(log).reports[0]
    assert r.title == "attempt to subtract with overflow in <rust_binder::process::Process>::update_ref"


def test_report_body_ends_after_its_end_trace_epilogue() -> None:
    log = ("[ 1.0] WARNING: CPU: 0 PID: 1 at drivers/iommu/iova.c:42 free_iova_fast+0x1/0x2\n"  # 1
           "[ 1.0] RIP: 0010:free_iova_fast+0x1/0x2\n"
           "[ 1.0] Call Trace:\n"
           "[ 1.0]  fq_ring_free_locked+0x1/0x2\n"
           "[ 1.0] ---[ end trace 0000000000000000 ]---\n"  # 5
           "[ 1.0] RIP: 0010:free_iova_fast+0x1/0x2\n"  # 6: x86 repeats the registers after the marker
           "[ 2.0] e1000e: eth0 NIC Link is Up\n"  # 7: someone else's business
           "[ 3.0] task:kworker/0:1 state:D stack:0 pid:12\n"
           "[ 3.0] Call Trace:\n"
           "[ 3.0]  schedule+0x1/0x2\n")
    r = parse_oops(log).reports[0]
    assert r.title == "WARNING in free_iova_fast"
    assert r.last_line == 6
    assert [f.symbol for f in r.frames] == ["fq_ring_free_locked"]
