"""The fast paths of parsers/decode.py against their plain formulations (hypothesis).

The walk's step matrices, the fixed-width void gather and the masked short strings must give exactly what the
simple versions give: byte ranges gathered one by one, cut at the first NUL, non-UTF-8 replaced.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iovatrace.parsers.decode import _gather_ranges, _row_view, _short_strings, _string_array

_BYTES = st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=60)


def _plain_strings(chunks: list[bytes], limits: list[int]) -> list[str]:
    out = []
    for c, n in zip(chunks, limits):
        b = c[:n]
        out.append(b.split(b"\0", 1)[0].decode("utf-8", "replace"))
    return out


@settings(max_examples=300, deadline=None)
@given(_BYTES, st.data())
def test_short_strings_equal_range_by_range(chunks: list[bytes], data: st.DataObject) -> None:
    width = max(len(c) for c in chunks) or 1
    m = np.zeros((len(chunks), width), dtype=np.uint8)
    for i, c in enumerate(chunks):
        m[i, :len(c)] = np.frombuffer(c, dtype=np.uint8)
    limits = [data.draw(st.integers(0, width)) for _ in chunks]
    got = _short_strings(m, np.array(limits, dtype=np.int64))
    assert got.type == pa.string()
    assert got.to_pylist() == _plain_strings([bytes(r) for r in m], limits)
    # a fixed-size char array: every row may use the whole width
    assert _short_strings(m, width).to_pylist() == _plain_strings([bytes(r) for r in m], [width] * len(chunks))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=64, max_size=2000), st.data())
def test_void_row_gather_and_strings_match_gather_ranges(blob: bytes, data: st.DataObject) -> None:
    buf = np.frombuffer(blob + bytes(256), dtype=np.uint8)
    n = data.draw(st.integers(1, 30))
    starts = np.array([data.draw(st.integers(0, len(blob) - 1)) for _ in range(n)], dtype=np.int64)
    width = data.draw(st.integers(1, 48))
    rows = _row_view(buf, width)[starts].view(np.uint8).reshape(n, width)
    for i, s in enumerate(starts.tolist()):
        assert bytes(rows[i]) == bytes(buf[s:s + width])
    lens = np.minimum(np.array([data.draw(st.integers(0, width)) for _ in range(n)], dtype=np.int64),
                      len(blob) - starts)
    flat, offs = _gather_ranges(buf, starts, lens)
    assert _short_strings(rows, lens).equals(_string_array(flat, offs))


def _page(records: list[tuple[int, int, int]], ps: int = 4096) -> bytes:
    """A little-endian page (8-byte long) from (kind, delta, words): kind 0 data, 1 time extend, 2 padding."""
    body = b""
    for kind, delta, words in records:
        if kind == 0:
            body += ((words & 31) | (delta << 5)).to_bytes(4, "little") + bytes(range(4 * words))[:4 * words]
        elif kind == 1:
            body += (30 | (delta << 5)).to_bytes(4, "little") + (words).to_bytes(4, "little")
        else:
            body += (29 | (delta << 5)).to_bytes(4, "little") + (4 + 4 * words).to_bytes(4, "little") + bytes(4 * words)
        if 16 + len(body) > ps:
            raise ValueError("page full")
    head = (10**9).to_bytes(8, "little") + len(body).to_bytes(8, "little")
    return (head + body).ljust(ps, b"\0")


_REC = st.tuples(st.sampled_from([0] * 8 + [1, 2]), st.integers(0, (1 << 27) - 1), st.integers(1, 3))


@settings(max_examples=60, deadline=None)
@example(pages=[[(0, 5, 1)] * 400, [(0, 7, 2), (1, 3, 9)] * 150])
@given(st.lists(st.lists(_REC, min_size=1, max_size=480), min_size=1, max_size=4))
def test_walk_matrices_equal_reference_walk(pages: list[list[tuple[int, int, int]]]) -> None:
    """Pages of up to 480 tiny records (more steps than the walk's first 128-row matrices hold)."""
    from iovatrace.parsers.decode import walk_pages

    from test_tracedat import reference_walk  # same folder (pytest puts it on sys.path)

    raw = []
    for recs in pages:
        while True:
            try:
                raw.append(_page(recs))
                break
            except ValueError:
                recs = recs[: len(recs) * 3 // 4]
    blob = b"".join(raw)
    data = np.frombuffer(blob + bytes(1 << 16), dtype=np.uint8)
    wr = walk_pages(data, len(raw), 4096, 8, False)
    want = [(p * 4096, ts, payload) for p, page in enumerate(raw) for ts, payload in reference_walk(page, 8, True, 16)]
    assert wr.starts.size == len(want)
    for (base, ts, payload), s, ln, t in zip(want, wr.starts.tolist(), wr.lengths.tolist(), wr.ts.tolist()):
        assert t == ts
        assert bytes(data[s:s + ln]) == payload
        assert s // 4096 == base // 4096


def _chunk_offsets(path, cpu_index: int) -> list[tuple[int, int]]:
    """(offset, compressed size) of each chunk of one CPU of a v7 compressed trace."""
    from iovatrace.parsers.tracedat import TraceDat

    with TraceDat(path) as tr:
        cd = tr.meta.buffers[0].cpus[cpu_index]
    blob = path.read_bytes()
    n = int.from_bytes(blob[cd.offset: cd.offset + 4], "little")
    at, out = cd.offset + 4, []
    for _ in range(n):
        csize = int.from_bytes(blob[at: at + 4], "little")
        out.append((at, csize))
        at += 8 + csize
    return out


def _read_all(path, monkeypatch, chunk_by_chunk: bool):
    from iovatrace.parsers import pages
    from iovatrace.parsers.tracedat import TraceDat

    with monkeypatch.context() as m:
        if chunk_by_chunk:
            m.setattr(pages, "_decompress_block", lambda *a, **k: None)
        with TraceDat(path, block_pages=32) as tr:
            tables = tr.read_tables()
            return tables, tr.damage, tr.lost_events()


def test_v7_block_decompression_equals_chunk_by_chunk(shared_data, tmp_path, monkeypatch) -> None:
    """A v7 block's chunks decompressed as one batch give what the chunk-by-chunk path gives: same tables, same
    damage reports, on a clean file, with a chunk that cannot decompress in mid-stream, and cut inside a chunk."""
    src = shared_data / "traces-lab" / "lazy_v7" / "trace.dat"
    blob = bytearray(src.read_bytes())
    chunks = _chunk_offsets(src, 0)
    assert len(chunks) > 20, "the trace should have many chunks per CPU"
    bad_at = chunks[len(chunks) // 2][0] + 8  # the compressed frame's magic number: decompression must fail
    corrupt = bytearray(blob)
    corrupt[bad_at: bad_at + 4] = b"\0\0\0\0"
    cut_at = chunks[len(chunks) // 3][0] + 8 + chunks[len(chunks) // 3][1] // 2
    cases = {"clean": src}
    for name, data in (("corrupt", corrupt), ("cut", blob[:cut_at])):
        p = tmp_path / f"{name}.dat"
        p.write_bytes(bytes(data))
        cases[name] = p
    for name, path in cases.items():
        fast = _read_all(path, monkeypatch, False)
        slow = _read_all(path, monkeypatch, True)
        assert sorted(fast[0]) == sorted(slow[0]), name
        for key in fast[0]:
            assert fast[0][key].equals(slow[0][key]), (name, key)
        assert fast[1] == slow[1], name
        assert fast[2].equals(slow[2]), name
        if name != "clean":
            assert fast[1], f"{name}: damage must be reported"
            assert sum(t.num_rows for t in fast[0].values()) < sum(t.num_rows for t in _read_all(
                src, monkeypatch, False)[0].values()), name
