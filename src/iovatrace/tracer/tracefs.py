"""tracefs access: the settings ``record`` changes, saved before and put back after.

Theory of operation
-------------------
:class:`TraceFS` wraps one tracefs directory (``/sys/kernel/tracing`` or an older ``/sys/kernel/debug/tracing``).
Everything ``record`` (and trace-cmd, which it may run) can change is captured by :meth:`TraceFS.snapshot` as a
:class:`TraceState` -- ``tracing_on``, ``buffer_size_kb``, ``trace_clock``, ``current_tracer``, the enabled events
(``set_event``), the kprobe definitions (``kprobe_events``) and the filters of the events we touch -- and
:meth:`TraceFS.restore` writes it back: it disables all events and re-enables the saved ones, removes only the
kprobes that were not there before (``-:group/event``; re-adds saved ones that went missing), then filters, clock,
buffer size, tracer, and ``tracing_on`` last.

tracefs files are not ordinary files: appending ``-:g/e`` to ``kprobe_events`` deletes a probe, truncating
``set_event`` disables every event. A plain directory (a fake tracefs in tests, a dry run) has none of these
semantics, so :class:`TraceFS` detects whether its root is a tracefs/debugfs mount and otherwise emulates those
few kernel behaviours on the files (``_PlainFiles``). The save/restore logic above is the same for both.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CaptureError

__all__ = ["TraceFS", "TraceState", "find_tracefs", "parse_kprobe_profile"]

_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def find_tracefs() -> Path:
    """The mounted tracefs directory.

    Raises:
        CaptureError: none is mounted (or readable).
    """
    for c in _CANDIDATES:
        if os.path.isfile(os.path.join(c, "trace")) or os.path.isfile(os.path.join(c, "kprobe_events")):
            return Path(c)
    raise CaptureError("No tracefs found at /sys/kernel/tracing or /sys/kernel/debug/tracing "
                       "(mount -t tracefs nodev /sys/kernel/tracing; needs root)")


def _is_kernel_fs(root: Path) -> bool:
    """Is ``root`` on a tracefs/debugfs mount (kernel semantics), rather than a plain directory?"""
    try:
        real = os.path.realpath(root)
        with open("/proc/mounts", encoding="utf-8") as f:
            best, fstype = "", ""
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")):
                    if len(parts[1]) > len(best):
                        best, fstype = parts[1], parts[2]
        return fstype in ("tracefs", "debugfs")
    except OSError:
        return False


def parse_kprobe_profile(text: str) -> dict[str, tuple[int, int]]:
    """``kprobe_profile`` text -> ``{event: (hits, misses)}`` (columns: event, hits, missed)."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


@dataclass
class TraceState:
    """Saved tracefs settings (see module docstring). ``filters`` maps ``system/event`` -> filter text."""

    tracing_on: str = ""
    buffer_size_kb: str = ""
    trace_clock: str = ""
    current_tracer: str = ""
    set_event: list[str] = field(default_factory=list)
    kprobe_events: list[str] = field(default_factory=list)
    filters: dict[str, str] = field(default_factory=dict)


_PROBE_NAME = re.compile(r"^[prPR]\d*:(?:([^/\s]+)/)?(\S+)")


def _probe_key(line: str) -> str | None:
    m = _PROBE_NAME.match(line.strip())
    if not m:
        return None
    return f"{m.group(1) or 'kprobes'}/{m.group(2)}"


class TraceFS:
    """One tracefs directory, kernel or plain (see module docstring).

    Args:
        root: the tracefs directory.
        kernel: force kernel (True) or plain-file (False) semantics; None = detect from /proc/mounts.
        writable: require write access (recording); False for read-only look-ups (``probes --tracefs``).

    Raises:
        CaptureError: ``root`` is not a tracefs directory, or not writable.
    """

    def __init__(self, root: str | Path, *, kernel: bool | None = None, writable: bool = True) -> None:
        self.root = Path(root)
        if not (self.root / "kprobe_events").exists() and not (self.root / "set_event").exists():
            raise CaptureError(f"{self.root}: not a tracefs directory (no kprobe_events / set_event)")
        if writable and not os.access(self.root / "set_event", os.W_OK):
            raise CaptureError(f"{self.root}: tracefs is not writable (recording needs root)")
        self.kernel = _is_kernel_fs(self.root) if kernel is None else kernel

    # -- plain file primitives ----------------------------------------------------------------------------------

    def path(self, rel: str) -> Path:
        """Absolute path of a tracefs file."""
        return self.root / rel

    def exists(self, rel: str) -> bool:
        """Does the tracefs file or directory exist?"""
        return self.path(rel).exists()

    def read(self, rel: str, default: str | None = None) -> str:
        """Text of a tracefs file (``default`` if absent, else CaptureError)."""
        try:
            return self.path(rel).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            if default is not None:
                return default
            raise CaptureError(f"{self.path(rel)}: cannot read ({exc.strerror})") from exc

    def write(self, rel: str, text: str, *, append: bool = False) -> None:
        """Write a tracefs file; kernel errors come back with the tracefs error_log's last lines.

        Raises:
            CaptureError: the kernel refused the write.
        """
        if not self.kernel and rel in ("kprobe_events", "set_event"):
            self._plain_list_write(rel, text, append)
            return
        if not self.kernel and rel.endswith("/filter") and text.strip() == "0":  # "0" clears; it reads "none"
            text = "none"
        if not self.kernel and rel == "trace_clock":  # the kernel lists every clock, the chosen one in brackets
            names = self.read(rel, "").replace("[", "").replace("]", "").split() or [text.strip()]
            self.path(rel).write_text(" ".join(f"[{n}]" if n == text.strip() else n for n in names) + "\n")
            return
        try:
            with open(self.path(rel), "a" if append else "w", encoding="utf-8") as f:
                f.write(text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            detail = self.error_log_tail()
            raise CaptureError(f"{self.path(rel)}: kernel refused {text.strip()!r}: "
                               f"{exc.strerror or errno.errorcode.get(exc.errno or 0, exc)}"
                               + (f" ({detail})" if detail else "")) from exc

    def error_log_tail(self) -> str:
        """Last non-empty lines of tracefs ``error_log`` (why the kernel refused a probe), joined."""
        lines = [ln.strip() for ln in self.read("error_log", "").splitlines() if ln.strip()]
        return " / ".join(lines[-3:])

    # -- plain-directory emulation of the kernel's list files ------------------------------------------------

    def _plain_list_write(self, rel: str, text: str, append: bool) -> None:
        cur = [ln for ln in self.read(rel, "").splitlines() if ln.strip()] if append else []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if rel == "kprobe_events":
                if line.startswith("-:"):
                    key = line[2:] if "/" in line[2:] else f"kprobes/{line[2:]}"
                    cur = [c for c in cur if _probe_key(c) != key]
                    shutil.rmtree(self.root / "events" / key, ignore_errors=True)
                    grp = self.root / "events" / key.split("/")[0]
                    if grp.is_dir() and not any(p.is_dir() for p in grp.iterdir()):
                        shutil.rmtree(grp)
                    continue
                key = _probe_key(line)
                if key is None:
                    raise CaptureError(f"{self.path(rel)}: kernel refused {line!r}: Invalid argument")
                d = self.root / "events" / key
                d.mkdir(parents=True, exist_ok=True)
                for name, content in (("enable", "0\n"), ("filter", "none\n"), ("id", "0\n")):
                    (d / name).write_text(content)
                cur.append(line)
            else:  # set_event: "sys:name", "sys:*", "!sys:name"
                neg = line.startswith("!")
                key = line.lstrip("!")
                matched = self._expand_events(key)
                for ev in matched:
                    enable = self.root / "events" / ev.replace(":", "/") / "enable"
                    if enable.exists():
                        enable.write_text("0\n" if neg else "1\n")
                cur = [c for c in cur if c not in matched]
                if not neg:
                    cur.extend(matched)
        if rel == "set_event" and not append:
            for e in self.root.glob("events/*/*/enable"):
                e.write_text("1\n" if f"{e.parent.parent.name}:{e.parent.name}" in cur else "0\n")
        self.path(rel).write_text("".join(c + "\n" for c in cur))

    def _expand_events(self, key: str) -> list[str]:
        sysname, _, name = key.partition(":")
        base = self.root / "events"
        systems = [sysname] if sysname not in ("", "*") else [p.name for p in base.iterdir() if p.is_dir()]
        out = []
        for s in systems:
            if not (base / s).is_dir():
                continue
            for ev in sorted(p for p in (base / s).iterdir() if p.is_dir()):
                if name in ("", "*") or ev.name == name:
                    out.append(f"{s}:{ev.name}")
        return out

    # -- kernel facts ---------------------------------------------------------------------------------------------

    def available_events(self) -> set[str]:
        """Event systems and ``system:name`` keys under ``events/``."""
        out: set[str] = set()
        base = self.root / "events"
        if base.is_dir():
            for s in base.iterdir():
                if s.is_dir():
                    out.add(s.name)
                    out.update(f"{s.name}:{e.name}" for e in s.iterdir() if e.is_dir())
        return out

    def kprobe_profile(self) -> dict[str, tuple[int, int]]:
        """Hits and misses of every kprobe (``kprobe_profile``)."""
        return parse_kprobe_profile(self.read("kprobe_profile", ""))

    def kprobe_lines(self) -> list[str]:
        """Current kprobe definitions, as the kernel lists them."""
        return [ln for ln in self.read("kprobe_events", "").splitlines() if ln.strip()]

    # -- state ---------------------------------------------------------------------------------------------------

    def snapshot(self, filter_events: list[str] = ()) -> TraceState:  # type: ignore[assignment]
        """Save the settings ``record`` may change (filters of the given ``system/event`` paths too)."""
        clock = self.read("trace_clock", "")
        m = re.search(r"\[(\S+)\]", clock)
        st = TraceState(
            tracing_on=self.read("tracing_on", "").strip(),
            buffer_size_kb=self.read("buffer_size_kb", "").split()[0] if self.read("buffer_size_kb", "").split()
            else "",
            trace_clock=m.group(1) if m else "",
            current_tracer=self.read("current_tracer", "").strip(),
            set_event=[ln for ln in self.read("set_event", "").splitlines() if ln.strip()],
            kprobe_events=self.kprobe_lines(),
        )
        for ev in filter_events:
            rel = f"events/{ev}/filter"
            if self.exists(rel):
                st.filters[ev] = self.read(rel).strip()
        return st

    def restore(self, st: TraceState) -> list[str]:
        """Put every saved setting back (best effort: one failure does not stop the rest).

        Returns:
            Problems met, one line each (empty = fully restored).
        """
        problems: list[str] = []

        def attempt(what: str, fn, *args, **kw) -> None:  # type: ignore[no-untyped-def]
            try:
                fn(*args, **kw)
            except (CaptureError, OSError) as exc:
                problems.append(f"{what}: {exc}")

        attempt("tracing_on", self.write, "tracing_on", "0")
        # events: disable everything, then re-enable what was enabled (probes can only be removed when disabled)
        attempt("set_event", self.write, "set_event", "")
        for ev in st.set_event:
            attempt(f"set_event {ev}", self.write, "set_event", ev, append=True)
        for ev, text in st.filters.items():
            if self.exists(f"events/{ev}/filter"):
                attempt(f"filter {ev}", self.write, f"events/{ev}/filter", "0" if text in ("none", "") else text)
        saved = {_probe_key(ln): ln for ln in st.kprobe_events}
        for line in self.kprobe_lines():
            key = _probe_key(line)
            if key and key not in saved:
                attempt(f"remove kprobe {key}", self.write, "kprobe_events", f"-:{key}", append=True)
        present = {_probe_key(ln) for ln in self.kprobe_lines()}
        for key, line in saved.items():
            if key not in present:
                attempt(f"re-add kprobe {key}", self.write, "kprobe_events", line, append=True)
        if st.trace_clock:
            attempt("trace_clock", self.write, "trace_clock", st.trace_clock)
        if st.buffer_size_kb and st.buffer_size_kb.isdigit():
            attempt("buffer_size_kb", self.write, "buffer_size_kb", st.buffer_size_kb)
        if st.current_tracer:
            attempt("current_tracer", self.write, "current_tracer", st.current_tracer)
        if st.tracing_on:
            attempt("tracing_on", self.write, "tracing_on", st.tracing_on)
        return problems
