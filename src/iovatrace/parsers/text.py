"""ftrace text traces (tracefs ``trace``/``trace_pipe``, ``trace-cmd report`` in its default, ``-t``, ``-R``, ``-l``
forms) into the same Arrow event tables as the trace.dat reader.

Theory of operation:

1. :func:`text_lines.split_lines` splits every event line into its common columns with one vectorised regex
   (comm, pid, cpu, flags column, timestamp, event name, body) and accounts for every other line (headers, loss
   markers, unrecognised lines — counted by reason, or an error in strict mode).
2. Event names are resolved to ``"system:name"`` keys through the event formats, when given (a trace.dat of the
   same run, a tracefs ``events/`` directory, or a concatenated format dump — :func:`load_formats_dir`). Text never
   names the system; without a format an event is keyed ``unknown:<name>``.
3. With a format, each event's bodies are matched against a regex compiled from its ``print fmt``
   (:mod:`text_printfmt`), and against the ``-R`` ``field=value`` grammar for the rows that do not match; every
   captured column is decoded into the field's Arrow type (:mod:`text_decode`) so the tables follow
   :func:`iovatrace.schema.event_schema` exactly (schema metadata ``iovatrace.typing = format``). Fields the text
   cannot give back (hashed ``%p``, expressions, names outside a symbolic table) stay null and are listed in the
   table metadata ``iovatrace.unrecovered`` and counted in ``TextTrace.stats``.
4. Without a format, ``key=value`` pairs are typed by inspection (decimal → int64, ``0x`` hex → uint64, else
   string), the raw body is kept in ``_body`` and the table metadata says ``iovatrace.typing = inferred``.

Precision: tracefs text and ``trace-cmd report`` print microseconds (``ts_ns = µs * 1000``); ``report -t`` prints
nanoseconds. ``meta["ts_precision_ns"]`` and the table metadata ``iovatrace.ts_precision_ns`` say which (1000 or 1);
with a clock that does not count time (``counter``, ``x86-tsc``) the text prints raw clock values without a
fraction, kept as they are in ``ts_ns``, and the precision is 0 (= raw clock units).
The flags column exists in tracefs text (``iovatrace.flags = text``, exact) and ``report -l`` (``libtraceevent``:
no BH-disabled bit); elsewhere ``flags``/``preempt`` are 0 and the table metadata ``iovatrace.flags`` is ``absent``.
The ``(tgid)`` column, when present, is recognised and dropped (the event schema has no tgid). Everything is parsed
in memory (text traces are small next to trace.dat); :meth:`TextTrace.iter_batches` slices the parsed tables.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import TraceFormatError
from ..schema import LOST_EVENTS, arrow_type, event_schema
from .formats import EventFormat
from .text_decode import DecodeStats, decode_capture, parse_kallsyms, resolve_symbol
from .text_formats import load_formats_dir, parse_format_dump
from .text_infer import inferred_table
from .text_lines import decode_flags, read_text, sniff_text, split_lines
from .text_printfmt import BodySpec, compile_print_fmt, compile_raw

__all__ = ["sniff", "open_text", "TextTrace", "TextMeta", "load_formats_dir", "parse_format_dump"]

_FAILED = "[FAILED TO PARSE] "


def sniff(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) looks like ftrace text (plain or gzip).

    Args:
        head: at least the first KiB of the file.

    Returns:
        Whether :func:`open_text` should be used.
    """
    return sniff_text(head)


def open_text(
    path: str | Path,
    *,
    formats: Mapping[str, EventFormat] | str | Path | None = None,
    kallsyms: Any = None,
    strict: bool = False,
) -> TextTrace:
    """Open an ftrace text trace.

    Args:
        path: tracefs ``trace``/``trace_pipe`` text or ``trace-cmd report`` output, plain or ``.gz``.
        formats: ``"system:name"`` → :class:`EventFormat`, or a path: a trace.dat of the same run (its formats,
            and its kallsyms unless ``kallsyms`` is given), a tracefs ``events/`` directory or a format dump
            (:func:`load_formats_dir`). Without formats, columns are inferred.
        kallsyms: name → address, ``/proc/kallsyms`` text, or the trace.dat reader's ``.kallsyms``, to turn
            printed ``sym+off`` code pointers (kprobe ``__probe_ip``, ``%pS`` fields) back into addresses. Must be
            from the same boot.
        strict: raise :class:`TraceFormatError` on the first line or value that cannot be parsed.

    Returns:
        A :class:`TextTrace` (parsing happens on first use).

    Raises:
        TraceFormatError: if ``formats`` names a file that cannot be read as formats or as a trace.dat.
    """
    if isinstance(formats, (str, Path)):
        fpath = Path(formats)
        head = b""
        if fpath.is_file():
            with open(fpath, "rb") as fh:
                head = fh.read(16)
        if head.startswith(b"\x17\x08\x44tracing"):
            from .tracedat import TraceDat

            dat = TraceDat(fpath)
            formats = dat.formats
            if kallsyms is None:
                kallsyms = dat.kallsyms
        else:
            formats = load_formats_dir(fpath)
    return TextTrace(path, formats=formats, kallsyms=_symbol_map(kallsyms), strict=strict)


def _symbol_map(ks: Any) -> dict[str, int] | None:
    """name → address from kallsyms text, a mapping, or a table with parallel ``names``/``addrs`` lists."""
    if ks is None:
        return None
    if isinstance(ks, str):
        return parse_kallsyms(ks)
    if isinstance(ks, Mapping):
        return dict(ks)
    names, addrs = getattr(ks, "names", None), getattr(ks, "addrs", None)
    if names is None or addrs is None:
        raise TypeError("kallsyms must be /proc/kallsyms text, a name->address mapping or a Kallsyms table")
    out: dict[str, int] = {}
    for n, a in zip(names, addrs):
        out.setdefault(n, int(a))
    return out


class TextTrace:
    """An ftrace text trace with the trace.dat reader's API (see ``docs/ARCHITECTURE.md``).

    Attributes:
        path: the file.
        formats: the event formats used for typing (may be empty).
        kallsyms: symbol → address used to resolve printed code pointers, or ``None``.
    """

    def __init__(self, path: str | Path, *, formats: Mapping[str, EventFormat] | None = None,
                 kallsyms: Mapping[str, int] | None = None, strict: bool = False) -> None:
        self.path = str(path)
        self.formats: dict[str, EventFormat] = dict(formats or {})
        self.kallsyms = kallsyms
        self.strict = strict
        self.stats = DecodeStats()
        self._tables: dict[str, pa.Table] | None = None
        self._lost: pa.Table | None = None
        self._meta = TextMeta()
        self._by_name: dict[str, list[EventFormat]] = {}
        for f in self.formats.values():
            self._by_name.setdefault(f.name, []).append(f)
        self._specs: dict[str, tuple[BodySpec | None, BodySpec]] = {}
        self._entry_offsets: dict[str, int] = {}
        self._cmdlines: dict[int, str] = {}

    # -- public API --------------------------------------------------------------------------------------------
    @property
    def meta(self) -> TextMeta:
        """What the file says about itself: ``producer`` (``ftrace``/``trace-cmd``), ``cpus``, ``ts_precision_ns``,
        ``entries``/``written`` (tracefs header), ``typing`` per event, ``skipped`` lines by reason, ``lines``."""
        self._load()
        return self._meta

    @property
    def cmdlines(self) -> dict[int, str]:
        """pid → comm as seen on the event lines (the last comm printed for each pid)."""
        self._load()
        return dict(self._cmdlines)

    @property
    def damage(self) -> list[dict[str, Any]]:
        """What could not be read: one entry per skip reason (``line`` of the first, ``count``, ``reason``)."""
        self._load()
        return [{"reason": r, "count": n, "line": self._meta["first_bad"].get(r, (None, ""))[0],
                 "excerpt": self._meta["first_bad"].get(r, (None, ""))[1]} for r, n in self._meta["skipped"].items()]

    def read_tables(self, events: Iterable[str] | None = None, buffer: str | None = "") -> dict[str, pa.Table]:
        """Event tables, keyed ``"system:name"`` (instances ``"inst/system:name"``), as the trace.dat reader.

        Args:
            events: glob patterns on ``"system:name"`` (or on the bare event name); ``None`` for all.
            buffer: the instance to read (``""`` = top buffer, the default); ``None`` reads all.

        Returns:
            ``{key: pa.Table}``, keys sorted, with :func:`iovatrace.schema.event_schema` schemas where formats are
            known.
        """
        return {k: t for k, t in self._select(events, None if buffer is None else [buffer])}

    def iter_batches(self, events: Iterable[str] | None = None, buffers: Iterable[str] | None = None, *,
                     batch_size: int = 65536) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Yield ``(key, RecordBatch)`` per event table, in batches of at most ``batch_size`` rows.

        Args:
            events: as for :meth:`read_tables`.
            buffers: instance names to read (``""`` = top); default all.
            batch_size: maximum rows per batch.

        Yields:
            ``(key, batch)``.
        """
        for key, table in self._select(events, buffers):
            for batch in table.to_batches(max_chunksize=batch_size):
                yield key, batch

    def _select(self, events: Iterable[str] | None, buffers: Iterable[str] | None) -> list[tuple[str, pa.Table]]:
        self._load()
        assert self._tables is not None
        pats = list(events) if events is not None else None
        bufs = set(buffers) if buffers is not None else None
        out = []
        for k in sorted(self._tables):
            buf, _, ev = k.rpartition("/")
            if bufs is not None and buf not in bufs:
                continue
            if pats is not None and not any(fnmatch.fnmatchcase(ev, p) or fnmatch.fnmatchcase(ev.split(":", 1)[-1], p)
                                            for p in pats):
                continue
            out.append((k, self._tables[k]))
        return out

    def lost_events(self) -> pa.Table:
        """Loss markers (``CPU:n [LOST n EVENTS]``, ``[n EVENTS DROPPED]``) as :data:`iovatrace.schema.LOST_EVENTS`
        rows (``source = text_marker``; ts of the next event on that CPU; count -1 when not stated)."""
        self._load()
        assert self._lost is not None
        return self._lost

    def event_counts(self) -> dict[str, int]:
        """Number of events per key (all buffers; instance keys ``"inst/system:name"``), sorted by key."""
        return {k: t.num_rows for k, t in self.read_tables(buffer=None).items()}

    # -- parsing -----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._tables is not None:
            return
        text = read_text(self.path)
        sl = split_lines(text, path=self.path, strict=self.strict)
        frame = sl.frame.with_columns(
            seq=pl.int_range(pl.len(), dtype=pl.UInt64).over(["inst", "cpu"]),
        )
        flags, preempt, fvalid = decode_flags(frame["flags_text"])
        frame = frame.with_columns(flags=pl.Series(flags), preempt=pl.Series(preempt))
        digits = frame["frac_digits"].unique().to_list()
        raw_clock = None in digits
        digits = [d for d in digits if d is not None]
        if raw_clock and digits:
            raise TraceFormatError("Cannot mix timestamps with and without a fraction: expected one clock",
                                   path=self.path)
        # 0 = raw clock units (counter/x86-tsc), not nanoseconds.
        precision = 0 if raw_clock else (10 ** (9 - min(max(digits), 9)) if digits else 1000)
        kernel = sl.producer == "ftrace"
        self._meta = TextMeta({
            "path": self.path, "producer": sl.producer, "cpus": sl.header.get("cpus"),
            # flags: "text" = the kernel's latency column (exact); "libtraceevent" = trace-cmd report -l, whose
            # column has no BH-disabled (0x80) bit; "absent" = no column, flags/preempt are 0.
            "ts_precision_ns": precision,
            "flags": ("text" if kernel else "libtraceevent") if fvalid.any() else "absent",
            "lines": text.count("\n"), "skipped": dict(sl.skipped), "first_bad": dict(sl.first_bad),
            "typing": {}, "partial_bodies": {}, "instances": sorted({i for i in frame["inst"].unique().to_list() if i}),
        })
        for k in ("entries", "written"):
            if k in sl.header:
                self._meta[k] = sl.header[k]
        if len(frame):
            cm = frame.group_by("pid").agg(pl.col("comm").last())
            self._cmdlines = dict(zip(cm["pid"].to_list(), cm["comm"].to_list()))
        self._entry_offsets = _entry_offsets(frame["body"])
        tables: dict[str, pa.Table] = {}
        for (inst, name), sub in frame.group_by(["inst", "event"], maintain_order=True):
            key, table = self._event_table(str(name), sub, kernel, precision, self._meta["flags"])
            if inst:
                key = f"{inst}/{key}"
            tables[key] = table if key not in tables else pa.concat_tables([tables[key], table])
        self._tables = tables
        self._lost = self._lost_table(sl.lost, frame)

    def _lost_table(self, lost: list[tuple[int, int, int, str]], frame: pl.DataFrame) -> pa.Table:
        rows: dict[str, list[Any]] = {f.name: [] for f in LOST_EVENTS}
        lines = frame["line"].to_numpy()
        cpus = frame["cpu"].to_numpy()
        ts = frame["ts_ns"].to_numpy()
        for line, cpu, n, _ in lost:
            later = np.flatnonzero((lines > line) & ((cpus == cpu) if cpu >= 0 else True))
            earlier = np.flatnonzero(lines < line)
            t = int(ts[later[0]]) if len(later) else (int(ts[earlier[-1]]) if len(earlier) else 0)
            rows["ts_ns"].append(t)
            rows["cpu"].append(max(cpu, 0))
            rows["count"].append(n)
            rows["source"].append("text_marker")
            rows["offset"].append(None)
            rows["buffer"].append("")
        return pa.table(rows, schema=LOST_EVENTS)

    def _resolve(self, name: str, bodies: pl.Series) -> EventFormat | None:
        cands = self._by_name.get(name, [])
        if len(cands) <= 1:
            return cands[0] if cands else None
        # Same event name in several systems: take the format whose grammar matches the most bodies.
        best, score = cands[0], -1
        for c in cands:
            pretty, raw = self._spec(c)
            s = int(bodies.str.contains(raw.pattern).sum())
            if pretty is not None:
                s += int(bodies.str.contains(pretty.pattern).sum())
            if s > score:
                best, score = c, s
        return best

    def _spec(self, fmt: EventFormat) -> tuple[BodySpec | None, BodySpec]:
        if fmt.key not in self._specs:
            self._specs[fmt.key] = (compile_print_fmt(fmt), compile_raw(fmt))
        return self._specs[fmt.key]

    def _common(self, sub: pl.DataFrame, key: str) -> list[pa.Array]:
        n = len(sub)
        return [
            sub["ts_ns"].to_arrow().cast(pa.uint64()),
            sub["cpu"].to_arrow().cast(pa.uint32()),
            sub["seq"].to_arrow().cast(pa.uint64()),
            sub["pid"].to_arrow().cast(pa.int32()),
            # trace-cmd prints "<...>" for a pid without a saved cmdline: unknown, as in the binary reader.
            sub["comm"].replace("<...>", None).to_arrow().cast(pa.string()),
            sub["flags"].to_arrow().cast(pa.uint8()),
            sub["preempt"].to_arrow().cast(pa.uint8()),
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([key])),
        ]

    def _event_table(self, name: str, sub: pl.DataFrame, kernel: bool, precision: int,
                     flags: str) -> tuple[str, pa.Table]:
        bodies = sub["body"]
        fmt = self._resolve(name, bodies)
        extra_meta = {"iovatrace.ts_precision_ns": str(precision), "iovatrace.flags": flags}
        if fmt is None:
            key = f"unknown:{name}"
            self._meta["typing"][key] = "inferred"
            bodies = sub["body"].str.strip_prefix(_FAILED)
            return key, inferred_table(key, bodies, self._common(sub, key), self.kallsyms, extra_meta)
        self._meta["typing"][fmt.key] = "format"
        return fmt.key, self._format_table(fmt, sub, kernel, extra_meta)

    def _format_table(self, fmt: EventFormat, sub: pl.DataFrame, kernel: bool, extra: dict[str, str]) -> pa.Table:
        key = fmt.key
        schema = event_schema(fmt, fetch_types=_fetch_types(fmt))
        pretty, raw = self._spec(fmt)
        bodies = sub["body"]
        failed = bodies.str.starts_with(_FAILED).fill_null(False)
        bodies = pl.Series("b", np.where(failed.to_numpy(), bodies.str.slice(len(_FAILED)).to_numpy(),
                                         bodies.to_numpy()), dtype=pl.String) if failed.any() else bodies
        n = len(sub)
        p_ok = (bodies.str.contains(pretty.pattern).fill_null(False) & ~failed) if pretty else pl.Series(np.zeros(n, bool))
        if pretty is not None and p_ok.any():
            # A -R body ("a= b=2", every field in format order) can also fit a print fmt that prints fewer fields
            # ("a=%s" swallows " b=2"): when the body names every field the print fmt leaves out, it is -R.
            unprinted = [f for f in pretty.unrecoverable if not (pretty.probe_head and f.startswith("__probe_"))]
            if unprinted:
                named = pl.Series(np.ones(n, bool))
                for f in unprinted:
                    named = named & bodies.str.contains(" " + f + "=", literal=True).fill_null(False)
                p_ok = p_ok & ~(named & bodies.str.contains(raw.pattern).fill_null(False))
        if bool(p_ok.all()):
            r_ok = pl.Series(np.zeros(n, bool))
        else:
            r_ok = bodies.str.contains(raw.pattern).fill_null(False) & ~p_ok
        bad = ~(p_ok | r_ok)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            if self.strict:
                raise TraceFormatError(f"Cannot parse {key!r} event body: it matches neither the print fmt nor "
                                       "the -R field=value form", path=self.path, line=int(sub["line"][i]),
                                       excerpt=bodies[i][:80])
            self._meta["partial_bodies"][key] = self._meta["partial_bodies"].get(key, 0) + int(bad.sum())
        hex_fields = frozenset(c.field for c in (pretty.captures if pretty else [])
                               if c.field and (c.kind in ("ptr", "sym") or (c.kind == "int" and c.base == 16)))
        if pretty is not None and pretty.probe_head:
            hex_fields |= {"__probe_ip", "__probe_func", "__probe_ret_ip"}  # "(%lx)" / "(%lx <- %lx)"
        cols: dict[str, pa.Array] = {}
        kernel_col = pl.Series(np.full(n, kernel))
        lines = sub["line"]
        p_any, r_any = bool(p_ok.any()), bool(r_ok.any())
        p_frame = bodies.str.extract_groups(pretty.pattern).struct.unnest() if pretty and p_any else None
        r_frame = bodies.str.extract_groups(raw.pattern).struct.unnest() if raw.captures and r_any else None
        p_caps = {c.field: c for c in (pretty.captures if pretty else []) if c.field}
        r_caps = {c.field: c for c in raw.captures}
        unrec: list[str] = []
        kw = dict(kallsyms=self.kallsyms, kernel_text=kernel_col, hex_fields=hex_fields, stats=self.stats, key=key,
                  lines=lines)
        for f in fmt.payload_fields:
            arrays = []
            if f.name in p_caps and p_frame is not None:
                s = _mask(p_frame[p_caps[f.name].group], p_ok)
                arrays.append((p_ok, decode_capture(s, p_caps[f.name], f, **kw)))
            if f.name in r_caps and r_frame is not None:
                s = _mask(r_frame[r_caps[f.name].group], r_ok)
                arrays.append((r_ok, decode_capture(s, r_caps[f.name], f, **kw)))
            atype = schema.field(schema.get_field_index(f.name) if f.name in schema.names else
                                 schema.get_field_index(f"field_{f.name}")).type
            col = pa.nulls(n, atype)
            for mask, arr in arrays:
                col = pc.if_else(pa.array(mask.to_numpy()), arr, col)
            if not arrays and p_ok.any() and not (pretty is not None and pretty.probe_head
                                                   and f.name.startswith("__probe_")):
                unrec.append(f.name)
            cols[f.name] = col
        if pretty is not None and pretty.probe_head and p_frame is not None:
            self._probe_head(p_frame, p_ok, fmt, cols, key)
        for f in fmt.payload_fields:
            if f.name in cols and pretty is not None and f.name in pretty.unrecoverable and p_ok.any() \
                    and f.name not in unrec and not (pretty.probe_head and f.name.startswith("__probe_")):
                unrec.append(f.name)
        arrays = self._common(sub, key) + [cols[f.name] for f in fmt.payload_fields]
        md = dict(schema.metadata or {})
        md.update({k.encode(): v.encode() for k, v in extra.items()})
        md[b"iovatrace.typing"] = b"format"
        md[b"iovatrace.unrecovered"] = ",".join(unrec).encode()
        return pa.Table.from_arrays(arrays, schema=schema.with_metadata(md))

    def _probe_head(self, p_frame: pl.DataFrame, p_ok: pl.Series, fmt: EventFormat, cols: dict[str, pa.Array],
                    key: str) -> None:
        kh1 = _mask(p_frame["kh1"], p_ok)
        kh2 = _mask(p_frame["kh2"], p_ok)
        ks = self.kallsyms

        def res(s: pl.Series, entry: bool = False) -> list[int | None]:
            table = {u: resolve_symbol(u, ks) for u in s.unique().drop_nulls().to_list()}
            if entry:
                # The kernel prints a kretprobe's function as a bare symbol, but the probe sits at the
                # function's probe-able entry (sym+4 after an IBT endbr64): use the offset that entry probes on
                # the same function (or, failing that, all entry probes alike) show in this trace.
                for u, v in table.items():
                    if v is not None and re.fullmatch(r"[A-Za-z_.$][\w.$]*", u):
                        table[u] = v + self._entry_offsets.get(u, self._entry_offsets.get("", 0))
            return [None if v is None else table[v] for v in s.to_list()]

        # trace-cmd prints the print fmt "(%lx <- %lx)" = (func <- ret_ip) in bare hex; the kernel prints
        # "(ret_ip_sym+off/size <- func_sym)". Bare hex in the first slot means the trace-cmd order.
        bare = kh1.str.contains(r"^[0-9a-f]+$").fill_null(False).to_numpy()
        v1, v2 = res(kh1), res(kh2, entry=True)
        names = {f.name for f in fmt.payload_fields}
        if "__probe_ip" in names:
            self._set_u64(cols, "__probe_ip", v1, kh1, fmt, key)
        if "__probe_func" in names:
            func = [a if b else c for a, b, c in zip(v1, bare, v2)]
            ret = [c if b else a for a, b, c in zip(v1, bare, v2)]
            self._set_u64(cols, "__probe_func", func, kh1, fmt, key)
            self._set_u64(cols, "__probe_ret_ip", ret, kh1, fmt, key)

    def _set_u64(self, cols: dict[str, pa.Array], name: str, vals: list[int | None], present: pl.Series,
                 fmt: EventFormat, key: str) -> None:
        f = fmt.field(name)
        if f is None:
            return
        lost = sum(1 for v, p in zip(vals, present.to_list()) if v is None and p is not None)
        self.stats.null(f"{key}.{name}: symbol not in kallsyms", lost)
        arr = pa.array([None if v is None else v & ((1 << (8 * f.size)) - 1) for v in vals], arrow_type(f))
        # Rows without a probe head (-R rows) keep what the field=value grammar decoded.
        cols[name] = pc.if_else(pa.array(present.is_not_null().to_numpy()), arr, cols[name]) if name in cols else arr


def _fetch_types(fmt: EventFormat) -> dict[str, str] | None:
    """Probe fetch types as the trace.dat reader derives them, so both readers' schemas carry the same metadata."""
    try:
        from .tracedat import fetch_types
    except ImportError:  # the binary reader is optional for text parsing
        return None
    return fetch_types(fmt) or None


class TextMeta(dict[str, Any]):
    """``TextTrace.meta``: a dict whose keys also read as attributes (``meta.cpus``), like the trace.dat reader's
    metadata; the binary-only attributes (``version``, ``compression``, ``endian``, ``page_size``...) are
    ``None``."""

    _BINARY_ONLY = ("version", "compression", "endian", "long_size", "kernel_long_size", "page_size", "clock",
                    "uname", "kernel_release", "tracecmd_version")

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in self._BINARY_ONLY:
            return None
        raise AttributeError(name)


def _entry_offsets(bodies: pl.Series) -> dict[str, int]:
    """Offsets of entry probes (``(sym+0xN/0xS) ...``) by symbol; key ``""`` holds the offset all share, if any."""
    g = bodies.str.extract_groups(r"^\((?P<s>[A-Za-z_.$][\w.$]*)\+0x(?P<o>[0-9a-f]+)/0x[0-9a-f]+\)(?: |$)")
    pairs = g.struct.unnest().drop_nulls().unique()
    out = {s: int(o, 16) for s, o in zip(pairs["s"].to_list(), pairs["o"].to_list()) if int(o, 16) <= 0x10}
    if out and len(set(out.values())) == 1:
        out[""] = next(iter(out.values()))
    return out


def _mask(s: pl.Series, ok: pl.Series) -> pl.Series:
    return pl.select(pl.when(pl.lit(ok)).then(pl.lit(s)).otherwise(None)).to_series()
