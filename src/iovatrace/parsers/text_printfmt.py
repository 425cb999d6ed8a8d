"""Turn an event's ``print fmt`` into a regular expression that reads the printed values back.

Theory of operation: ftrace text is what the kernel (or libtraceevent, for ``trace-cmd report``) produced by
running the event's ``print fmt`` — a C format string plus argument expressions — over the binary record. We
parse that format string (never evaluate it) into literal text and ``%`` conversions, pair each conversion with
its argument expression, and classify the argument:

* ``REC->field`` (after stripping casts): the conversion prints the field itself, so the captured text can be
  converted back (``%d``/``%u`` decimal, ``%x`` hex, ``%p`` pointer, ``%pS`` symbol, ``%s`` string);
* ``__get_str(field)``: a string field; ``__print_array(__get_dynamic_array(field), ...)``: ``{a,b,...}``;
* ``__print_symbolic(REC->field, {v, "name"}...)`` / ``__print_flags(REC->field, "|", ...)``: the printed names are
  mapped back through the table (the table's values are small constant C expressions, evaluated by a tiny
  integer-only evaluator; names it cannot evaluate, such as enum constants, make that value unrecoverable);
* anything else (arithmetic such as ``REC->iova + REC->size``, helper calls): matched, not kept.

The result is one :class:`BodySpec` per event: a regex with a named group per conversion, and per group what it
means. The caller (``text.py``) applies the regex to all bodies of that event at once (polars, Rust regex) and
converts the captured columns vectorised. Dynamic probe events (kprobes) start with ``(%lx)`` or
``(%lx <- %lx)`` in their print fmt, but the kernel prints that head as ``sym+off/size`` itself; that head is
matched by a separate pattern (:data:`PROBE_HEAD`) whose forms the caller decodes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from .formats import EventFormat, Field

__all__ = ["Capture", "BodySpec", "compile_print_fmt", "compile_raw", "split_print_fmt", "PROBE_HEAD"]

#: Head of a probe event body: ``(ip)`` or ``(a <- b)`` with symbols or hex.
PROBE_HEAD = r"\((?P<kh1>[^()<]+?)(?: <- (?P<kh2>[^()]+?))?\)"

_CONV_RE = re.compile(
    r"%(?P<flags>[-+ #0]*)(?P<width>\d+|\*)?(?:\.(?P<prec>\d+|\*))?(?P<len>hh|h|ll|l|L|z|j|t|q)?(?P<conv>[diouxXcsp%])"
)
_CAST_RE = re.compile(r"^\(\s*(?:(?:const|volatile|unsigned|signed|struct|enum)\s+)*[A-Za-z_]\w*(?:\s+\w+)*\s*\**\s*\)\s*")
_REC_RE = re.compile(r"^REC\s*->\s*([A-Za-z_]\w*)$")
_GETSTR_RE = re.compile(r"^__get_(?:rel_)?str\(\s*([A-Za-z_]\w*)\s*\)$")
_ARRAY_RE = re.compile(r"^__print_array\(\s*__get_(?:rel_)?dynamic_array\(\s*([A-Za-z_]\w*)\s*\)")
_TERNARY_STR_RE = re.compile(r'^\(?\s*REC\s*->\s*([A-Za-z_]\w*)\s*\)?\s*\?\s*"((?:[^"\\]|\\.)*)"\s*:\s*"((?:[^"\\]|\\.)*)"$')
_TERNARY_FLAGS_RE = re.compile(r'^\(?\s*REC\s*->\s*([A-Za-z_]\w*)\s*\)?\s*\?\s*(__print_flags\(.*\))\s*:\s*"none"$', re.S)
_TABLE_ENTRY_RE = re.compile(r"\{\s*((?:[^{}\"]|\([^()]*\))+?)\s*,\s*\"((?:[^\"\\]|\\.)*)\"\s*\}")


@dataclass(frozen=True, slots=True)
class Capture:
    """One named group of a body regex.

    Attributes:
        group: the regex group name.
        field: the format field this group recovers, or ``None`` when the printed value cannot be mapped back.
        kind: ``int`` (base in ``base``), ``ptr`` (``%p``: hashed by kernels unless ``%px``), ``sym`` (``%pS``
            style: symbol+offset or hex), ``str``, ``symbolic``, ``flags``, ``array``, ``raw`` (``-R`` value,
            typed by the field), ``probe`` (the probe head) or ``ignore``.
        base: 10, 16 or 8 for ``int``.
        table: printed name → value for ``symbolic``/``flags`` (names whose value we could not evaluate are
            absent).
        delim: the ``__print_flags`` delimiter.
    """

    group: str
    field: str | None
    kind: str
    base: int = 10
    table: dict[str, int] = field(default_factory=dict)
    delim: str = "|"


@dataclass(slots=True)
class BodySpec:
    """A compiled body grammar of one event.

    Attributes:
        pattern: regex matching a whole body, one named group per capture.
        captures: what each group means.
        probe_head: True when the pattern starts with :data:`PROBE_HEAD` (groups ``kh1``/``kh2``).
        unrecoverable: payload fields the text never prints directly (they stay null).
    """

    pattern: str
    captures: list[Capture]
    probe_head: bool = False
    unrecoverable: list[str] = field(default_factory=list)


def _c_string(text: str) -> tuple[str, str]:
    """Read adjacent C string literals at the start of ``text``; return (value, rest)."""
    out: list[str] = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != '"':
            break
        j = i + 1
        while j < n and text[j] != '"':
            j += 2 if text[j] == "\\" else 1
        lit = text[i:j + 1]
        try:
            out.append(ast.literal_eval(lit))
        except (ValueError, SyntaxError):
            out.append(lit[1:-1])
        i = j + 1
    return "".join(out), text[i:]


def _split_args(text: str) -> list[str]:
    """Split a C argument list at top-level commas (parentheses, braces and strings nest)."""
    args: list[str] = []
    depth = 0
    cur: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        args.append("".join(cur).strip())
    return args


def split_print_fmt(print_fmt: str) -> tuple[str, list[str]]:
    """Split a ``print fmt:`` value into the format string and its argument expressions.

    Args:
        print_fmt: the text after ``print fmt:``.

    Returns:
        ``(format_string, [arg, ...])``.
    """
    fmt, rest = _c_string(print_fmt)
    rest = rest.strip()
    if rest.startswith(","):
        rest = rest[1:]
    return fmt, _split_args(rest)


def _strip_casts(expr: str) -> str:
    expr = expr.strip()
    while True:
        # Peel redundant outer parentheses and leading casts such as "(void *)" or "(unsigned long)".
        m = _CAST_RE.match(expr)
        if m and m.end() < len(expr):
            expr = expr[m.end():].strip()
            continue
        if expr.startswith("(") and expr.endswith(")") and _balanced(expr[1:-1]):
            expr = expr[1:-1].strip()
            continue
        return expr


def _balanced(s: str) -> bool:
    d = 0
    for c in s:
        d += c == "("
        d -= c == ")"
        if d < 0:
            return False
    return d == 0


_EVAL_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|(<<|>>|[|&~()+\-*^]))")


def eval_const(expr: str) -> int | None:
    """Evaluate a small integer constant expression (literals, casts, ``| & ~ << >> + - * ^``).

    Args:
        expr: C expression text such as ``(1UL << 5)`` or ``(( gfp_t)((((1UL))) << (10)))``.

    Returns:
        The value (as an unbounded Python int, ``~`` taken on 64 bits), or ``None`` if the expression names
        anything (an enum constant, a macro) we cannot know.
    """
    # Drop casts first: "( gfp_t)", "(unsigned long)".
    prev = None
    while prev != expr:
        prev = expr
        expr = re.sub(r"\(\s*(?:unsigned\s+|signed\s+)?(?:long\s+long|long|int|short|char|gfp_t|u\d+|s\d+|__u\d+|size_t)\s*\)", " ", expr)
    pos = 0
    out: list[str] = []
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _EVAL_TOKEN.match(expr, pos)
        if m is None:
            return None
        out.append(str(int(m.group(1), 0)) if m.group(1) else m.group(2))
        pos = m.end()
    try:
        tree = ast.parse(" ".join(out), mode="eval")
    except SyntaxError:
        return None
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.BitOr, ast.BitAnd, ast.BitXor, ast.Invert,
               ast.LShift, ast.RShift, ast.Add, ast.Sub, ast.Mult, ast.USub, ast.UAdd)
    if not all(isinstance(n, allowed) for n in ast.walk(tree)):
        return None
    try:
        val = eval(compile(tree, "<const>", "eval"), {"__builtins__": {}}, {})  # noqa: S307 - whitelisted AST only
    except (ArithmeticError, ValueError, OverflowError):
        return None
    return int(val) & ((1 << 64) - 1) if isinstance(val, int) else None


def _table(text: str) -> dict[str, int]:
    table: dict[str, int] = {}
    for m in _TABLE_ENTRY_RE.finditer(text):
        val = eval_const(m.group(1))
        name = m.group(2)
        if val is not None and name not in table:
            table[name] = val
    return table


def _classify(arg: str, conv: str, flags: str, pext: str) -> tuple[str | None, str, int, dict[str, int], str]:
    """(field, kind, base, table, delim) for one conversion's argument."""
    a = _strip_casts(arg)
    m = _REC_RE.match(a)
    if m:
        f = m.group(1)
        if conv == "s":
            return f, "str", 10, {}, "|"
        if conv == "p":
            if pext and pext[0] in "SsFfBb":
                return f, "sym", 16, {}, "|"
            if pext[:1] == "x":
                return f, "int", 16, {}, "|"
            return (f, "ptr", 16, {}, "|") if not pext else (None, "ignore", 10, {}, "|")
        if conv in "xX":
            return f, "int", 16, {}, "|"
        if conv == "o":
            return f, "int", 8, {}, "|"
        if conv == "c":
            return None, "ignore", 10, {}, "|"
        return f, "int", 10, {}, "|"
    m = _GETSTR_RE.match(a)
    if m:
        return m.group(1), "str", 10, {}, "|"
    m = _TERNARY_STR_RE.match(a)
    if m and conv == "s":
        # REC->x ? "yes" : "no" prints one of two names: a two-entry symbolic table (true → 1).
        yes, no = ast.literal_eval(f'"{m.group(2)}"'), ast.literal_eval(f'"{m.group(3)}"')
        return m.group(1), "symbolic", 10, ({yes: 1, no: 0} if yes != no else {}), "|"
    m = _TERNARY_FLAGS_RE.match(a)
    if m and conv == "s":
        # (REC->f) ? __print_flags(REC->f, ...) : "none" -- "none" decodes to 0.
        f2, kind, base, table, delim = _classify(m.group(2), conv, flags, pext)
        if f2 == m.group(1):
            return f2, kind, base, table, delim
    m = _ARRAY_RE.match(a)
    if m:
        return m.group(1), "array", 16, {}, "|"
    for helper, kind in (("__print_symbolic", "symbolic"), ("__print_flags", "flags")):
        if a.startswith(helper + "("):
            inner = _split_args(a[len(helper) + 1:-1])
            if not inner:
                break
            target = _REC_RE.match(_strip_casts(inner[0]))
            delim = "|"
            entries = inner[1:]
            if kind == "flags" and entries:
                delim, _ = _c_string(entries[0])
                entries = entries[1:]
            table = _table(", ".join(entries))
            return (target.group(1) if target else None), kind, 10, table, delim
    return None, "ignore", 10, {}, "|"


def _conv_pattern(conv: str, flags: str, width: str | None, kind: str) -> str:
    pad = " *" if width or "-" in flags else ""
    if kind in ("symbolic", "flags", "ignore") or conv == "s":
        return ".*?"
    if kind == "array":
        return r"\{[^}]*\}"
    if conv == "p":
        # kernel: hashed 16 hex digits, "(null)", "(____ptrval____)"; libtraceevent: 0x..., "(nil)";
        # %pS: symbol+0xoff/0xsize [module], or hex.
        return r"\S+?(?: \[[\w-]+\])?" if kind == "sym" else r"\(?[\w]+\)?"
    if conv in "di":
        return pad + r"-?\d+" + pad
    if conv == "u":
        return pad + r"\d+" + pad
    if conv in "xX":
        # C's "%#x" prints 0 as plain "0"
        return pad + (r"(?:0[xX][0-9a-fA-F]+|0)" if "#" in flags else r"[0-9a-fA-F]+") + pad
    if conv == "o":
        return pad + r"[0-7]+" + pad
    return "."


def compile_print_fmt(fmt: EventFormat) -> BodySpec | None:
    """Compile an event's print fmt into a :class:`BodySpec`.

    Args:
        fmt: the event format (its ``print_fmt`` and fields).

    Returns:
        The spec, or ``None`` when the print fmt cannot be paired (argument count differs from the
        conversions, ``*`` widths, or an empty print fmt).
    """
    if not fmt.print_fmt:
        return None
    fstr, args = split_print_fmt(fmt.print_fmt)
    probe_head = False
    if fmt.is_kprobe:
        for head, nargs in (("(%lx <- %lx)", 2), ("(%lx)", 1)):
            if fstr.startswith(head):
                fstr, args, probe_head = fstr[len(head):], args[nargs:], True
                break
    # trace-cmd plugins (e.g. kmem) print "(caller+off) " before an event's own text: allow and ignore it.
    parts: list[str] = [PROBE_HEAD] if probe_head else [r"(?:\([^()]*\) )?"]
    captures: list[Capture] = []
    pos = 0
    ai = 0
    for m in _CONV_RE.finditer(fstr):
        parts.append(re.escape(fstr[pos:m.start()]))
        pos = m.end()
        conv = m.group("conv")
        if conv == "%":
            parts.append("%")
            continue
        if m.group("width") == "*" or m.group("prec") == "*" or ai >= len(args):
            return None
        pext = ""
        if conv == "p":
            pm = re.match(r"[A-Za-z0-9]*", fstr[pos:])
            # libtraceevent treats only the letter right after %p as an extension; keep it short so "%ps:" works.
            pext = pm.group(0)[:1] if pm else ""
            pos += len(pext)
        f, kind, base, table, delim = _classify(args[ai], conv, m.group("flags"), pext)
        ai += 1
        if f is not None and (fmt.field(f) is None or any(c.field == f for c in captures)):
            f, kind = None, "ignore" if kind not in ("symbolic", "flags") else kind
        g = f"g{len(captures)}"
        captures.append(Capture(g, f, kind if f is not None or kind in ("symbolic", "flags") else "ignore",
                                base, table, delim))
        parts.append(f"(?P<{g}>{_conv_pattern(conv, m.group('flags'), m.group('width'), kind)})")
    if ai != len(args):
        return None
    parts.append(re.escape(fstr[pos:]))
    got = {c.field for c in captures if c.field}
    if probe_head:
        got |= {"__probe_ip", "__probe_func", "__probe_ret_ip"}
    missing = [f.name for f in fmt.payload_fields if f.name not in got]
    return BodySpec("^" + "".join(parts) + "$", captures, probe_head, missing)


def compile_raw(fmt: EventFormat) -> BodySpec:
    """The grammar of ``trace-cmd report -R`` bodies: every payload field as ``name=value``, in format order.

    Args:
        fmt: the event format.

    Returns:
        A spec whose captures all have kind ``raw`` (typed by the field when decoded).
    """
    caps = [Capture(f"g{i}", f.name, "raw") for i, f in enumerate(fmt.payload_fields)]

    def value(f: Field) -> str:
        # Narrow value patterns keep the regex engine on its fast paths (lazy ".*?" groups are slow).
        if f.kind == "scalar":
            return r"\S*"
        if f.is_string:
            return ".*?"
        return r"(?:ARRAY\[[^\]]*\]|\S*)"

    body = " ".join(f"{re.escape(f.name)}=(?P<g{i}>{value(f)})" for i, f in enumerate(fmt.payload_fields))
    return BodySpec("^" + body + r"\s*$", caps, False, [])
