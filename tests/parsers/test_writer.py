"""The trace.dat writer, checked by trace-cmd (the reference decoder) and by our binary reader.

rows → write_events (v6, v7 none, v7 zstd) → ``trace-cmd report -R -t`` → text reader with the same formats →
every event and value equal to the rows; and rows → writer → ``open_trace`` → identical tables. A hypothesis test
draws random formats (integers of every width and sign, char arrays, ``__data_loc`` strings and arrays, tail
arrays) and random rows with big timestamp gaps (TIME_EXTEND records).
"""

from __future__ import annotations

import string
import struct
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovatrace.parsers import open_trace
from iovatrace.parsers.formats import EventFormat
from iovatrace.parsers.text import open_text
from iovatrace.parsers.writer import Row, encode_pages, format_text, make_format, rows_from_tables, write_events, \
    write_pages
from iovatrace.parsers.formats import parse_format
from iovatrace.schema import event_schema

try:
    from .test_text_support import compare_tables
except ImportError:  # tests/parsers is not a package: pytest put it on sys.path
    from test_text_support import compare_tables

VARIANTS = [(6, "none"), (7, "none"), (7, "zstd")]
INT_TYPES = [("u8", 1, False), ("s8", 1, True), ("u16", 2, False), ("s16", 2, True), ("u32", 4, False),
             ("int", 4, True), ("u64", 8, False), ("s64", 8, True), ("unsigned long", 8, False)]


def expected_tables(formats: dict[str, EventFormat], rows: list[Row], cmdlines: dict[int, str]) -> dict[str, pa.Table]:
    """What a reader must return for ``rows``: built directly from the rows (not from the writer's bytes)."""
    per_cpu: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        per_cpu.setdefault((r.buffer, r.cpu), []).append(r)
    cols: dict[str, dict[str, list]] = {}
    keys: dict[str, str] = {}
    for (buf, cpu), rs in per_cpu.items():
        for seq, r in enumerate(sorted(rs, key=lambda r: r.ts_ns)):  # stable: equal ts keep input order
            fmt = formats[r.key]
            key = f"{buf}/{r.key}" if buf else r.key
            keys[key] = r.key
            c = cols.setdefault(key, {n: [] for n in event_schema(fmt).names})
            for name, v in (("ts_ns", r.ts_ns), ("cpu", cpu), ("seq", seq), ("pid", r.pid),
                            ("comm", cmdlines.get(r.pid)), ("flags", r.flags), ("preempt", r.preempt),
                            ("event", r.key)):
                c[name].append(v)
            for f in fmt.payload_fields:
                col = f.name if f.name in c and f.name not in ("flags", "pid") else f"field_{f.name}"
                v = r.fields.get(f.name)
                if f.kind == "scalar":
                    bits = 8 * f.size
                    v = (v or 0) & ((1 << bits) - 1)
                    if f.signed and v >> (bits - 1):
                        v -= 1 << bits
                c[col].append(v)
    return {k: pa.table(v, schema=event_schema(formats[keys[k]])) for k, v in cols.items()}


def _formats() -> dict[str, EventFormat]:
    a = make_format("test", "ints", 200, [(t, f"v_{i}", s, sg) for i, (t, s, sg) in enumerate(INT_TYPES)])
    b = make_format("test", "strs", 201, [("char[16]", "name", 16, False), ("__data_loc char[]", "msg", 4, True),
                                          ("u32", "n", 4, False)])
    c = make_format("other", "arrays", 202, [("__data_loc u32[]", "vals", 4, False), ("u64[4]", "fixed", 32, False),
                                             ("u64", "x", 8, False)])
    return {f.key: f for f in (a, b, c)}


def _rows() -> list[Row]:
    ints = {f"v_{i}": v for i, v in enumerate([255, -128, 65535, -32768, 2**32 - 1, -(2**31), 2**64 - 1, -(2**63),
                                                0xFFFFFFFF81000000])}
    return [
        Row(1_000, 0, "test:ints", 10, 0x81, 0x12, ints),
        Row(1_000, 0, "test:strs", 10, 0, 1, {"name": "kworker/0:1", "msg": "hello world", "n": 7}),
        Row(5_000_000_000, 0, "other:arrays", 11, 0x08, 0, {"vals": list(range(60)), "fixed": [1, 2, 3, 2**64 - 1],
                                                            "x": 3}),
        Row(2_000, 1, "test:strs", 12, 0, 0, {"name": "", "msg": "", "n": 0}),
        Row(2_000 + (1 << 40), 1, "test:ints", 12, 0, 0, {"v_0": 1}),
    ]


CMDLINES = {10: "proc10", 11: "proc11", 12: "proc12"}


@pytest.mark.parametrize("version,compression", VARIANTS)
def test_writer_trace_cmd_round_trip(tmp_path: Path, trace_cmd: str, version: int, compression: str) -> None:
    fmts, rows = _formats(), _rows()
    path = write_events(tmp_path / "w.dat", fmts, rows, cmdlines=CMDLINES, version=version, compression=compression)
    rep = subprocess.run([trace_cmd, "report", "-R", "-t", "-i", str(path)], capture_output=True, text=True,
                         check=True)
    assert "FAILED" not in rep.stdout and "bad" not in rep.stderr.lower()
    (tmp_path / "r.txt").write_text(rep.stdout)
    tt = open_text(tmp_path / "r.txt", formats=fmts, strict=True)
    got = tt.read_tables()
    counts = compare_tables(expected_tables(fmts, rows, CMDLINES), got, flags_mask=None)
    assert sum(counts.values()) == len(rows)


@pytest.mark.parametrize("version,compression", VARIANTS)
def test_writer_reader_round_trip(tmp_path: Path, version: int, compression: str) -> None:
    fmts, rows = _formats(), _rows()
    path = write_events(tmp_path / "w.dat", fmts, rows, cmdlines=CMDLINES, version=version, compression=compression)
    tr = open_trace(path)
    assert tr.meta.version == version and tr.meta.compression == compression
    got = tr.read_tables()
    compare_tables(expected_tables(fmts, rows, CMDLINES), got)
    # and back again: reader tables → rows → writer → reader gives identical tables
    path2 = write_events(tmp_path / "w2.dat", tr.formats, rows_from_tables(got), cmdlines=tr.cmdlines,
                         version=version, compression=compression)
    again = open_trace(path2).read_tables()
    assert {k: t.to_pylist() for k, t in again.items()} == {k: t.to_pylist() for k, t in got.items()}


def test_instances(tmp_path: Path, trace_cmd: str) -> None:
    """Rows of an ftrace instance: trace-cmd prints them with an "inst1: " prefix, both readers key them
    "inst1/system:name"."""
    fmts = _formats()
    rows = _rows() + [Row(r.ts_ns + 7, r.cpu, r.key, r.pid, r.flags, r.preempt, r.fields, "inst1") for r in _rows()]
    path = write_events(tmp_path / "i.dat", fmts, rows, cmdlines=CMDLINES)
    want = expected_tables(fmts, rows, CMDLINES)
    assert "inst1/test:ints" in want
    compare_tables(want, open_trace(path).read_tables(buffer=None))
    rep = subprocess.run([trace_cmd, "report", "-R", "-t", "-i", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert rep.count("\ninst1: ") == len(_rows())
    (tmp_path / "r.txt").write_text(rep)
    tt = open_text(tmp_path / "r.txt", formats=fmts, strict=True)
    assert tt.meta.instances == ["inst1"]
    compare_tables(want, tt.read_tables(buffer=None), flags_mask=None)
    with pytest.raises(ValueError, match="v7 files only"):
        write_events(tmp_path / "i6.dat", fmts, rows, version=6, compression="none")


def test_format_text_round_trips() -> None:
    for f in _formats().values():
        g = parse_format(format_text(f), f.system)
        assert (g.name, g.id, g.fields, g.print_fmt) == (f.name, f.id, f.fields, f.print_fmt)


def test_records_and_pages() -> None:
    # 112-byte payload: type_len 28; 113 bytes: type_len 0 with a length word; a 2^27 gap: TIME_EXTEND first.
    pages = encode_pages([(10, b"a" * 112), (11, b"b" * 113), (11 + (1 << 27), b"c" * 4)])
    assert len(pages) == 1 and len(pages[0]) == 4096
    ts, commit = struct.unpack_from("<QQ", pages[0])
    assert ts == 10
    w0 = struct.unpack_from("<I", pages[0], 16)[0]
    assert w0 & 0x1F == 28 and w0 >> 5 == 0
    w1, length = struct.unpack_from("<II", pages[0], 16 + 4 + 112)
    assert w1 & 0x1F == 0 and w1 >> 5 == 1 and length == 116 + 4
    off = 16 + 4 + 112 + 4 + 120
    ext, hi = struct.unpack_from("<II", pages[0], off)
    assert ext & 0x1F == 30 and (hi << 27) + (ext >> 5) == 1 << 27
    assert commit == off + 8 + 8 - 16
    with pytest.raises(ValueError, match="backwards"):
        encode_pages([(10, b"x"), (9, b"y")])


def test_tail_array_reads_to_padded_end(tmp_path: Path) -> None:
    f = make_format("t", "tail", 400, [("u32", "n", 4, False), ("u8[]", "buf", 0, False)])
    rows = [Row(1, 0, "t:tail", 1, 0, 0, {"n": 5, "buf": b"abc"}), Row(2, 0, "t:tail", 1, 0, 0, {"n": 6, "buf": b""})]
    got = open_trace(write_events(tmp_path / "t.dat", [f], rows)).read_tables()["t:tail"].to_pylist()
    # payload = 12 fixed bytes + tail, padded to 4: the reader sees the padding as part of the tail (spec §9)
    assert [(r["n"], r["buf"]) for r in got] == [(5, b"abc\0"), (6, b"")]


def test_write_pages_repeats_real_pages(shared_data: Path, tmp_path: Path, trace_cmd: str) -> None:
    """Raw pages of a real v6 trace, written 1x and 3x over with its own metadata, read by trace-cmd and by us."""
    src = shared_data / "traces-lab" / "lazy_v6" / "trace.dat"
    tr = open_trace(src)
    meta = tr.meta
    buf = src.read_bytes()
    ps = meta.page_size
    pages = {c.cpu: [buf[c.offset + i * ps:c.offset + (i + 1) * ps] for i in range(min(20, c.size // ps))]
             for c in meta.buffers[0].cpus if c.size}
    systems: dict[str, list[str]] = {}
    for sysname, text in meta.event_formats:
        systems.setdefault(sysname, []).append(text)
    counts = []
    for rep in (1, 3):
        path = write_pages(tmp_path / f"p{rep}.dat", {c: p * rep for c, p in pages.items()},
                           event_formats=systems, ftrace_formats=meta.ftrace_formats, header_page=meta.header_page,
                           header_event=meta.header_event, cmdlines=meta.cmdlines_raw.decode(), version=7,
                           compression="zstd", page_size=ps, cpus=meta.cpus)
        out = subprocess.run([trace_cmd, "report", "-i", str(path)], capture_output=True, text=True, check=True)
        n = sum(1 for line in out.stdout.splitlines()[1:] if line.strip())
        assert open_trace(path).event_counts() and sum(open_trace(path).event_counts().values()) == n
        counts.append(n)
    assert counts[0] > 500 and counts[1] == 3 * counts[0]
    # the 1x file holds exactly the first events of the original trace, per CPU
    for cpu in pages:
        a = subprocess.run([trace_cmd, "report", "-R", "-t", "--cpu", str(cpu), "-i", str(tmp_path / "p1.dat")],
                           capture_output=True, text=True, check=True).stdout.splitlines()[1:]
        b = subprocess.run([trace_cmd, "report", "-R", "-t", "--cpu", str(cpu), "-i", str(src)],
                           capture_output=True, text=True, check=True).stdout.splitlines()[1:len(a) + 1]
        assert a == b


# --- property test -----------------------------------------------------------------------------------------------

_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "_-./:", max_size=12)


@st.composite
def formats_and_rows(draw, tail: bool = True):
    nfmt = draw(st.integers(1, 3))
    fmts: dict[str, EventFormat] = {}
    for i in range(nfmt):
        specs = []
        for j in range(draw(st.integers(0, 6))):
            kind = draw(st.sampled_from(["int", "int", "int", "chararr", "datastr", "dataarr"]))
            if kind == "int":
                t, s, sg = draw(st.sampled_from(INT_TYPES))
                specs.append((t, f"f{j}", s, sg))
            elif kind == "chararr":
                n = draw(st.integers(2, 24))
                specs.append((f"char[{n}]", f"f{j}", n, False))
            elif kind == "datastr":
                specs.append(("__data_loc char[]", f"f{j}", 4, True))
            elif kind == "dataarr":
                specs.append((draw(st.sampled_from(["__data_loc u32[]", "__data_loc u64[]"])), f"f{j}", 4, False))
        if tail and draw(st.booleans()):
            specs.append(("u8[]", "tail", 0, False))  # a tail array is always last
        f = make_format(f"sys{i % 2}", f"ev{i}", 300 + i, specs)
        fmts[f.key] = f
    rows = []
    ts = {c: draw(st.integers(0, 1 << 40)) for c in range(4)}
    for _ in range(draw(st.integers(1, 40))):
        cpu = draw(st.integers(0, 3))
        ts[cpu] += draw(st.one_of(st.integers(0, 5000), st.integers(0, 1 << 45)))
        fmt = fmts[draw(st.sampled_from(sorted(fmts)))]
        vals = {}
        for f in fmt.payload_fields:
            if f.kind == "scalar":
                bits = 8 * f.size
                vals[f.name] = draw(st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if f.signed
                                    else st.integers(0, (1 << bits) - 1))
            elif f.is_string:
                s = draw(_TEXT)
                vals[f.name] = s[:f.size - 1] if f.kind == "array" else s
            elif f.kind == "tail":
                vals[f.name] = draw(st.binary(max_size=8))
            else:
                vals[f.name] = draw(st.lists(st.integers(0, (1 << (8 * f.elem_size)) - 1), max_size=6))
        rows.append(Row(ts[cpu], cpu, fmt.key, draw(st.sampled_from([10, 11, 12, 99])), draw(st.integers(0, 0x7F)),
                        draw(st.integers(0, 0x3F)), vals))
    return fmts, rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(formats_and_rows(tail=False), st.sampled_from(VARIANTS))
def test_random_rows_reader_round_trip(tmp_path_factory, fr, variant) -> None:
    fmts, rows = fr
    path = write_events(tmp_path_factory.mktemp("w") / "w.dat", fmts, rows, cmdlines=CMDLINES,
                        version=variant[0], compression=variant[1])
    compare_tables(expected_tables(fmts, rows, CMDLINES), open_trace(path).read_tables())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(formats_and_rows(tail=False), st.sampled_from(VARIANTS))
def test_random_rows_trace_cmd_round_trip(tmp_path_factory, trace_cmd, fr, variant) -> None:
    fmts, rows = fr
    d = tmp_path_factory.mktemp("w")
    path = write_events(d / "w.dat", fmts, rows, cmdlines=CMDLINES, version=variant[0], compression=variant[1])
    rep = subprocess.run([trace_cmd, "report", "-R", "-t", "-i", str(path)], capture_output=True, text=True,
                         check=True)
    (d / "r.txt").write_text(rep.stdout)
    got = open_text(d / "r.txt", formats=fmts, strict=True).read_tables()
    compare_tables(expected_tables(fmts, rows, CMDLINES), got, flags_mask=None)


@pytest.mark.parametrize("folder", ["boot_strict-6.12", "strict_extract"])
def test_rewrite_real_trace(shared_data: Path, tmp_path: Path, trace_cmd: str, folder: str) -> None:
    """A real trace rewritten from its tables: trace-cmd prints exactly the same -R -t report, we read the same
    tables."""
    src = shared_data / "traces-lab" / folder / "trace.dat"
    tr = open_trace(src)
    tables = tr.read_tables()
    out = write_events(tmp_path / "re.dat", tr.formats, rows_from_tables(tables), cmdlines=tr.cmdlines,
                       version=7, compression="zstd", cpus=tr.meta.cpus)
    again = open_trace(out).read_tables()
    assert set(again) == set(tables) and all(again[k].equals(tables[k]) for k in tables)

    def report(p: Path) -> list[str]:
        return subprocess.run([trace_cmd, "report", "-R", "-t", "-i", str(p)], capture_output=True, text=True,
                              check=True).stdout.splitlines()

    a, b = report(src), report(out)
    assert len(a) > 1500 and a == b


# --- print fmt property: trace-cmd's pretty output (libtraceevent renders the print fmt) read back ---------------

_CONVS = {1: ["%u", "%d", "0x%x", "%x", "%#x"], 2: ["%u", "%hd", "0x%x", "%#x"], 4: ["%u", "%d", "0x%x", "%x", "%#x"],
          8: ["%llu", "%lld", "0x%llx", "%llx", "%#llx", "%lu"]}


@st.composite
def pretty_formats_and_rows(draw):
    fmts, rows = draw(formats_and_rows(tail=False))
    out = {}
    for key, f in fmts.items():
        parts, args = [], []
        for fld in f.payload_fields:
            sep = draw(st.sampled_from([" ", ", ", " | "])) if parts else ""
            if fld.kind == "scalar":
                parts.append(f"{sep}{fld.name}={draw(st.sampled_from(_CONVS[fld.size]))}")
                args.append(f"REC->{fld.name}")
            elif fld.is_string:
                parts.append(f"{sep}{fld.name}=%s")
                args.append(f"__get_str({fld.name})" if fld.kind == "dynamic" else f"REC->{fld.name}")
            else:
                parts.append(f"{sep}{fld.name}=%s")
                args.append(f"__print_array(__get_dynamic_array({fld.name}), __get_dynamic_array_len({fld.name}) "
                            f"/ {fld.elem_size}, {fld.elem_size})")
        pf = '"' + "".join(parts) + '"' + "".join(f", {a}" for a in args)
        g = EventFormat(f.system, f.name, f.id, f.fields, pf)
        out[key] = g
    return out, rows


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(pretty_formats_and_rows())
def test_random_print_fmt_round_trip(tmp_path_factory, trace_cmd, fr) -> None:
    """Values printed through random print fmts (decimal, hex with and without 0x, %#x, strings, __print_array)
    by trace-cmd are read back through the print-fmt regexes."""
    fmts, rows = fr
    d = tmp_path_factory.mktemp("p")
    path = write_events(d / "w.dat", fmts, rows, cmdlines=CMDLINES)
    rep = subprocess.run([trace_cmd, "report", "-t", "-i", str(path)], capture_output=True, text=True, check=True)
    (d / "r.txt").write_text(rep.stdout)
    tt = open_text(d / "r.txt", formats=fmts, strict=True)
    compare_tables(expected_tables(fmts, rows, CMDLINES), tt.read_tables(), flags_mask=None)
    assert tt.stats.nulls == {} and tt.stats.bad == {}
