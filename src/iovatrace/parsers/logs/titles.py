"""Run the rule tables of :mod:`.rules` over one report's text: title, alternative titles, type, corruption.

Theory of operation (the scheme of syzkaller's ``pkg/report``, re-expressed):

1. :func:`describe` tries every format of the report's header group; the one whose ``title`` regexp matches
   earliest wins, ties going to list order. A format with a ``report`` regexp that does not match falls through
   to the next one; if none survives, the title is the raw header line and the report is corrupted.
2. The format string gets the regexp's groups, then one guilty frame per stack trace named by the format's
   ``parts`` (:func:`_extract_frames`): a part either advances to the first line it matches (capturing a function
   if it has a group) or parses a stack trace until the next stack-start line. Frames matching the global or the
   format's skip list are dropped; syscall prefixes (``__x64_sys_`` ...) are stripped; the stall and hang
   extractors pick a representative frame deeper in the stack.
3. :func:`sanitize_title` replaces addresses, numbers, file lines and offsets so that titles deduplicate.
4. :func:`check_corrupted` applies the "a stack trace keyword must be followed by frames" rules.

Everything here is a pure function of strings; it never looks at line numbers or the input file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import rules
from .demangle import demangle
from .rules import PARSE_STACK, OopsFormat, OopsGroup, StackFmt

__all__ = ["Description", "describe", "sanitize_title", "title_to_type", "check_corrupted", "CORRUPTED_NO_FRAMES"]

CORRUPTED_NO_FRAMES = "extracted no frames"
_SKIP_CACHE: dict[tuple[str, ...], re.Pattern[str]] = {}
_STACK_START_ANY = re.compile("|".join(f"(?:{r.pattern})" for r in rules.STACK_START_RES))
_CORRUPTED_ANY = re.compile("|".join(f"(?:{r.pattern})" for r in rules.CORRUPTED_LINES))


@dataclass
class Description:
    """What :func:`describe` found.

    Attributes:
        title: the raw title (before :func:`sanitize_title`); empty if the header is absent from the text.
        alt_titles: alternative titles, raw.
        corrupted: why the report looks corrupted ('' = it does not).
        format: the format that produced the title, if any.
        frames: the guilty frames, one per stack trace of the format.
    """

    title: str = ""
    alt_titles: list[str] = field(default_factory=list)
    corrupted: str = ""
    format: OopsFormat | None = None
    frames: list[str] = field(default_factory=list)


def _skip_re(extra: Sequence[str]) -> re.Pattern[str]:
    key = tuple(extra)
    pat = _SKIP_CACHE.get(key)
    if pat is None:
        pat = re.compile("|".join(list(rules.SKIP_PATTERNS) + list(extra)))
        _SKIP_CACHE[key] = pat
    return pat


def _strip_prefixes(frame: str) -> str:
    # Each prefix is tried on the original name; the shortest result wins (``__se_sys_`` beats ``__se_``).
    best = frame
    for p in rules.STRIP_FRAME_PREFIXES:
        if frame.startswith(p) and len(frame) - len(p) < len(best):
            best = frame[len(p):]
    return best


def _stall_extractor(frames: list[str]) -> int:
    # Return the frame just above the first generic dispatcher (syscall entry, workqueue, timer...).
    prev = 0
    for i, frame in enumerate(frames):
        if any(a.search(frame) for a in rules.ANCHOR_FRAMES):
            return -2 if "smp_call_function" in frame else prev  # -2: "smp_call_function" itself
        prev = i
    return -1


_HANG_SKIP = ("sched", "_lock", "_slowlock", "down", "rwsem", "completion", "kthread", "wait", "synchronize",
              "context_switch", "__switch_to", "cancel_delayed_work", "rcu_barrier")


def _hang_extractor(frames: list[str]) -> tuple[str, int]:
    # Hangs show victims, not culprits: group the two big buckets (rtnl_lock, synchronize_rcu) and
    # otherwise skip the sleeping/locking machinery.
    for i, frame in enumerate(frames):
        if "rtnl_lock" in frame:
            return frame, i
        for anchor in ("synchronize_rcu", "synchronize_srcu", "synchronize_net", "synchronize_sched"):
            if anchor in frame:
                return "synchronize_rcu", i
    for i, frame in enumerate(frames):
        if not any(s in frame for s in _HANG_SKIP):
            return frame, i
    return "", -1


def _key_frame(raw: list[str], extractor: str | None) -> tuple[str, str]:
    """(canonical, raw) guilty frame of one stack, ('', '') if none."""
    if not raw:
        return "", ""
    stripped = [_strip_prefixes(f) for f in raw]
    if extractor is None:
        return stripped[0], raw[0]
    if extractor == "hang":
        frame, idx = _hang_extractor(stripped)
        return (frame, raw[idx]) if frame else ("", "")
    idx = _stall_extractor(stripped)
    if idx == -1:
        return "", ""
    if idx == -2:
        i = next(i for i, f in enumerate(stripped) if "smp_call_function" in f)
        return "smp_call_function", raw[i]
    return stripped[idx], raw[idx]


_SKIPPED: dict[tuple[int, str], bool] = {}


def _skipped(skip: re.Pattern[str], name: str) -> bool:
    # The skip alternation has ~240 unanchored branches; names repeat a lot, so remember the answers.
    key = (id(skip), name)
    r = _SKIPPED.get(key)
    if r is None:
        if len(_SKIPPED) > 200_000:
            _SKIPPED.clear()
        r = _SKIPPED[key] = skip.search(name) is not None
    return r


def _append(frames: list[str], m: re.Match[str] | None, skip: re.Pattern[str]) -> None:
    if m is None:
        return
    for g in m.groups():
        if g is None:
            continue
        if g.startswith(("_R", "_Z")):  # Rust/C++ frames are titled and skipped by their demangled path
            g = demangle(g)
        if not _skipped(skip, g):
            frames.append(g)


def _extract_impl(lines: list[str], parts: Sequence[re.Pattern[str]], skip: re.Pattern[str],
                  extractor: str | None) -> tuple[list[tuple[str, str]], bool]:
    results: list[tuple[str, str]] = []
    raw: list[str] = []
    ok = True
    n_traces = 0
    li = 0
    n = len(lines)
    idx = 0
    while True:
        if idx == len(parts) or (parts[idx] is PARSE_STACK and n_traces > 0):
            key = _key_frame(raw, extractor)
            if not key[0]:
                key, ok = ("corrupted", "corrupted"), False
            results.append(key)
            raw = []
        if idx == len(parts):
            break
        part = parts[idx]
        if part is PARSE_STACK:
            n_traces += 1
            nxt = parts[idx + 1] if idx != len(parts) - 1 else None
            while li < n:
                ln = lines[li]
                li += 1
                if _CORRUPTED_ANY.search(ln):
                    ok = False
                    break
                if _STACK_START_ANY.search(ln):
                    break
                if nxt is not None:
                    m = nxt.search(ln)
                    if m is not None:
                        _append(raw, m, skip)
                        idx += 1
                        break
                for fr in rules.FRAME_RES:
                    m = fr.search(ln)
                    if m is not None:
                        break
                _append(raw, m, skip)
        else:
            while li < n:
                ln = lines[li]
                li += 1
                if _CORRUPTED_ANY.search(ln):
                    ok = False
                    break
                m = part.search(ln)
                if m is None:
                    continue
                _append(raw, m, skip)
                break
        idx += 1
    return results, ok


def _extract_frames(stack: StackFmt, text: str) -> tuple[list[tuple[str, str]], bool]:
    skip = _skip_re(stack.skip)
    lines = text.split("\n")
    frames, ok = _extract_impl(lines, stack.parts, skip, stack.extractor)
    if ok or not stack.parts2:
        return frames, ok
    return _extract_impl(lines, stack.parts2, skip, stack.extractor)


def _partially_stripped(prefix: list[str], frames: list[tuple[str, str]]) -> list[list[str]]:
    # Alternative argument lists: the raw frames, then each syscall prefix stripped alone (where it applies).
    out = []
    for i in range(len(rules.STRIP_FRAME_PREFIXES) + 1):
        strip = "" if i == 0 else rules.STRIP_FRAME_PREFIXES[i - 1]
        add = i == 0
        lst = []
        for _, raw in frames:
            t = raw[len(strip):] if strip and raw.startswith(strip) else raw
            if t != raw:
                add = True
            lst.append(t)
        if add:
            out.append(prefix + lst)
    return out


def describe(text: str, group: OopsGroup) -> Description:
    """Title one report.

    Args:
        text: the report's lines (transport prefixes stripped), newline-terminated.
        group: the header group that started the report.

    Returns:
        A :class:`Description`; ``title`` is empty only if the header does not occur in ``text``.
    """
    d = Description()
    start = len(text) + 1
    matched_title = False
    alts: list[str] = []
    for f in group.formats:
        m = f.title.search(text)
        if m is None or m.start() > start:
            continue
        if m.start() == start and d.title:
            continue
        if m.start() < start:
            d.title, d.format, start = "", None, m.start()
        matched_title = True
        if f.report is not None:
            m = f.report.search(text)
            if m is None:
                continue
        prefix = [g or "" for g in m.groups()]
        frames: list[tuple[str, str]] = []
        d.corrupted = ""
        if f.stack is not None:
            frames, ok = _extract_frames(f.stack, text[m.start():])
            if not ok:
                d.corrupted = CORRUPTED_NO_FRAMES
        args = prefix + [c for c, _ in frames]
        d.title = _fmt(f.fmt, args)
        alts.extend(_fmt(a, args) for a in f.alt)
        for seq in _partially_stripped(prefix, frames):
            t = _fmt(f.fmt, seq)
            if t != d.title:
                alts.append(t)
            alts.extend(_fmt(a, seq) for a in f.alt)
        if f.stack is not None and f.stack.fallback and any(c == "corrupted" for c, _ in frames):
            extra, ok2 = _extract_impl(text[m.start():].split("\n"), f.stack.fallback, _skip_re(f.stack.skip),
                                       f.stack.extractor)
            if ok2:
                alts.extend(_fmt(a, prefix + [c for c, _ in extra]) for a in f.alt)
        d.format = f
        d.frames = [c for c, _ in frames]
    d.alt_titles = list(dict.fromkeys(alts))
    if not d.title:
        if matched_title:
            d.corrupted = "matched title but not report regexp"
        pos = text.find(group.header)
        if pos == -1:
            return d
        end = text.find("\n", pos)
        d.title = text[pos:] if end == -1 else text[pos:end]
    if not d.corrupted and d.format is not None and d.format.corrupted:
        d.corrupted = "report format is marked as corrupted"
    return d


def _fmt(fmt: str, args: list[str]) -> str:
    try:
        return fmt.format(*args)
    except IndexError:  # a format naming more frames than were extracted
        return fmt.format(*(args + ["corrupted"] * 8))


_REPLACEMENTS = [
    (re.compile(r"syz-executor\.?[0-9]+((/|:)[0-9]+)?"), "syz-executor"),
    (re.compile(r"syzkaller[0-9]+((/|:)[0-9]+)?"), "syzkaller"),
    (re.compile(r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}"), r"\1ADDR"),
    (re.compile(r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})"), "IP"),
    (re.compile(r"(\.\w+)(:[0-9]+)+"), r"\1:LINE"),
    (re.compile(r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+"), r"\1"),
    (re.compile(r"CPU#[0-9]+"), "CPU"),
    (re.compile(r"(\W)(\d+)(\W|$)"), r"\1NUM\3"),
    (re.compile(r"(\d+){7,}"), "NUM"),
]
_MAX_TITLE = 120


def sanitize_title(title: str) -> str:
    """Make a title stable across runs: addresses, numbers, offsets, line numbers, CPU ids replaced; 120 chars.

    Args:
        title: a raw title.

    Returns:
        The sanitized title (control and non-ASCII bytes dropped, spaces collapsed).
    """
    title = title[:4096]  # the cut at 120 comes later; this only bounds the regexp work
    for pat, repl in _REPLACEMENTS:
        while True:
            new = pat.sub(repl, title)
            if new == title:
                break
            title = new
    data = title.encode("utf-8", "replace")[:_MAX_TITLE]
    out = bytearray()
    prev = 0x20
    for ch in data:
        if ch == 0x09:
            ch = 0x20
        elif ch < 0x20 or ch >= 0x7F:
            continue
        if ch == 0x20 and prev == 0x20:
            continue
        out.append(ch)
        prev = ch
    return out.decode("ascii").strip()


def title_to_type(title: str) -> str:
    """syzkaller's crash type for a (sanitized) title: ``NULL-POINTER-DEREFERENCE``, ``HANG``, ``LOCKDEP``, ...

    Returns:
        The type name, ``UNKNOWN`` when no prefix matches.
    """
    for prefixes, typ in rules.TITLE_TO_TYPE:
        if title.startswith(prefixes):
            return typ
    return "UNKNOWN"


_TS_IN_TITLE = re.compile(r"\[ *[0-9]+\.[0-9]+\]")


def check_corrupted(title: str, text: str, fmt: OopsFormat | None) -> str:
    """The corruption checks applied after titling (interleaved timestamps, stack keywords without frames).

    Args:
        title: the raw title.
        text: the whole report text.
        fmt: the format that produced the title (None: the raw header line was used).

    Returns:
        The reason the report is corrupted, or ''.
    """
    if _TS_IN_TITLE.search(title):
        return "title matches corrupted regexp"
    if fmt is None or fmt.no_stack_trace:
        return ""
    has_stack = False
    for key in rules.STACK_START_RES:
        m = key.search(text)
        if m is None:
            continue
        frames = text[m.start():].split("\n")
        if len(frames) < 4:
            return "call trace is missed"
        corrupted = True
        for ln in frames[1:16]:
            if any(k.search(ln) for k in rules.STACK_START_RES):
                break
            if "(stack is not available)" in ln or any(r.search(ln) for r in rules.FRAME_RES):
                has_stack = True
                corrupted = False
                break
        if key is not rules.RISCV_STACK_START and corrupted:
            return "no frames in a stack trace"
    if not has_stack:
        return "no stack trace in report"
    return ""
