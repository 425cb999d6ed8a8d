"""Per-CPU ring-buffer pages of a trace.dat, in bounded blocks, from plain or chunk-compressed data.

Theory of operation: each CPU of each buffer owns ``size`` bytes at ``offset`` (see tracedat_meta). Plain data
is read with ``os.preadv`` into a fresh buffer, ``block_pages`` pages at a time, so memory stays bounded and no
file mapping inflates the resident set; v7 compressed data is a u32 chunk count then ``(u32 csize, u32 usize,
bytes)`` chunks that decompress independently, gathered until a block is full (a block's chunks decompress
straight into its buffer in two halves, one on a pool thread; a chunk that fails sends the rest of that CPU through a
chunk-by-chunk path that accounts for every loss). A :class:`PageBlock` is a flat
``uint8`` array (zero-padded past the last page so fixed-width row views never read out of bounds), plus, per
page, where it came from (file offset of the page, or of its compressed chunk) and how many bytes of it exist.

Damage is reported, not raised (unless ``strict``): a CPU range past the end of the file, a chunk header that
overruns its range, a chunk that does not decompress. Each report says where, what was expected and how many
pages (or chunks) were lost, so a truncated file yields every page before the cut plus an exact loss count.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import TraceFormatError
from .tracedat_meta import MAX_DECOMPRESSED, BufferInfo, CpuData, Cursor, TraceMeta, decompress

__all__ = ["PageBlock", "iter_page_blocks", "PAD"]

#: Zero bytes after the last page of a block: fixed-width record rows may extend this far.
PAD = 1 << 16

DamageSink = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class PageBlock:
    """A run of consecutive pages of one CPU stream.

    Attributes:
        data: flat bytes, ``npages * page_size`` followed by at least :data:`PAD` zero bytes.
        npages: number of pages.
        page_size: sub-buffer size.
        src_offsets: file offset of each page (compressed data: of the chunk holding it), int64.
        valid: bytes of each page present in the file (``page_size`` unless the file was cut inside it), int64.
        first_page: index of the first page in its CPU stream (pages of lost chunks count too).
        compressed: the pages came from compressed chunks (``src_offsets`` are chunk offsets).
    """

    data: np.ndarray
    npages: int
    page_size: int
    src_offsets: np.ndarray
    valid: np.ndarray
    first_page: int
    compressed: bool = False


def _damage(sink: DamageSink, strict: bool, path: str, offset: int, msg: str, cpu: int, buffer: str,
            expected: str, **lost: int | None) -> None:
    """Report damage found at ``offset``: raise in strict mode, else hand the sink one dict (with what was lost)."""
    if strict:
        raise TraceFormatError(msg, path=path, offset=offset)
    sink({"offset": offset, "reason": msg, "cpu": cpu, "buffer": buffer, **lost, "expected": expected})


def _buffer(size: int, pool: list[np.ndarray] | None) -> np.ndarray:
    """A block buffer of at least ``size`` bytes (contents undefined): a recycled one when the pool has one.

    Reusing buffers saves a page fault per 4 KiB on every block (about a third of reading a page-cache-warm file).
    """
    while pool:
        try:
            buf = pool.pop()
        except IndexError:  # another thread took the last one
            break
        if buf.size >= size:
            return buf[:size]
    return np.empty(size, dtype=np.uint8)


def _iter_plain(fd: int, filesize: int, cd: CpuData, ps: int, block_pages: int, path: str, buffer: str,
                sink: DamageSink, strict: bool, pool: list[np.ndarray] | None = None) -> Iterator[PageBlock]:
    avail = max(0, min(cd.size, filesize - cd.offset))
    if avail < cd.size:
        total = -(-cd.size // ps)
        got = -(-avail // ps)
        lost = total - got
        msg = (f"CPU {cd.cpu} data claims {cd.size} bytes at 0x{cd.offset:x} but the file ends at 0x{filesize:x}; "
               f"expected {total} pages, {lost} missing (truncated?)")
        _damage(sink, strict, path, filesize, msg, cd.cpu, buffer, f"{cd.size} bytes of CPU {cd.cpu} pages",
                pages_lost=lost, bytes_lost=cd.size - avail)
    npages_total = -(-avail // ps)
    page = 0
    while page < npages_total:
        n = min(block_pages, npages_total - page)
        # a buffer per block (blocks may be decoded ahead in another thread); the caller may hand it back
        buf = _buffer(n * ps + PAD, pool)
        start = cd.offset + page * ps
        nbytes = min(n * ps, avail - page * ps)
        view = memoryview(buf)[: n * ps]
        got = os.preadv(fd, [view[:nbytes]], start) if nbytes else 0
        if got < nbytes:  # the file shrank under us
            nbytes = got
        buf[nbytes: n * ps + PAD] = 0
        valid = np.full(n, ps, dtype=np.int64)
        last_valid = nbytes - (n - 1) * ps
        valid[-1] = max(0, last_valid)
        offs = start + np.arange(n, dtype=np.int64) * ps
        yield PageBlock(buf, n, ps, offs, valid, page)
        page += n


class _WindowReader:
    """``pread`` through a window of a few MiB: chunk headers and small chunks come from memory (one system call
    per window instead of two per chunk)."""

    WINDOW = 4 << 20

    def __init__(self, fd: int, end: int) -> None:
        self.fd = fd
        self.end = end
        self.base = 0
        self.buf = b""

    def read(self, off: int, n: int) -> bytes:
        at = off - self.base
        if at < 0 or at + n > len(self.buf):
            self.base = off
            self.buf = os.pread(self.fd, max(n, min(self.WINDOW, self.end - off)), off)
            at = 0
        return self.buf[at: at + n]


def _iter_chunked(fd: int, filesize: int, cd: CpuData, meta: TraceMeta, ps: int, block_pages: int, buffer: str,
                  sink: DamageSink, strict: bool, pool: list[np.ndarray] | None = None) -> Iterator[PageBlock]:
    path = meta.path
    endian = "<" if meta.endian == "little" else ">"
    # The BUFFER option's size counts the chunks, not the u32 chunk count in front of them.
    end = cd.offset + 4 + cd.size
    if end > filesize:
        msg = (f"CPU {cd.cpu} compressed data claims {cd.size} bytes at 0x{cd.offset:x} but the file ends at "
               f"0x{filesize:x} (truncated?)")
        _damage(sink, strict, path, filesize, msg, cd.cpu, buffer, f"{cd.size} bytes of CPU {cd.cpu} chunks",
                bytes_lost=end - filesize)
        end = filesize

    read = _WindowReader(fd, end).read

    hdr = read(cd.offset, 4) if cd.offset + 4 <= end else b""
    if len(hdr) < 4:
        msg = f"CPU {cd.cpu} chunk count at 0x{cd.offset:x} is missing (truncated?)"
        _damage(sink, strict, path, cd.offset, msg, cd.cpu, buffer, "u32 chunk count")
        return
    nchunks = int.from_bytes(hdr, "little" if endian == "<" else "big")
    pos = cd.offset + 4
    pending: list[tuple[bytes, int]] = []
    pending_pages = 0
    first_page = 0  # stream index of the first pending page
    next_page = 0  # stream index of the next page to come (lost chunks advance it too)

    def flush() -> PageBlock:
        nonlocal pending, pending_pages
        buf, at, offs, valid = _block_layout([len(d) for d, _ in pending], [c for _, c in pending], ps, pool)
        for (data, _), a in zip(pending, at.tolist()):
            buf[a: a + len(data)] = np.frombuffer(data, dtype=np.uint8)
        blk = PageBlock(buf, pending_pages, ps, offs, valid, first_page, True)
        pending, pending_pages = [], 0
        return blk

    def jobs() -> Iterator[tuple[Any, ...]]:
        # chunk headers in file order; a bad header ends the CPU's data ("stop" comes after the chunks before it)
        at = pos
        for i in range(nchunks):
            if at + 8 > end:
                yield ("stop", at, f"CPU {cd.cpu} chunk {i} of {nchunks}: header at 0x{at:x} lies past the data end "
                       f"0x{end:x}; {nchunks - i} chunks lost", nchunks - i, "chunk header (u32 csize, u32 usize)")
                return
            h = read(at, 8)
            csize = int.from_bytes(h[:4], "little" if endian == "<" else "big")
            usize = int.from_bytes(h[4:], "little" if endian == "<" else "big")
            if at + 8 + csize > end or usize > MAX_DECOMPRESSED:
                yield ("stop", at, f"CPU {cd.cpu} chunk {i} of {nchunks} at 0x{at:x} claims {csize} compressed / "
                       f"{usize} bytes, beyond the data end 0x{end:x}; {nchunks - i} chunks lost", nchunks - i,
                       "a chunk inside the CPU's data")
                return
            yield ("chunk", i, at, usize, read(at + 8, csize))
            at += 8 + csize

    src: Iterator[tuple[Any, ...]] = jobs()
    # Fast path: a block's chunks decompress straight into its buffer, in two halves, one on the pool (zstd and zlib
    # release the GIL), one task per half rather than a future per 40 KiB chunk. At the first chunk that fails,
    # this CPU's remaining chunks, that block's included, go through the chunk-by-chunk path below, which
    # reports each loss and never lets a block span a lost chunk.
    while True:
        batch, stop = _take_block(src, ps, block_pages)
        blk = _decompress_block(batch, ps, meta.compression, path, endian, pool) if batch else None
        if blk is None:
            src = itertools.chain(batch, [stop] if stop else [], src)
            break
        blk.first_page = next_page
        next_page += blk.npages
        yield blk
        if stop is not None:
            src = iter([stop])
            break

    # Chunk by chunk, after a failure (rare: damaged files only), so every loss is reported where it happened.
    for job in src:
        if job[0] == "stop":
            _, at, msg, nlost, expected = job
            _damage(sink, strict, path, at, msg, cd.cpu, buffer, expected, chunks_lost=nlost)
            break
        _, i, at, usize, comp = job
        data, exc = _try_decompress(meta.compression, comp, usize, path, endian, at)
        if exc is not None:
            if strict:
                raise exc
            lost = -(-usize // ps)
            sink({"offset": at, "reason": f"CPU {cd.cpu} chunk {i}: {exc.message}", "cpu": cd.cpu,
                  "buffer": buffer, "pages_lost": lost, "chunks_lost": 1, "expected": "a valid compressed chunk"})
            data = b""
            if pending:  # keep page numbers honest: a block never spans a lost chunk
                yield flush()
            next_page += lost
        if data:
            if not pending:
                first_page = next_page
            pending.append((data, at))
            k = -(-len(data) // ps)
            pending_pages += k
            next_page += k
            if pending_pages >= block_pages:
                yield flush()
    if pending:
        yield flush()


def _take_block(src: Iterator[tuple[Any, ...]], ps: int, block_pages: int
                ) -> tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]:
    """The next block's chunk jobs (as many as fill ``block_pages``) and the "stop" job that ended them, if any."""
    batch: list[tuple[Any, ...]] = []
    pages = 0
    for job in src:
        if job[0] == "stop":
            return batch, job
        batch.append(job)
        pages += -(-job[3] // ps)
        if pages >= block_pages:
            break
    return batch, None


def _block_layout(sizes: list[int], coffs: list[int], ps: int, pool: list[np.ndarray] | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A block buffer for chunks of these decompressed ``sizes`` (file offsets ``coffs``), each starting on a page.

    Returns ``(buf, at, offs, valid)``: the buffer, zeroed past each chunk's data (rest of its last page, and
    :data:`PAD` at the end); each chunk's byte position in it; per page, its chunk's offset and bytes present.
    """
    usizes = np.array(sizes, dtype=np.int64)
    kpages = -(-usizes // ps)
    n = int(kpages.sum())
    at = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(kpages, out=at[1:])
    at *= ps
    buf = _buffer(n * ps + PAD, pool)
    buf[n * ps:] = 0
    offs = np.repeat(np.array(coffs, dtype=np.int64), kpages)
    valid = np.full(n, ps, dtype=np.int64)
    part = usizes % ps
    for i in np.flatnonzero(part).tolist():  # a chunk ending inside a page: the rest of that page is zero
        valid[at[i + 1] // ps - 1] = part[i]
        buf[at[i] + usizes[i]: at[i + 1]] = 0
    return buf, at[:-1], offs, valid


def _decompress_block(batch: list[tuple[Any, ...]], ps: int, alg: str, path: str, endian: str,
                      pool: list[np.ndarray] | None) -> PageBlock | None:
    """Decompress ``batch``'s chunks into one block (half here, half on the pool); ``None`` if any chunk fails."""
    buf, at, offs, valid = _block_layout([j[3] for j in batch], [j[2] for j in batch], ps, pool)

    def run(lo: int, hi: int) -> bool:
        for i in range(lo, hi):
            _, _, coff, usize, comp = batch[i]
            out, exc = _try_decompress(alg, comp, usize, path, endian, coff)
            if exc is not None:
                return False
            buf[at[i]: at[i] + usize] = np.frombuffer(out, dtype=np.uint8)
        return True

    mid = len(batch) // 2
    half = _pool().submit(run, mid, len(batch))
    ok = run(0, mid)
    if not (half.result() and ok):
        return None
    return PageBlock(buf, valid.size, ps, offs, valid, 0, True)


_POOL: list[Any] = []


def _pool() -> Any:
    """The process's decompression pool (two threads: this machine class has two cores to share)."""
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(2, thread_name_prefix="iovatrace-decompress"))
    return _POOL[0]


def _try_decompress(alg: str, comp: bytes, usize: int, path: str, endian: str,
                    at: int) -> tuple[bytes, TraceFormatError | None]:
    try:
        return decompress(alg, comp, usize, Cursor(b"", path, endian, 0, at)), None
    except TraceFormatError as exc:
        return b"", exc


def iter_page_blocks(fd: int, filesize: int, meta: TraceMeta, binfo: BufferInfo, cd: CpuData, *,
                     block_pages: int = 2048, sink: DamageSink, strict: bool = False,
                     pool: list[np.ndarray] | None = None) -> Iterator[PageBlock]:
    """Yield the pages of one CPU of one buffer as :class:`PageBlock` s.

    Args:
        fd: an open file descriptor of the trace.
        filesize: its size in bytes.
        meta: the trace's metadata.
        binfo: the buffer (instance).
        cd: the CPU's data range.
        block_pages: pages per block (bounds memory: ~block_pages × page_size bytes).
        sink: receives one dict per damage found.
        strict: raise :class:`TraceFormatError` on the first damage instead.
        pool: buffers the caller is done with, to read uncompressed blocks into (it appends them back itself).

    Yields:
        Page blocks in stream order.
    """
    if cd.size == 0:
        return
    ps = binfo.page_size
    if cd.offset > filesize:
        msg = f"CPU {cd.cpu} data offset 0x{cd.offset:x} lies beyond the file end 0x{filesize:x}"
        _damage(sink, strict, meta.path, cd.offset, msg, cd.cpu, binfo.name, "CPU data in the file",
                pages_lost=-(-cd.size // ps) if not binfo.compressed else None)
        return
    if binfo.compressed:
        yield from _iter_chunked(fd, filesize, cd, meta, ps, block_pages, binfo.name, sink, strict, pool)
    else:
        yield from _iter_plain(fd, filesize, cd, ps, block_pages, meta.path, binfo.name, sink, strict, pool)
