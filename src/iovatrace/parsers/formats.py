"""Event format files: ``events/<system>/<name>/format`` text into typed field descriptions.

Theory of operation: the kernel describes every event's binary payload in a small text grammar
(``field:<c declaration>; offset:N; size:N; signed:N;``). We parse that text (never evaluate it)
into :class:`EventFormat` objects. Everything else — the binary decoder, the text readers, the
trace.dat writer and the Arrow schema of each event table (``schema.event_schema``) — is derived from
these objects, so one parser decides what every field means.

Classification of a field (``Field.kind``):

* ``scalar``   integer of size 1/2/4/8 (pointers, ``long``, ``size_t``, ``u64``... all integers);
* ``array``    fixed-size array ``T name[N]`` (``char[N]`` is a NUL-padded string, ``u8[N]`` bytes);
* ``dynamic``  ``__data_loc T[] name``: u32 with offset (low 16 bits, from payload start) and length;
* ``relative`` ``__rel_loc T[] name``: as dynamic, offset relative to the end of the field;
* ``tail``     ``T name[]`` with size 0: the rest of the record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ..errors import TraceFormatError

__all__ = ["Field", "EventFormat", "parse_format", "COMMON_FIELD_PREFIX"]

COMMON_FIELD_PREFIX = "common_"

FieldKind = Literal["scalar", "array", "dynamic", "relative", "tail"]

_FIELD_RE = re.compile(
    r"^\s*field:(?P<decl>.*?);\s*offset:(?P<offset>-?\d+);\s*size:(?P<size>\d+);(?:\s*signed:(?P<signed>-?\d+);)?"
)
_NAME_RE = re.compile(r"^name:\s*(\S+)\s*$")
_ID_RE = re.compile(r"^ID:\s*(\d+)\s*$")
_ARRAY_RE = re.compile(r"^(?P<type>.*?)\s*(?P<name>[A-Za-z_]\w*)\s*\[(?P<len>[^\]]*)\]$")
_SCALAR_RE = re.compile(r"^(?P<type>.*?)\s*\b(?P<name>[A-Za-z_]\w*)$")

_CHAR_TYPES = {"char", "signed char", "unsigned char", "const char", "u8", "s8", "__u8", "__s8", "uint8_t", "int8_t"}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an event payload, as the format file declares it.

    Attributes:
        name: field name (``common_pid``, ``iovad``, ``devname``...).
        type: the C type without the name and array suffix (``unsigned long``, ``char``, ``u64``).
        offset: byte offset from the start of the payload (where ``common_type`` lives).
        size: total size in bytes (for arrays: N * element size; for dynamic/relative: 4 or 2).
        signed: the format's ``signed:`` flag (for arrays: the element's signedness).
        kind: see the module docstring.
        array_len: N for fixed arrays, else ``None``.
        elem_size: size of one element for arrays/dynamic arrays (1 for char), else ``size``.
        is_string: True for char arrays and ``__data_loc char[]`` (decoded to ``str``).
        is_pointer: True for C pointer types (kernel addresses, printed in hex).
    """

    name: str
    type: str
    offset: int
    size: int
    signed: bool
    kind: FieldKind
    array_len: int | None = None
    elem_size: int = 0
    is_string: bool = False
    is_pointer: bool = False

    @property
    def is_common(self) -> bool:
        """True for the ``common_*`` header fields."""
        return self.name.startswith(COMMON_FIELD_PREFIX)


@dataclass(slots=True)
class EventFormat:
    """A parsed format file.

    Attributes:
        system: the event system (``iommu``, ``kprobes``, ``iova``, ``ftrace``...).
        name: the event name (``map``, ``alloc_iova_fast``...).
        id: the event id of this boot (never hard-code ids).
        fields: every field, common ones first, in declaration order.
        print_fmt: the ``print fmt:`` text (format string and arguments), unevaluated.
    """

    system: str
    name: str
    id: int
    fields: list[Field] = field(default_factory=list)
    print_fmt: str = ""

    @property
    def key(self) -> str:
        """``"system:name"``, the key of this event everywhere in iovatrace."""
        return f"{self.system}:{self.name}"

    @property
    def common_fields(self) -> list[Field]:
        """The ``common_*`` fields."""
        return [f for f in self.fields if f.is_common]

    @property
    def payload_fields(self) -> list[Field]:
        """The event's own fields (not ``common_*``)."""
        return [f for f in self.fields if not f.is_common]

    @property
    def variable_size(self) -> bool:
        """True if a field's extent depends on the record (``dynamic``, ``relative`` or ``tail``)."""
        return any(f.kind in ("dynamic", "relative", "tail") for f in self.fields)

    @property
    def is_kprobe(self) -> bool:
        """True for dynamic probe events (kprobe/kretprobe/uprobe/fprobe): they start with ``__probe_ip``/``__probe_func``."""
        names = {f.name for f in self.fields}
        return "__probe_ip" in names or "__probe_func" in names

    def field(self, name: str) -> Field | None:
        """The field called ``name``, or ``None``."""
        for f in self.fields:
            if f.name == name:
                return f
        return None


def _type_elem_size(ctype: str, long_size: int) -> int | None:
    t = ctype.replace("const ", "").replace("volatile ", "").strip()
    if "*" in t:
        return long_size
    t = re.sub(r"\s+", " ", t)
    if t in ("char", "signed char", "unsigned char", "bool", "_Bool") or re.fullmatch(r"(__)?[us]8|u?int8_t", t):
        return 1
    if "short" in t or re.fullmatch(r"(__)?[us]16|u?int16_t|__(le|be)16", t):
        return 2
    if "long long" in t or re.fullmatch(r"(__)?[us]64|u?int64_t|__(le|be)64|loff_t|dma_addr_t|phys_addr_t|sector_t", t):
        return 8
    if "long" in t or t in ("size_t", "ssize_t", "uintptr_t", "ptrdiff_t"):
        return long_size
    if "int" in t or re.fullmatch(r"(__)?[us]32|__(le|be)32|pid_t|gfp_t|dev_t|uid_t|gid_t", t):
        return 4
    return None


def _classify(decl: str, offset: int, size: int, signed: bool, long_size: int) -> Field:
    decl = " ".join(decl.split())
    kind: FieldKind
    if decl.startswith("__data_loc ") or decl.startswith("__rel_loc "):
        kind = "dynamic" if decl.startswith("__data_loc ") else "relative"
        # Both spellings occur: "__data_loc char[] name" (kernel) and "__data_loc char name[]" (older).
        rest = decl.split(" ", 1)[1].replace("[]", " ").strip()
        rest = " ".join(rest.split())
        m = _ARRAY_RE.match(rest)
        if m is None:  # "__data_loc char name" without [] occurs in some old kernels
            m2 = _SCALAR_RE.match(rest)
            if m2 is None:
                raise ValueError(f"cannot parse dynamic field declaration {decl!r}")
            ctype, name = m2.group("type").strip(), m2.group("name")
        else:
            ctype, name = m.group("type").strip(), m.group("name")
        base = ctype.replace("const ", "").strip()
        elem = _type_elem_size(base, long_size) or 1
        is_string = base in _CHAR_TYPES and "unsigned" not in base and base not in ("u8", "__u8", "uint8_t")
        return Field(name, ctype, offset, size, signed, kind, None, elem, is_string, "*" in ctype)
    m = _ARRAY_RE.match(decl)
    if m is not None:
        ctype, name, alen = m.group("type").strip(), m.group("name"), m.group("len").strip()
        base = ctype.replace("const ", "").strip()
        is_char = base in ("char", "signed char")
        if alen == "" or size == 0:
            elem = _type_elem_size(base, long_size) or 1
            return Field(name, ctype, offset, size, signed, "tail", None, elem, is_char, "*" in ctype)
        # N may be an expression or a macro name (e.g. TASK_COMM_LEN); the size is authoritative.
        elem = _type_elem_size(base, long_size)
        if alen.isdigit() and int(alen) > 0:
            n = int(alen)
            elem = size // n if size % n == 0 else (elem or 1)
        else:
            elem = elem or 1
            n = size // elem if elem else size
        return Field(name, ctype, offset, size, signed, "array", n, elem, is_char, "*" in ctype)
    m = _SCALAR_RE.match(decl)
    if m is None:
        raise ValueError(f"cannot parse field declaration {decl!r}")
    ctype, name = m.group("type").strip(), m.group("name")
    if size == 0:
        # Old kernels declare flexible tails without brackets ("field:u32 buf; size:0", ftrace bprint).
        base = ctype.replace("const ", "").strip()
        elem = _type_elem_size(base, long_size) or 1
        return Field(name, ctype, offset, size, signed, "tail", None, elem, base in ("char", "signed char"), False)
    if size not in (1, 2, 4, 8):
        # A scalar-looking declaration with an odd size is an opaque blob (e.g. a struct): keep bytes.
        return Field(name, ctype, offset, size, signed, "array", size, 1, False, False)
    return Field(name, ctype, offset, size, signed, "scalar", None, size, False, "*" in ctype)


def parse_format(text: str, system: str = "", *, long_size: int = 8, path: str | None = None) -> EventFormat:
    """Parse one format file.

    Args:
        text: the format text (``name:``, ``ID:``, ``format:`` field lines, ``print fmt:``).
        system: the event system it belongs to (not stated inside the text).
        long_size: the kernel's ``sizeof(long)``, for fields whose size the text leaves implicit.
        path: where the text came from, for error messages.

    Returns:
        The parsed :class:`EventFormat`.

    Raises:
        TraceFormatError: if the name, the ID or a field line cannot be parsed.
    """
    name: str | None = None
    ev_id: int | None = None
    fields: list[Field] = []
    print_fmt = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("field:") or s.startswith("field special:"):
            s2 = s.replace("field special:", "field:", 1)
            m = _FIELD_RE.match(s2)
            if m is None:
                raise TraceFormatError(
                    f"Cannot parse field line of event format {system}:{name}; expected "
                    "'field:<decl>; offset:N; size:N; signed:N;'",
                    path=path, line=lineno, excerpt=s[:80],
                )
            signed = m.group("signed") not in (None, "0")
            try:
                fields.append(_classify(m.group("decl"), int(m.group("offset")), int(m.group("size")), signed, long_size))
            except ValueError as exc:
                raise TraceFormatError(
                    f"Cannot parse field of event format {system}:{name}: {exc}", path=path, line=lineno, excerpt=s[:80]
                ) from None
            continue
        if name is None:
            m = _NAME_RE.match(s)
            if m:
                name = m.group(1)
                continue
        if ev_id is None:
            m = _ID_RE.match(s)
            if m:
                ev_id = int(m.group(1))
                continue
        if s.startswith("print fmt:"):
            print_fmt = s[len("print fmt:"):].strip()
    if name is None or ev_id is None:
        raise TraceFormatError(
            f"Cannot parse event format of system {system!r}: expected 'name:' and 'ID:' lines",
            path=path, excerpt=text[:80],
        )
    return EventFormat(system, name, ev_id, fields, print_fmt)
