"""Leak diagnosis: the two real reports of the issue, synthetic reports in every kmemleak format, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace.analysis.leaks import diagnose
from iovatrace.cli import cli
from iovatrace.parsers.logs.kmemleak import KmemleakFrame, KmemleakObject, render_kmemleak_object

# Robin Murphy's reconstruction (his mail, with the fourth address corrected to ...392ec000 as the issue says).
ROBIN_ORDER = ["0xffff8881411f9000", "0xffff8881261c1000", "0xffff88812be26400", "0xffff8881392ec000",
               "0xffff8881a5301000"]


def _ml(shared_data: Path, prefix: str) -> Path:
    (p,) = sorted((shared_data / "reports" / "mailing-lists").glob(f"{prefix}_*.txt"))
    return p


def _leaks(*args: str, input: str | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["leaks", *args], input=input)
    assert "Traceback" not in r.output
    return r.exit_code, r.output


# ---------------------------------------------------------------------------------------------------------------
# Acceptance 1: Ido Schimmel's report
# ---------------------------------------------------------------------------------------------------------------


def test_ido_report_one_chain_in_robins_order(shared_data: Path) -> None:
    code, out = _leaks("--json", str(_ml(shared_data, "01")))
    assert code == 0, out
    data = json.loads(out)
    (chain,) = data["chains"]
    assert chain["objects"] == ROBIN_ORDER
    assert chain["terminal"] == "NULL" and chain["shape"] == "list"
    assert chain["verdict"] == "transient false positive"
    assert "7591c127f3b1" in chain["verdict_text"] and "not a leak" in chain["verdict_text"]
    # The pfns in each magazine's dump (bytes 8..31 read by eye from the mail: e7 7d 05 00 ... = 0x57de7).
    assert chain["pfns"]["0xffff8881a5301000"] == ["0x57de7", "0x5b40f", "0x596b4"]
    assert chain["pfns"]["0xffff8881411f9000"] == ["0x5962c", "0xffeac", "0xffea6"]
    assert data["kernel"]["versions"] == "6.7" and data["kernel"]["list_depot"] is True
    # Evidence: the five headers (lines of the 'unreferenced object' records in the file).
    text = _ml(shared_data, "01").read_text().splitlines()
    headers = [i for i, t in enumerate(text, 1) if t.startswith("unreferenced object")]
    assert set(headers) <= {e["line"] for e in chain["evidence"]}


def test_ido_report_text_draws_the_chain(shared_data: Path) -> None:
    code, out = _leaks(str(_ml(shared_data, "01")))
    assert code == 0
    assert " -> ".join(ROBIN_ORDER) + " -> NULL" in out
    assert "TRANSIENT FALSE POSITIVE" in out and "7591c127f3b1" in out
    assert "0x57de7 0x5b40f 0x596b4" in out  # the tail's pfns in the objects table


# ---------------------------------------------------------------------------------------------------------------
# Acceptance 2: the 2019 arm64 struct iova
# ---------------------------------------------------------------------------------------------------------------


def test_arm64_uninitialised_iova(shared_data: Path) -> None:
    code, out = _leaks("--json", str(_ml(shared_data, "06")))
    assert code == 0, out
    data = json.loads(out)
    (obj,) = data["objects"]
    assert obj["kind"] == "iova"
    assert obj["pfn_lo"] == "0xffffffffffffffff" and obj["pfn_hi"] == "0x0"
    (chain,) = data["chains"]
    assert chain["verdict_code"] == "uninitialised_iova"
    assert "allocation-failure path" in chain["verdict_text"] and "472d26df5e80" in chain["verdict_text"]
    assert any("hashed" in n and "cannot be symbolised" in n for n in data["notes"])
    code, text = _leaks(str(_ml(shared_data, "06")))
    assert "IOVA 0x" not in text  # no nonsense range printed
    assert "not a live range" in text


# ---------------------------------------------------------------------------------------------------------------
# Acceptance 3: synthetic reports in each kmemleak format version
# ---------------------------------------------------------------------------------------------------------------

_ADDR = 0xFFFFFFFF81000000
FRAMES = {
    # <=6.7 (Ido's 6.7 stack), 6.8-6.12 and >=6.13 (named cache, *_noprof allocators of 6.10+).
    "<=6.7": ["__kmem_cache_alloc_node", "kmalloc_trace", "free_iova_fast", "fq_ring_free_locked",
              "fq_flush_timeout", "call_timer_fn"],
    "6.8-6.12": ["kmem_cache_alloc_noprof", "free_iova_fast", "fq_ring_free_locked", "fq_flush_timeout"],
    ">=6.13": ["kmem_cache_alloc_noprof", "free_iova_fast", "fq_ring_free_locked", "fq_flush_timeout"],
}


def _frames(names: list[str]) -> list[KmemleakFrame]:
    return [KmemleakFrame(n, 0x10 * i, 0x100, None, _ADDR + 0x1000 * i, "real", None, None, None, False, "")
            for i, n in enumerate(names)]


def mag(addr: int, first: int, pfns: list[int], fmt: str = "<=6.7", size: int = 1024) -> KmemleakObject:
    dump = b"".join(w.to_bytes(8, "little") for w in [first, *pfns])[:32]
    return KmemleakObject(address=addr, size=size, comm="softirq", pid=0, jiffies=4294967296 + addr % 1000,
                          age_ms=12345, crc=0x1234, hexdump_len=len(dump), hexdump=dump, frames=_frames(FRAMES[fmt]))


def iova(addr: int, lo: int, hi: int, dump_len: int = 64) -> KmemleakObject:
    dump = b"".join(w.to_bytes(8, "little") for w in [0, 0, 0, hi, lo, 0, 0, 0])[:dump_len]
    return KmemleakObject(address=addr, size=64, comm="fio", pid=77, jiffies=5, age_ms=100, crc=1,
                          hexdump_len=len(dump), hexdump=dump,
                          frames=_frames(["kmem_cache_alloc", "alloc_iova_mem", "alloc_iova", "alloc_iova_fast",
                                          "iommu_dma_alloc_iova", "__iommu_dma_map"]))


def other(addr: int) -> KmemleakObject:
    dump = (A + 0x10).to_bytes(8, "little") + bytes(24)  # points into magazine A: not a chain link for magazines
    return KmemleakObject(address=addr, size=96, comm="bash", pid=1, jiffies=5, age_ms=100, crc=2,
                          hexdump_len=32, hexdump=dump,
                          frames=_frames(["kmalloc_trace", "alloc_inode", "new_inode_pseudo"]))


A, B, C, D, X = 0xFFFF888100001000, 0xFFFF888100002000, 0xFFFF888100003000, 0xFFFF888100004000, 0xFFFF8881DEAD0000
PF = [0x57DE7, 0x5B40F, 0x596B4]


def report(objs: list[KmemleakObject], fmt: str) -> str:
    return "random preamble\n" + "\n".join(render_kmemleak_object(o, fmt) for o in objs) + "\nkmemleak: done\n"


def _diag(objs: list[KmemleakObject], fmt: str, kernel: str | None = None):  # type: ignore[no-untyped-def]
    return diagnose(report(objs, fmt), path="synthetic", kernel=kernel)


@pytest.mark.parametrize("fmt", ["<=6.7", "6.8-6.12", ">=6.13"])
def test_chain_shuffled_with_unrelated_objects(fmt: str) -> None:
    objs = [mag(C, 0, PF, fmt), other(D), mag(A, B, PF, fmt), iova(X, 0xFFF00, 0xFFF03), mag(B, C, PF, fmt)]
    d = _diag(objs, fmt)
    (ch,) = [c for c in d.chains if len(c.members) > 1]
    assert ch.addresses == [A, B, C] and ch.shape == "list" and ch.terminal == "NULL"
    assert ch.verdict == "transient_false_positive" and "7591c127f3b1" in ch.verdict_text
    if fmt != "<=6.7":  # 6.8+ formats leave 6.12 possible, where 6.12-stable carries the fix
        assert "992ea37a8ada" in ch.verdict_text
    verdicts = {c.members[0].address: (c.shape, c.verdict) for c in d.chains if len(c.members) == 1}
    assert verdicts == {D: ("lone", "not_iova"), X: ("lone", "real_leak")}
    (iv,) = [c for c in d.chains if c.members[0].address == X]
    assert "0xfff00-0xfff03 (4 page(s)" in iv.what and "IOVA 0xfff00000-0xfff03fff" in iv.what
    assert len(d.chains) == 3


def test_format_versions_narrow_the_kernel() -> None:
    objs = [mag(A, B, PF, "<=6.7"), mag(B, 0, PF, "<=6.7")]
    assert _diag(objs, "<=6.7").kernel.label == "6.7"
    objs = [mag(A, B, PF, "6.8-6.12"), mag(B, 0, PF, "6.8-6.12")]
    assert _diag(objs, "6.8-6.12").kernel.label == "6.9-6.12"
    objs = [mag(A, B, PF, ">=6.13"), mag(B, 0, PF, ">=6.13")]
    assert _diag(objs, ">=6.13").kernel.label == ">=6.12"


def test_fixed_kernel_turns_the_chain_into_a_suspect() -> None:
    objs = [mag(A, B, PF, ">=6.13"), mag(B, 0, PF, ">=6.13")]
    (ch,) = _diag(objs, ">=6.13", kernel="6.14").chains
    assert ch.verdict == "suspect_leak" and "head was lost" in ch.verdict_text


FMTS = ["<=6.7", "6.8-6.12", ">=6.13"]
KERNEL_OF = {"<=6.7": "6.7", "6.8-6.12": "6.10", ">=6.13": "6.12"}


@pytest.mark.parametrize("fmt", FMTS)
def test_fork(fmt: str) -> None:
    objs = [mag(A, C, PF, fmt), mag(B, C, PF, fmt), mag(C, 0, PF, fmt), other(D)]
    ch, unrelated = _diag(objs, fmt).chains
    assert ch.shape == "fork" and ch.verdict == "inconsistent"
    assert ch.addresses[:2] == [A, C] and set(ch.addresses) == {A, B, C}
    assert unrelated.addresses == [D] and unrelated.verdict == "not_iova"


@pytest.mark.parametrize("fmt", FMTS)
def test_cycle(fmt: str) -> None:
    objs = [mag(B, C, PF, fmt), mag(A, B, PF, fmt), mag(C, A, PF, fmt)]
    (ch,) = _diag(objs, fmt).chains
    assert ch.shape == "cycle" and ch.addresses == [A, B, C] and ch.verdict == "inconsistent"


@pytest.mark.parametrize("fmt", FMTS)
def test_missing_middle(fmt: str) -> None:
    objs = [mag(A, X, PF, fmt), mag(B, C, PF, fmt), mag(C, 0, PF, fmt)]
    d = _diag(objs, fmt, kernel=KERNEL_OF[fmt])
    a, b = d.chains
    assert (a.addresses, a.shape, a.terminal, a.verdict) == ([A], "open", f"0x{X:x} (not reported)", "suspect_leak")
    assert (b.addresses, b.shape, b.terminal) == ([B, C], "list", "NULL")
    assert b.verdict == "transient_false_positive"


def test_missing_middle_lone_tail() -> None:
    objs = [mag(A, X, PF), mag(B, 0, PF)]
    d = _diag(objs, "<=6.7", kernel="6.7")
    a, b = d.chains
    assert (a.addresses, a.shape) == ([A], "open")
    assert (b.addresses, b.shape, b.terminal) == ([B], "lone", "NULL")
    assert b.verdict == "transient_false_positive" and b.verdict_text.startswith("probably")


def test_lone_null_magazine_without_version_is_ambiguous() -> None:
    (ch,) = _diag([mag(A, 0, PF)], "<=6.7").chains
    assert ch.verdict == "ambiguous" and ch.next_steps[0] == "pass --kernel VERSION"


def test_magazine_with_size_word_is_a_real_leak() -> None:
    (ch,) = _diag([mag(A, 2, PF)], "<=6.7", kernel="6.7").chains
    assert ch.verdict == "real_leak" and ch.members[0].mag_size == 2 and ch.members[0].pfns == PF[:2]


def test_pre_6_0_magazines_are_2048_bytes_with_a_size_word() -> None:
    objs = [mag(A, 128, PF, size=2048)]
    objs[0].frames = _frames(["__kmalloc", "free_iova_fast", "fq_flush_timeout"])
    for f in objs[0].frames:
        object.__setattr__(f, "address_text", f"{(f.address or 0) & 0xFFFFFFFF:016x}")  # hashed look
    d = _diag(objs, "<=6.7")
    assert d.kernel.hi <= (5, 19) and d.kernel.mag_size == 128
    (ch,) = d.chains
    assert ch.verdict == "real_leak" and ch.members[0].mag_size == 128


def test_short_iova_dump_shows_pfn_hi_only() -> None:
    (ch,) = _diag([iova(X, 0x100, 0x1FF, dump_len=32)], "6.8-6.12").chains
    m = ch.members[0]
    assert (m.pfn_hi, m.pfn_lo) == (0x1FF, None) and ch.verdict == "suspect_leak"


@settings(max_examples=40, deadline=None)
@given(perm=st.permutations(list(range(6))), fmt=st.sampled_from(["<=6.7", "6.8-6.12", ">=6.13"]))
def test_chain_order_does_not_depend_on_report_order(perm: list[int], fmt: str) -> None:
    addrs = [0xFFFF888200000000 + 0x400 * i for i in range(6)]
    objs = [mag(a, addrs[i + 1] if i + 1 < len(addrs) else 0, PF, fmt) for i, a in enumerate(addrs)]
    d = _diag([objs[i] for i in perm], fmt)
    (ch,) = d.chains
    assert ch.addresses == addrs and ch.terminal == "NULL"


def test_dma_debug_shown_per_device() -> None:
    text = report([mag(A, 0, PF)], "<=6.7") + (
        "DMA-API: mlx5_core 0000:08:00.0: device driver has pending DMA allocations while released from device "
        "[count=7]\nOne of leaked entries details: [device address=0x00000000fff00000] [size=4096 bytes] "
        "[mapped with DMA_FROM_DEVICE] [mapped as page]\n")
    code, out = _leaks("--json", "-", input=text)
    assert code == 0
    (r,) = json.loads(out)["dma_debug"]
    assert (r["device"], r["count"], r["device_address"], r["direction"]) == ("0000:08:00.0", 7, "0xfff00000",
                                                                              "from_device")
    code, out = _leaks("-", input=text)
    assert "0000:08:00.0" in out and "from_device" in out


def test_parquet_tables(tmp_path: Path, shared_data: Path) -> None:
    import pyarrow.parquet as pq

    code, _ = _leaks("-o", str(tmp_path), str(_ml(shared_data, "01")))
    assert code == 0
    chains = pq.read_table(tmp_path / "leak_chains.parquet").to_pylist()
    assert [f"0x{a:x}" for a in chains[0]["objects"]] == ROBIN_ORDER
    objs = pq.read_table(tmp_path / "leak_objects.parquet")
    assert objs.column("kind").to_pylist() == ["iova_magazine"] * 5
    assert {p.name for p in tmp_path.iterdir()} >= {"kmemleak_objects.parquet", "kmemleak_frames.parquet",
                                                    "dma_debug_reports.parquet"}


# ---------------------------------------------------------------------------------------------------------------
# Acceptance 4: bad input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,msg", [
    ("just a log line\nanother\n", "Cannot find any kmemleak record"),
    ("\x00\xff\xfe garbage \x01\n" * 20, "Cannot find any kmemleak record"),
    ("unreferenced object 0xffff888100001000 (size 1024):\n  comm \"softirq\", pid 0, jiffies 1 (age 1.000s)\n"
     "  hex dump (first 32 bytes):\n    00 00 00 00 00 00 00 00 e7 7d 05 00 00 00 00 00  ................\n"
     "  backtrace:\n    [<ffffffff81000000>] free_iova_fast+0x1/0x2\n", "<stdin>:5: Cannot read the hex dump"),
    ("unreferenced object 0xffff888100001000 (size 1024) garbage\n", "<stdin>:1: Cannot parse kmemleak header"),
])
def test_unusable_input_exits_2(text: str, msg: str) -> None:
    code, out = _leaks("-", input=text)
    assert code == 2 and msg in out and out.startswith("iovatrace: error:")
    assert len(out.strip().splitlines()) == 1


def test_bad_kernel_and_missing_file(tmp_path: Path, shared_data: Path) -> None:
    code, out = _leaks("--kernel", "banana", str(_ml(shared_data, "01")))
    assert code == 2 and "Cannot read a kernel version" in out
    code, out = _leaks(str(tmp_path / "nope.txt"))
    assert code == 2 and "nope.txt" in out and "does not exist" in out  # one line from the CLI


def test_repeated_records_are_merged() -> None:
    objs = [mag(A, B, PF), mag(B, 0, PF)]
    d = diagnose(report(objs, "<=6.7") + report(objs, "<=6.7"), path="twice")
    (ch,) = d.chains
    assert ch.addresses == [A, B] and any("2 repeated record(s)" in n for n in d.notes)


def test_large_report_is_fast() -> None:
    import time

    addrs = [0xFFFF888300000000 + 0x400 * i for i in range(3000)]
    objs = [mag(a, addrs[i + 1] if i + 1 < len(addrs) else 0, PF) for i, a in enumerate(addrs)]
    objs += [other(0xFFFF888400000000 + 0x80 * i) for i in range(1000)]
    text = report(objs[::-1], "<=6.7")
    t0 = time.perf_counter()
    d = diagnose(text, path="big")
    elapsed = time.perf_counter() - t0
    (long,) = [c for c in d.chains if len(c.members) > 1]
    assert long.addresses == addrs and long.verdict == "transient_false_positive"
    assert len(d.chains) == 1 + 1000
    assert elapsed < 30, elapsed  # linear work; quadratic pointer matching took minutes at this size


def test_rcache_array_versus_init_magazine() -> None:
    arr = mag(A, 0, [0, 0, 0])
    arr.frames = _frames(["__kmalloc", "iova_domain_init_rcaches", "iommu_setup_dma_ops"])
    init_mag = mag(B, 0, [0, 0, 0])
    init_mag.frames = _frames(["__kmem_cache_alloc_node", "kmalloc_trace", "iova_domain_init_rcaches"])
    d = _diag([arr, init_mag], "<=6.7", kernel="6.5")
    kinds = {o.address: o.kind for o in d.objects}
    assert kinds == {A: "rcache_array", B: "iova_magazine"}
    by = {c.members[0].address: c for c in d.chains}
    assert by[A].verdict == "real_leak" and "put_iova_domain" in by[A].verdict_text
    assert by[B].verdict == "real_leak"  # 6.5: array depot, a 0 first word is an empty magazine


VERDICTS = {"transient_false_positive", "real_leak", "suspect_leak", "uninitialised_iova", "ambiguous",
            "inconsistent", "not_iova", "unknown"}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), fmt=st.sampled_from(FMTS), kernel=st.sampled_from([None, "5.15", "6.6", "6.7", "6.13"]))
def test_random_reports_keep_the_invariants(data: st.DataObject, fmt: str, kernel: str | None) -> None:
    n = data.draw(st.integers(1, 8))
    addrs = [0xFFFF888500000000 + 0x400 * i for i in range(n)]
    objs = []
    for a in addrs:
        first = data.draw(st.sampled_from([0, 1, 127, 128, 0xDEAD, IOVA_MAX]) | st.sampled_from(addrs + [X]))
        kind = data.draw(st.sampled_from(["mag", "iova", "other"]))
        if kind == "mag":
            objs.append(mag(a, first, PF, fmt, size=data.draw(st.sampled_from([1024, 2048]))))
        elif kind == "iova":
            objs.append(iova(a, data.draw(st.integers(0, IOVA_MAX)), data.draw(st.integers(0, IOVA_MAX)),
                             dump_len=data.draw(st.sampled_from([32, 64]))))
        else:
            o = other(a)
            o.hexdump = first.to_bytes(8, "little") + bytes(24)
            objs.append(o)
    d = _diag(objs, fmt, kernel=kernel)
    members = [m.address for c in d.chains for m in c.members]
    assert sorted(members) == sorted(addrs)  # every object in exactly one chain
    for c in d.chains:
        assert c.verdict in VERDICTS and c.verdict_text and c.evidence_lines
        if c.shape == "list":
            assert c.terminal == "NULL" and len(c.members) > 1
        for a, b in zip(c.members, c.members[1:]):
            if c.shape in ("list", "open") and a.kind == "iova_magazine":
                assert a.first_word == b.address  # each link is the previous magazine's next word


IOVA_MAX = (1 << 64) - 1


def test_dma_debug_assessment_with_and_without_page_pool() -> None:
    pending = ("DMA-API: pci 0000:00:01.0: device driver has pending DMA allocations while released from device "
               "[count=1]\nOne of leaked entries details: [size=2048 bytes] [mapped with DMA_BIDIRECTIONAL] "
               "[mapped as coherent]\n")
    pool = "page_pool_release_retry() stalled pool shutdown: id 51, 4032 inflight 26825 sec\n"
    (only,) = diagnose(pending, path="p").dma_assessment
    assert "1 DMA mapping(s) still live" in only and "2048 bytes, bidirectional, coherent" in only
    assert "ee62ce7a1d90" not in only
    both = diagnose(pending + pool, path="p").dma_assessment
    assert len(both) == 2 and "ee62ce7a1d90" in both[0] and "4032 page(s) in flight" in both[1]


def test_hashed_addresses_do_not_override_a_linked_depot() -> None:
    # %pK prints hashed values when kptr_restrict=0, so hashing is weak evidence next to magazines that link.
    objs = [mag(A, B, PF), mag(B, 0, PF)]
    for o in objs:
        o.frames = [KmemleakFrame(f.symbol, f.offset, f.size, None, None, "hashed", f"{0x1b204ddf + i:016x}", None,
                                  None, False, "") for i, f in enumerate(o.frames)]
    d = _diag(objs, "<=6.7")
    assert d.kernel.label == "6.7" and any(h.startswith("ignored") and "hashed" in h for h in d.kernel.how)
    (ch,) = d.chains
    assert ch.verdict == "transient_false_positive"
