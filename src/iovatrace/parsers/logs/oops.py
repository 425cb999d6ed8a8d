"""Find and title the oops-family reports in a kernel log.

Theory of operation:

1. **Lines.** :func:`.lines.iter_log_lines` strips the transport prefixes; :func:`.unwrap.unwrap_lines` glues
   mail-wrapped fragments back. Each line gets a *context*: its printk caller tag (``T123``/``C4``), ``console``
   when it only has a timestamp, ``""`` when it has neither. Lines longer than :data:`MAX_LINE` are cut for all
   matching (printk never emits more than ~1 KiB per line), which keeps every regexp linear in the input.
2. **Headers.** One combined substring scan finds lines holding a header (``BUG:``, ``WARNING:``, ...) of
   :data:`.rules.LINUX_OOPSES`, minus the per-header suppressions and lines cut short by a printk replay;
   :data:`.rules.EXTRA_OOPSES` (``Oops:``, hard LOCKUP) are used only on lines where no syzkaller header matched.
3. **Collection** (:func:`_collect`), as syzkaller does it: from the header line on, keep the lines of the same
   context (after ``Sending NMI from CPU``, CPU-tagged lines of other CPUs too), drop unreliable ``?`` frames when
   lines carry a context, drop ``Disabling lock debugging``, and once the report is long enough cut the trailing
   ``Kernel panic``/circular-locking noise. The text used for the title ends at the next header line that starts
   a report (except for task/CPU-tagged logs, whose text is already separated by context).
4. **Title** (:mod:`.titles`), corruption, type; then structured fields (:mod:`.fields`), frames
   (:mod:`.frames`), registers/code/modules (:mod:`.registers`) from the report's lines, ``?`` frames included.
5. **Next report** starts at the header that ended this one (or the point where a trailing panic was cut), so a
   panic that follows an oops in the same breath is part of it, while later reports get their own entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ...errors import LogFormatError
from . import rules, titles
from .fields import ReportFields, extract_fields
from .frames import Frame, extract_frames
from .lines import LogLine, iter_log_lines, strip_prefixes
from .registers import CodeBytes, Module, Register, extract_code, extract_modules, extract_registers
from .unwrap import unwrap_lines

__all__ = ["OopsReport", "OopsResult", "parse_oops", "iter_oops", "MAX_LINE", "MAX_REPORT_LINES"]

#: Characters of a line that take part in matching.
MAX_LINE = 4096
#: A printk timestamp back below this many seconds (a new boot starts at 0.000000) after later ones: a reboot.
_REBOOT_S = 1.0
#: Lines scanned after a header at most (a report is never this long; bounds the work on huge logs).
MAX_REPORT_LINES = 8000

_ALL_GROUPS = rules.LINUX_OOPSES + rules.EXTRA_OOPSES
_HEADER_RE = re.compile("|".join(re.escape(g.header) for g in _ALL_GROUPS))
_QUESTIONABLE = re.compile(r"(\[\<[0-9a-f]+\>\])? \? ")
_LOGIN = re.compile(r"^(?:\*\* [0-9]+ printk messages dropped \*\* )?(?:.{0,200}? login: )?")
_REPLAY = "** replaying previous printk message **"
_PANIC = "Kernel panic - not syncing"
_CIRCULAR = "WARNING: possible circular locking dependency detected"
_BINARY_MAGIC = (b"\x17\x08\x44tracing", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\x7fELF", b"\xfd7zXZ", b"BZh", b"PK\x03\x04")


@dataclass
class OopsReport:
    """One crash report found in a log.

    Attributes:
        id: index of the report in the log (0-based).
        kind: family: ``null_deref``, ``paging_fault``, ``gpf``, ``kernel_bug``, ``warning``, ``kasan``,
            ``kfence``, ``kmsan``, ``ubsan``, ``kcsan``, ``soft_lockup``, ``hard_lockup``, ``rcu_stall``,
            ``hung_task``, ``lockdep``, ``atomic_sleep``, ``panic``, ``memory_leak``, ``oops`` (arm ``Internal
            error``, bare ``Oops:``), ``trap`` (double fault, divide error, invalid opcode...), ``bad_access``,
            ``stack_overflow``, ``bad_page``, ``backtrace`` (NMI backtraces), ``reboot``, ``bug``, ``other``.
        title: syzkaller-style title (``BUG: unable to handle kernel NULL pointer dereference in f``).
        alt_titles: alternative titles for deduplication.
        type: syzkaller crash type (``NULL-POINTER-DEREFERENCE``, ``HANG``, ``LOCKDEP``...).
        corrupted: whether the report looks truncated or mixed with other output.
        corrupted_reason: why ('' when not corrupted).
        header: the line that started the report, transport prefixes stripped.
        first_line, last_line: 1-based line numbers of the report in the input.
        context: printk caller tag of the report (``T123``/``C4``), ``console`` or ``''``.
        fields: kernel release, taint, hardware, CPU, PID, comm, faulting address, RIP.
        frames, registers, modules, code: structured contents.
        text: the report's lines as used for the title (``?`` frames dropped when the log has contexts).
    """

    id: int
    kind: str
    title: str
    alt_titles: list[str]
    type: str
    corrupted: bool
    corrupted_reason: str
    header: str
    first_line: int
    last_line: int
    context: str
    fields: ReportFields
    frames: list[Frame] = field(default_factory=list)
    registers: list[Register] = field(default_factory=list)
    modules: list[Module] = field(default_factory=list)
    code: list[CodeBytes] = field(default_factory=list)
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (title, alt_titles, kind, corrupted, where, fields; not the tables)."""
        d: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "title": self.title, "alt_titles": self.alt_titles,
            "type": self.type, "corrupted": self.corrupted, "corrupted_reason": self.corrupted_reason,
            "first_line": self.first_line, "last_line": self.last_line, "header": self.header,
        }
        d.update(self.fields.to_dict())
        d["frames"] = len(self.frames)
        return d


@dataclass
class OopsResult:
    """Everything :func:`parse_oops` found.

    Attributes:
        reports: the reports in input order.
        lines: number of input lines.
        truncated_lines: lines longer than :data:`MAX_LINE` (matched on their first characters only).
    """

    reports: list[OopsReport]
    lines: int = 0
    truncated_lines: int = 0

    def tables(self) -> dict[str, Any]:
        """The reports as Arrow tables: ``reports``, ``frames``, ``registers``, ``modules``, ``code``.

        Returns:
            ``{name: pyarrow.Table}`` with the schemas of :mod:`iovatrace.schema` (``OOPS_*``).
        """
        from .tables import oops_tables

        return oops_tables(self.reports)


@dataclass
class _Line:
    __slots__ = ("lineno", "last", "ts", "text", "context", "questionable", "groups", "extra", "ends")
    lineno: int
    last: int  # last physical input line (mail-wrapped lines span several)
    ts: float | None
    text: str  # prefixes stripped, ``?`` lines keep their text
    context: str
    questionable: bool
    groups: list[rules.OopsGroup] | None  # syzkaller header groups matching this line
    extra: rules.OopsGroup | None
    ends: bool  # starts a new report even inside another one


def _check_input(data: str | bytes, path: str | None) -> str:
    if isinstance(data, bytes):
        head = data[:65536]
        if head.startswith(_BINARY_MAGIC) or (head and head.count(0) > len(head) * 0.3):
            raise LogFormatError("Cannot read kernel log: binary data (expected text lines)", path=path, offset=0,
                                 excerpt=head[:16].decode("latin-1"))
        return data.decode("utf-8", errors="replace")
    if isinstance(data, str):
        return data
    raise LogFormatError(f"Cannot read kernel log: expected str or bytes, got {type(data).__name__}", path=path)


def _prepare(ln: LogLine) -> _Line:
    text, ts, caller = ln.text, ln.ts, ln.caller
    if ts is None and (" login: " in ln.raw or "printk messages dropped" in ln.raw):
        # "syzkaller login: [ 12.3] BUG: ..." -- console output glued to a prompt.
        rest = _LOGIN.sub("", ln.raw[:MAX_LINE], count=1)
        if rest.startswith(("<", "[")):
            t2, ts2, _, c2 = strip_prefixes(rest)
            if ts2 is not None:
                text, ts, caller = t2, ts2, c2
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE]
    context = caller if caller else ("console" if ts is not None else "")
    questionable = False
    if context and "<EOI>" not in text:
        if _QUESTIONABLE.search(text):
            questionable = True
        elif text.endswith(" (unreliable)"):
            questionable = True
    groups: list[rules.OopsGroup] | None = None
    extra = None
    if _HEADER_RE.search(text):
        for g in _ALL_GROUPS:
            if g.header in text and not any(s.search(text) for s in g.suppressions):
                if g.extra:
                    if groups is None and extra is None:
                        extra = g
                else:
                    groups = (groups or []) + [g]
    # (every info message of rules.INFO_MESSAGES_WITH_STACK contains "fail" or "FAULT_")
    ends = _static_end(text, groups, extra) if (groups or extra or "fail" in text or "FAULT_" in text) else False
    last = ln.lineno + ln.raw.count("\n") if "\n" in ln.raw else ln.lineno
    return _Line(ln.lineno, last, ts, text, context, questionable, groups, extra, ends)


_QUOTED_CONSOLE = re.compile(r"^(?:> ?)+(?:<\d{1,2}> ?)?\[\s*\d+\.\d+\]", re.M)


def _iter_lines(text: str) -> tuple[list[_Line], int]:
    # A log quoted in a mail reply ("> [  12.3] BUG: ...") is read through the quotes when at least three
    # quoted lines carry console timestamps; otherwise a leading '>' is kernel text and stays.
    quoted = sum(1 for _ in zip(range(3), _QUOTED_CONSOLE.finditer(text))) == 3
    out = [_prepare(ln) for ln in unwrap_lines(iter_log_lines(text, strip_mail_quotes=quoted))]
    long = sum(1 for ln in out if len(ln.text) >= MAX_LINE)
    # A header line followed by a printk replay marker was cut short: it is not a report start.
    for i in range(len(out) - 1):
        if (out[i].groups or out[i].extra) and _REPLAY in out[i + 1].text:
            out[i].groups = None
            out[i].extra = None
            out[i].ends = _static_end(out[i].text, None, None)
    if text.endswith("\n") and out and out[-1].text == "":
        out.pop()
    return out, long


def _starts_ignored(text: str) -> bool:
    return any(r.search(text) for r in rules.REPORT_START_IGNORES)


def _static_end(text: str, groups: list[rules.OopsGroup] | None, extra: rules.OopsGroup | None) -> bool:
    """Whether a line inside any report starts another one (syzkaller's rule, plus our hard LOCKUP header)."""
    if groups:
        if not _starts_ignored(text):
            return True
    elif extra is not None and extra.header in rules.EXTRA_ENDS_REPORT:
        return True
    return any(m in text for m in rules.INFO_MESSAGES_WITH_STACK)


def _ends_report(ln: _Line, own_extra: rules.OopsGroup | None) -> bool:
    # An extra header also ends the report it started itself (one NMI backtrace per CPU).
    return ln.ends or (ln.extra is not None and ln.extra is own_extra)


@dataclass
class _Collected:
    title_lines: list[int]  # indexes of lines in the title text
    all_lines: list[int]  # indexes of all kept lines (whole report)
    body: list[int]  # the report's own lines, ``?`` frames included: up to where the title text ends, or to the
    # end of the epilogue after its "---[ end trace ]---" marker
    resume: int  # where the search for the next report continues


# What an oops may still print after its "---[ end trace ]---" marker: registers again, the panic, its offset.
_EPILOGUE = re.compile(
    r"^\s*(?:---\[ end |RIP|RSP|R[A-Z0-9]{1,3}:|E[A-Z]{2}:|FS:|CS:|CR\d|DR\d|PKRU|Code:|pc :|lr :|sp :|x\d+:|"
    r"Kernel panic|Kernel Offset|Rebooting in|Modules linked in|note: |Fixing recursive fault|$)"
)


def _collect(lines: list[_Line], start: int) -> _Collected:
    ctx = lines[start].context
    own_extra = lines[start].extra
    task_ctx = ctx not in ("", "console")
    second: int | None = None  # first line (any context) that starts another report
    own_second: int | None = None  # where this report's own context starts its second further report
    own_nested = 0
    cut: int | None = None
    n_text = 0
    skip_text = cpu_traceback = False
    min_lines = 16 if "BUG: KMSAN:" in lines[start].text else 22
    kept: list[int] = []
    title_n = 0
    body: list[int] = []
    end = min(len(lines), start + MAX_REPORT_LINES)
    max_ts = lines[start].ts
    body_open, epilogue = True, False
    for i in range(start, end):
        ln = lines[i]
        first = i == start
        if ln.ts is not None and ln.context == ctx:  # other contexts may be other machines' interleaved output
            if max_ts is not None and ln.ts < _REBOOT_S < max_ts:
                # The printk clock went back: the machine rebooted and nothing after this belongs to the report.
                if second is None:
                    second = i
                if own_second is None:
                    own_second = i
            elif max_ts is None or ln.ts > max_ts:
                max_ts = ln.ts
        if not first and (second is None or (task_ctx and own_second is None)) and _ends_report(ln, own_extra):
            if second is None:
                second = i
            if ln.context == ctx and own_second is None:
                # The same task/CPU starts another report. syzkaller keeps reading (a WARNING may be interrupted
                # by an oops of the same task, whose stack still names the guilty frame); we allow one such
                # nested report and stop at the second, which keeps a flood of reports linear.
                own_nested += 1
                if own_nested == 2:
                    own_second = i
        frozen = (second is not None and not task_ctx) or own_second is not None
        other_ctx = ln.context != ctx and not (cpu_traceback and ln.context.startswith("C"))
        if not first and other_ctx:
            continue
        if body_open and epilogue and not first and not _EPILOGUE.match(ln.text):
            body_open = False  # the oops printed its end marker and its epilogue is over: later lines are others'
        if not first and ln.questionable:
            if not frozen and not skip_text and body_open:
                body.append(i)
            continue
        n_text += 1
        skip_line = skip_text
        if "Disabling lock debugging due to kernel taint" in ln.text:
            skip_line = True
        elif "Sending NMI from CPU" in ln.text:
            cpu_traceback = True
        elif (_PANIC in ln.text or _CIRCULAR in ln.text) and n_text > min_lines:
            if not skip_text:
                cut = i
            skip_text = skip_line = True
            break  # everything from here on is dropped; the next report search resumes here
        if not first and skip_line:
            continue
        kept.append(i)
        if not frozen:
            title_n = len(kept)
            if body_open:
                body.append(i)
                if "---[ end trace" in ln.text:
                    epilogue = True
        elif i > (own_second if own_second is not None else second or 0) + 20:
            break  # the title text is frozen; a few more lines only feed the stack-trace sanity check
    resume = len(lines) if end == len(lines) else end
    for r in (second, cut):
        if r is not None and r < resume:
            resume = r
    return _Collected(kept[:title_n], kept, body, max(resume, start + 1))


def _kind(title: str, typ: str, group: rules.OopsGroup) -> str:
    if typ == "LOCKDEP":  # syzkaller's lockdep family: deadlocks, lock state, suspicious RCU usage, ...
        return "lockdep"
    if typ == "ATOMIC_SLEEP":
        return "atomic_sleep"
    t = title
    for prefix, kind in _KIND_PREFIXES:
        if t.startswith(prefix):
            return kind
    if group.kind in ("gpf", "panic", "kernel_bug", "warning", "oops", "hard_lockup", "backtrace", "trap",
                      "bad_access", "reboot"):
        return group.kind
    return "bug" if t.startswith("BUG") else "other"


_KIND_PREFIXES = [
    ("BUG: unable to handle kernel NULL pointer dereference", "null_deref"),
    ("BUG: unable to handle kernel paging request", "paging_fault"),
    ("BUG: unable to handle kernel", "paging_fault"),
    ("general protection fault", "gpf"),
    ("KASAN:", "kasan"), ("KFENCE:", "kfence"), ("KMSAN:", "kmsan"), ("UBSAN:", "ubsan"), ("KCSAN:", "kcsan"),
    ("BUG: soft lockup", "soft_lockup"), ("BUG: hard lockup", "hard_lockup"),
    ("INFO: rcu detected stall", "rcu_stall"), ("INFO: task hung", "hung_task"), ("INFO: task can't die", "hung_task"),
    ("memory leak", "memory_leak"), ("WARNING", "warning"), ("kernel BUG", "kernel_bug"),
    ("BUG: corrupted list", "kernel_bug"), ("BUG: bad usercopy", "kernel_bug"),
    ("kernel panic", "panic"), ("Kernel panic", "panic"), ("Oops", "oops"),
    ("INFO: suspicious RCU usage", "lockdep"), ("INFO: trying to register non-static key", "lockdep"),
    ("BUG: stack guard page", "stack_overflow"), ("kernel stack overflow", "stack_overflow"),
    ("BUG: Bad page", "bad_page"),
]


def _build(lines: list[_Line], start: int, rid: int, gce_hangup: bool) -> tuple[OopsReport, int]:
    ln0 = lines[start]
    group = ln0.groups[0] if ln0.groups else ln0.extra
    assert group is not None
    col = _collect(lines, start)
    title_text = "".join(lines[i].text + "\n" for i in col.title_lines)
    full_text = "".join(lines[i].text + "\n" for i in col.all_lines)
    d = titles.describe(title_text, group)
    if not d.title:  # the header vanished from the kept text (cannot happen for the first line; be safe)
        d = titles.describe(ln0.text + "\n", group)
    reason = d.corrupted or titles.check_corrupted(d.title, full_text, d.format)
    title = titles.sanitize_title(d.title)
    alts = [titles.sanitize_title(a) for a in d.alt_titles]
    typ = titles.title_to_type(title)
    body = [lines[i] for i in col.body]
    body_text = [b.text for b in body]
    rep = OopsReport(
        id=rid, kind=_kind(title, typ, group), title=title, alt_titles=alts, type=typ,
        corrupted=bool(reason) or gce_hangup,
        corrupted_reason=reason or ("console connection lost" if gce_hangup else ""),
        header=ln0.text, first_line=ln0.lineno, last_line=body[-1].last if body else ln0.last,
        context=ln0.context, fields=extract_fields(body_text), text=title_text,
    )
    rep.frames = extract_frames(body_text, [b.lineno for b in body])
    rep.registers = extract_registers(body_text, [b.lineno for b in body])
    rep.modules = extract_modules(body_text)
    rep.code = extract_code(body_text, [b.lineno for b in body])
    return rep, col.resume


def iter_oops(data: str | bytes, *, path: str | None = None) -> Iterator[OopsReport]:
    """Yield the crash reports of a kernel log one by one.

    Args:
        data: the whole log (bytes are decoded as UTF-8 with replacement).
        path: name of the input for error messages.

    Raises:
        LogFormatError: the input is binary (a trace.dat, a compressed file...) or not text at all.
    """
    text = _check_input(data, path)
    lines, _ = _iter_lines(text)
    yield from _iter_reports(lines, "serialport: VM disconnected." in text)


def _iter_reports(lines: list[_Line], gce: bool) -> Iterator[OopsReport]:
    pos, rid = 0, 0
    while pos < len(lines):
        start = next((i for i in range(pos, len(lines)) if lines[i].groups or lines[i].extra), None)
        if start is None:
            return
        rep, pos = _build(lines, start, rid, gce)
        yield rep
        rid += 1


def parse_oops(data: str | bytes, *, path: str | None = None) -> OopsResult:
    """Find, title and dissect every oops-family report in a kernel log.

    Args:
        data: the whole log as text or bytes (any mix of timestamps, caller tags, ``<N>`` levels, syslog
            headers, CRLF; mail-wrapped lines are rejoined).
        path: name of the input for error messages.

    Returns:
        An :class:`OopsResult`; ``.reports`` lists :class:`OopsReport` objects, ``.tables()`` gives Arrow tables.

    Raises:
        LogFormatError: the input is binary or not text at all.
    """
    text = _check_input(data, path)
    lines, long = _iter_lines(text)
    reports = list(_iter_reports(lines, "serialport: VM disconnected." in text))
    return OopsResult(reports, lines=len(lines), truncated_lines=long)
