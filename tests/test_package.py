"""The package's public surface: error hierarchy, format parsing, schema derivation."""

from __future__ import annotations

import pyarrow as pa
import pytest

from iovatrace import IovatraceError, TraceFormatError
from iovatrace.parsers.formats import parse_format
from iovatrace.schema import COMMON_COLUMNS, event_schema

FORMAT = """name: iommu_dma_alloc_iova
ID: 1544
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long __probe_ip;\toffset:8;\tsize:8;\tsigned:0;
\tfield:u64 domain;\toffset:16;\tsize:8;\tsigned:0;
\tfield:s32 prot;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] devname;\toffset:28;\tsize:4;\tsigned:1;
\tfield:char comm[16];\toffset:32;\tsize:16;\tsigned:1;
\tfield:u32 words[4];\toffset:48;\tsize:16;\tsigned:0;

print fmt: "(%lx) domain=0x%Lx devname=\\"%s\\"", REC->__probe_ip, REC->domain, __get_str(devname)
"""


def test_error_root_is_abstract() -> None:
    with pytest.raises(TypeError):
        IovatraceError("x")
    err = TraceFormatError("Cannot read page header; expected 8 bytes", path="t.dat", offset=0x1000)
    assert str(err).startswith("t.dat @0x1000: Cannot read page header")
    assert isinstance(err, IovatraceError)


def test_parse_format_and_schema() -> None:
    fmt = parse_format(FORMAT, "dmaiommu")
    assert fmt.key == "dmaiommu:iommu_dma_alloc_iova" and fmt.id == 1544 and fmt.is_kprobe
    kinds = {f.name: f.kind for f in fmt.payload_fields}
    assert kinds == {"__probe_ip": "scalar", "domain": "scalar", "prot": "scalar", "devname": "dynamic",
                     "comm": "array", "words": "array"}
    schema = event_schema(fmt, fetch_types={"domain": "x64"})
    assert schema.names[: len(COMMON_COLUMNS)] == [c.name for c in COMMON_COLUMNS]
    assert schema.field("domain").type == pa.uint64()
    assert schema.field("domain").metadata[b"fetch_type"] == b"x64"
    assert schema.field("prot").type == pa.int32()
    assert schema.field("devname").type == pa.string()
    assert schema.field("comm").type == pa.string()
    assert schema.field("words").type == pa.list_(pa.uint32())


def test_bad_format_is_located() -> None:
    with pytest.raises(TraceFormatError, match=r"fmt\.txt:3: Cannot parse field line"):
        parse_format("name: x\nID: 1\n\tfield:int a; offset:zz;\n", "s", path="fmt.txt")
