"""Synthetic trace.dat files for what the samples lack: big-endian, time extends, absolute timestamps, padding,
length-prefixed records, missed-events pages, CPUSTAT overruns, OFFSET/DATE, instances, v7 zlib, strict mode.

The files are built here byte by byte from the format description (tracedat_spec.md), independently of the
reader; where trace-cmd is installed it reads the same files and must agree on every event's timestamp and
fields (so the builder is checked too).
"""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from iovatrace.errors import TraceFormatError
from iovatrace.parsers import open_trace
from iovatrace.parsers.tracedat import TraceDat

PS = 4096
FMT = """name: ev
ID: 100
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:u64 addr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int val;\toffset:16;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] name;\toffset:20;\tsize:4;\tsigned:0;
\tfield:char comm[8];\toffset:24;\tsize:8;\tsigned:0;

print fmt: "addr=0x%Lx val=%d name=%s comm=%s", REC->addr, REC->val, __get_str(name), REC->comm
"""


class Builder:
    """Pages and records in a given byte order and kernel long size."""

    def __init__(self, big: bool = False, long_size: int = 8) -> None:
        self.e = ">" if big else "<"
        self.big = big
        self.L = long_size

    def word(self, tl: int, delta: int) -> bytes:
        return struct.pack(self.e + "I", (tl << 27) | delta if self.big else tl | (delta << 5))

    def payload(self, pid: int, addr: int, val: int, name: str, comm: bytes) -> bytes:
        s = name.encode() + b"\0"
        body = struct.pack(self.e + "HBBiQi", 100, 0x01, 0x21, pid, addr, val)
        body += struct.pack(self.e + "I", (len(s) << 16) | 32) + comm.ljust(8, b"\0")[:8] + s
        return body + b"\0" * (-len(body) % 4)

    def data(self, delta: int, payload: bytes, force_len: bool = False) -> bytes:
        if len(payload) <= 112 and not force_len:
            return self.word(len(payload) // 4, delta) + payload
        return self.word(0, delta) + struct.pack(self.e + "I", len(payload) + 4) + payload

    def extend(self, delta: int) -> bytes:
        return self.word(30, delta & ((1 << 27) - 1)) + struct.pack(self.e + "I", delta >> 27)

    def absolute(self, ts: int) -> bytes:
        return self.word(31, ts & ((1 << 27) - 1)) + struct.pack(self.e + "I", ts >> 27)

    def discarded(self, delta: int, length: int) -> bytes:
        return self.word(29, delta) + struct.pack(self.e + "I", length - 4) + b"\xee" * (length - 8)

    def page(self, ts: int, records: list[bytes], flags: int = 0, missed: int | None = None) -> bytes:
        body = b"".join(records)
        commit = len(body) | flags
        hdr = struct.pack(self.e + "Q", ts) + struct.pack(self.e + ("Q" if self.L == 8 else "I"), commit)
        tail = struct.pack(self.e + ("Q" if self.L == 8 else "I"), missed) if missed is not None else b""
        page = hdr + body + tail
        assert len(page) <= PS
        return page + b"\0" * (PS - len(page))

    def header_page(self) -> bytes:
        d = 8 + self.L
        return (f"\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
                f"\tfield: local_t commit;\toffset:8;\tsize:{self.L};\tsigned:1;\n"
                f"\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
                f"\tfield: char data;\toffset:{d};\tsize:{PS - d};\tsigned:0;\n").encode()

    def metadata(self) -> bytes:
        e = self.e
        out = b"header_page\0" + struct.pack(e + "Q", len(self.header_page())) + self.header_page()
        he = b"# compressed entry header\n"
        out += b"header_event\0" + struct.pack(e + "Q", len(he)) + he
        return out

    def formats(self) -> bytes:
        e = self.e
        f = FMT.encode()
        return struct.pack(e + "I", 0), struct.pack(e + "I", 1) + b"test\0" + struct.pack(e + "I", 1) + \
            struct.pack(e + "Q", len(f)) + f

    def option(self, oid: int, payload: bytes) -> bytes:
        return struct.pack(self.e + "HI", oid, len(payload)) + payload


CMDLINES = b"42 worker\n7 init\n"


def build_v6(b: Builder, cpus: list[list[bytes]], options: bytes = b"", instance: list[list[bytes]] | None = None) -> bytes:
    e = b.e
    out = b"\x17\x08\x44tracing6\0" + bytes([1 if b.big else 0, b.L]) + struct.pack(e + "I", PS)
    ftrace, events = b.formats()
    out += b.metadata() + ftrace + events
    out += struct.pack(e + "I", 0) + struct.pack(e + "I", 0)  # kallsyms, printk
    out += struct.pack(e + "Q", len(CMDLINES)) + CMDLINES
    out += struct.pack(e + "I", len(cpus))
    inst_opt_at = None
    if options or instance is not None:
        out += b"options  \0" + options
        if instance is not None:
            inst_opt_at = len(out) + 6
            out += b.option(3, struct.pack(e + "Q", 0) + b"inst1\0")
        out += struct.pack(e + "H", 0)
    out += b"flyrecord\0"
    table_at = len(out)
    out += b"\0" * (16 * len(cpus)) + struct.pack(e + "Q", 7) + b"[local]"
    blob = bytearray(out)

    def put_pages(pages_per_cpu: list[list[bytes]], table: int) -> None:
        for i, pages in enumerate(pages_per_cpu):
            start = -(-len(blob) // PS) * PS
            blob.extend(b"\0" * (start - len(blob)))
            data = b"".join(pages)
            blob.extend(data)
            struct.pack_into(e + "QQ", blob, table + 16 * i, start if data else 0, len(data))

    put_pages(cpus, table_at)
    if instance is not None:
        at = len(blob)
        struct.pack_into(e + "Q", blob, inst_opt_at, at)
        blob.extend(b"flyrecord\0" + b"\0" * (16 * len(instance)))
        put_pages(instance, at + 10)
    return bytes(blob)


def build_v7_zlib(b: Builder, cpus: list[list[bytes]], chunk_pages: int = 2) -> bytes:
    e = b.e
    comp = b"zlib\0" + b"1.2.13\0"
    out = bytearray(b"\x17\x08\x44tracing7\0" + bytes([1 if b.big else 0, b.L]) + struct.pack(e + "I", PS) + comp)
    opt_ptr = len(out)
    out += b"\0" * 8
    ftrace, events = b.formats()
    sections = {16: b.metadata(), 17: ftrace, 18: events, 19: struct.pack(e + "I", 0), 20: struct.pack(e + "I", 0),
                21: struct.pack(e + "Q", len(CMDLINES)) + CMDLINES}
    where = {}
    for sid, payload in sections.items():
        where[sid] = len(out)
        z = zlib.compress(payload)
        body = struct.pack(e + "II", len(z), len(payload)) + z
        out += struct.pack(e + "HHIQ", sid, 1, 0xFFFFFFFF, len(body)) + body
    # BUFFER section: padding to a page, then per CPU a u32 chunk count and zlib chunks
    buf_at = len(out)
    out += struct.pack(e + "HHIQ", 3, 1, 0xFFFFFFFF, 0)
    cpu_ranges = []
    for i, pages in enumerate(cpus):
        start = -(-len(out) // PS) * PS
        out += b"\0" * (start - len(out))
        chunks = [b"".join(pages[k:k + chunk_pages]) for k in range(0, len(pages), chunk_pages)]
        out += struct.pack(e + "I", len(chunks))
        for c in chunks:
            z = zlib.compress(c)
            out += struct.pack(e + "II", len(z), len(c)) + z
        cpu_ranges.append((i, start, len(out) - start - 4))
    struct.pack_into(e + "Q", out, buf_at + 8, len(out) - buf_at - 16)
    # OPTIONS: section offsets, BUFFER, CPUSTAT, DONE
    opts = b"".join(b.option(sid, struct.pack(e + "Q", off)) for sid, off in where.items())
    bo = struct.pack(e + "Q", buf_at) + b"\0" + b"local\0" + struct.pack(e + "II", PS, len(cpu_ranges))
    bo += b"".join(struct.pack(e + "IQQ", c, o, s) for c, o, s in cpu_ranges)
    opts += b.option(3, bo)
    opts += b.option(2, b"CPU: 0\nentries: 3\noverrun: 5\ncommit overrun: 0\nbytes: 0\noldest event ts: 1.000000\n"
                        b"now ts: 2.500000\ndropped events: 0\nread events: 3\n\0")
    opts += struct.pack(e + "HIQ", 0, 8, 0)
    opt_at = len(out)
    out += struct.pack(e + "HHIQ", 0, 0, 0xFFFFFFFF, len(opts)) + opts
    struct.pack_into(e + "Q", out, opt_ptr, opt_at)
    return bytes(out)


def standard_pages(b: Builder) -> tuple[list[list[bytes]], list[tuple[int, int, int, int, str]]]:
    """Two CPUs; returns the pages and the expected (cpu, ts, pid, val, name) in stream order per CPU."""
    exp = []
    p = lambda pid, val, name: b.payload(pid, 0xFFFF800012345678 + val, val, name, b"cm" + bytes([48 + val % 10]))
    # CPU 0, page 1: data, time extend, data, discarded event, data, absolute timestamp, data, null padding
    t0 = 1_000_000
    recs = [b.data(10, p(42, 1, "a")), b.extend(1 << 30), b.data(5, p(42, 2, "bb")),
            b.discarded(7, 16), b.data(3, p(7, -3, "ccc")), b.absolute(5_000_000_000), b.data(2, p(0, 4, "d"))]
    exp += [(0, t0 + 10, 42, 1, "a"), (0, t0 + 10 + (1 << 30) + 5, 42, 2, "bb"),
            (0, t0 + 10 + (1 << 30) + 5 + 7 + 3, 7, -3, "ccc"), (0, 5_000_000_002, 0, 4, "d")]
    page1 = b.page(t0, recs + [b.word(29, 0)])  # the null padding after commit is never read anyway
    # CPU 0, page 2: a long record (type_len 0 with array[0]) and a forced length-prefixed short one
    t1 = 6_000_000_000
    long_name = "x" * 150
    page2 = b.page(t1, [b.data(1, p(42, 5, long_name)), b.data(4, p(42, 6, "y"), force_len=True)])
    exp += [(0, t1 + 1, 42, 5, long_name), (0, t1 + 5, 42, 6, "y")]
    # CPU 1: one page after lost events (count stored), one with lost events of unknown count
    t2 = 2_000_000
    page3 = b.page(t2, [b.data(8, p(99, 7, "z"))], flags=(1 << 31) | (1 << 30), missed=12)
    page4 = b.page(t2 + 100, [b.data(9, p(42, 8, "w"))], flags=1 << 31)
    exp += [(1, t2 + 8, 99, 7, "z"), (1, t2 + 109, 42, 8, "w")]
    return [[page1, page2], [page3, page4]], exp


def _check_events(tr, exp, ts_offset: int = 0, key: str = "test:ev") -> None:
    t = tr.read_tables(buffer=None)[key]
    rows = sorted(zip(t.column("cpu").to_pylist(), t.column("seq").to_pylist(), t.column("ts_ns").to_pylist(),
                      t.column("pid").to_pylist(), t.column("val").to_pylist(), t.column("name").to_pylist(),
                      t.column("addr").to_pylist(), t.column("comm").to_pylist(), t.column("flags").to_pylist(),
                      t.column("preempt").to_pylist(), t.column("field_comm").to_pylist()))
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows] == [(c, ts + ts_offset, pid, v, n) for c, ts, pid, v, n in exp]
    assert all(r[6] == 0xFFFF800012345678 + r[4] for r in rows)
    assert {r[3]: r[7] for r in rows} == {42: "worker", 7: "init", 0: "<idle>", 99: None}
    assert all(r[8] == 1 and r[9] == 0x21 for r in rows)
    assert all(r[10] == "cm" + str(r[4] % 10) for r in rows)
    for cpu in (0, 1):
        assert [r[1] for r in rows if r[0] == cpu] == list(range(sum(1 for r in rows if r[0] == cpu)))


def _trace_cmd_rows(trace_cmd: str, path: Path) -> list[tuple[int, int, int, str]]:
    out = subprocess.run([trace_cmd, "report", "-R", "-t", str(path)], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s*.*-(\d+)\s+\[(\d+)\]\s+(\d+)\.(\d+): ev:\s+addr=\S+ val=(-?\d+) name=(\S+) comm=\S+", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(3)) * 10**9 + int(m.group(4)), int(m.group(5)), m.group(6)))
    return sorted(rows)


@pytest.mark.parametrize("big,long_size", [(False, 8), (True, 8), (False, 4), (True, 4)])
def test_v6_record_kinds(tmp_path, big, long_size):
    b = Builder(big, long_size)
    cpus, exp = standard_pages(b)
    p = tmp_path / "t.dat"
    p.write_bytes(build_v6(b, cpus))
    tr = open_trace(p)
    assert tr.meta.endian == ("big" if big else "little") and tr.meta.kernel_long_size == long_size
    _check_events(tr, exp)
    lost = tr.lost_events().to_pylist()
    assert [(r["cpu"], r["ts_ns"], r["count"], r["source"]) for r in lost] == [
        (1, 2_000_000, 12, "missed_events_page"), (1, 2_000_100, -1, "missed_events_page")]
    assert tr.damage == []


def test_synthetic_files_read_by_trace_cmd(tmp_path, trace_cmd):
    """trace-cmd agrees with the builder (and so with the reader) on every event, both byte orders, v6 and v7."""
    for big in (False, True):
        b = Builder(big, 8)
        cpus, exp = standard_pages(b)
        for name, blob in (("v6", build_v6(b, cpus)), ("v7", build_v7_zlib(b, cpus))):
            p = tmp_path / f"{name}-{big}.dat"
            p.write_bytes(blob)
            got = _trace_cmd_rows(trace_cmd, p)
            if name == "v7" and not got:
                continue  # Debian's trace-cmd may be built without zlib (it lists only zstd)
            assert got == sorted((c, ts, v, n) for c, ts, _pid, v, n in exp), (name, big)
            if name == "v6":  # the lost-events pages: trace-cmd prints the stored count, and a bare flag
                text = subprocess.run([trace_cmd, "report", str(p)], capture_output=True, text=True).stdout
                assert "CPU:1 [12 EVENTS DROPPED]" in text and "CPU:1 [EVENTS DROPPED]" in text


def test_v7_zlib_and_cpustat(tmp_path):
    b = Builder(False, 8)
    cpus, exp = standard_pages(b)
    p = tmp_path / "z.dat"
    p.write_bytes(build_v7_zlib(b, cpus))
    tr = open_trace(p)
    assert (tr.meta.version, tr.meta.compression) == (7, "zlib")
    _check_events(tr, exp)
    lost = tr.lost_events().to_pylist()
    assert ("overrun", 0, 5, 2_500_000_000) in [(r["source"], r["cpu"], r["count"], r["ts_ns"]) for r in lost]


def test_offset_and_date_options(tmp_path):
    b = Builder(False, 8)
    cpus, exp = standard_pages(b)
    opts = b.option(7, b"1000\0") + b.option(1, b"0x10\0")  # OFFSET ns; DATE µs (0x10 = 16 µs)
    p = tmp_path / "o.dat"
    p.write_bytes(build_v6(b, cpus, opts))
    tr = open_trace(p)
    assert tr.meta.ts_offset_ns == 1000 + 16_000
    _check_events(tr, exp, ts_offset=17_000)


def test_tsc2nsec_option(tmp_path):
    """TSC2NSEC: ns = (ticks * mult) >> shift, for events and for lost-event pages alike."""
    b = Builder(False, 8)
    cpus, exp = standard_pages(b)
    mult, shift = 3 << 20, 21  # 1.5 ns per tick
    p = tmp_path / "tsc.dat"
    p.write_bytes(build_v6(b, cpus, b.option(14, struct.pack("<IIQ", mult, shift, 0))))
    tr = open_trace(p)
    t = tr.read_tables()["test:ev"]
    want = sorted((c, (ts * mult) >> shift) for c, ts, *_ in exp)
    assert sorted(zip(t.column("cpu").to_pylist(), t.column("ts_ns").to_pylist())) == want
    assert tr.lost_events().column("ts_ns").to_pylist() == [(2_000_000 * mult) >> shift, (2_000_100 * mult) >> shift]


def test_instance_buffer(tmp_path):
    b = Builder(False, 8)
    cpus, exp = standard_pages(b)
    p = tmp_path / "i.dat"
    p.write_bytes(build_v6(b, cpus, instance=[[cpus[1][0]], []]))
    tr = open_trace(p)
    assert tr.buffers == ["", "inst1"]
    assert list(tr.read_tables()) == ["test:ev"]  # top buffer only by default
    allt = tr.read_tables(buffer=None)
    assert sorted(allt) == ["inst1/test:ev", "test:ev"]
    assert allt["inst1/test:ev"].column("val").to_pylist() == [7]
    assert tr.event_counts() == {"inst1/test:ev": 1, "test:ev": len(exp)}
    assert "inst1" in tr.lost_events().column("buffer").to_pylist()


def test_bad_commit_lenient_and_strict(tmp_path):
    b = Builder(False, 8)
    cpus, exp = standard_pages(b)
    blob = bytearray(build_v6(b, cpus))
    good = tmp_path / "ok.dat"
    good.write_bytes(blob)
    off = TraceDat(good).meta.buffers[0].cpus[0].offset + PS  # CPU 0, second page
    struct.pack_into("<Q", blob, off + 8, 5000)  # commit beyond the page
    p = tmp_path / "bad.dat"
    p.write_bytes(blob)
    tr = TraceDat(p)
    assert sum(tr.event_counts().values()) == len(exp) - 2
    assert len(tr.damage) == 1 and tr.damage[0]["offset"] == off + 8 and "exceeds the page" in tr.damage[0]["reason"]
    with pytest.raises(TraceFormatError, match="exceeds the page"):
        TraceDat(p, strict=True).event_counts()
    # a record whose length overruns the page's committed bytes: reported at its offset, the rest survives
    blob2 = bytearray(good.read_bytes())
    cpu1 = TraceDat(good).meta.buffers[0].cpus[1].offset  # CPU 1, first page: one record
    struct.pack_into("<I", blob2, cpu1 + 16, 28 | (8 << 5))  # type_len 28 = 112 bytes, commit holds 36
    p2 = tmp_path / "bad2.dat"
    p2.write_bytes(blob2)
    tr2 = TraceDat(p2)
    assert sum(tr2.event_counts().values()) == len(exp) - 1
    assert [d["offset"] for d in tr2.damage] == [cpu1 + 16] and "overruns" in tr2.damage[0]["reason"]


# ---------------------------------------------------------------------------------------------------------------
# Property: any sequence of record kinds, in either byte order and long size, decodes to the model's events.
# ---------------------------------------------------------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

_REC = st.one_of(
    st.tuples(st.just("data"), st.integers(0, (1 << 27) - 1), st.integers(-(1 << 31), (1 << 31) - 1),
              st.text("abcxyz", max_size=120), st.booleans()),
    st.tuples(st.just("extend"), st.integers(1 << 27, (1 << 40))),
    st.tuples(st.just("abs"), st.integers(0, 1 << 50)),
    st.tuples(st.just("discard"), st.integers(1, (1 << 27) - 1), st.sampled_from([8, 12, 40])),
)


@settings(max_examples=150, deadline=None)
@given(big=st.booleans(), long_size=st.sampled_from([4, 8]),
       pages=st.lists(st.tuples(st.integers(0, 1 << 40), st.lists(_REC, max_size=25)), min_size=1, max_size=4))
def test_random_pages_decode_like_the_model(tmp_path_factory, big, long_size, pages):
    b = Builder(big, long_size)
    raw_pages, exp = [], []
    for page_ts, recs in pages:
        ts, body, used = page_ts, [], 8 + long_size
        for r in recs:
            if r[0] == "data":
                _, delta, val, name, force = r
                rec = b.data(delta, b.payload(42, 0, val, name, b"c"), force_len=force)
                ts += delta
                item = (ts, val, name)
            elif r[0] == "extend":
                rec = b.extend(r[1])
                ts += r[1]
                item = None
            elif r[0] == "abs":
                rec = b.absolute(r[1])
                ts = r[1]
                item = None
            else:
                rec = b.discarded(r[1], r[2])
                ts += r[1]  # libtraceevent adds a discarded event's delta
                item = None
            if used + len(rec) > PS:
                break
            used += len(rec)
            body.append(rec)
            if item is not None:
                exp.append(item)
        raw_pages.append(b.page(page_ts, body))
    p = tmp_path_factory.mktemp("h") / "t.dat"
    p.write_bytes(build_v6(b, [raw_pages]))
    tr = TraceDat(p)
    tables = tr.read_tables()
    assert tr.damage == []
    if not exp:
        assert tables == {}
        return
    t = tables["test:ev"]
    got = list(zip(t.column("ts_ns").to_pylist(), t.column("val").to_pylist(), t.column("name").to_pylist()))
    assert got == [(ts % (1 << 64), v, n) for ts, v, n in exp]
    assert t.column("seq").to_pylist() == list(range(len(exp)))
