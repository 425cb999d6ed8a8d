"""Typed Arrow columns from the captured text of ftrace bodies.

Theory of operation: :mod:`text_printfmt` turns each event's print fmt (or, for ``trace-cmd report -R``, its
field list) into a regex with one group per printed value. Here the captured strings of one group — a whole
column at once — become one typed Arrow array of the format field's type (:func:`iovatrace.schema.arrow_type`).
Integers go through polars' vectorised ``str.to_integer`` into 64-bit patterns which numpy truncates to the field's
width and signedness (so ``%x`` of a negative ``int`` and ``%d`` of a ``u8`` both round-trip). Things that repeat —
symbols, symbolic names, flag sets — are decoded once per distinct string. Values the text cannot give back (a
hashed ``%p``, a symbol without kallsyms, a name outside the ``__print_symbolic`` table) become nulls and are
counted per reason in :class:`DecodeStats`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ..schema import arrow_type
from .formats import Field
from .text_printfmt import Capture

__all__ = ["DecodeStats", "parse_ints", "int_array", "decode_capture", "resolve_symbol", "parse_kallsyms"]

_SYM_RE = re.compile(r"^([A-Za-z_.$][\w.$]*)(?:\+0x([0-9a-fA-F]+)(?:/0x[0-9a-fA-F]+)?)?(?: \[[\w-]+\])?$")
_HEX_RE = re.compile(r"^(?:0x)?([0-9a-f]+)s?$")


@dataclass
class DecodeStats:
    """Values that could not be recovered, by reason, with the first example of each.

    Attributes:
        nulls: ``"event.field: reason"`` → count.
        bad: ``"event.field"`` → (count, first line number, first text) of values that did not parse.
    """

    nulls: dict[str, int] = field(default_factory=dict)
    bad: dict[str, tuple[int, int, str]] = field(default_factory=dict)

    def null(self, key: str, n: int) -> None:
        """Count ``n`` values of ``key`` left null."""
        if n:
            self.nulls[key] = self.nulls.get(key, 0) + int(n)


def parse_kallsyms(text: str) -> dict[str, int]:
    """Parse ``/proc/kallsyms`` text into name → address (the first text symbol of a name wins).

    Args:
        text: lines ``<addr> <type> <name> [module]``.

    Returns:
        The mapping.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] not in out:
            try:
                out[parts[2]] = int(parts[0], 16)
            except ValueError:
                continue
    return out


def resolve_symbol(text: str, kallsyms: Mapping[str, int] | None) -> int | None:
    """The address a printed code pointer stands for.

    Args:
        text: ``sym+0xoff/0xsize [mod]`` (kernel), ``sym`` or hex (``ffff...``, ``0xffff...``).
        kallsyms: name → address, or ``None``.

    Returns:
        The address, or ``None`` when the symbol is unknown.
    """
    t = text.strip()
    m = _HEX_RE.match(t)
    if m:
        return int(m.group(1), 16)
    m = _SYM_RE.match(t)
    if m and kallsyms is not None and m.group(1) in kallsyms:
        return kallsyms[m.group(1)] + (int(m.group(2), 16) if m.group(2) else 0)
    return None


def parse_ints(s: pl.Series, base: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column of printed integers into 64-bit patterns.

    Args:
        s: strings (nulls allowed); decimal may carry ``-``; hex may carry ``0x``.
        base: 10, 16, 8, or ``None`` for "hex if it starts with 0x, else decimal".

    Returns:
        ``(uint64 bit patterns, valid mask)``; ``valid`` is False for nulls and for text that is not a number.
    """
    s = s.str.strip_chars()
    if base is None:
        is0x = s.str.starts_with("0x").fill_null(False).to_numpy()
        b16, v16 = parse_ints(s, 16)
        b10, v10 = parse_ints(s, 10)
        return np.where(is0x, b16, b10), np.where(is0x, v16, v10)
    if base in (8, 16):
        v = (s.str.strip_prefix("0x").str.strip_prefix("0X") if base == 16 else s).str.to_integer(
            base=base, dtype=pl.UInt64, strict=False)
        return v.fill_null(0).to_numpy().astype(np.uint64, copy=False), v.is_not_null().to_numpy()
    neg = s.str.starts_with("-").fill_null(False)
    if not neg.any():
        v = s.str.to_integer(base=10, dtype=pl.UInt64, strict=False)
        return v.fill_null(0).to_numpy().astype(np.uint64, copy=False), v.is_not_null().to_numpy()
    dv = s.str.to_integer(base=10, dtype=pl.UInt64, strict=False)
    nv = s.str.to_integer(base=10, dtype=pl.Int64, strict=False)
    nm = neg.to_numpy()
    out = np.where(nm, nv.fill_null(0).to_numpy().view(np.uint64), dv.fill_null(0).to_numpy())
    valid = np.where(nm, nv.is_not_null().to_numpy(), dv.is_not_null().to_numpy())
    return out.astype(np.uint64, copy=False), valid


_NP = {(1, False): np.uint8, (1, True): np.int8, (2, False): np.uint16, (2, True): np.int16,
       (4, False): np.uint32, (4, True): np.int32, (8, False): np.uint64, (8, True): np.int64}


def int_array(bits: np.ndarray, valid: np.ndarray, size: int, signed: bool) -> pa.Array:
    """Truncate 64-bit patterns to a field's width and signedness (C conversion semantics).

    Args:
        bits: uint64 patterns.
        valid: False → null.
        size: 1, 2, 4 or 8 bytes.
        signed: the field's signedness.

    Returns:
        An Arrow integer array.
    """
    size = size if size in (1, 2, 4, 8) else 8
    u = bits.astype(_NP[(size, False)], copy=False) if size < 8 else bits
    arr = u.view(_NP[(size, signed)])
    return pa.array(arr, mask=~valid)


def _per_unique(s: pl.Series, fn: Callable[[str], Any]) -> list[Any]:
    """Apply ``fn`` once per distinct non-null string; return per-row results (None for nulls)."""
    uniq = s.unique().drop_nulls().to_list()
    table = {u: fn(u) for u in uniq}
    return [None if v is None else table[v] for v in s.to_list()]


def _pointer(text: str, kernel_hashes: bool) -> int | None:
    t = text.strip()
    if t in ("(nil)", "(null)", "0"):
        return 0
    if t.startswith("0x"):
        try:
            return int(t, 16)
        except ValueError:
            return None
    if re.fullmatch(r"[0-9a-f]+", t):
        v = int(t, 16)
        # Kernels hash plain %p (since 4.15): only NULL (all zeros) survives.
        return v if (v == 0 or not kernel_hashes) else None
    return None


def _list_of_ints(text: str) -> list[int] | None:
    """``__print_array`` output: the kernel prints ``{0x1,0x2}``, libtraceevent ``1 2`` (empty: nothing)."""
    t = text.strip()
    if t.startswith("{") and t.endswith("}"):
        items = [x.strip() for x in t[1:-1].split(",") if x.strip()]
    else:
        items = t.split()
    try:
        return [int(x, 0) if x.lower().startswith(("0x", "-0x")) else int(x) for x in items]
    except ValueError:
        return None


def _raw_array(text: str) -> bytes | None:
    t = text.strip()
    if t.startswith("ARRAY[") and t.endswith("]"):
        inner = t[6:-1].strip()
        try:
            return bytes(int(x, 16) for x in inner.split(",")) if inner else b""
        except ValueError:
            return None
    return None


def _typed_list(vals: list[Any], f: Field, atype: pa.DataType) -> pa.Array:
    if pa.types.is_binary(atype):
        return pa.array([None if v is None else (bytes(v) if isinstance(v, (bytes, bytearray)) else
                                                  b"".join(int(x).to_bytes(1, "little") for x in v)) for v in vals],
                        pa.binary())
    vt = atype.value_type
    bits = vt.bit_width
    mask = (1 << bits) - 1
    out: list[list[int] | None] = []
    for v in vals:
        if v is None:
            out.append(None)
            continue
        if isinstance(v, (bytes, bytearray)):
            esz = bits // 8
            v = [int.from_bytes(v[i:i + esz], "little") for i in range(0, len(v) - len(v) % esz, esz)]
        items = [x & mask for x in v]
        if pa.types.is_signed_integer(vt):
            items = [x - (1 << bits) if x >> (bits - 1) else x for x in items]
        out.append(items)
    return pa.array(out, atype)


def decode_capture(
    s: pl.Series,
    cap: Capture,
    f: Field,
    *,
    kallsyms: Mapping[str, int] | None,
    kernel_text: pl.Series | None,
    hex_fields: frozenset[str],
    stats: DecodeStats,
    key: str,
    lines: pl.Series,
) -> pa.Array:
    """Decode one captured column into the field's Arrow type.

    Args:
        s: captured strings, one per row (null where the row's body did not match).
        cap: what the group means.
        f: the format field it sets.
        kallsyms: name → address for symbolic code pointers.
        kernel_text: per row, True when the line came from tracefs (the kernel hashes plain ``%p``).
        hex_fields: fields the print fmt prints in hex (``-R`` prints those bare, without ``0x``).
        stats: where unrecoverable values are counted.
        key: event key, for the stats.
        lines: line numbers, for the first bad value.

    Returns:
        An Arrow array of ``arrow_type(f)``.
    """
    atype = arrow_type(f)
    label = f"{key}.{f.name}"
    present = s.is_not_null()
    if pa.types.is_string(atype):
        vals = s
        if cap.kind == "raw" or cap.kind == "str":
            return vals.to_arrow().cast(pa.string())
        stats.null(f"{label}: printed as {cap.kind}", int(present.sum()))
        return pa.nulls(len(s), pa.string())
    if pa.types.is_integer(atype):
        size = atype.bit_width // 8
        signed = pa.types.is_signed_integer(atype)
        if cap.kind in ("int", "raw"):
            base = cap.base if cap.kind == "int" else (16 if f.name in hex_fields else 10)
            if cap.kind == "raw":
                # -R prints 0x-prefixed hex for longs/pointers, bare hex where the print fmt uses %x.
                # libtraceevent prints a NULL pointer field as "(nil)".
                bits, valid = parse_ints(s.str.replace("^\\(nil\\)$", "0"), None if base == 10 else 16)
            else:
                bits, valid = parse_ints(s, base)
        elif cap.kind in ("ptr", "sym", "symbolic", "flags"):
            if cap.kind == "ptr":
                kt = kernel_text.to_list() if kernel_text is not None else [False] * len(s)
                vals = [None if t is None else _pointer(t, bool(k)) for t, k in zip(s.to_list(), kt)]
            elif cap.kind == "sym":
                vals = _per_unique(s, lambda t: resolve_symbol(t, kallsyms))
            elif cap.kind == "symbolic":
                vals = _per_unique(s, lambda t: _symbolic(t, cap.table))
            else:
                vals = _per_unique(s, lambda t: _flags(t, cap.table, cap.delim))
            valid = np.array([v is not None for v in vals], bool)
            bits = np.array([(v or 0) & 0xFFFFFFFFFFFFFFFF for v in vals], np.uint64)
            lost = int((present.to_numpy() & ~valid).sum())
            reason = {"ptr": "hashed %p", "sym": "symbol not in kallsyms", "symbolic": "name not in table",
                      "flags": "flag name not in table"}[cap.kind]
            stats.null(f"{label}: {reason}", lost)
            return int_array(bits, valid, size, signed)
        else:
            stats.null(f"{label}: printed as {cap.kind}", int(present.sum()))
            return pa.nulls(len(s), atype)
        bad = present.to_numpy() & ~valid
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            cnt, _, _ = stats.bad.get(label, (0, 0, ""))
            first = stats.bad.get(label, (0, int(lines[i]), str(s[i])))
            stats.bad[label] = (cnt + int(bad.sum()), first[1], first[2])
        return int_array(bits, valid, size, signed)
    # arrays: list<int> or binary
    if cap.kind == "array":
        vals = [None if t is None else _list_of_ints(t) for t in s.to_list()]
    elif cap.kind == "raw":
        vals = [None if t is None else (_raw_array(t) if t.strip().startswith("ARRAY[") else _list_of_ints(t))
                for t in s.to_list()]
    else:
        stats.null(f"{label}: printed as {cap.kind}", int(present.sum()))
        return pa.nulls(len(s), atype)
    return _typed_list(vals, f, atype)


def _symbolic(text: str, table: Mapping[str, int]) -> int | None:
    t = text.strip()
    if t in table:
        return table[t]
    try:
        return int(t, 0)
    except ValueError:
        return None


def _flags(text: str, table: Mapping[str, int], delim: str) -> int | None:
    t = text.strip()
    if not t or t == "none":
        return 0
    total = 0
    for tok in t.split(delim):
        tok = tok.strip()
        if tok in table:
            total |= table[tok]
            continue
        try:
            total |= int(tok, 0)
        except ValueError:
            return None
    return total
