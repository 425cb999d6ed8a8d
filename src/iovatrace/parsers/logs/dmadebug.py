"""dma-debug (``DMA-API: …``) warnings and page_pool "stalled pool shutdown" warnings.

Theory of operation: kernel/dma/debug.c reports misuse through ``err_printk()``, a WARN with the message
``DMA-API: <driver> <device>: <text> [key=value] … [mapped with X] [mapped as Y]`` (current kernels, through
``pr_fmt``; ≈4.x kernels printed ``<driver> <device>: DMA-API: …``; both orders are accepted, as is the
``dma_debug_device_change: <text>`` form quoted without driver or device). The leak check on driver unbind
(``dma_debug_device_change``) prints ``device driver has pending DMA allocations while released from device
[count=N]`` and then, on its own line, ``One of leaked entries details: [device address=…] [size=N bytes]
[mapped with …] [mapped as …]``; the ``[device address=…]`` part is optional (one real report lacks it). The
WARNING line that follows (``WARNING: CPU: 0 PID: 1 at kernel/dma/debug.c:853 …``) gives the location.

page_pool prints ``page_pool_release_retry() stalled pool shutdown[: id <id>,] <inflight> inflight <sec> sec``
every 60 s while pages of a destroyed pool are still out (``: id N`` from 6.8).

The parser is one pass over :func:`~iovatrace.parsers.logs.lines.iter_log_lines`; a details line attaches to the
most recent pending-at-release warning within a few lines. Unknown bracket fields are kept in ``fields``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .lines import iter_log_lines

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DmaDebugReport", "parse_dma_debug", "dma_debug_table", "DIRECTIONS"]

#: dma_data_direction names as dma-debug prints them, and our normalised spelling.
DIRECTIONS = {
    "DMA_BIDIRECTIONAL": "bidirectional",
    "DMA_TO_DEVICE": "to_device",
    "DMA_FROM_DEVICE": "from_device",
    "DMA_NONE": "none",
}

_DMA_API_RE = re.compile(
    r"^(?:(?P<pre_drv>\S+) (?P<pre_dev>\S+): )?DMA-API: (?:(?P<drv>\S+) (?P<dev>\S+): )?(?P<rest>.*)$"
)
_FUNC_RE = re.compile(r"^(?:[\d.]+: )?dma_debug_device_change: (?P<rest>device driver has pending.*)$")
_DETAILS_RE = re.compile(r"^One of leaked entries details: (?P<rest>.*)$")
_BRACKET_RE = re.compile(r"\[([^\]]*)\]")
_MAPPED_AT_RE = re.compile(r"^(?:DMA-API: )?Mapped at:\s*$")
# One stack line after "Mapped at:": " func+0x1/0x2 [module]" (possibly "[<addr>] func+…" on old kernels).
_STACK_RE = re.compile(r"^(?:\[<[0-9a-fA-F]+>\]\s+)?(?P<fn>[A-Za-z_.$][\w.$]*)\+0x[0-9a-fA-F]+/0x[0-9a-fA-F]+")
_WARN_RE = re.compile(r"^WARNING: CPU: \d+ PID: \d+ at (?P<loc>\S+:\d+) ")
_POOL_RE = re.compile(
    r"page_pool_release_retry\(\) stalled pool shutdown:?(?: id (?P<id>\d+),)? (?P<inflight>-?\d+) inflight "
    r"(?P<sec>\d+) sec"
)


@dataclass(slots=True)
class DmaDebugReport:
    """One dma-debug or page_pool warning.

    Attributes:
        line: 1-based line of the warning.
        kind: ``"pending_at_release"``, ``"page_pool_stalled"`` or ``"dma_api"`` (any other DMA-API error).
        message: the warning's text without driver/device and bracketed details.
        driver: driver name, when printed.
        device: device name, when printed.
        count: ``[count=N]``.
        device_address: ``[device address=…]`` of the entry shown.
        size: ``[size=N bytes]`` of the entry shown.
        mapped_with: ``[mapped with …]`` as printed.
        mapped_as: ``[mapped as …]``.
        pool_id: page_pool id (6.8+).
        inflight: page_pool pages in flight.
        stalled_s: page_pool seconds since shutdown began.
        warn_location: ``file:line`` of the WARNING that followed.
        fields: every bracketed ``[key=value]``/``[key value]`` detail, as text.
        lines: line numbers that belong to the report (for evidence).
        mapped_at: the ``DMA-API: Mapped at:`` stack of the entry (function names, innermost first), when
            dma-debug kept one.
    """

    line: int
    kind: str
    message: str
    driver: str | None = None
    device: str | None = None
    count: int | None = None
    device_address: int | None = None
    size: int | None = None
    mapped_with: str | None = None
    mapped_as: str | None = None
    pool_id: int | None = None
    inflight: int | None = None
    stalled_s: int | None = None
    warn_location: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)
    mapped_at: list[str] = field(default_factory=list)

    @property
    def direction(self) -> str | None:
        """Normalised DMA direction of ``mapped_with`` (``to_device``, ``from_device``, ``bidirectional``, ``none``)."""
        if self.mapped_with is None:
            return None
        return DIRECTIONS.get(self.mapped_with, self.mapped_with.lower())


def _apply_brackets(rep: DmaDebugReport, text: str) -> None:
    for item in _BRACKET_RE.findall(text):
        item = item.strip()
        if "=" in item:
            key, _, value = item.partition("=")
        elif " " in item:
            key, _, value = item.rpartition(" ")
        else:
            key, value = item, ""
        key, value = key.strip(), value.strip()
        rep.fields[key] = value
        try:
            if key == "count":
                rep.count = int(value)
            elif key == "device address":
                rep.device_address = int(value, 16)
            elif key == "size":
                rep.size = int(value.split()[0])
            elif key == "mapped with":
                rep.mapped_with = value
            elif key == "mapped as":
                rep.mapped_as = value
        except ValueError:
            rep.fields[f"unparsed {key}"] = value


def parse_dma_debug(data: str | bytes | Iterable[str]) -> list[DmaDebugReport]:
    """Find dma-debug and page_pool warnings in a log.

    Args:
        data: the log (str, bytes or lines).

    Returns:
        The warnings in input order (empty when there are none; this parser never fails on foreign lines).
    """
    out: list[DmaDebugReport] = []
    last_pending: DmaDebugReport | None = None
    last_dma: DmaDebugReport | None = None
    stack_of: DmaDebugReport | None = None  # collecting the "Mapped at:" stack of this report
    for ln in iter_log_lines(data, strip_mail_quotes=True):
        text = ln.text.strip()
        if not text:
            stack_of = None
            continue
        if stack_of is not None:
            st = _STACK_RE.match(text.removeprefix("DMA-API: ").strip())
            if st:
                stack_of.mapped_at.append(st.group("fn"))
                stack_of.lines.append(ln.lineno)
                continue
            stack_of = None
        if _MAPPED_AT_RE.match(text):
            if last_dma is not None and not last_dma.mapped_at:
                stack_of = last_dma
                last_dma.lines.append(ln.lineno)
            continue
        m = _POOL_RE.search(text)
        if m:
            out.append(DmaDebugReport(
                line=ln.lineno, kind="page_pool_stalled", message="stalled pool shutdown",
                pool_id=int(m.group("id")) if m.group("id") else None, inflight=int(m.group("inflight")),
                stalled_s=int(m.group("sec")), lines=[ln.lineno]))
            continue
        d = _DETAILS_RE.match(text)
        if d:
            if last_pending is not None and ln.lineno - last_pending.lines[-1] <= 3:
                _apply_brackets(last_pending, d.group("rest"))
                last_pending.lines.append(ln.lineno)
            continue
        w = _WARN_RE.match(text)
        if w:
            if last_dma is not None and ln.lineno - last_dma.lines[-1] <= 3 and "dma" in w.group("loc"):
                last_dma.warn_location = w.group("loc")
                last_dma.lines.append(ln.lineno)
            continue
        m2 = _DMA_API_RE.match(text)
        f = _FUNC_RE.match(text)
        if m2 is None and f is None:
            continue
        if m2 is not None:
            rest = m2.group("rest")
            driver = m2.group("drv") or m2.group("pre_drv")
            device = m2.group("dev") or m2.group("pre_dev")
            # "DMA-API: device driver has …" has no driver/device; the regex took "device driver" for them.
            if m2.group("drv") == "device" and (m2.group("dev") or "").startswith("driver"):
                driver, device = m2.group("pre_drv"), m2.group("pre_dev")
                rest = text.split("DMA-API: ", 1)[1]
        else:
            assert f is not None
            rest, driver, device = f.group("rest"), None, None
        message = _BRACKET_RE.sub("", rest).strip()
        kind = "pending_at_release" if "pending DMA allocations while released" in rest else "dma_api"
        rep = DmaDebugReport(line=ln.lineno, kind=kind, message=message, driver=driver, device=device,
                             lines=[ln.lineno])
        _apply_brackets(rep, rest)
        out.append(rep)
        last_dma = rep
        last_pending = rep if kind == "pending_at_release" else None
    return out


def dma_debug_table(reports: Iterable[DmaDebugReport]) -> "pa.Table":
    """The Arrow table of parsed warnings, following :data:`iovatrace.schema.DMA_DEBUG_REPORTS`."""
    import pyarrow as pa

    from ...schema import DMA_DEBUG_REPORTS

    rows: dict[str, list[object]] = {f.name: [] for f in DMA_DEBUG_REPORTS}
    for r in reports:
        for name in rows:
            rows[name].append(getattr(r, name))
    return pa.table(rows, schema=DMA_DEBUG_REPORTS)
