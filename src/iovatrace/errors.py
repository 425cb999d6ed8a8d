"""The one exception hierarchy of iovatrace.

Three kinds of "wrong" travel through three channels:

* bad input (a trace, log or report we cannot read) raises :class:`TraceFormatError`
  or :class:`LogFormatError`, naming the file, the byte offset or line, and what was expected;
* kernel misbehaviour seen in a trace is not an exception at all: the replay reports it as a finding;
* a bug in our own model raises :class:`ModelError`.

The CLI catches :class:`IovatraceError` once and prints its one-line message.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "IovatraceError",
    "InputError",
    "TraceFormatError",
    "LogFormatError",
    "SchemaError",
    "CaptureError",
    "ModelError",
    "MissingEventsError",
]


class IovatraceError(Exception):
    """Root of every error iovatrace raises on purpose. Not raised directly."""

    def __init__(self, *args: Any) -> None:
        if type(self) is IovatraceError:
            raise TypeError("IovatraceError is abstract; raise one of its subclasses")
        super().__init__(*args)


class InputError(IovatraceError):
    """Input that cannot be used, located as precisely as we can.

    Args:
        message: what went wrong and what was expected ("Cannot parse ... expected ...").
        path: the file (or ``"<stdin>"``), if known.
        offset: byte offset into the (decompressed, where noted) file, if known.
        line: 1-based line number for text inputs, if known.
        excerpt: a short excerpt of the offending input, if useful.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        line: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.offset = offset
        self.line = line
        self.excerpt = excerpt
        super().__init__(self._render())

    def _render(self) -> str:
        loc = self.path or ""
        if self.line is not None:
            loc += f":{self.line}"
        if self.offset is not None:
            loc += f" @0x{self.offset:x}" if loc else f"@0x{self.offset:x}"
        text = f"{loc}: {self.message}" if loc else self.message
        if self.excerpt:
            text += f" (near {self.excerpt!r})"
        return text


class TraceFormatError(InputError):
    """A trace (trace.dat or ftrace text) that does not follow its format."""


class LogFormatError(InputError):
    """A kernel log or report that cannot be read at all (not: a report we could not fully parse)."""


class SchemaError(IovatraceError):
    """Data that does not match the declared Arrow schema (an internal contract was broken)."""


class CaptureError(IovatraceError):
    """Recording failed: no tracefs, no permission, a probe the kernel refused, a missing tool."""


class ModelError(IovatraceError):
    """The replay model reached a state it believes impossible: a bug in iovatrace, not in the kernel."""


class MissingEventsError(IovatraceError):
    """An analysis needs events the trace does not hold.

    Args:
        analysis: the analysis that was asked for.
        missing: the ``system:event`` names that are absent.
        hint: how to record them (an ``iovatrace record`` option).
    """

    def __init__(self, analysis: str, missing: list[str], hint: str = "") -> None:
        self.analysis = analysis
        self.missing = list(missing)
        self.hint = hint
        msg = f"Cannot compute {analysis}: the trace lacks {', '.join(missing)}"
        if hint:
            msg += f"; record them with {hint}"
        super().__init__(msg)
