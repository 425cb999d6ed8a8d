"""Demangle the symbol names Rust (v0 scheme) and C++ (Itanium, plain names) code leaves in kernel stacks.

Theory of operation: Rust-for-Linux code (binder, ashmem, nova...) appears in stack traces as v0-mangled names
(``_RNvMs3_NtCs..._11rust_binder7processNtB5_7Process10update_ref``). Titles and skip lists speak in demangled
paths (``<rust_binder::process::Process>::update_ref``, ``__rustc::rust_begin_unwind``), so frames are
demangled before they are matched. :func:`demangle` implements the subset of the v0 grammar that names
functions: crate roots, nested namespaces, inherent and trait impls, backreferences, generic arguments
(dropped, as a "no parameters" rendering does), and the common types (paths, references, pointers, slices,
tuples, basic types). Plain Itanium names ``_Z<len><name>...`` and ``_ZN<len><id>...E`` keep the function's
qualified name without its parameter list. Anything else -- or any malformed input -- is returned unchanged.
"""

from __future__ import annotations

__all__ = ["demangle"]

_BASIC = {
    "a": "i8", "b": "bool", "c": "char", "d": "f64", "e": "str", "f": "f32", "h": "u8", "i": "isize", "j": "usize",
    "l": "i32", "m": "u32", "n": "i128", "o": "u128", "p": "_", "s": "i16", "t": "u16", "u": "()", "v": "...",
    "x": "i64", "y": "u64", "z": "!",
}


class _Bad(Exception):
    pass


class _V0:
    # A recursive-descent reader over the symbol after "_R"; positions are what backreferences point at.
    def __init__(self, sym: str, pos: int = 0, depth: int = 0) -> None:
        self.s, self.i, self.depth = sym, pos, depth
        if depth > 40:
            raise _Bad

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        if self.i >= len(self.s):
            raise _Bad
        c = self.s[self.i]
        self.i += 1
        return c

    def eat(self, c: str) -> bool:
        if self.peek() == c:
            self.i += 1
            return True
        return False

    def base62(self) -> int:
        if self.eat("_"):
            return 0
        n = 0
        while True:
            c = self.next()
            if c == "_":
                return n + 1
            if c.isdigit():
                d = ord(c) - 48
            elif "a" <= c <= "z":
                d = ord(c) - 87
            elif "A" <= c <= "Z":
                d = ord(c) - 29
            else:
                raise _Bad
            n = n * 62 + d

    def disambiguator(self) -> None:
        if self.eat("s"):
            self.base62()

    def ident(self) -> str:
        self.disambiguator()
        punycode = self.eat("u")
        start = self.i
        while self.peek().isdigit():
            self.i += 1
        if start == self.i:
            raise _Bad
        n = int(self.s[start:self.i])
        self.eat("_")
        if self.i + n > len(self.s) or punycode:
            raise _Bad
        name = self.s[self.i:self.i + n]
        self.i += n
        return name

    def backref(self) -> _V0:
        start = self.i - 1
        pos = self.base62()
        if pos >= start:
            raise _Bad
        return _V0(self.s, pos, self.depth + 1)

    def path(self) -> str:
        c = self.next()
        if c == "C":
            return self.ident()
        if c == "N":
            ns = self.next()
            parent = self.path()
            name = self.ident()
            if ns.isupper():
                return f"{parent}::{{{'closure' if ns == 'C' else 'shim'}}}"
            return f"{parent}::{name}" if name else parent
        if c == "M":
            self.disambiguator()
            self.path()
            return f"<{self.type()}>"
        if c == "X":
            self.disambiguator()
            self.path()
            t = self.type()
            return f"<{t} as {self.path()}>"
        if c == "Y":
            t = self.type()
            return f"<{t} as {self.path()}>"
        if c == "I":
            p = self.path()
            while not self.eat("E"):
                self.generic_arg()
            return p
        if c == "B":
            return self.backref().path()
        raise _Bad

    def generic_arg(self) -> None:
        if self.eat("L"):
            self.base62()
        elif self.eat("K"):
            self.const()
        else:
            self.type()

    def const(self) -> None:
        if self.eat("B"):
            self.backref()
            return
        if self.eat("p"):
            return
        self.next()  # the const's type tag
        self.eat("n")
        while self.peek() and self.peek() != "_":
            self.i += 1
        if not self.eat("_"):
            raise _Bad

    def type(self) -> str:
        c = self.peek()
        if c in _BASIC:
            self.i += 1
            return _BASIC[c]
        if c in "CMXYNI":
            return self.path()
        self.i += 1
        if c == "B":
            return self.backref().type()
        if c in "RQ":
            if self.eat("L"):
                self.base62()
            return ("&" if c == "R" else "&mut ") + self.type()
        if c in "PO":
            return ("*const " if c == "P" else "*mut ") + self.type()
        if c == "S":
            return f"[{self.type()}]"
        if c == "A":
            t = self.type()
            self.const()
            return f"[{t}; _]"
        if c == "T":
            parts = []
            while not self.eat("E"):
                parts.append(self.type())
            return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")
        raise _Bad


def _itanium(name: str) -> str:
    s, i = name, 2
    nested = s.startswith("_ZN")
    if nested:
        i = 3
        while i < len(s) and s[i] in "rVKRO":  # cv- and ref-qualifiers of member functions
            i += 1
    parts = []
    while i < len(s) and s[i].isdigit():
        j = i
        while j < len(s) and s[j].isdigit():
            j += 1
        n = int(s[i:j])
        if j + n > len(s):
            return name
        parts.append(s[j:j + n])
        i = j + n
        if not nested:
            break
    if not parts or (nested and not s[i:].startswith("E")):
        return name
    return "::".join(parts)


def demangle(name: str) -> str:
    """Demangle a Rust v0 (``_R...``) or plain Itanium (``_Z...``) symbol; other names are returned as is.

    Args:
        name: a symbol as printed in a stack frame.

    Returns:
        The demangled path without parameters or generic arguments, or ``name`` when it is not mangled (or not
        in the supported subset).
    """
    if name.startswith("_R") and len(name) > 3:
        try:
            return _V0(name[2:]).path()
        except (_Bad, ValueError, RecursionError):
            return name
    if name.startswith("_Z") and len(name) > 3:
        return _itanium(name)
    return name
