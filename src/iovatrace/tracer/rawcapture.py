"""Recording without trace-cmd: read the ring buffer and metadata straight from tracefs.

Theory of operation
-------------------
A trace.dat is the tracefs metadata (``events/header_page``, ``header_event``, the ``format`` file of every event,
``/proc/kallsyms``, ``printk_formats``, ``saved_cmdlines``) plus each CPU's raw ring-buffer pages. After tracing is
switched off, :func:`capture_raw` drains ``per_cpu/cpuN/trace_pipe_raw`` (opened non-blocking: it ends at
``EAGAIN`` instead of waiting for new pages) and gathers the metadata into a :class:`RawCapture`.
:func:`write_capture` hands that to the project's trace.dat writer (``iovatrace.parsers.writer``), so files made
here read exactly like trace-cmd's.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CaptureError
from .probes import ProbePlan
from .tracefs import TraceFS

__all__ = ["RawCapture", "capture_raw", "write_capture", "writer_available"]


@dataclass
class RawCapture:
    """Everything a trace.dat holds, as read from tracefs.

    Attributes:
        header_page / header_event: ``events/header_page`` and ``events/header_event`` text.
        formats: ``system`` -> list of ``format`` file texts (``ftrace`` included).
        kallsyms / printk_formats / cmdlines: text of the files.
        cpu_data: raw ring-buffer pages per CPU, in CPU order.
        page_size: ring-buffer page size (the OS page size).
        clock: the trace clock in use.
        uname: kernel release.
    """

    header_page: str
    header_event: str
    formats: dict[str, list[str]] = field(default_factory=dict)
    kallsyms: str = ""
    printk_formats: str = ""
    cmdlines: str = ""
    cpu_data: list[bytes] = field(default_factory=list)
    page_size: int = 4096
    clock: str = "local"
    uname: str = ""


def _drain(path: Path, page_size: int) -> bytes:
    chunks = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open ({exc.strerror})") from exc
    try:
        while True:
            try:
                b = os.read(fd, page_size)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    break
                raise CaptureError(f"{path}: read failed ({exc.strerror})") from exc
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks)


def capture_raw(tfs: TraceFS, plan: ProbePlan, kallsyms: str | None = None) -> RawCapture:
    """Drain the ring buffer and read the metadata of every event the plan enabled (plus ftrace's own).

    Args:
        tfs: the tracefs (tracing already off).
        plan: what was enabled.
        kallsyms: kallsyms file to embed (default /proc/kallsyms).

    Raises:
        CaptureError: a file tracefs must have is missing or unreadable.
    """
    page_size = os.sysconf("SC_PAGE_SIZE")
    cap = RawCapture(tfs.read("events/header_page", ""), tfs.read("events/header_event", ""),
                     page_size=page_size)
    systems = {"ftrace", *plan.groups, *(t.system for t in plan.tracepoints)}
    for s in sorted(systems):
        d = tfs.path(f"events/{s}")
        if d.is_dir():
            cap.formats[s] = [f.read_text(encoding="utf-8", errors="replace")
                              for f in sorted(d.glob("*/format"))]
    try:
        cap.kallsyms = Path(kallsyms or "/proc/kallsyms").read_text(errors="replace")
    except OSError:
        cap.kallsyms = ""  # optional in a trace.dat: only symbolic call sites need it
    cap.printk_formats = tfs.read("printk_formats", "")
    cap.cmdlines = tfs.read("saved_cmdlines", "")
    clock = tfs.read("trace_clock", "[local]")
    cap.clock = clock.split("[", 1)[1].split("]", 1)[0] if "[" in clock else "local"
    u = os.uname()
    release = u.release if tfs.kernel else plan.release.split()[0]
    cap.uname = f"{u.sysname} {u.nodename} {release} {u.version if tfs.kernel else '#1'} {u.machine}"
    cpus = sorted((p for p in tfs.path("per_cpu").glob("cpu*") if p.name[3:].isdigit()),
                  key=lambda p: int(p.name[3:])) if tfs.exists("per_cpu") else []
    cap.cpu_data = [_drain(p / "trace_pipe_raw", page_size) if (p / "trace_pipe_raw").exists() else b""
                    for p in cpus]
    return cap


def writer_available() -> bool:
    """Does this installation have the project's trace.dat writer (``parsers.writer.write_pages``)?"""
    try:
        from ..parsers import writer
    except ImportError:
        return False
    return hasattr(writer, "write_pages")


def write_capture(cap: RawCapture, out: Path, *, version: int = 7, compression: str = "zstd") -> Path:
    """Write a trace.dat (v7 + zstd by default, as trace-cmd 3.x does) from a capture with the project's writer.

    Raises:
        CaptureError: the writer is not available, or refuses the capture (e.g. a torn page).
    """
    if not writer_available():
        raise CaptureError("Cannot write trace.dat without trace-cmd: iovatrace.parsers.writer is not available "
                           "in this installation (install trace-cmd)")
    from ..parsers import writer

    ps = cap.page_size
    pages: dict[int, list[bytes]] = {}
    for cpu, data in enumerate(cap.cpu_data):
        if len(data) % ps:
            # trace_pipe_raw hands out whole sub-buffers; a tail means a short read: pad it rather than drop it
            data = data + bytes(ps - len(data) % ps)
        pages[cpu] = [data[i:i + ps] for i in range(0, len(data), ps)]
    event_formats = {s: f for s, f in cap.formats.items() if s != "ftrace"}
    try:
        return writer.write_pages(out, pages, event_formats=event_formats, ftrace_formats=cap.formats.get("ftrace", []),
                                  header_page=cap.header_page or None, header_event=cap.header_event or
                                  writer.HEADER_EVENT, kallsyms=cap.kallsyms, printk=cap.printk_formats,
                                  cmdlines=cap.cmdlines, version=version, compression=compression, page_size=ps,
                                  cpus=max(len(cap.cpu_data), 1), clock=cap.clock, uname=cap.uname)
    except ValueError as exc:
        raise CaptureError(f"{out}: cannot write the captured ring buffer: {exc}") from exc
