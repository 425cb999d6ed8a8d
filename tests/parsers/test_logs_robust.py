"""The oops parser on hostile input: garbage, binary bytes, huge lines, floods, reports cut in the middle.

Property: whatever the input, :func:`parse_oops` returns a result whose tables validate against their schemas,
or raises :class:`LogFormatError` (and only for bytes that are not a text log). Never anything else.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovatrace import schema
from iovatrace.errors import LogFormatError
from iovatrace.parsers.logs.oops import OopsResult, parse_oops

# Fragments that steer random text into the parser's interesting paths.
FRAGMENTS = [
    "BUG: ", "WARNING: ", "INFO: ", "general protection fault: 0000 [#1]", "kernel BUG at mm/x.c:12!",
    "Kernel panic - not syncing: ", "BUG: KASAN: use-after-free in f+0x1/0x2", "Read of size 8 at addr ffff",
    "INFO: task x:1 blocked for more than 120 seconds.", "INFO: rcu_sched self-detected stall on CPU",
    "BUG: soft lockup - CPU#0 stuck for 22s!", "Watchdog detected hard LOCKUP on cpu 3", "Oops: 0000 [#1] SMP",
    "NMI backtrace for cpu 1", "Sending NMI from CPU 0 to CPUs 1:", "Call Trace:", " <IRQ>", " </IRQ>", " <TASK>",
    " ? foo+0x1/0x2", " bar.isra.3+0x10/0x20 [mod]", "RIP: 0010:baz+0x9c/0x110", "pc : q+0x4/0x8",
    "RAX: 0000000000000001 RBX: ffffffffffffffff", "Code: 48 8b <07> 00", "Modules linked in: a(OE) b",
    "[  12.345678] ", "[T123] ", "[    C4] ", "<4>", "<4> [1.000000] ", "Dec 28 14:23:13 host kernel: ", "kernel: ",
    " [<ffffffff81000000>] f+0x1/0x2", "[<c0100000>] (a) from [<c0100004>] (b+0x1/0x2)", "\n", "\r\n", "\r",
    "WARNING: CPU: 0 PID: 1 at lib/refcount.c:25 refcount_warn_saturate+0x1/0x2", "backtrace:", "  ",
    "CPU: 0 PID: 1 Comm: swapper Not tainted 6.1.0 #1", "Hardware name: QEMU", "---[ end trace ]---",
    "** replaying previous printk message **", "syzkaller login: ", "\x00", "\x1b[0m", "é", "\ufffd",
]


def check_result(res: OopsResult) -> None:
    tables = res.tables()
    assert tables["reports"].schema.equals(schema.OOPS_REPORTS, check_metadata=False)
    assert tables["frames"].schema.equals(schema.OOPS_FRAMES, check_metadata=False)
    assert [r.id for r in res.reports] == list(range(len(res.reports)))
    prev_first = 0
    for r in res.reports:
        assert r.title and len(r.title) <= 120
        assert 1 <= r.first_line <= r.last_line
        assert r.first_line > prev_first  # reports come in input order, never twice
        prev_first = r.first_line
        assert r.corrupted == bool(r.corrupted_reason)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=80))
def test_random_text_never_crashes(parts: list[str]) -> None:
    check_result(parse_oops("".join(parts)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_parse_or_log_format_error(data: bytes) -> None:
    try:
        res = parse_oops(data, path="fuzz.bin")
    except LogFormatError as exc:
        assert "fuzz.bin" in str(exc)
        return
    check_result(res)


def test_binary_inputs_are_rejected_with_location() -> None:
    with pytest.raises(LogFormatError, match=r"x\.dat @0x0: Cannot read kernel log: binary data"):
        parse_oops(b"\x17\x08\x44tracing6\x00\x00", path="x.dat")
    with pytest.raises(LogFormatError, match="binary"):
        parse_oops(b"\x00" * 1000 + b"BUG: x\n")
    with pytest.raises(LogFormatError, match="expected str or bytes"):
        parse_oops(12345)  # type: ignore[arg-type]


def test_ten_megabyte_line_is_linear() -> None:
    for line in ("x" * 10_000_000, "BUG: KASAN: a in b+" * 500_000, "[ 1.0] " + "WARNING: " * 1_100_000,
                 "Jan 01 00:00:00 " + "(handler interrupt " * 500_000):
        t = time.process_time()
        res = parse_oops(line + "\n")
        assert time.process_time() - t < 5.0
        assert res.truncated_lines == 1
        check_result(res)


def test_report_flood_is_linear() -> None:
    # Thousands of one-line reports from one task: a report must not rescan the rest of the log (quadratic).
    line = "[ 1.0][T1] WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2\n"
    times = {}
    for n in (1000, 4000):
        t = time.process_time()
        res = parse_oops(line * n)
        times[n] = time.process_time() - t
        assert len(res.reports) == n
    assert times[4000] < 8 * times[1000] + 0.5, times


CUT_OOPS = """\
[  599.020261] BUG: kernel NULL pointer dereference, address: 0000000000000000
[  599.020986] #PF: supervisor read access in kernel mode
[  599.022770] Oops: 0000 [#1] PREEMPT SMP NOPTI
[  599.023365] CPU: 68 PID: 3122 Comm: avocado Not tainted 6.5.0-rc6 #16
[  599.024571] RIP: 0010:free_iova_rcaches+0x9c/0x110
[  599.026436] RSP: 0018:ffffb78b4c9f7c68 EFLAGS: 00010296
[  599.032878] Call Trace:
[  599.033512]  <TASK>
[  599.034140]  ? show_regs+0x6e/0x80
"""


def test_report_cut_in_the_middle_is_corrupted() -> None:
    res = parse_oops(CUT_OOPS)
    assert len(res.reports) == 1
    r = res.reports[0]
    # The title still comes from RIP (syzkaller's rule), but the stack trace has no frame: corrupted.
    assert r.title == "BUG: unable to handle kernel NULL pointer dereference in free_iova_rcaches"
    assert r.corrupted and r.corrupted_reason == "call trace is missed"  # fewer than 4 lines after it
    # Cut before RIP: no frame at all.
    res = parse_oops("".join(CUT_OOPS.splitlines(keepends=True)[:3]))
    assert res.reports[0].title == "BUG: unable to handle kernel NULL pointer dereference in corrupted"
    assert res.reports[0].corrupted_reason == "extracted no frames"
    # KASAN header without its access line: only the catch-all KASAN format (marked corrupted) applies.
    r = parse_oops("[ 1.0] BUG: KASAN: use-after-free in foo+0x1/0x2\n").reports[0]
    assert r.title == "KASAN: use-after-free in foo" and r.corrupted_reason == "report format is marked as corrupted"
    # Lockdep header cut before "is trying to acquire lock": its report regexp fails, the raw header is the title.
    r = parse_oops("[ 1.0] WARNING: possible circular locking dependency detected\n[ 1.0] 6.1.0 #1 Not tainted\n"
                   ).reports[0]
    assert r.title == "WARNING: possible circular locking dependency detected"
    assert r.corrupted_reason == "matched title but not report regexp"


def test_crlf_and_syslog_prefixes_give_the_same_report() -> None:
    plain = parse_oops(CUT_OOPS + "[  599.035393]  put_iova_domain+0x32/0xa0\n" * 4).reports[0]
    crlf = parse_oops((CUT_OOPS + "[  599.035393]  put_iova_domain+0x32/0xa0\n" * 4).replace("\n", "\r\n"))
    syslog = parse_oops("".join("Aug 21 10:00:00 host kernel: " + ln + "\n"
                                for ln in (CUT_OOPS + "[  599.035393]  put_iova_domain+0x32/0xa0\n" * 4).splitlines()))
    # journalctl -k -o short-monotonic: "[ ts] host kernel: text"
    monotonic = parse_oops("".join(ln.replace("] ", "] myhost kernel: ", 1) + "\n"
                                   for ln in (CUT_OOPS + "[  599.035393]  put_iova_domain+0x32/0xa0\n" * 4).splitlines()))
    for other in (crlf.reports[0], syslog.reports[0], monotonic.reports[0]):
        assert (other.title, other.corrupted, other.first_line, other.last_line) == (
            plain.title, plain.corrupted, plain.first_line, plain.last_line)
        assert [(f.symbol, f.reliable) for f in other.frames] == [(f.symbol, f.reliable) for f in plain.frames]
