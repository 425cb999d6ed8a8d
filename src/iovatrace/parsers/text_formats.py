"""Event formats for the text readers: a tracefs ``events/`` tree or a concatenated format dump.

Theory of operation: text never carries its own formats, so they come from beside it. A tracefs ``events/``
directory (or a copy) holds ``<system>/<name>/format``; a dump (the lab's ``event_formats.txt``) concatenates
format files, each under a ``== <path>`` header naming ``.../<system>/<name>/format`` (or just ``<name>``, when the
dump's file name says the system). Every block goes through :func:`iovatrace.parsers.formats.parse_format`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import TraceFormatError
from .formats import EventFormat, parse_format

__all__ = ["parse_format_dump", "load_formats_dir"]


def parse_format_dump(text: str, *, path: str = "<formats>", long_size: int = 8,
                      system: str | None = None) -> dict[str, EventFormat]:
    """Parse a concatenation of format files, each preceded by ``== <path>/events/<system>/<name>/format``
    (or by ``== <name>`` alone, when the whole dump is one system).

    Args:
        text: the dump (as in the lab's ``event_formats.txt``/``kprobe_formats.txt``/``kmem_formats.txt``).
        path: for error messages.
        long_size: the kernel's ``sizeof(long)``.
        system: the system of blocks whose header is a bare name; by default the file name's prefix before
            ``_formats`` (``kmem_formats.txt`` → ``kmem``).

    Returns:
        ``"system:name"`` → :class:`EventFormat`.

    Raises:
        TraceFormatError: if a block cannot be parsed or a header does not name ``<system>/<name>/format``.
    """
    out: dict[str, EventFormat] = {}
    blocks = re.split(r"^== (.*)$", text, flags=re.M)
    line = 1 + blocks[0].count("\n")
    for i in range(1, len(blocks) - 1, 2):
        header, body = blocks[i].strip(), blocks[i + 1]
        m = re.search(r"([^/]+)/([^/]+)/format$", header)
        if m is None and re.fullmatch(r"[\w.-]+", header):
            sysname = system or re.sub(r"_formats?$", "", Path(path).name.split(".")[0])
            m = re.match(r"(.*)/(.*)", f"{sysname}/{header}")
        if m is None:
            raise TraceFormatError("Cannot parse format dump header: expected '== .../<system>/<name>/format'",
                                   path=path, line=line, excerpt=header[:80])
        fmt = parse_format(body, m.group(1), long_size=long_size, path=f"{path}:{header}")
        out[fmt.key] = fmt
        line += 1 + body.count("\n")
    return out


def load_formats_dir(path: str | Path, *, long_size: int = 8) -> dict[str, EventFormat]:
    """Load event formats from a tracefs ``events/`` directory (``<system>/<name>/format``) or a format dump.

    Args:
        path: a directory (``/sys/kernel/tracing/events`` or a copy of it), or a file of concatenated formats
            with ``== path`` headers (see :func:`parse_format_dump`); several dumps may be passed by calling
            this once per file and merging the dicts.
        long_size: the kernel's ``sizeof(long)``.

    Returns:
        ``"system:name"`` → :class:`EventFormat`.

    Raises:
        TraceFormatError: if the path does not exist or a format cannot be parsed.
    """
    p = Path(path)
    if p.is_file():
        return parse_format_dump(p.read_text(errors="replace"), path=str(p), long_size=long_size)
    if not p.is_dir():
        raise TraceFormatError("Cannot load event formats: no such file or directory", path=str(p))
    out: dict[str, EventFormat] = {}
    for f in sorted(p.glob("*/*/format")):
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue  # tracefs denies some format files to non-root users; skip what we cannot read
        fmt = parse_format(text, f.parent.parent.name, long_size=long_size, path=str(f))
        out[fmt.key] = fmt
    return out
