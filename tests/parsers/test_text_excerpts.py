"""Text readers on the real excerpts in tests/data/text (no shared data needed).

The reference for every value is trace-cmd's own decode of the same events from the binary trace.dat
(``*_report_Rt.txt``, ``trace-cmd report -R -t``), parsed through the independent ``field=value`` grammar.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovatrace.errors import TraceFormatError
from iovatrace.parsers.text import load_formats_dir, open_text, parse_format_dump, sniff

try:
    from .test_text_support import compare_tables
except ImportError:  # tests/parsers is not a package: pytest put it on sys.path
    from test_text_support import compare_tables

HEAD = "strict_extract_trace_head.txt"


@pytest.fixture(scope="module")
def data(tests_data: Path) -> Path:
    return tests_data / "text"


def _open(data: Path, name: str, run: str, **kw):
    fm = load_formats_dir(data / f"{run}_formats.txt")
    ks = (data / f"{run}_kallsyms.txt").read_text()
    return open_text(data / name, formats=fm, kallsyms=ks, **kw)


def test_tracefs_head_equals_trace_cmd_decode(data: Path) -> None:
    text = _open(data, HEAD, "strict_extract", strict=True)
    ref = _open(data, "strict_extract_report_Rt.txt", "strict_extract", strict=True)
    got = text.read_tables()
    assert text.meta["ts_precision_ns"] == 1000 and ref.meta["ts_precision_ns"] == 1
    assert text.meta["entries"] == 149045 and text.meta["cpus"] == 2 and text.meta.cpus == 2
    assert text.meta.version is None and text.meta.producer == "ftrace"
    counts = compare_tables(ref.read_tables(), got, precision=1000, flags_mask=None)
    assert sum(counts.values()) == 60
    m = got["iommu:map"].to_pylist()[0]
    # "map: IOMMU: iova=0x00000000ffef5000 - 0x00000000ffef6000 paddr=0x00000000019be000 size=4096"
    assert (m["iova"], m["paddr"], m["size"]) == (0xFFEF5000, 0x19BE000, 4096)
    r = got["iova:alloc_iova_fast_ret"].to_pylist()[0]
    # "(iommu_dma_alloc_iova+0xb9/0xe0 <- alloc_iova_fast) pfn=0xffef5" with kallsyms from the same boot
    assert r["pfn"] == 0xFFEF5 and r["__probe_ret_ip"] == 0xFFFFFFFFAC6E7C00 + 0xB9
    assert r["__probe_func"] == 0xFFFFFFFFAC6EB3F0


def test_flags_column_decodes_to_common_flags(data: Path) -> None:
    t = _open(data, HEAD, "strict_extract").read_tables()
    rows = t["dmaiommu:__iommu_dma_map"].to_pylist()
    # first line "ping-205 [000] bN.1." : BH_OFF 0x80 | NEED_RESCHED 0x04 | PREEMPT_RESCHED 0x20, depth 1
    assert (rows[0]["flags"], rows[0]["preempt"]) == (0xA4, 1)
    qi = t["intel_iommu:qi_submit"].to_pylist()[0]
    # "DN.2." : IRQS_OFF|BH_OFF, need-resched, depth 2
    assert (qi["flags"], qi["preempt"]) == (0x81 | 0x24, 2)


def test_612_sample_equals_trace_cmd_decode(data: Path) -> None:
    text = _open(data, "strict_extract-6.12_trace_sample.txt", "strict_extract-6.12", strict=True)
    ref = _open(data, "strict_extract-6.12_report_Rt.txt", "strict_extract-6.12", strict=True)
    got = text.read_tables()
    allow = {}
    for label in text.stats.nulls:
        field, reason = label.split(": ", 1)
        assert reason in ("hashed %p", "name not in table"), label
        key, name = field.rsplit(".", 1)
        allow.setdefault(key, set()).add(name)
    assert "kmem:kmem_cache_alloc" in allow and "dma:dma_alloc" in allow
    compare_tables(ref.read_tables(), got, precision=1000, flags_mask=None, match_seq=False, allow_null=allow)
    k = got["kmem:kmem_cache_alloc"].to_pylist()[0]
    # gfp_flags=GFP_ATOMIC (__GFP_HIGH|__GFP_KSWAPD_RECLAIM), accounted=false: mapped back through the tables
    assert k["gfp_flags"] == 0x820 and k["accounted"] == 0 and k["ptr"] is None
    sg = got["dma:dma_map_sg"].to_pylist()[0]
    assert sg["dir"] == 2 and sg["dma_addrs"] == [0xFFF80000] and len(sg["phys_addrs"]) == 13


def _variant(data: Path, tmp_path: Path, fn, name: str = "v.txt") -> Path:
    lines = (data / HEAD).read_text().splitlines()
    out = tmp_path / name
    out.write_text("\n".join(fn(lines)) + "\n")
    return out


def _tables(data: Path, path: Path, **kw):
    fm = load_formats_dir(data / "strict_extract_formats.txt")
    ks = (data / "strict_extract_kallsyms.txt").read_text()
    tt = open_text(path, formats=fm, kallsyms=ks, **kw)
    return tt, tt.read_tables()


@pytest.fixture(scope="module")
def base(data: Path):
    return _tables(data, data / HEAD)[1]


@pytest.mark.parametrize("change", [
    # comm with spaces, dashes, colons and parentheses (the kernel prints comm verbatim)
    lambda ls: [l.replace("ping-205 ", "my -ping: (x)-205 ") for l in ls],
    # record-tgid adds a "(tgid)" column after the pid
    lambda ls: [l.replace("ping-205     [", "ping-205     (  205) [").replace("<idle>-0       [",
                                                                              "<idle>-0       (-------) [") for l in ls],
    # trace_pipe: same lines without the header
    lambda ls: [l for l in ls if not l.startswith("#")],
])
def test_line_variants_keep_values(data: Path, tmp_path: Path, base, change) -> None:
    tt, got = _tables(data, _variant(data, tmp_path, change), strict=True)
    comm_changed = any("my -ping" in (t.column("comm").to_pylist() or [""])[0] for t in got.values())
    compare_tables(base, got, skip=("event", "comm") if comm_changed else ("event",))
    if comm_changed:
        assert got["iommu:map"].column("comm")[0].as_py() == "my -ping: (x)"


def test_no_flags_column(data: Path, tmp_path: Path, base) -> None:
    import re

    path = _variant(data, tmp_path, lambda ls: [re.sub(r"(\[\d{3}\]) \S{5} ", r"\1 ", l) for l in ls])
    tt, got = _tables(data, path, strict=True)
    assert tt.meta["flags"] == "absent"
    assert got["iommu:map"].schema.metadata[b"iovatrace.flags"] == b"absent"
    compare_tables(base, got, flags_mask=None)


def test_instance_prefix_keys(data: Path, tmp_path: Path, base) -> None:
    path = _variant(data, tmp_path, lambda ls: [("inst1: " + l.lstrip()) if "ping-205" in l else l for l in ls])
    tt, got = _tables(data, path, strict=True)
    assert tt.meta["instances"] == ["inst1"]
    assert not any(k.startswith("inst1/") for k in got)  # read_tables() reads the top buffer, as trace.dat's
    got = tt.read_tables(buffer=None)
    assert tt.read_tables(buffer="inst1").keys() == {k for k in got if k.startswith("inst1/")}
    assert "inst1/iommu:map" in got and got["inst1/iommu:map"].num_rows > 0
    assert sum(t.num_rows for t in got.values()) == 60


@pytest.mark.parametrize("marker,count", [
    ("CPU:1 [LOST 17 EVENTS]", 17),  # the kernel's tracefs form
    ("CPU:1 [17 EVENTS DROPPED]", 17),  # trace-cmd report (trace-read.c)
    ("CPU:1 [EVENTS DROPPED]", -1),  # trace-cmd report, count unknown
])
def test_lost_marker_becomes_row(data: Path, tmp_path: Path, marker: str, count: int) -> None:
    def add(ls):
        i = next(i for i, l in enumerate(ls) if "[001]" in l)
        return ls[:i] + [marker] + ls[i:]

    tt, got = _tables(data, _variant(data, tmp_path, add), strict=True)
    lost = tt.lost_events().to_pylist()
    first_cpu1 = min(ts for t in got.values()
                     for ts in t.filter(t.column("cpu").to_numpy() == 1).column("ts_ns").to_pylist())
    assert lost == [{"ts_ns": first_cpu1, "cpu": 1, "count": count, "source": "text_marker", "offset": None,
                     "buffer": ""}]
    assert tt.meta["skipped"] == {}


def test_raw_clock_timestamps(data: Path, tmp_path: Path, base) -> None:
    """trace_clock=counter prints "%12llu" raw values instead of seconds.micros: kept as clock units."""
    import re

    path = _variant(data, tmp_path, lambda ls: [re.sub(r" (\d+)\.(\d{6}):", lambda m: f" {m.group(1)}{m.group(2)}:", l)
                                                for l in ls])
    tt, got = _tables(data, path, strict=True)
    assert tt.meta["ts_precision_ns"] == 0
    assert got["iommu:map"].schema.metadata[b"iovatrace.ts_precision_ns"] == b"0"
    # the "counter" here is the µs value: ts_ns holds it unscaled
    assert got["iommu:map"].column("ts_ns")[0].as_py() * 1000 == base["iommu:map"].column("ts_ns")[0].as_py()
    mixed = _variant(data, tmp_path, lambda ls: ls[:20] + [re.sub(r" (\d+)\.(\d{6}):", r" \1\2:", ls[20])] + ls[21:],
                     name="mixed.txt")
    with pytest.raises(TraceFormatError, match="Cannot mix timestamps"):
        _tables(data, mixed)


def test_gzip_is_transparent(data: Path, tmp_path: Path, base) -> None:
    gz = tmp_path / "trace.txt.gz"
    gz.write_bytes(gzip.compress((data / HEAD).read_bytes()))
    assert sniff(gz.read_bytes()[:4096])
    _, got = _tables(data, gz, strict=True)
    compare_tables(base, got)


def test_sniff(data: Path, tests_data: Path) -> None:
    assert sniff((data / HEAD).read_bytes()[:4096])
    assert sniff((data / "strict_extract_report_Rt.txt").read_bytes()[:4096])
    assert not sniff(b"\x17\x08\x44tracing6\x00\x00\x08\x00\x10\x00\x00")
    assert not sniff(b"hello world\nthis is not a trace\n")


def test_strict_names_file_and_line(data: Path, tmp_path: Path) -> None:
    path = _variant(data, tmp_path, lambda ls: ls[:20] + ["this line is garbage"] + ls[20:])
    with pytest.raises(TraceFormatError, match=r"v\.txt:21: Cannot parse ftrace text line"):
        _tables(data, path, strict=True)
    tt, got = _tables(data, path)
    assert tt.meta["skipped"] == {"unrecognised_line": 1}
    assert tt.damage == [{"reason": "unrecognised_line", "count": 1, "line": 21, "excerpt": "this line is garbage"}]
    assert sum(t.num_rows for t in got.values()) == 60


def test_bad_body_strict_and_lenient(data: Path, tmp_path: Path) -> None:
    path = _variant(data, tmp_path, lambda ls: [l.replace("map: IOMMU: iova=", "map: IOMMU: iova=zz", 1)
                                                if " map: " in l else l for l in ls])
    with pytest.raises(TraceFormatError, match=r"Cannot parse 'iommu:map' event body"):
        _tables(data, path, strict=True)
    tt, got = _tables(data, path)
    assert tt.meta["partial_bodies"] == {"iommu:map": got["iommu:map"].num_rows}
    assert got["iommu:map"].column("iova").null_count == got["iommu:map"].num_rows


def test_inferred_typing_without_formats(data: Path) -> None:
    tt = open_text(data / HEAD)
    got = tt.read_tables()
    assert set(tt.meta["typing"].values()) == {"inferred"}
    m = got["unknown:map"]
    assert m.schema.metadata[b"iovatrace.typing"] == b"inferred"
    assert str(m.schema.field("iova").type) == "uint64" and str(m.schema.field("size").type) == "int64"
    a = got["unknown:alloc_iova_fast"]
    assert str(a.schema.field("iovad").type) == "uint64" and a.column("size")[0].as_py() == 1
    # the probe head is symbolic and there is no kallsyms: kept as text
    assert a.column("__probe_sym")[0].as_py() == "alloc_iova_fast+0x0/0x280"
    d = got["unknown:iommu_dma_alloc_iova"]
    assert d.column("devname")[0].as_py() == "0000:00:03.0"


def test_format_sources(data: Path, tmp_path: Path) -> None:
    dump = (data / "strict_extract_formats.txt").read_text()
    fm = parse_format_dump(dump)
    assert "iommu:map" in fm and "iova:alloc_iova_fast" in fm
    # the same formats as a tracefs events/ tree
    for key, f in fm.items():
        d = tmp_path / "events" / f.system / f.name
        d.mkdir(parents=True)
    for block in dump.split("== ")[1:]:
        header, text = block.split("\n", 1)
        sysname, name = header.split("/")[-3:-1]
        (tmp_path / "events" / sysname / name / "format").write_text(text)
    tree = load_formats_dir(tmp_path / "events")
    assert {k: (f.id, [x.name for x in f.fields]) for k, f in tree.items()} == \
        {k: (f.id, [x.name for x in f.fields]) for k, f in fm.items()}
    # bare-name headers take the system from the file name (kmem_formats.txt -> kmem)
    kmem = tmp_path / "kmem_formats.txt"
    kmem.write_text("== map\n" + dump.split("/iommu/map/format\n", 1)[1].split("== ")[0])
    assert list(load_formats_dir(kmem)) == ["kmem:map"]
    with pytest.raises(TraceFormatError, match="no such file"):
        load_formats_dir(tmp_path / "missing")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=80), st.sampled_from([
    "  ping-205 [000] bN.1. 8.583017: map: IOMMU: iova=0x1 - 0x2 paddr=0x3 size=4",
    "CPU:0 [LOST 3 EVENTS]", "cpus=2", "# tracer: nop", "x-1 [0] 1.1: e: (", "<idle>-0 [001] 0.000001: map: ",
])), max_size=30))
def test_any_text_parses_or_raises_trace_format_error(tmp_path_factory, lines) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "t.txt"
    path.write_text("\n".join(lines), errors="replace")
    fm = parse_format_dump((Path(__file__).parent.parent / "data" / "text" / "strict_extract_formats.txt").read_text())
    tt = open_text(path, formats=fm)
    tables = tt.read_tables()  # lenient: never raises
    # every physical line is a row, a skip, or nothing (hypothesis's texts may hold line breaks themselves)
    raw = path.read_bytes()
    physical = max(len(raw.splitlines()), len(raw.decode("utf-8", "replace").splitlines()))
    assert sum(t.num_rows for t in tables.values()) + sum(tt.meta["skipped"].values()) <= physical + 1
    try:
        open_text(path, formats=fm, strict=True).read_tables()
    except TraceFormatError:
        pass
