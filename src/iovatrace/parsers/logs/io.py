"""Reading a kernel log for the log commands (``oops``, ``kmemleak``, ``leaks``): a file, or stdin for ``-``.

Theory of operation: the log parsers work on the whole input as bytes (they decode per line, tolerating any
encoding), so the commands read it in one go. The one thing a command decides is which error an unreadable file
raises (``kmemleak``/``leaks`` exit with status 2 on unusable input), so the error class is a parameter.
"""

from __future__ import annotations

import sys

from ...errors import LogFormatError

__all__ = ["read_log_bytes"]


def read_log_bytes(path: str, *, error: type[LogFormatError] = LogFormatError,
                   what: str = "kernel log") -> tuple[bytes, str]:
    """Read a log file, or stdin for ``-``.

    Args:
        path: a file path or ``-``.
        error: the exception to raise when the file cannot be read.
        what: how the message names the input.

    Returns:
        ``(data, name)``; name is the path or ``<stdin>``.

    Raises:
        LogFormatError: (or ``error``) the file cannot be read.
    """
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    try:
        with open(path, "rb") as fh:
            return fh.read(), path
    except OSError as exc:
        raise error(f"Cannot read {what}: {exc.strerror or exc}", path=path) from None
