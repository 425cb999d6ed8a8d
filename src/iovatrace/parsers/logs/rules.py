"""Rule tables for titling Linux crash reports the way syzkaller does.

Theory of operation: syzkaller's ``pkg/report`` (Apache-2.0) names a kernel report by (1) the *header* that
starts it (``BUG:``, ``WARNING:``, ``general protection fault`` ...), (2) the first *format* of that header group
whose ``title`` regexp matches earliest in the report (and whose optional ``report`` regexp also matches),
and (3) a *guilty frame* pulled from the report by a small program of ``parts`` (advance to a line matching a
regexp, optionally capture a function from it, or parse a stack trace) minus a list of *skipped* functions.
This module only holds those rules as data -- the regular expressions and format strings are facts about the
title scheme, re-expressed for Python's ``re``; the machine that runs them is :mod:`.titles`.

Format strings use ``str.format`` positional fields: ``{0}``... are the groups captured by the format's
``report`` (or ``title``) regexp, followed by one guilty frame per stack trace in ``parts``.

A few headers that syzkaller does not know (the NMI watchdog's hard LOCKUP, a bare ``Oops:``, an
``NMI backtrace for cpu N``) are appended as :data:`EXTRA_OOPSES`: they start a report only on lines where no
syzkaller header matched, and only a hard LOCKUP ends another report (see :data:`EXTRA_ENDS_REPORT`).
The rcu-stall format's ``fallback`` parts are also ours: they only add alternative titles, never the title.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ANCHOR_FRAMES",
    "CORRUPTED_LINES",
    "EXTRA_ENDS_REPORT",
    "EXTRA_OOPSES",
    "FRAME_RES",
    "INFO_MESSAGES_WITH_STACK",
    "LINUX_OOPSES",
    "OopsFormat",
    "OopsGroup",
    "PARSE_STACK",
    "REPORT_START_IGNORES",
    "RIP_FRAME",
    "CALL_TRACE",
    "SKIP_PATTERNS",
    "STACK_START_RES",
    "STRIP_FRAME_PREFIXES",
    "StackFmt",
    "TITLE_TO_TYPE",
    "compile_rule",
]


def compile_rule(src: str) -> re.Pattern[str]:
    """Compile a rule regexp after expanding the macros of the rule language.

    ``{{FUNC}}`` captures a function name that must be followed by ``.`` or ``+`` (so ``foo.isra.7+0x1`` gives
    ``foo`` and symbolized ``foo include/x.h:44 [inline]`` lines are not frames); ``{{PC}}`` is ``[<addr>]``;
    ``{{SRC}}`` captures ``file.c:123``; ``{{TASK}}`` is a short lazy run of anything.
    """
    src = (
        src.replace("{{ADDR}}", "0x[0-9a-f]+")
        .replace("{{PC}}", r"\[\<?(?:0x)?[0-9a-f]+\>?\]")
        .replace("{{FUNC}}", r"([a-zA-Z0-9_]+)(?:\.|\+)")
        .replace("{{SRC}}", r"([a-zA-Z0-9\-_/.]+\.[a-z]+:[0-9]+)")
        .replace("{{TASK}}", r"[\s\S]{0,100}?")
        .replace("[[:xdigit:]]", "[0-9A-Fa-f]")
        .replace("[[:space:]]", r"\s")
    )
    return re.compile(src)


_c = compile_rule

#: Marker in :attr:`StackFmt.parts`: parse the stack trace that starts here.
PARSE_STACK: re.Pattern[str] = re.compile(r"(?!)")  # never matches; identity is what counts

RIP_FRAME = _c(
    r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{{PC}} +){0,2}{{FUNC}}|(?:[0-9]+:)?0x[0-9a-f]+|"
    r"(?:[0-9]+:)?{{PC}} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))"
)
CALL_TRACE = _c(r"(?:Call (?:T|t)race:)|(?:Backtrace:)")
_RISCV_STACK_START = re.compile(r"status: [0-9a-f]{16} badaddr: [0-9a-f]{16} cause: [0-9a-f]{16}")

#: Lines that start a (new) stack trace.
STACK_START_RES: list[re.Pattern[str]] = [
    re.compile(r"Call (?:T|t)race"),
    re.compile(r"Allocated:"),
    re.compile(r"Allocated by task [0-9]+:"),
    re.compile(r"Freed:"),
    re.compile(r"Freed by task [0-9]+:"),
    re.compile(r"[^k] backtrace(?: \(crc [0-9A-Fa-f]*\))?:"),  # not "stack backtrace:"
    re.compile(r"Backtrace:"),
    re.compile(r"Uninit was stored to memory at"),
    _RISCV_STACK_START,
]
RISCV_STACK_START = _RISCV_STACK_START

#: Lines holding a frame: x86/arm64/riscv style, and arm32 ``[<pc>] (callee) from [<pc>] (caller+..)``.
FRAME_RES: list[re.Pattern[str]] = [
    _c(r"^ *(?:{{PC}} ){0,2}{{FUNC}}"),
    _c(r"^ *{{PC}} \(([a-zA-Z0-9_.]+)\) from {{PC}} \({{FUNC}}"),
]

#: A fault-injection frame in a report means the report is mixed with another stack.
CORRUPTED_LINES = [_c(r"^( \[\<?(?:0x)?[0-9a-f]+\>?\])? should_fail(slab)?(\.[a-z0-9.]+)?\+0x")]

STRIP_FRAME_PREFIXES = [
    "SYSC_", "SyS_", "sys_", "__x64_", "__ia32_", "__arm64_", "____sys_", "___sys_", "__sys_", "__se_",
    "__se_sys_", "__do_sys_", "compat_SYSC_", "compat_SyS_", "ksys_",
]

#: Functions never chosen as the guilty frame (substring regexps unless anchored).
SKIP_PATTERNS: list[str] = [
    "__sanitizer", "__asan", "kasan", "hwasan", "__msan", "kmsan", "kcsan_setup_watchpoint", "check_memory_region",
    "check_heap_object", "check_object", "read_word_at_a_time", "(read|write)_once_.*nocheck",
    "print_address_description", "panic", "invalid_op", "report_bug", "fixup_bug", "print_report",
    "print_usage_bug", "do_error", "invalid_op", "_trap$|do_trap", "show_stack", "dump_stack", "walk_stack",
    "dump_backtrace", "warn_slowpath", "warn_alloc", "warn_bogus", "__warn", "alloc_page", "k?v?(?:m|z|c)alloc",
    "krealloc", "kmem_cache", "allocate_slab", "__alloc_frozen_pages_noprof", "folio_(?:alloc|unlock)",
    "filemap_alloc_folio", "__filemap_get_folio", "find_or_create_page", "do_read_cache_folio", "read_cache_page",
    "pagecache_get_page", "grab_cache_page_write_begin", "slab_", "debug_object", "timer_is_static_object",
    "work_is_static_object", "__might_fault", "print_unlock", "imbalance_bug", "lockdep", "bh_enable", "bh_disable",
    "perf_trace", "lock_acquire", "lock_release", "lock_class", "mark_lock", "(reacquire|mark)_held_locks",
    "raw_spin_rq", "spin_lock", "spin_trylock", "spin_unlock", "read_lock", "read_trylock", "write_lock",
    "write_trylock", "read_unlock", "write_unlock", "^down$", "down_read", "down_write", "down_read_trylock",
    "down_write_trylock", "down_trylock", "up_read", "up_write", "^mutex_", "^__mutex_", "^rt_mutex_",
    "owner_on_cpu", "osq_lock", "osq_unlock",
    "atomic(64)?_(dec|inc|read|set|or|xor|and|add|sub|fetch|xchg|cmpxchg|try)", "(set|clear|change|test)_bit",
    "__wake_up", "^refcount_", "^kref_", "ref_tracker", "seqprop_assert", "memcpy", "memcmp", "memset", "memchr",
    "memmove", "memdup", "strcmp", "strncmp", "strcpy", "strlcpy", "strncpy", "strscpy", "strlen", "strstr",
    "strnstr", "strnlen", "strchr", "strdup", "strndup", "copy_to_user", "copy_from_user", "copy_to_iter",
    "copy_from_iter", "copy_page_to_iter", "copy_page_from_iter", "copy_folio_to_iter", "^copyin$", "^copyout$",
    "put_user", "get_user", "might_fault", "might_sleep", "list_add", "list_del", "list_replace", "list_move",
    "list_splice", "^rb_", "^__rb_", "_indirect_thunk_", "string", "pointer", "snprintf", "scnprintf", "kasprintf",
    "kvasprintf", "printk", "va_format", "dev_info", "dev_notice", "dev_warn", "dev_err", "dev_alert", "dev_crit",
    "dev_emerg", "program_check_exception", "program_check_common", "del_timer", "flush_work",
    "__cancel_work_timer", "cancel_work_sync", "try_to_grab_pending", "flush_workqueue", "drain_workqueue",
    "destroy_workqueue", "queue_work", "finish_wait", "kthread_stop", "kobject_", "add_uevent_var",
    "get_device_parent", "device_add", "device_del", "device_unregister", "device_destroy", "device_release",
    "devres_release_all", "hwrng_unregister", "i2c_del_adapter", "__unregister_client", "device_for_each_child",
    "rollback_registered", "unregister_netdev", "sysfs_remove", "device_remove_file", "tty_unregister_device",
    "dummy_urb_enqueue", "usb_kill_urb", "usb_kill_anchored_urbs", "usb_control_msg", "usb_hcd_submit_urb",
    "usb_submit_urb", "^complete$", "wait_for_completion", "^kv?free$", "kfree_skb", "readb$", "readw$", "readl$",
    "readq$", "writeb$", "writew$", "writel$", "writeq$", "logic_in", "logic_out", r"^crc\d+", "crc_itu_t",
    "__might_resched", "assertfail", "^iput$", "^iput_final$", "^ihold$", "hex_dump_to_buffer", "print_hex_dump",
    "^klist_", "(trace|lockdep)_(hard|soft)irq", "^(un)?lock_page", "stack_trace_consume_entry", "arch_stack_walk",
    "stack_trace_save", "insert_work", "__queue_delayed_work", "queue_delayed_work_on", "ida_free",
    "do_(kernel|translation)_fault", "do_mem_abort", "el1_abort", "el1h_64_sync(?:_handler)?", "print_tainted",
    "xas_(?:start|load|find)", "find_lock_entries", "truncate_inode_pages_range", "__phys_addr", "__fortify_report",
    "cleanup_srcu_struct", "rhashtable_lookup", "extract_(user|iter)_to_sg", "drop_nlink", "^get_taint$",
    "^put_device$", "lock_timer_base", "__timer_delete_sync", "sk_stop_timer_sync", "__mod_timer", "fast_dput",
    "dput", "mark_buffer_dirty",
]

#: Stall extractor anchors: generic dispatchers under which the looping code sits.
ANCHOR_FRAMES: list[re.Pattern[str]] = [re.compile(p) for p in [
    "process_one_work", "do_syscall_", "do_fast_syscall_", "sysenter_dispatch", "tracesys_phase2",
    "el0_svc_handler", "invoke_syscall", "ret_fast_syscall", "netif_receive_skb", "do_softirq", "call_timer_fn",
    "_run_timers", "run_timer_softirq", "hrtimer_run", "run_ksoftirqd", "smpboot_thread_fn", "^kthread$",
    "start_secondary", "cpu_startup_entry", "ret_from_fork", "vfs_write", "vfs_read", "vfs_iter_read",
    "vfs_iter_write", "do_iter_read", "do_iter_write", "call_read_iter", "call_write_iter", "new_sync_read",
    "new_sync_write", "vfs_ioctl", "ksys_ioctl", "compat_ioctl", "compat_sys_ioctl", "blkdev_driver_ioctl",
    "blkdev_ioctl", "^call_read_iter", "^call_write_iter", "do_iter_readv_writev", "^call_mmap", "mmap_region",
    "do_mmap", "do_dentry_open", "vfs_open", "^sock_sendmsg", "^sock_recvmsg", "^sock_release", "^__sock_release",
    "^setsockopt$", "kernel_setsockopt", "sock_common_setsockopt", "^listen$", "kernel_listen", "sk_common_release",
    "^sock_mmap", "^accept$", "kernel_accept", "^sock_do_ioctl", "^sock_ioctl", "^compat_sock_ioctl",
    "^nfnetlink_rcv_msg", "^rtnetlink_rcv_msg", "^netlink_dump", "^(sys_)?(socketpair|connect|ioctl)", "__do_fault",
    "do_page_fault", "^page_fault$", "__fput", "task_work_run", "exit_to_usermode", "smp_call_function",
    "tasklet_action", "tasklet_hi_action",
]]

#: Headers that may sit inside another report without ending it.
REPORT_START_IGNORES = [
    re.compile(p) for p in [
        "invalid opcode: 0000", "Kernel panic - not syncing", "unregister_netdevice: waiting for",
        "PANIC: double fault", "Internal error:",
    ]
]
#: Messages that print a stack but are not bugs; inside a report they end the text used for the title.
INFO_MESSAGES_WITH_STACK = ["vmalloc: allocation failure:", "FAULT_INJECTION: forcing a failure",
                            "FAULT_FLAG_ALLOW_RETRY missing"]


@dataclass(frozen=True)
class StackFmt:
    """How to pull the guilty frame(s) out of a report.

    Attributes:
        parts: regexps applied line by line in order (capturing ones yield a frame) and :data:`PARSE_STACK`.
        parts2: tried when ``parts`` yields no frame.
        skip: extra substrings/regexps of functions never chosen.
        extractor: ``"stall"`` or ``"hang"`` to pick a representative frame deeper in the stack.
    """

    parts: Sequence[re.Pattern[str]]
    parts2: Sequence[re.Pattern[str]] = ()
    skip: Sequence[str] = ()
    extractor: str | None = None
    #: our addition: when parts/parts2 find no frame, these give extra *alternative* titles (never the title)
    fallback: Sequence[re.Pattern[str]] = ()


@dataclass(frozen=True)
class OopsFormat:
    """One way a header's report can be titled (see the module docstring)."""

    title: re.Pattern[str]
    fmt: str
    report: re.Pattern[str] | None = None
    alt: Sequence[str] = ()
    stack: StackFmt | None = None
    no_stack_trace: bool = False
    corrupted: bool = False


@dataclass(frozen=True)
class OopsGroup:
    """A header substring, its formats in priority order, and lines with the header that are not reports."""

    header: str
    formats: Sequence[OopsFormat]
    suppressions: Sequence[re.Pattern[str]] = ()
    kind: str = "other"
    #: extra groups (not syzkaller's) never end a report and only start one where no syzkaller header matched
    extra: bool = False
    suppress_fn: Callable[[str], bool] | None = field(default=None, compare=False)


def _F(title: str, fmt: str, report: str | None = None, alt: Sequence[str] = (), stack: StackFmt | None = None,
       no_stack: bool = False, corrupted: bool = False) -> OopsFormat:
    return OopsFormat(_c(title), fmt, _c(report) if report else None, tuple(alt), stack, no_stack, corrupted)


def _S(*parts: re.Pattern[str] | str, skip: Sequence[str] = (), extractor: str | None = None,
       parts2: Sequence[re.Pattern[str] | str] = (), fallback: Sequence[re.Pattern[str]] = ()) -> StackFmt:
    def conv(ps: Sequence[re.Pattern[str] | str]) -> tuple[re.Pattern[str], ...]:
        return tuple(p if isinstance(p, re.Pattern) else _c(p) for p in ps)
    return StackFmt(conv(parts), conv(parts2), tuple(skip), extractor, tuple(fallback))


_RIP_STACK = (RIP_FRAME, CALL_TRACE, PARSE_STACK)
_CT_STACK = (CALL_TRACE, PARSE_STACK)


def _warning_stack(*skip: str) -> StackFmt:
    # x86-64 WARNINGs print RIP: first, powerpc "--- interrupt: N at f"; older kernels only the Call Trace.
    return _S(_c("(?:" + RIP_FRAME.pattern + r"|--- interrupt: [0-9]+ at {{FUNC}})"), PARSE_STACK,
              parts2=(CALL_TRACE, PARSE_STACK), skip=skip)


_KMSAN_PARTS = (PARSE_STACK, _c("(Local variable .* created at:|Uninit was created at:)"), PARSE_STACK)
_KFENCE_PARTS = (_c(r"BUG: KFENCE: (?:[a-z\- ]+) in {{FUNC}}"), PARSE_STACK)
_LOCK_AT = r"(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"

_BUG = OopsGroup("BUG:", kind="bug", formats=[
    _F("BUG: KASAN:", "KASAN: {0} {2} in {3}",
       report=r"BUG: KASAN: ([a-z\-]+) in {{FUNC}}(?:.*\n)+?.*(Read|Write) (?:of size|at addr) (?:[0-9a-f]+)",
       alt=["bad-access in {3}"],
       stack=_S(r"BUG: KASAN: (?:[a-z\-]+) in {{FUNC}}", CALL_TRACE, PARSE_STACK,
                skip=["kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"])),
    _F("BUG: KASAN:", "KASAN: invalid-free in {1}",
       report=r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {{FUNC}}",
       alt=["invalid-free in {1}"],
       stack=_S(r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {{FUNC}}",
                CALL_TRACE, PARSE_STACK, skip=["slab_", "kfree", "vunmap", "vfree"])),
    _F(r"BUG: KASAN: ([a-z\-]+) on address(?:.*\n)+?.*(Read|Write) of size ([0-9]+)", "KASAN: {0} {1}"),
    _F(r"BUG: KASAN: (.*)", "KASAN: {0}", corrupted=True),
    _F("BUG: KMSAN: kernel-usb-infoleak", "KMSAN: kernel-usb-infoleak in {1}",
       report="BUG: KMSAN: kernel-usb-infoleak in {{FUNC}}", alt=["KMSAN origin in {2}"],
       stack=_S(*_KMSAN_PARTS, skip=["alloc_skb", "usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg",
                                     "usb_interrupt_msg", "usb_control_msg"]), no_stack=True),
    _F("BUG: KMSAN:", "KMSAN: {0} in {2}", report=r"BUG: KMSAN: ([a-z\-]+) in {{FUNC}}",
       alt=["bad-access in {2}"],
       stack=_S(*_KMSAN_PARTS, skip=["alloc_skb", "netlink_ack", "netlink_rcv_skb", "_encrypt$",
                                     "^(?:crypto|cipher|drbg|rng)_"]), no_stack=True),
    _F("BUG: KCSAN: data-race", "KCSAN: {0}", report="BUG: KCSAN: (.*)", no_stack=True),
    _F("BUG: KCSAN:", "KCSAN: {0}", report="BUG: KCSAN: (.*)", no_stack=True),
    _F("BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in {{FUNC}}", "KFENCE: {0} {1} in {3}",
       alt=["bad-access in {3}"], stack=_S(*_KFENCE_PARTS)),
    _F("BUG: KFENCE: invalid free in {{FUNC}}", "KFENCE: invalid free in {1}", alt=["invalid-free in {1}"],
       stack=_S(*_KFENCE_PARTS), no_stack=True),
    _F("BUG: KFENCE: invalid (read|write) in {{FUNC}}", "KFENCE: invalid {0} in {2}", alt=["bad-access in {2}"],
       stack=_S(*_KFENCE_PARTS)),
    _F("BUG: KFENCE: memory corruption in {{FUNC}}", "KFENCE: memory corruption in {1}",
       stack=_S(*_KFENCE_PARTS), no_stack=True),
    _F("BUG: (?:unable to handle kernel paging request|unable to handle page fault for address|"
       "Unable to handle kernel data access)", "BUG: unable to handle kernel paging request in {0}",
       alt=["bad-access in {0}"], stack=_S(*_RIP_STACK)),
    _F("BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer dereference|"
       "Kernel NULL pointer dereference)", "BUG: unable to handle kernel NULL pointer dereference in {0}",
       alt=["bad-access in {0}"], stack=_S(*_RIP_STACK)),
    _F("BUG: (?:unable to handle kernel|Unable to handle kernel)", "BUG: unable to handle kernel", corrupted=True),
    _F("BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion|cpu recursion|bad magic|wrong owner|"
       "wrong CPU|trylock failure on UP)", "BUG: {0} {1} in {2}",
       stack=_S(*_CT_STACK, skip=["spin_", "_lock", "_unlock"])),
    _F("BUG: soft lockup", "BUG: soft lockup in {0}", alt=["stall in {0}"],
       stack=_S(*_RIP_STACK, extractor="stall")),
    _F("BUG: .*still has locks held!", "BUG: still has locks held in {0}",
       report=r"BUG: .*still has locks held!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
    _F("BUG: scheduling while atomic", "BUG: scheduling while atomic in {0}", stack=_S(*_CT_STACK, skip=["schedule"])),
    _F("BUG: lock held when returning to user space", "BUG: lock held when returning to user space in {0}",
       report="BUG: lock held when returning to user space(?:.*\\n)+?.*leaving the kernel with locks still held"
       + _LOCK_AT, no_stack=True),
    _F("BUG: bad unlock balance detected!", "BUG: bad unlock balance in {0}",
       stack=_S("{{PC}} +{{FUNC}}", CALL_TRACE, PARSE_STACK)),
    _F("BUG: held lock freed!", "BUG: held lock freed in {0}",
       report=r"BUG: held lock freed!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
    _F("BUG: Bad rss-counter state", "BUG: Bad rss-counter state", no_stack=True),
    _F("BUG: non-zero nr_ptes on freeing mm", "BUG: non-zero nr_ptes on freeing mm", no_stack=True),
    _F("BUG: non-zero nr_pmds on freeing mm", "BUG: non-zero nr_pmds on freeing mm", no_stack=True),
    _F("BUG: Dentry .* still in use", "BUG: Dentry still in use in {0}",
       report=r"BUG: Dentry .* still in use \([0-9]+\) \[(unmount) of ([^\]]+)\]",
       alt=["BUG: Dentry still in use [{0} of {1}]"]),
    _F("BUG: Bad page (state|cache)", "BUG: Bad page {0} in {1}",
       stack=_S("page last allocated", PARSE_STACK,
                skip=["(free|put|get|update|release)_page", "free_unref", "^_*folio", "truncate_inode_pages",
                      "page_frag_free", "alloc", "vmap", "page_owner"])),
    _F("BUG: Bad page map", "BUG: Bad page map"),
    _F("BUG: workqueue lockup", "BUG: workqueue lockup", no_stack=True),
    _F("BUG: sleeping function called from invalid context at (.*)",
       "BUG: sleeping function called from invalid context in {1}", stack=_S(*_CT_STACK)),
    _F(r"BUG: using ([a-z_]+)\(\) in preemptible", "BUG: using {0}() in preemptible code in {1}",
       stack=_S(*_CT_STACK, skip=["dump_stack", "preemption", "preempt", "debug_", "processor_id", "this_cpu"])),
    _F("BUG: workqueue leaked lock or atomic", "BUG: workqueue leaked lock or atomic in {0}",
       report=r"BUG: workqueue leaked lock or atomic(?:.*\n)+?.*last function: ([a-zA-Z0-9_]+)\n", no_stack=True),
    _F("BUG: memory leak", "memory leak in {0}",
       stack=_S(r"backtrace(?: \(crc [[:xdigit:]]*\))?:", PARSE_STACK,
                skip=["kmemleak", "mmap", "kmem", "slab", "alloc", "create_object", "idr_get", "list_lru_init",
                      "kasprintf", "kvasprintf", "pcpu_create", "strdup", "strndup", "memdup"])),
    _F("BUG: .*stack guard page was hit at", "BUG: stack guard page was hit in {0}", alt=["stack-overflow in {0}"],
       stack=_S(*_RIP_STACK, extractor="stall")),
    _F("BUG: Invalid wait context", "WARNING: locking bug in {0}",
       stack=_S(*_CT_STACK, skip=["lock_sock", "release_sock"])),
    _F(r"BUG:[[:space:]]*(?:\n|$)", "BUG: corrupted", corrupted=True),
], suppressions=[_c(p) for p in ["ODEBUG:", "Boot_DEBUG:", "xlog_status:", "DEBUG:",
                                 "BUG: no syscalls can create resource"]])

_WARNING = OopsGroup("WARNING:", kind="warning", formats=[
    _F(r"WARNING: .*lib/debugobjects\.c.* (?:debug_print|debug_check|at)", "WARNING: ODEBUG bug in {0}",
       stack=_warning_stack("debug_", "rcu", "hrtimer_", "timer_", "work_", "percpu_", "vunmap", "vfree", "__free_",
                            "debug_check", "kobject_")),
    _F(r"WARNING: .*mm/usercopy\.c.* (?:usercopy_warn|at)", "WARNING: bad usercopy in {0}",
       stack=_warning_stack("usercopy", "__check")),
    _F(r"WARNING: .*lib/kobject\.c.* (?:kobject_|at)", "WARNING: kobject bug in {0}",
       stack=_warning_stack("kobject_")),
    _F(r"WARNING: .*fs/proc/generic\.c.* (?:proc_register|at)", "WARNING: proc registration bug in {0}",
       stack=_warning_stack("proc_")),
    _F(r"WARNING: .*lib/refcount\.c.* (?:refcount_|at)", "WARNING: refcount bug in {0}",
       stack=_warning_stack("refcount", "kobject_")),
    _F(r"WARNING: .*kernel/locking/lockdep\.c.*lock_", "WARNING: locking bug in {0}",
       stack=_warning_stack("lock_sock", "release_sock")),
    _F("WARNING: .*still has locks held!", "WARNING: still has locks held in {0}",
       report=r"WARNING: .*still has locks held!(?:.*\n)+?.*at: {{FUNC}}"),
    _F("WARNING: Nested lock was not taken", "WARNING: nested lock was not taken in {0}", stack=_warning_stack()),
    _F("WARNING: lock held when returning to user space", "WARNING: lock held when returning to user space in {0}",
       report="WARNING: lock held when returning to user space(?:.*\\n)+?.*leaving the kernel with locks still held"
       + _LOCK_AT, no_stack=True),
    _F(r"WARNING: .*mm/.*\.c.* k?.?malloc", "WARNING: kmalloc bug in {0}",
       stack=_warning_stack("kmalloc", "krealloc", "slab", "kmem")),
    _F("WARNING: .*mm/vmalloc.c.*__vmalloc_node", "WARNING: zero-size vmalloc in {0}", stack=_warning_stack()),
    _F("WARNING: .* usb_submit_urb", "WARNING in {0}/usb_submit_urb",
       stack=_warning_stack("usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg", "usb_interrupt_msg",
                            "usb_control_msg")),
    _F(r"WARNING: {{SRC}} at 0x\d+, CPU#\d+", "WARNING in {1}", stack=_warning_stack()),
    _F("WARNING: .* at {{SRC}} {{FUNC}}", "WARNING in {2}", stack=_warning_stack()),
    _F("WARNING: {{SRC}} at {{FUNC}}", "WARNING in {2}", stack=_warning_stack()),
    _F(r"WARNING: \[.*\] {{SRC}} at {{FUNC}}.*", "WARNING in {2}", stack=_warning_stack()),
    _F("WARNING: possible circular locking dependency detected", "possible deadlock in {0}",
       report=r"WARNING: possible circular locking dependency detected(?:.*\n)+?.*is trying to acquire lock",
       stack=_S("at: (?:{{PC}} +)?{{FUNC}}", "at: (?:{{PC}} +)?{{FUNC}}", PARSE_STACK,
                skip=["process_one_work", "flush_workqueue", "drain_workqueue", "destroy_workqueue"])),
    _F("WARNING: possible irq lock inversion dependency detected", "possible deadlock in {0}",
       report=r"WARNING: possible irq lock inversion dependency detected(?:.*\n)+?.*just changed the state of lock"
       + _LOCK_AT),
    _F("WARNING: .*-safe -> .*-unsafe lock order detected", "possible deadlock in {0}",
       stack=_S("which became (?:.*) at:", PARSE_STACK)),
    _F("WARNING: possible recursive locking detected", "possible deadlock in {0}",
       report=r"WARNING: possible recursive locking detected(?:.*\n)+?.*is trying to acquire lock" + _LOCK_AT),
    _F("WARNING: inconsistent lock state", "inconsistent lock state in {1}",
       report=r"WARNING: inconsistent lock state(?:.*\n)+?.*takes" + _LOCK_AT, stack=_S(*_CT_STACK)),
    _F("WARNING: suspicious RCU usage", "WARNING: suspicious RCU usage in {1}",
       report=r"WARNING: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}",
       stack=_S(*_CT_STACK, skip=["rcu", "kmem", "slab"])),
    _F("WARNING: kernel stack regs at [0-9a-f]+ in [^ ]* has bad '([^']+)' value",
       "WARNING: kernel stack regs has bad '{0}' value", no_stack=True),
    _F("WARNING: kernel stack frame pointer at [0-9a-f]+ in [^ ]* has bad value",
       "WARNING: kernel stack frame pointer has bad value", no_stack=True),
    _F("WARNING: bad unlock balance detected!", "WARNING: bad unlock balance in {0}",
       stack=_S("{{PC}} +{{FUNC}}", CALL_TRACE, PARSE_STACK)),
    _F("WARNING: held lock freed!", "WARNING: held lock freed in {0}",
       report=r"WARNING: held lock freed!(?:.*\n)+?.*at:(?: {{PC}})? +{{FUNC}}"),
    _F("WARNING: kernel stack regs .* has bad 'bp' value", "WARNING: kernel stack regs has bad value",
       no_stack=True),
    _F("WARNING: kernel stack frame pointer .* has bad value", "WARNING: kernel stack regs has bad value",
       no_stack=True),
    _F(r"WARNING:[[:space:]]*(?:\n|$)", "WARNING: corrupted", corrupted=True),
], suppressions=[_c(p) for p in [
    "WARNING: /etc/ssh/moduli does not exist, using fixed modulus",
    "WARNING: workqueue cpumask: online intersect > possible intersect",
    "WARNING: [Tt]he mand mount option",
    r"WARNING: Unsupported flag value\(s\) of 0x%x in DT_FLAGS_1",
    "WARNING: Unprivileged eBPF is enabled with eIBRS",
    r"WARNING: fbcon: Driver '(.*)' missed to adjust virtual screen size (\((?:\d+)x(?:\d+) vs\. (?:\d+)x(?:\d+)\))",
    "WARNING: See https.* for mitigation options.",
    "WARNING: kernel not compiled with CPU_SRSO",
    r"EXT4-[Ff][Ss](?: \(.*\))?:",
    "(?i)warning: .* uses (deprecated v2 capabilities|wireless extensions)",
    r"XFS \(\w+\): WARNING",
]])

_LOCKDEP_INFO_AT = r"(?:.*\n)+?.*at: {{PC}} +{{FUNC}}"
_INFO = OopsGroup("INFO:", kind="info", formats=[
    _F("INFO: possible circular locking dependency detected", "possible deadlock in {0}",
       report=r"INFO: possible circular locking dependency detected \](?:.*\n)+?.*is trying to acquire lock"
       + _LOCKDEP_INFO_AT),
    _F("INFO: possible irq lock inversion dependency detected", "possible deadlock in {0}",
       report=r"INFO: possible irq lock inversion dependency detected \](?:.*\n)+?.*just changed the state of lock"
       + _LOCKDEP_INFO_AT),
    _F("INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected", "possible deadlock in {0}",
       report=r"INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected \](?:.*\n)+?.*is trying to acquire"
       + _LOCKDEP_INFO_AT),
    _F("INFO: possible recursive locking detected", "possible deadlock in {0}",
       report=r"INFO: possible recursive locking detected \](?:.*\n)+?.*is trying to acquire lock"
       + _LOCKDEP_INFO_AT),
    _F("INFO: inconsistent lock state", "inconsistent lock state in {0}",
       report=r"INFO: inconsistent lock state \](?:.*\n)+?.*takes" + _LOCKDEP_INFO_AT),
    _F("INFO: rcu_(?:preempt|sched|bh|tasks) (?:self-)?detected(?: expedited)? stall",
       "INFO: rcu detected stall in {0}", alt=["stall in {0}"],
       stack=_S("apic_timer_interrupt", RIP_FRAME, PARSE_STACK,
                parts2=("(?:apic_timer_interrupt|Exception stack|el1h_64_irq)", PARSE_STACK),
                skip=["apic_timer_interrupt", "rcu"], extractor="stall",
                fallback=(_c("NMI backtrace for cpu"), RIP_FRAME, CALL_TRACE, PARSE_STACK))),
    _F("INFO: trying to register non-static key", "INFO: trying to register non-static key in {0}",
       stack=_S(*_CT_STACK, skip=["stack", "lock", "IRQ"])),
    _F("INFO: suspicious RCU usage", "INFO: suspicious RCU usage in {1}",
       report=r"INFO: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}",
       stack=_S(*_CT_STACK, skip=["rcu", "kmem", "slab"])),
    _F("INFO: task {{TASK}} blocked (?:in I/O wait )?for more than [0-9]+ seconds", "INFO: task hung in {0}",
       alt=["hang in {0}"], stack=_S(*_CT_STACK, extractor="hang")),
    _F("INFO: task {{TASK}} can't die for more than .* seconds", "INFO: task can't die in {0}", alt=["hang in {0}"],
       stack=_S(*_CT_STACK, skip=["schedule"])),
    _F("INFO: (Freed|Allocated) in (.*)", "INFO: {0} in {1}", corrupted=True),
    _F(r"INFO:[[:space:]]*(?:\n|$)", "INFO: corrupted", corrupted=True),
], suppressions=[_c(p) for p in [
    "INFO: lockdep is turned off", "INFO: Stall ended before state dump start", "INFO: NMI handler",
    "INFO: recovery required on readonly filesystem", "(handler|interrupt).*took too long",
    "INFO: sys_.* is not present in /proc/kallsyms", "INFO: no syscalls can create resource", "rmt_storage:INFO:",
    "_INFO:",
]])


def _simple(header: str, title: str, fmt: str, parts: Sequence[re.Pattern[str] | str] | None, kind: str,
            alt: Sequence[str] = (), skip: Sequence[str] = ()) -> OopsGroup:
    stack = _S(*parts, skip=skip) if parts is not None else None
    return OopsGroup(header, [_F(title, fmt, alt=alt, stack=stack)], kind=kind)


_PANIC = OopsGroup("Kernel panic", kind="panic", formats=[
    _F("Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted in {0}",
       report="Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: {{FUNC}}", no_stack=True),
    _F("Kernel panic - not syncing: stack-protector:", "kernel panic: stack is corrupted in {0}",
       report="Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: [a-f0-9]+",
       stack=_S(*_CT_STACK, skip=["stack_chk"])),
    _F("Kernel panic - not syncing: corrupted stack end", "kernel panic: corrupted stack end in {0}",
       report="Kernel panic - not syncing: corrupted stack end detected inside scheduler",
       alt=["stack-overflow in {0}"], stack=_S(*_CT_STACK, skip=["schedule", "retint_kernel"], extractor="stall")),
    _F("Kernel panic - not syncing: kernel stack overflow", "kernel stack overflow in {0}",
       alt=["stack-overflow in {0}"], stack=_S(*_CT_STACK, skip=["bad_stack"], extractor="stall")),
    _F("Kernel panic - not syncing: Attempted to kill init!", "kernel panic: Attempted to kill init!"),
    _F("Kernel panic - not syncing: Couldn't open N_TTY ldisc for [^ ]+ --- error -[0-9]+",
       "kernel panic: Couldn't open N_TTY ldisc"),
    _F("Kernel panic - not syncing: Fatal exception", "kernel panic: Fatal exception", corrupted=True),
    _F("Kernel panic - not syncing: panic_on_warn set", "kernel panic: panic_on_warn set", corrupted=True),
    _F("Kernel panic - not syncing: hung_task: blocked tasks", "kernel panic: hung_task: blocked tasks",
       corrupted=True),
    _F("Kernel panic - not syncing: (.*)", "kernel panic: {0}"),
])

_KERNEL_BUG = OopsGroup("kernel BUG", kind="kernel_bug", formats=[
    _F("kernel BUG at mm/usercopy.c", "BUG: bad usercopy in {0}", stack=_S(*_CT_STACK, skip=["usercopy", "__check"])),
    _F("kernel BUG at lib/list_debug.c", "BUG: corrupted list in {0}", alt=["bad-access in {0}"],
       stack=_S(*_CT_STACK)),
    _F("kernel BUG at (.*)", "kernel BUG in {1}", stack=_S(*_RIP_STACK, skip=["^skb_"])),
])

_UBSAN = OopsGroup("UBSAN:", kind="ubsan", formats=[
    _F("UBSAN:", "UBSAN: undefined-behaviour in {0}", report="UBSAN: Undefined behaviour in",
       stack=_S(*_CT_STACK, skip=["ubsan", "overflow"])),
    _F("UBSAN: array-index-out-of-bounds in", "UBSAN: array-index-out-of-bounds in {0}", alt=["bad-access in {0}"],
       stack=_S(*_CT_STACK, skip=["ubsan", "overflow"])),
    _F("UBSAN:", "UBSAN: {0} in {1}", report="UBSAN: (.*?) in", stack=_S(*_CT_STACK, skip=["ubsan", "overflow"])),
])


def _nostack(header: str, title: str, fmt: str, kind: str, supp: Sequence[str] = (),
             corrupted: bool = False) -> OopsGroup:
    return OopsGroup(header, [_F(title, fmt, no_stack=True, corrupted=corrupted)],
                     suppressions=[_c(s) for s in supp], kind=kind)


#: syzkaller's Linux header groups in priority order (earliest matching line wins; within a line, list order).
LINUX_OOPSES: list[OopsGroup] = [
    _BUG, _WARNING, _INFO,
    _simple("Unable to handle kernel", "Unable to handle kernel (paging request|NULL pointer dereference|"
            "access to user memory)", "BUG: unable to handle kernel {0} in {1}", _RIP_STACK, "bad_access",
            alt=["bad-access in {1}"]),
    OopsGroup("general protection fault", [
        _F("general protection fault.*:", "general protection fault in {0}", alt=["bad-access in {0}"],
           stack=_S(*_RIP_STACK))], suppressions=[_c(r"general protection fault .* error:\d+ in ")], kind="gpf"),
    _simple("stack segment: ", "stack segment: ", "stack segment fault in {0}", _RIP_STACK, "trap"),
    _PANIC,
    _simple("PANIC: double fault", "PANIC: double fault", "PANIC: double fault in {0}", (RIP_FRAME,), "trap"),
    OopsGroup("rust_kernel: panicked", [
        _F("rust_kernel: panicked", "{0} in {1}", report="rust_kernel: panicked at [^\n]*?\n(.+?)\n",
           stack=_S(*_CT_STACK, skip=[re.escape("__rustc::rust_begin_unwind")]))], kind="panic"),
    _KERNEL_BUG,
    OopsGroup("Kernel BUG", [_F("Kernel BUG (.*)", "kernel BUG {0}")], kind="kernel_bug"),
    OopsGroup("BUG kmalloc-", [_F("BUG kmalloc-.*: Object already free", "BUG: Object already free")], kind="bug"),
    _simple("divide error:", "divide error: ", "divide error in {0}", (RIP_FRAME,), "trap"),
    _simple("divide_error:", "divide_error: ", "divide error in {0}", (RIP_FRAME,), "trap"),
    _simple("invalid opcode:", "invalid opcode: ", "invalid opcode in {0}", (RIP_FRAME,), "trap"),
    _simple("int3:", "int3: ", "int3 in {0}", _RIP_STACK, "trap"),
    _UBSAN,
    _nostack("Booting the kernel.", "^Booting the kernel", "unexpected kernel reboot", "reboot",
             supp=["Parsing ELF|Decompressing Linux|Unknown parameter '"]),
    _nostack("unregister_netdevice: waiting for", "unregister_netdevice: waiting for (?:.*) to become free",
             "unregister_netdevice: waiting for DEV to become free", "other"),
    _nostack("VFS: Close: file count is 0", "VFS: Close: file count is 0",
             "VFS: Close: file count is zero (use-after-free)", "other"),
    _nostack("VFS: Busy inodes after unmount", "VFS: Busy inodes after unmount",
             "VFS: Busy inodes after unmount (use-after-free)", "other"),
    _simple("Internal error:", "Internal error:", "Internal error in {0}", _RIP_STACK, "oops",
            alt=["bad-access in {0}"]),
    _simple("Unhandled fault:", "Unhandled fault:", "Unhandled fault in {0}", _RIP_STACK, "bad_access",
            alt=["bad-access in {0}"]),
    _simple("Alignment trap:", "Alignment trap:", "Alignment trap in {0}", _RIP_STACK, "trap"),
    OopsGroup("trusty: panic", [
        _F("trusty: panic.* ASSERT FAILED", "trusty: ASSERT FAILED: {0}",
           report=r"trusty: panic \(.*?\):(?: DEBUG)? ASSERT FAILED at \(.*?\): (.+)", no_stack=True),
        _F("trusty: panic.* ASSERT FAILED.*: *(.*)", "trusty: ASSERT FAILED: {0}", corrupted=True),
        _F("trusty: panic", "trusty: panic: {0}", report=r"trusty: panic \(.*?\): (.+)", no_stack=True),
    ], kind="panic"),
    _nostack("fatal error:", "fatal error:", "go runtime error", "other",
             supp=["ALSA", "fatal error: cannot create timer"]),
    # Produced by syzkaller's own executor; kept so that titles agree on syzkaller logs.
    _nostack("SYZFAIL:", "SYZFAIL:(.*)", "SYZFAIL:{0}", "other"),
    OopsGroup("SYZFATAL:", [_F("SYZFATAL:(.*)()", "SYZFATAL:{0}", alt=["SYZFATAL{1}"], no_stack=True)],
              kind="other"),
    OopsGroup("panic:", [
        _F("panic: Sentry detected .* stuck task", "panic: Sentry detected stuck tasks", no_stack=True),
        _F("panic:(.*)", "panic:{0}", no_stack=True),
    ], suppressions=[_c(p) for p in ["_panic:", "xlog_status:", r"ddb\.onpanic:", "evtlog_status:"]], kind="panic"),
]

#: Our additions: reports syzkaller has no header for. Only a hard LOCKUP ends another report (it is printed
#: by the NMI watchdog on its own); ``Oops:`` follows a ``BUG:`` line of the same oops and an NMI backtrace is
#: part of the stall or sysrq dump that asked for it.
EXTRA_OOPSES: list[OopsGroup] = [
    OopsGroup("Watchdog detected hard LOCKUP", [
        _F("Watchdog detected hard LOCKUP on cpu", "BUG: hard lockup in {0}", alt=["stall in {0}"],
           stack=_S(*_RIP_STACK)),
    ], kind="hard_lockup", extra=True),
    OopsGroup("Oops:", [
        _F("Oops: ", "Oops in {0}", alt=["bad-access in {0}"], stack=_S(*_RIP_STACK)),
    ], suppressions=[_c(p) for p in [r"Oops: (?:general protection fault|invalid opcode|int3)"]],
        kind="oops", extra=True),
    OopsGroup("NMI backtrace for cpu", [
        _F("NMI backtrace for cpu", "NMI backtrace in {0}", stack=_S(*_RIP_STACK, parts2=_CT_STACK)),
    ], kind="backtrace", extra=True),
]
#: Extra headers that end the report they appear in (any extra header also ends a report it started itself).
EXTRA_ENDS_REPORT = frozenset({"Watchdog detected hard LOCKUP"})

#: Title prefix -> syzkaller crash type, first match wins.
TITLE_TO_TYPE: list[tuple[tuple[str, ...], str]] = [
    (("KFENCE: use-after-free write",), "KFENCE-USE-AFTER-FREE-WRITE"),
    (("KFENCE: use-after-free read", "KFENCE: use-after-free"), "KFENCE-USE-AFTER-FREE-READ"),
    (("KFENCE: invalid write", "KFENCE: out-of-bounds write"), "KFENCE-WRITE"),
    (("KFENCE: invalid read", "KFENCE: out-of-bounds read", "KFENCE: out-of-bounds"), "KFENCE-READ"),
    (("KFENCE: memory corruption",), "KFENCE-MEMORY-CORRUPTION"),
    (("KFENCE: invalid free",), "KFENCE-INVALID-FREE"),
    (("KMSAN: uninit-value",), "KMSAN-UNINIT-VALUE"),
    (("KMSAN: kernel-infoleak-after-free", "KMSAN: kernel-usb-infoleak-after-free", "KMSAN: use-after-free"),
     "KMSAN-USE-AFTER-FREE-READ"),
    (("KMSAN: kernel-infoleak", "KMSAN: kernel-usb-infoleak"), "KMSAN-INFO-LEAK"),
    (("KASAN: null-ptr-deref Write",), "KASAN-NULL-POINTER-DEREFERENCE-WRITE"),
    (("KASAN: null-ptr-deref Read",), "KASAN-NULL-POINTER-DEREFERENCE-READ"),
    (("BUG: unable to handle kernel NULL pointer dereference in",), "NULL-POINTER-DEREFERENCE"),
    (("KASAN: global-out-of-bounds Write", "KASAN: out-of-bounds Write", "KASAN: slab-out-of-bounds Write",
      "KASAN: stack-out-of-bounds Write", "KASAN: user-memory-access Write", "KASAN: vmalloc-out-of-bounds Write",
      "KASAN: wild-memory-access Write"), "KASAN-WRITE"),
    (("KASAN: global-out-of-bounds Read", "KASAN: invalid-access Read", "KASAN: out-of-bounds Read",
      "KASAN: slab-out-of-bounds Read", "KASAN: slab-out-of-bounds", "KASAN: stack-out-of-bounds Read",
      "KASAN: stack-out-of-bounds", "KASAN: unknown-crash Read", "KASAN: user-memory-access Read",
      "KASAN: vmalloc-out-of-bounds Read", "KASAN: wild-memory-access Read", "KASAN: wild-memory-access"),
     "KASAN-READ"),
    (("KASAN: double-free or invalid-free", "KASAN: invalid-free"), "KASAN-INVALID-FREE"),
    (("KASAN: slab-use-after-free Write", "KASAN: use-after-free Write"), "KASAN-USE-AFTER-FREE-WRITE"),
    (("KASAN: slab-use-after-free Read", "KASAN: use-after-free Read", "KASAN: use-after-free"),
     "KASAN-USE-AFTER-FREE-READ"),
    (("BUG: corrupted list", "BUG: unable to handle kernel paging request"), "MEMORY_SAFETY_BUG"),
    (("WARNING: refcount bug",), "REFCOUNT_WARNING"),
    (("UBSAN: array-index-out-of-bounds",), "MEMORY_SAFETY_UBSAN"),
    (("KCSAN: data-race",), "KCSAN-DATARACE"),
    (("KCSAN: assert: race in",), "KCSAN-ASSERT"),
    (("BUG: bad unlock balance in", "BUG: held lock freed in", "BUG: rwlock", "BUG: spinlock",
      "BUG: still has locks held in", "BUG: using", "WARNING: bad unlock balance in", "WARNING: held lock freed in",
      "WARNING: lock held", "WARNING: locking bug in", "WARNING: nested lock was not taken in",
      "WARNING: still has locks held in", "WARNING: suspicious RCU usage in", "inconsistent lock state in",
      "possible deadlock in"), "LOCKDEP"),
    (("BUG: scheduling while atomic in", "BUG: sleeping function called from invalid context in"), "ATOMIC_SLEEP"),
    (("memory leak in",), "LEAK"),
    (("BUG: bad usercopy in", "kernel BUG"), "BUG"),
    (("WARNING in",), "WARNING"),
    (("BUG: stack guard page was hit in", "WARNING: corrupted", "WARNING: kernel stack frame pointer has bad value",
      "WARNING: kernel stack regs has bad"), "UNKNOWN"),
    (("BUG: soft lockup in", "INFO: rcu detected stall in", "INFO: task can't die in", "INFO: task hung in",
      "BUG: hard lockup in"), "HANG"),
    (("Alignment trap in", "BUG: Object already free", "Internal error in", "PANIC: double fault",
      "Unhandled fault in", "VFS: Busy inodes after unmount (use-after-free)",
      "VFS: Close: file count is zero (use-after-free)", "divide error in", "general protection fault in",
      "go runtime error", "int3 in", "invalid opcode in", "kernel panic:", "kernel stack overflow", "panic:",
      "rust_kernel panicked", "stack segment fault in", "trusty:",
      "unregister_netdevice: waiting for DEV to become free", "Oops in"), "DoS"),
    (("no output from test machine",), "NO_OUTPUT"),
    (("unexpected kernel reboot",), "REBOOT"),
    (("SYZFAIL", "SYZFATAL:"), "SYZ_FAILURE"),
    (("WARNING:",), "WARNING"),
    (("BUG:",), "UNKNOWN"),
    (("INFO:",), "UNKNOWN"),
    (("KASAN:",), "KASAN-UNKNOWN"),
    (("KFENCE:",), "KFENCE-UNKNOWN"),
    (("KMSAN:",), "KMSAN-UNKNOWN"),
    (("UBSAN:",), "UBSAN"),
    (("KCSAN:",), "KCSAN-UNKNOWN"),
]
