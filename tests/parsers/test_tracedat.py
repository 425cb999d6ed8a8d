"""trace.dat reader: v6/v7 equivalence, the vectorised decoder against a plain record walk, metadata, API.

The reference walk below is a deliberately simple, independent re-implementation of the ring-buffer page format
(one record at a time, ``struct`` reads, libtraceevent's kbuffer rules): for every sample file, every record it
finds (CPU, seq, timestamp, event id) and every scalar/string field it decodes with ``struct`` must equal what the
vectorised decoder put into the Arrow tables.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from iovatrace.errors import TraceFormatError
from iovatrace.parsers import open_trace
from iovatrace.parsers.tracedat import TraceDat, fetch_types
from iovatrace.schema import COMMON_COLUMNS, LOST_EVENTS

LAB = ["boot_strict", "boot_strict-6.12", "lazy_v6", "lazy_v7", "lazy_v7-6.12", "strict_extract",
       "strict_extract-6.12", "strict_forcedac_v7", "strict_v7", "strict_v7-6.12"]
STRESS = ["stress_forcedac-6.1", "stress_lazy-6.12", "stress_strict-6.1"]
PUBLIC = ["lisa_example_rtapp.dat", "lisa_sched_load.dat", "trappy_raw_trace.dat", "trappy_trace.dat",
          "trappy_trace_idle.dat"]


def reference_walk(page: bytes, long_size: int, little: bool, hdr: int):
    """One page, one record at a time: yields (ts, payload bytes)."""
    e = "<" if little else ">"
    ts = struct.unpack_from(e + "Q", page, 0)[0]
    commit = struct.unpack_from(e + ("Q" if long_size == 8 else "I"), page, 8)[0]
    end = hdr + (commit & ((1 << 27) - 1))
    pos = hdr
    while pos + 4 <= end:
        (w,) = struct.unpack_from(e + "I", page, pos)
        tl, delta = (w & 31, w >> 5) if little else (w >> 27, w & 0x7FFFFFF)
        if tl == 29:
            if delta == 0:
                return
            (a0,) = struct.unpack_from(e + "I", page, pos + 4)
            ts += delta
            pos += 4 + a0
        elif tl == 30:
            (a0,) = struct.unpack_from(e + "I", page, pos + 4)
            ts += (a0 << 27) + delta
            pos += 8
        elif tl == 31:
            (a0,) = struct.unpack_from(e + "I", page, pos + 4)
            ts = (a0 << 27) | delta
            pos += 8
        elif tl == 0:
            (a0,) = struct.unpack_from(e + "I", page, pos + 4)
            ln = (a0 - 4 + 3) & ~3
            ts += delta
            if pos + 8 + ln > end:
                return
            yield ts, page[pos + 8: pos + 8 + ln]
            pos += 8 + ln
        else:
            ts += delta
            if pos + 4 + 4 * tl > end:
                return
            yield ts, page[pos + 4: pos + 4 + 4 * tl]
            pos += 4 + 4 * tl


def _field_value(f, payload: bytes, little: bool):
    e = "<" if little else ">"
    if f.kind == "scalar":
        code = {1: "b", 2: "h", 4: "i", 8: "q"}[f.size]
        return struct.unpack_from(e + (code if f.signed else code.upper()), payload, f.offset)[0]
    if f.kind == "dynamic":
        (v,) = struct.unpack_from(e + "I", payload, f.offset)
        off, ln = v & 0xFFFF, v >> 16
        raw = payload[off:off + ln] if off + ln <= len(payload) else b""
    elif f.kind == "array":
        raw = payload[f.offset:f.offset + f.size]
    else:
        return None
    if f.is_string:
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if f.elem_size == 1:
        return raw
    return None


def _cpu_pages(path: Path, b, cd, little: bool):
    """The raw pages of one CPU, read and decompressed here (independently of the reader's page source)."""
    with open(path, "rb") as fh:
        fh.seek(cd.offset)
        raw = fh.read(cd.size + 4 if b.compressed else cd.size)
    if not b.compressed:
        for p in range(0, len(raw), b.page_size):
            yield raw[p:p + b.page_size]
        return
    import zstandard

    e = "<" if little else ">"
    (nch,) = struct.unpack_from(e + "I", raw, 0)
    pos = 4
    for _ in range(nch):
        cs, us = struct.unpack_from(e + "II", raw, pos)
        chunk = zstandard.ZstdDecompressor().decompress(raw[pos + 8:pos + 8 + cs], max_output_size=us)
        pos += 8 + cs
        for p in range(0, len(chunk), b.page_size):
            yield chunk[p:p + b.page_size]


def compare_with_reference(path: Path, max_records_per_cpu: int | None = None) -> int:
    """Walk every page with :func:`reference_walk`; compare each record with the reader's tables."""
    tr = TraceDat(path)
    meta = tr.meta
    little = meta.endian == "little"
    tables = tr.read_tables(buffer=None)
    if max_records_per_cpu is not None:
        tables = {k: t.filter(pc.less(t.column("seq"), max_records_per_cpu)) for k, t in tables.items()}
    rows = {}
    for key, t in tables.items():
        rows.update(zip(zip(t.column("cpu").to_pylist(), t.column("seq").to_pylist()),
                        ((key, i) for i in range(t.num_rows))))
    common = {c.name for c in COMMON_COLUMNS}
    pycols = {key: {c: t.column(c).to_pylist() for c in t.column_names} for key, t in tables.items()}
    n = 0
    for b in meta.buffers:
        for cd in b.cpus:
            seq = 0
            limit = max_records_per_cpu if max_records_per_cpu is not None else 1 << 62
            for page in _cpu_pages(path, b, cd, little):
                if seq >= limit:
                    break
                for ts, payload in reference_walk(page, meta.kernel_long_size, little, meta.header_data_offset):
                    if seq >= limit:
                        break
                    key, i = rows[(cd.cpu, seq)]
                    ev_id = struct.unpack_from("<H" if little else ">H", payload, 0)[0]
                    fmt = tr.format_for_id(ev_id)
                    assert fmt is not None and key.endswith(fmt.key), (path, cd.cpu, seq, key, ev_id)
                    col = pycols[key]
                    assert col["ts_ns"][i] == ts + meta.ts_offset_ns, (path, cd.cpu, seq)
                    assert col["pid"][i] == struct.unpack_from("<i" if little else ">i", payload, 4)[0]
                    for f in fmt.payload_fields:
                        want = _field_value(f, payload, little)
                        if want is None:
                            continue
                        name = f.name if f.name not in common else f"field_{f.name}"
                        assert col[name][i] == want, (path, cd.cpu, seq, f.name, col[name][i], want)
                    seq += 1
                    n += 1
            assert seq == sum(1 for (c, _s) in rows if c == cd.cpu), (path, cd.cpu)
    assert n == len(rows)
    return n


@pytest.mark.parametrize("name", PUBLIC)
def test_vectorised_equals_reference_walk_public(shared_data, name):
    assert compare_with_reference(shared_data / "traces-public" / name) > 0


@pytest.mark.parametrize("name", ["boot_strict", "boot_strict-6.12", "lazy_v6"])
def test_vectorised_equals_reference_walk_lab(shared_data, name):
    assert compare_with_reference(shared_data / "traces-lab" / name / "trace.dat") > 1000


@pytest.mark.parametrize("name", [n for n in LAB if n not in ("boot_strict", "boot_strict-6.12", "lazy_v6")]
                         + ["lazy_v6/trace.v7zstd.dat"] + STRESS)
def test_vectorised_equals_reference_walk_prefix(shared_data, name):
    """The other lab traces: the first 15 000 records of each CPU (every record of every file is compared with
    trace-cmd in test_tracedat_reference.py; this keeps the pure-Python walk's cost bounded)."""
    p = shared_data / "traces-lab" / (name if name.endswith(".dat") else f"{name}/trace.dat")
    assert compare_with_reference(p, 15_000) >= 15_000


def test_v6_and_v7zstd_give_identical_tables(shared_data):
    d = shared_data / "traces-lab" / "lazy_v6"
    a = open_trace(d / "trace.dat")
    b = open_trace(d / "trace.v7zstd.dat")
    assert (a.meta.version, a.meta.compression) == (6, "none")
    assert (b.meta.version, b.meta.compression) == (7, "zstd")
    ta, tb = a.read_tables(), b.read_tables()
    assert list(ta) == list(tb)
    for k in ta:
        assert ta[k].equals(tb[k]), k
    assert a.event_counts() == b.event_counts()
    assert sum(a.event_counts().values()) == 138_033  # README of the lab traces (trace-cmd report count)


def test_counts_match_recorded_event_counts(shared_data):
    """event_counts.txt beside each lab trace was written by the lab from trace-cmd's output."""
    for name in LAB:
        d = shared_data / "traces-lab" / name
        want: dict[str, int] = {}
        for line in (d / "event_counts.txt").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                want[parts[1].rstrip(":")] = want.get(parts[1].rstrip(":"), 0) + int(parts[0])
        got: dict[str, int] = {}
        for k, v in open_trace(d / "trace.dat").event_counts().items():
            got[k.split(":")[-1]] = got.get(k.split(":")[-1], 0) + v
        assert got == want, name


def test_api_shapes(shared_data):
    tr = open_trace(shared_data / "traces-lab" / "boot_strict" / "trace.dat")
    assert tr.meta.version == 7 and tr.meta.cpus == 2 and tr.meta.kernel_long_size == 8
    assert tr.meta.clock == "global"  # boot_strict was recorded with trace_clock=global (README)
    assert "iova:alloc_iova_fast" in tr.formats
    tables = tr.read_tables(["iova:*"])
    assert tables and all(k.startswith("iova:") for k in tables)
    t = tables["iova:alloc_iova_fast"]
    assert t.schema.names[:8] == [c.name for c in COMMON_COLUMNS]
    for name in ("ts_ns", "cpu", "seq"):
        assert t.schema.field(name).type == {c.name: c.type for c in COMMON_COLUMNS}[name]
    # within a CPU, seq strictly increases and timestamps never go back
    for cpu in set(t.column("cpu").to_pylist()):
        sel = t.filter(pc.equal(t.column("cpu"), cpu))
        s = np.asarray(sel.column("seq"))
        assert (np.diff(s) > 0).all()
        assert (np.diff(np.asarray(sel.column("ts_ns")).astype(np.int64)) >= 0).all()
    assert tr.lost_events().schema.equals(LOST_EVENTS)
    assert tr.damage == []
    comm = t.column("comm").to_pylist()
    assert all(c is None or isinstance(c, str) for c in comm) and any(comm)


def test_fetch_types_from_print_fmt(shared_data):
    tr = open_trace(shared_data / "traces-lab" / "boot_strict" / "trace.dat")
    f = tr.formats["iova:alloc_iova_fast"]
    ft = fetch_types(f)
    # kprobe_events.txt declares: alloc_iova_fast iovad=%di:x64 size=%si:u64 limit_pfn=%dx:x64 flush_rcache=%cx:u8
    defs = (shared_data / "traces-lab" / "boot_strict" / "kprobe_events.txt").read_text()
    line = next(ln for ln in defs.splitlines() if "alloc_iova_fast " in ln or ln.rstrip().endswith("alloc_iova_fast"))
    for arg in line.split()[2:]:
        name, _, typ = arg.partition("=")
        assert ft[name] == typ.split(":")[-1], (name, ft, line)
    sch = tr.schema_for(f)
    assert sch.field("iovad").metadata[b"fetch_type"] == b"x64"


def test_kallsyms_and_printk_are_lazy(shared_data):
    tr = open_trace(shared_data / "traces-public" / "lisa_example_rtapp.dat")
    assert tr._kallsyms is None and tr._printk is None
    tr.event_counts()
    assert tr._kallsyms is None and tr._printk is None
    assert len(tr.kallsyms) > 1000
    assert len(tr.printk_formats) > 10


def test_32bit_kernel_trace(shared_data):
    tr = open_trace(shared_data / "traces-public" / "trappy_trace.dat")
    assert tr.meta.kernel_long_size == 4 and tr.meta.header_data_offset == 12
    assert sum(tr.event_counts().values()) == 525  # traces-public/README.md (trace-cmd report)


def test_not_a_trace(tmp_path):
    p = tmp_path / "x.dat"
    p.write_bytes(b"hello world" * 10)
    with pytest.raises(TraceFormatError, match="Not a trace"):
        open_trace(p)
    p.write_bytes(b"")
    with pytest.raises(TraceFormatError):
        open_trace(p)


def test_open_trace_dispatches_text(shared_data):
    """open_trace sniffs: a trace-cmd report text goes to the text reader (when installed), not to TraceDat."""
    pytest.importorskip("iovatrace.parsers.text")
    tr = open_trace(shared_data / "traces-public" / "trappy_doc_trace.txt")
    assert not isinstance(tr, TraceDat)
    assert sum(tr.event_counts().values()) > 0


def test_render_bprint_packing():
    """vbin_printf packing: ints at their size (aligned up to 4), 8-byte values and pointers aligned to 4,
    strings inline with their NUL."""
    from iovatrace.parsers.bprint import render_bprint

    buf = (struct.pack("<i", -5) + b"ab\0" + b"\0" + struct.pack("<Q", 0x1234) + struct.pack("<Q", 0xFFFF0010)
           + b"z\0\0\0" + struct.pack("<I", 7))
    sym = lambda a, off: "func+0x10/0x20" if off else "func"
    out = render_bprint("v=%d s=%s q=%llx p=%pS c=%c u=%5u", buf, 8, True, sym)
    assert out == "v=-5 s=ab q=1234 p=func+0x10/0x20 c=z u=    7"
    with pytest.raises(ValueError):
        render_bprint("%d %d", struct.pack("<i", 1), 8, True, sym)


def test_kallsyms_and_printk_parsing():
    from iovatrace.parsers.kallsyms import Kallsyms, parse_printk_formats

    ks = Kallsyms.parse(b"ffffffff81000000 T _stext\nffffffff81000100 t foo [mod]\nbad line\nzz T x\n")
    assert len(ks) == 2 and ks.modules == ["", "mod"]
    assert ks.symbolize(0xFFFFFFFF81000010) == "_stext"
    assert ks.symbolize(0xFFFFFFFF81000010, True) == "_stext+0x10"
    assert ks.lookup(0xFFFFFFFF81000010) == ("_stext", 0x10, 0x100)
    assert ks.symbolize(0x10) == "0x10"
    pf = parse_printk_formats(b'0xffffffff82000000 : "hello %d\\n"\nnonsense\n')
    assert pf == {0xFFFFFFFF82000000: "hello %d\n"}


def test_format_size0_field_without_brackets_is_a_tail():
    """Old kernels declare bprint's buffer as ``field:u32 buf; size:0`` (lisa_example_rtapp.dat): a flexible tail,
    not a 0-byte array."""
    from iovatrace.parsers.formats import parse_format

    text = ("name: bprint\nID: 6\nformat:\n"
            "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
            "\tfield:unsigned long ip;\toffset:8;\tsize:8;\tsigned:0;\n"
            "\tfield:const char * fmt;\toffset:16;\tsize:8;\tsigned:0;\n"
            "\tfield:u32 buf;\toffset:24;\tsize:0;\tsigned:0;\n\n"
            'print fmt: "%ps: %s", (void *)REC->ip, REC->fmt\n')
    f = parse_format(text, "ftrace")
    buf = f.field("buf")
    assert buf is not None and buf.kind == "tail" and buf.elem_size == 4 and not buf.is_string
    assert f.field("fmt").is_pointer and f.field("fmt").kind == "scalar"
