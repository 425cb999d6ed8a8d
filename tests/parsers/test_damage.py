"""Damaged trace.dat files: cut at many offsets, bytes flipped in many copies (seeded).

Properties checked against the undamaged file's records (buffer, CPU, seq, timestamp, payload bytes):

* nothing but :class:`~iovatrace.errors.IovatraceError` subclasses escapes, whatever the damage;
* every record that lies entirely before the damage is returned, unchanged, at the same seq (plain data: the
  record's bytes end before the damaged offset; compressed data: its whole chunk does);
* a cut file is never silently short: when records are missing, ``damage`` lists where and what, and for plain
  data the number of pages reported lost equals the pages the CPU table declares beyond the cut;
* ``strict=True`` raises :class:`TraceFormatError` instead of returning a short result.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from iovatrace.errors import IovatraceError, TraceFormatError
from iovatrace.parsers.tracedat import TraceDat

SEED = 20261120


def _records(path: Path):
    """(buffer, cpu) -> list of (safe_until_offset, ts, payload bytes), in stream order."""
    tr = TraceDat(path)
    out: dict[tuple[str, int], list[tuple[int, int, bytes]]] = {}
    ends: dict[tuple[str, int], int] = {}
    comp = {b.name: b.compressed for b in tr.meta.buffers}
    for b in tr.meta.buffers:
        for cd in b.cpus:
            ends[(b.name, cd.cpu)] = cd.offset + cd.size + (4 if b.compressed else 0)
    for rb in tr.iter_record_blocks():
        offs = rb.record_offsets()
        data = rb.block.data
        lst = out.setdefault((rb.buffer, rb.cpu), [])
        for o, s, ln, ts in zip(offs.tolist(), rb.walk.starts.tolist(), rb.walk.lengths.tolist(),
                                rb.walk.ts.tolist()):
            lst.append((o + ln if not comp[rb.buffer] else o, ts, data[s:s + ln].tobytes()))
    for key, lst in out.items():
        if comp[key[0]]:  # a compressed record is safe once its whole chunk is: chunk end = next chunk start
            starts = sorted({x[0] for x in lst}) + [ends[key]]
            nxt = {a: b for a, b in zip(starts, starts[1:])}
            out[key] = [(nxt[o], ts, p) for o, ts, p in lst]
    tr.lost_events()  # the first full pass also collected losses; this must not raise either
    tr.close()
    return out, tr.meta, tr.damage


def _check(clean, path: Path, damage_at: int, exact_cut: bool = False) -> tuple[int, int, bool]:
    """Parse a damaged copy; check the properties; return (records kept before the damage, records returned,
    whether damage was reported)."""
    try:
        got, meta, damage = _records(path)
    except IovatraceError:
        # Damage in the metadata may make the file unreadable: allowed only if it is before all the data.
        first_data = min((o for lst in clean[0].values() for o, _, _ in lst), default=0)
        assert damage_at < first_data, f"{path.name}: error although damage at {damage_at} is after data"
        return 0, 0, True
    kept = total = 0
    for key, lst in clean[0].items():
        mine = got.get(key, [])
        total += len(mine)
        for i, (safe, ts, payload) in enumerate(lst):
            if safe > damage_at:
                break
            assert i < len(mine), f"{path.name}: record {key} #{i} before the damage at {damage_at} is missing"
            assert mine[i][1:] == (ts, payload), f"{path.name}: record {key} #{i} changed"
            kept += 1
    if exact_cut:
        n_clean = sum(len(v) for v in clean[0].values())
        if total < n_clean:
            assert damage, f"{path.name}: {n_clean - total} records missing but no damage reported"
            assert all(d.get("offset") is None or 0 <= d["offset"] <= max(damage_at, 1 << 62) for d in damage)
    return kept, total, bool(damage)


TARGETS = [
    ("traces-public/lisa_sched_load.dat", 30, 110),        # v6, plain pages
    ("traces-lab/boot_strict/trace.dat", 30, 110),         # v7 zstd
]


@pytest.mark.parametrize("rel,ncuts,_", TARGETS)
def test_truncated_files(shared_data, tmp_path, rel, ncuts, _):
    src = shared_data / rel
    clean = _records(src)
    meta = clean[1]
    data_lo = min(cd.offset for b in meta.buffers for cd in b.cpus if cd.size)
    size = src.stat().st_size
    rng = random.Random(SEED)
    # mostly inside the page data, a few inside the metadata, plus page-boundary cuts
    cuts = sorted({rng.randrange(data_lo, size) for _ in range(ncuts - 8)} | {rng.randrange(18, data_lo) for _ in range(4)}
                  | {data_lo + 4096 * k for k in range(1, 5)})
    blob = src.read_bytes()
    kept_total = 0
    for cut in cuts:
        p = tmp_path / f"cut{cut}.dat"
        p.write_bytes(blob[:cut])
        kept, _total, _ = _check(clean, p, cut, exact_cut=True)
        kept_total += kept
        if meta.version == 6 and cut > data_lo:
            tr = TraceDat(p)
            tr.event_counts()
            lost = sum(d.get("pages_lost") or 0 for d in tr.damage)
            want = 0
            for b in meta.buffers:
                for cd in b.cpus:
                    avail = max(0, min(cd.size, cut - cd.offset))
                    want += -(-cd.size // b.page_size) - -(-avail // b.page_size)
            assert lost == want, (cut, tr.damage)
            with pytest.raises(TraceFormatError):
                t2 = TraceDat(p, strict=True)
                t2.event_counts()
    assert kept_total > 0
    assert len(cuts) >= ncuts - 2


@pytest.mark.parametrize("rel,_,ncopies", TARGETS)
def test_flipped_bytes(shared_data, tmp_path, rel, _, ncopies):
    src = shared_data / rel
    clean = _records(src)
    meta = clean[1]
    data_lo = min(cd.offset for b in meta.buffers for cd in b.cpus if cd.size)
    blob = bytearray(src.read_bytes())
    rng = random.Random(SEED + 1)
    damaged_reports = 0
    for k in range(ncopies):
        # 80 % of the flips in the page data, the rest anywhere (metadata, options, strings)
        at = rng.randrange(data_lo, len(blob)) if rng.random() < 0.8 else rng.randrange(0, len(blob))
        bit = 1 << rng.randrange(8)
        blob[at] ^= bit
        p = tmp_path / "flip.dat"
        p.write_bytes(blob)
        blob[at] ^= bit
        damaged_reports += _check(clean, p, at)[2]
    assert damaged_reports > 0


def test_claimed_huge_section_is_an_error_not_an_allocation(tmp_path):
    """A 100-byte file whose header_page claims a 1 TB block."""
    import struct

    head = b"\x17\x08\x44tracing6\0" + bytes([0, 8]) + struct.pack("<I", 4096)
    blob = head + b"header_page\0" + struct.pack("<Q", 1 << 40) + b"x" * 50
    p = tmp_path / "huge.dat"
    p.write_bytes(blob[:100])
    with pytest.raises(TraceFormatError, match="expected 1099511627776 bytes"):
        TraceDat(p)


def test_cpu_table_beyond_file(shared_data, tmp_path):
    """A v6 file cut right after its CPU table: every CPU's pages are reported lost, nothing raised."""
    src = shared_data / "traces-public" / "trappy_trace_idle.dat"
    tr = TraceDat(src)
    data_lo = min(cd.offset for cd in tr.meta.buffers[0].cpus if cd.size)
    pages = sum(-(-cd.size // tr.meta.page_size) for cd in tr.meta.buffers[0].cpus)
    p = tmp_path / "t.dat"
    shutil.copy(src, p)
    with open(p, "r+b") as fh:
        fh.truncate(data_lo)
    t2 = TraceDat(p)
    assert t2.event_counts() == {}
    assert sum(d.get("pages_lost") or 0 for d in t2.damage) == pages
