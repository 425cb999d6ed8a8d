"""Vectorised decoding of ring-buffer pages: record walk, timestamps, and event payloads into columns.

Theory of operation (see docs: perf_notes.md):

* **Lock-step walk.** Every page of a block keeps a cursor; one numpy step reads each active page's next record
  header word (pages are u32-aligned, records 4-byte aligned), computes its length and time delta, records data
  records, and advances. Pages leave the walk at their commit size, at null padding, or at damage (a record that
  overruns the committed bytes, a length-0 record). About 100 steps decode a block of thousands of pages, with no
  Python loop per record. Time extends, absolute timestamps and discarded-event padding update the per-page clock
  exactly as libtraceevent's kbuffer does, so timestamps equal ``trace-cmd report``'s.
* **Order.** Step *k* stores the *k*-th record of every active page in row *k* of a (steps × pages) matrix; reading
  the transpose back gives stream order (page, then position), which is the ``seq`` order, with no sort. Nothing
  is ever re-sorted by time.
* **Payloads.** Records of one event type are gathered as fixed-width rows through an overlapping byte view, and
  the row block is reinterpreted with a structured dtype whose fields sit at the format's offsets (one copy per
  event type, then free strided views). Strings and dynamic arrays are gathered with offset arithmetic into Arrow
  buffers. Everything here is numpy; pyarrow is only touched in :func:`build_columns`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .formats import EventFormat

__all__ = ["WalkResult", "walk_pages", "read_u", "build_columns", "np_to_arrow"]

_COMMIT_MASK = (1 << 27) - 1
_MISSED_EVENTS = 1 << 31
_MISSED_STORED = 1 << 30


@dataclass(slots=True)
class WalkResult:
    """Records of one page block, in stream order.

    Attributes:
        starts: flat byte offset of each data record's payload in the block (int64).
        lengths: payload length in bytes (int64, rounded up to 4 as stored).
        ts: raw timestamp of each record (uint64, clock units, no offsets applied).
        page_size: the block's page size (:attr:`pages` derives from it).
        missed: per page with the missed-events flag: (page index, count or -1).
        damage: per damaged page: (page index, byte position in page, reason, bytes lost).
    """

    starts: np.ndarray
    lengths: np.ndarray
    ts: np.ndarray
    page_size: int
    missed: list[tuple[int, int]] = field(default_factory=list)
    damage: list[tuple[int, int, str, int]] = field(default_factory=list)

    @property
    def pages(self) -> np.ndarray:
        """Page index in the block of each record (int64)."""
        return self.starts // self.page_size


def walk_pages(data: np.ndarray, npages: int, page_size: int, long_size: int, big_endian: bool,
               valid: np.ndarray | None = None, hdr: int | None = None) -> WalkResult:
    """Walk every record of ``npages`` pages laid out back to back in ``data``.

    Args:
        data: flat uint8 bytes (``npages * page_size`` or more).
        npages: pages to walk.
        page_size: sub-buffer size (multiple of 4).
        long_size: kernel long (size of the page's commit field): 4 or 8.
        big_endian: the file's byte order.
        valid: bytes present of each page (a cut file); default all.
        hdr: byte offset of the first record in a page (default ``8 + long_size``).

    Returns:
        The records, in stream order, and what the page headers say about losses and damage.
    """
    hdr = 8 + long_size if hdr is None else hdr
    words = page_size // 4
    e32 = ">u4" if big_endian else "<u4"
    e64 = ">u8" if big_endian else "<u8"
    body = data[: npages * page_size]
    p32 = body.view(e32).reshape(npages, words)
    page_ts = body.view(e64).reshape(npages, page_size // 8)[:, 0].astype(np.uint64)
    if long_size == 8:
        commit = body.view(e64).reshape(npages, page_size // 8)[:, 1].astype(np.uint64)
    else:
        commit = p32[:, 2].astype(np.uint64)
    size = (commit & np.uint64(_COMMIT_MASK)).astype(np.int64)
    end = hdr + size
    cap = np.full(npages, page_size, dtype=np.int64) if valid is None else np.minimum(valid, page_size)
    res_damage: list[tuple[int, int, str, int]] = []
    missed: list[tuple[int, int]] = []
    over = end > page_size
    if over.any():
        for p in np.nonzero(over)[0]:
            res_damage.append((int(p), 8, f"page commit size {int(size[p])} exceeds the page ({page_size - hdr})",
                               page_size - hdr))
        end[over] = hdr  # the page cannot be trusted at all
    flagged = np.nonzero(commit & np.uint64(_MISSED_EVENTS))[0]
    for p in flagged:
        cnt = -1
        if int(commit[p]) & _MISSED_STORED and not over[p] and end[p] + long_size <= cap[p]:
            off = int(p) * page_size + int(end[p])
            cnt = int.from_bytes(bytes(body[off: off + long_size]), "big" if big_endian else "little")
        missed.append((int(p), cnt))
    cut = end > cap
    end = np.minimum(end, cap)
    act = np.nonzero(end > hdr)[0]
    # Positions in u32 words from the block start (records are 4-byte aligned); e = end of committed data.
    pos = act * words + hdr // 4
    ts = page_ts[act].copy()
    e = act * words + end[act] // 4
    # Per step, per page: the word before the record's payload, its payload length in words + 1 (0 = no record
    # at this step) and its timestamp. Rows are steps, columns pages: each step writes one contiguous row; the
    # transpose at the end reads them back page by page in record order (stream order, no sort).
    rows = 128
    m_pos, m_len, m_ts = _step_matrices(rows, npages)
    step = 0
    flat32 = body.view(e32)
    nwords = flat32.size
    shift27 = np.uint64(27)
    top_mask = np.uint64(0xF8 << 56)
    u5, u27, u31 = np.uint32(5), np.uint32(27), np.uint32(31)
    while act.size:
        if step == rows:  # pages with many tiny records: grow the step matrices
            m_pos, m_len, m_ts = (np.concatenate([m, np.zeros_like(m)]) for m in (m_pos, m_len, m_ts))
            rows *= 2
        w = flat32[pos]
        tl = (w >> u27) if big_endian else (w & u31)
        if tl.min() >= 1 and tl.max() <= 28:
            # fast path, the common case: only small data records (type_len 1..28) in this step
            dl = (w & np.uint32(0x7FFFFFF)) if big_endian else (w >> u5)
            np.add(ts, dl, out=ts, casting="unsafe")
            nxt = pos + tl
            nxt += 1
            bad = nxt > e
            if bad.any():
                ok = ~bad
                _report(res_damage, act, pos, e, tl, (nxt - pos) * 4, bad, cut, words, None)
                a = act[ok]
                m_pos[step, a] = pos[ok]
                m_len[step, a] = tl[ok] + 1
                m_ts[step, a] = ts[ok]
                keep = ok & (nxt < e)
            else:
                m_pos[step, act] = pos
                m_len[step, act] = tl + 1
                m_ts[step, act] = ts
                keep = nxt < e
        else:
            tl = tl.astype(np.int64)
            dl = ((w & np.uint32(0x7FFFFFF)) if big_endian else (w >> u5)).astype(np.int64)
            a0 = flat32[np.minimum(pos + 1, nwords - 1)].astype(np.int64)
            lw = np.where(tl == 0, 1 + (a0 + 3) // 4, 1 + tl)  # record length in words
            lw = np.where(tl == 29, 1 + (a0 + 3) // 4, lw)
            lw = np.where(tl >= 30, 2, lw)
            nxt = pos + lw
            null_pad = (tl == 29) & (dl == 0)
            bad = ((tl == 0) & (a0 < 4)) | ((nxt > e) & ~null_pad)
            ok = ~bad & ~null_pad
            # clock: data and discarded-event padding add the delta; extends add array0<<27; TIME_STAMP is absolute
            dlu = dl.astype(np.uint64)
            a0u = a0.astype(np.uint64)
            ts = np.where(tl == 31, ((a0u << shift27) | dlu) | (ts & top_mask),
                          ts + np.where(tl == 30, (a0u << shift27) + dlu, dlu))
            take = (tl <= 28) & ok
            if take.any():
                big0 = tl == 0
                a = act[take]
                m_pos[step, a] = np.where(big0, pos + 1, pos)[take]
                m_len[step, a] = np.where(big0, (a0 - 4 + 3) // 4, tl)[take] + 1
                m_ts[step, a] = ts[take]
            if bad.any():
                _report(res_damage, act, pos, e, tl, lw * 4, bad, cut, words, a0)
            keep = ok & (nxt < e)
        step += 1
        pos = nxt
        if not keep.all():
            act, pos, ts, e = act[keep], pos[keep], ts[keep], e[keep]
    if step:
        lens = np.ascontiguousarray(m_len[:step].T)
        have = lens != 0
        lengths = lens[have].astype(np.int64)
        lengths -= 1
        lengths *= 4
        starts = np.ascontiguousarray(m_pos[:step].T)[have].astype(np.int64)
        starts += 1
        starts *= 4
        return WalkResult(starts, lengths, np.ascontiguousarray(m_ts[:step].T)[have], page_size, missed, res_damage)
    z = np.zeros(0, dtype=np.int64)
    return WalkResult(z, z, np.zeros(0, dtype=np.uint64), page_size, missed, res_damage)


_WORKSPACE = threading.local()


def _step_matrices(rows: int, npages: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The walk's (steps × pages) matrices, reused by each thread from block to block.

    Fresh arrays of this size cost a page fault per 4 KiB on first write (as much as the walk itself); only the
    length matrix must start zeroed (zero = no record), the others are read only where a length was written.
    """
    have = getattr(_WORKSPACE, "m", None)
    if have is None or have[0].shape[0] != rows or have[0].shape[1] < npages:
        have = (np.empty((rows, npages), dtype=np.int32), np.zeros((rows, npages), dtype=np.int32),
                np.empty((rows, npages), dtype=np.uint64))
        _WORKSPACE.m = have
    else:
        have[1].fill(0)
    return have[0][:, :npages], have[1][:, :npages], have[2][:, :npages]


def _report(sink: list[tuple[int, int, str, int]], act: np.ndarray, pos: np.ndarray, e: np.ndarray,
            tl: np.ndarray, length: np.ndarray, bad: np.ndarray, cut: np.ndarray, words: int,
            a0: np.ndarray | None) -> None:
    """Record each bad record (positions in words) as (page, byte offset in page, reason, bytes lost)."""
    for i in np.nonzero(bad)[0]:
        p = int(act[i])
        if cut[p]:
            continue  # the file was cut inside this page: the page reader reported it already
        if a0 is not None and tl[i] == 0 and a0[i] < 4:
            why = "length-0 record"
        else:
            why = f"record of {int(length[i])} bytes (type_len {int(tl[i])}) overruns the page's committed data"
        sink.append((p, (int(pos[i]) - p * words) * 4, why, int(e[i] - pos[i]) * 4))


def read_u(data: np.ndarray, starts: np.ndarray, size: int, big_endian: bool) -> np.ndarray:
    """Unsigned integers of ``size`` bytes at ``starts`` (int64 result for size ≤ 4, uint64 for 8)."""
    acc = np.zeros(starts.size, dtype=np.uint64)
    for k in range(size):
        b = data[starts + k].astype(np.uint64)
        sh = (size - 1 - k) * 8 if big_endian else k * 8
        acc |= b << np.uint64(sh)
    return acc.astype(np.int64) if size <= 4 else acc


_NP_INT = {(1, False): "u1", (2, False): "u2", (4, False): "u4", (8, False): "u8",
           (1, True): "i1", (2, True): "i2", (4, True): "i4", (8, True): "i8"}


def _gather_ranges(data: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``data[s:s+l]`` for each range; return (bytes, int32 offsets)."""
    lens = np.maximum(lens, 0)
    offsets = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    total = int(offsets[-1])
    if total == 0:
        return np.zeros(0, dtype=np.uint8), offsets
    idx = np.arange(total, dtype=np.int64) + np.repeat(starts - offsets[:-1], lens)
    return data[idx], offsets


def _cstr_lengths(flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Length of each range of ``flat`` up to its first NUL."""
    zeros = np.nonzero(flat == 0)[0]
    begin = offsets[:-1]
    endp = offsets[1:]
    if zeros.size == 0:
        return endp - begin
    k = np.searchsorted(zeros, begin)
    first = np.where(k < zeros.size, zeros[np.minimum(k, zeros.size - 1)], endp)
    return np.minimum(first, endp) - begin


_PA_TYPES: dict[Any, Any] = {}


def np_to_arrow(col: np.ndarray, atype: Any = None) -> Any:
    """A contiguous native-endian numeric numpy column as an Arrow array, without a copy.

    ``pa.Array.from_buffers`` rather than ``pa.array``: the latter's masked-array check imports ``numpy.ma``
    (≈ 10 ms of a convert's start) and costs a few µs more a call. Falls back to ``pa.array`` when ``atype`` is
    not the numpy dtype's own Arrow type.
    """
    import pyarrow as pa

    # bools are bit-packed in Arrow, other kinds need converting: pa.array does it
    if col.dtype.kind not in "iuf" or not col.flags.c_contiguous or not col.dtype.isnative:
        return pa.array(col, type=atype)
    t = _PA_TYPES.get(col.dtype)
    if t is None:
        t = _PA_TYPES[col.dtype] = pa.from_numpy_dtype(col.dtype)
    if atype is not None and atype != t:
        return pa.array(col, type=atype)
    return pa.Array.from_buffers(t, col.size, [None, pa.py_buffer(col)])


def _string_array(flat: np.ndarray, offsets: np.ndarray, strip_nul: bool = True) -> Any:
    import pyarrow as pa

    n = offsets.size - 1
    if strip_nul:
        lens = _cstr_lengths(flat, offsets)
        flat, offsets = _gather_ranges(flat, offsets[:-1], lens)
    if flat.size and (flat >= 0x80).any():
        # Not plain ASCII: decode row by row, replacing invalid UTF-8, so Arrow strings are always valid.
        fb = flat.tobytes()
        vals = [fb[offsets[i]:offsets[i + 1]].decode("utf-8", "replace") for i in range(n)]
        return pa.array(vals, type=pa.string())
    if offsets[-1] < (1 << 31):
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(flat.copy()))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(flat.copy())).cast(pa.string())


#: Strings up to this many bytes are gathered as fixed-width rows (longer ones byte range by byte range).
_SHORT = 256


def _short_strings(m: np.ndarray, ln: np.ndarray | int) -> Any:
    """C strings from the rows of ``m`` (n × width bytes), each at most ``ln`` bytes, cut at the first NUL.

    Equal to ``_string_array(_gather_ranges(...))`` on the same bytes, in a few whole-matrix numpy passes.
    """
    n, width = m.shape
    col = np.arange(width, dtype=np.int32)
    stop = m == 0
    if not np.isscalar(ln):
        stop |= col >= np.asarray(ln)[:, None]
    lens = np.where(stop.any(axis=1), stop.argmax(axis=1), width)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = m[col < lens[:, None]]
    return _string_array(flat, offsets, strip_nul=False)


def _binary_array(flat: np.ndarray, offsets: np.ndarray) -> Any:
    import pyarrow as pa

    return pa.BinaryArray.from_buffers(pa.binary(), offsets.size - 1, [None, pa.py_buffer(offsets.astype(np.int32)),
                                                                       pa.py_buffer(flat.copy())])


def _row_view(data: np.ndarray, width: int) -> np.ndarray:
    """``data`` as overlapping ``width``-byte items, one starting at every byte (no copy).

    Gathering records through this 1-D view copies each row as one item, about twice as fast as indexing the
    equivalent 2-D ``(n, width)`` uint8 view; never ``np.take`` from it (take copies a non-contiguous source whole).
    """
    return np.ndarray(shape=(data.size - width + 1,), dtype=np.dtype((np.void, width)), buffer=data, strides=(1,))


def build_columns(fmt: EventFormat, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray | None,
                  big_endian: bool, long_size: int, schema: Any,
                  common: tuple[int, int, int] | None = None) -> list[Any]:
    """Decode the payload fields of one event type's records into Arrow arrays.

    Args:
        fmt: the event's format.
        data: the block's flat bytes (padded, see pages.PAD).
        starts: payload start of each record in ``data``.
        lengths: payload length of each record (may be ``None`` when ``fmt.variable_size`` is false).
        big_endian: the file's byte order.
        long_size: kernel long size.
        schema: the table's Arrow schema (payload fields follow the common columns, in format order).
        common: offsets of (common_flags, common_preempt_count, common_pid): if given, their numpy columns
            are appended to the result (taken from the same row gather).

    Returns:
        One Arrow array per payload field, in format order (then flags, preempt, pid if ``common``).
    """
    import pyarrow as pa

    payload = fmt.payload_fields
    n = starts.size
    bo = ">" if big_endian else "<"
    width = max([f.offset + f.size for f in fmt.fields if f.kind != "tail"] + [8]
                + ([c + 4 for c in common] if common else []))
    width = (width + 7) & ~7
    rows_v = _row_view(data, width)[starts]  # one fixed-width item per record
    rows = rows_v.view(np.uint8).reshape(n, width)
    names, formats, offsets = [], [], []
    if common is not None:  # the common header rides along in the same rows: (flags, preempt, pid) offsets
        for nm, fm, off in zip(("c_flags", "c_preempt", "c_pid"), ("u1", "u1", bo + "i4"), common):
            if off + (4 if nm == "c_pid" else 1) <= width:
                names.append(nm)
                formats.append(fm)
                offsets.append(off)
    for i, f in enumerate(payload):
        if f.kind == "scalar":
            names.append(f"f{i}")
            formats.append(bo + _NP_INT[(f.size, f.signed)])
            offsets.append(f.offset)
        elif f.kind in ("dynamic", "relative"):
            names.append(f"f{i}")
            formats.append(bo + ("u4" if f.size == 4 else "u2"))
            offsets.append(f.offset)
    rec = rows_v.view(np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": width})) \
        if names else None
    ncommon = 8  # schema.COMMON_COLUMNS come first; bprint may append a text column after the payload
    out: list[Any] = []
    ends = starts + lengths if lengths is not None else None
    for i, f in enumerate(payload):
        atype = schema.field(ncommon + i).type
        if f.kind == "scalar":
            col = rec[f"f{i}"]  # type: ignore[index]
            out.append(np_to_arrow(col.astype(col.dtype.newbyteorder("=")), atype))
            continue
        if f.kind == "array":
            if pa.types.is_string(atype) and n:
                out.append(_short_strings(rows[:, f.offset:f.offset + f.size], f.size))
                continue
            flat = rows[:, f.offset:f.offset + f.size].reshape(-1)
            offs = np.arange(n + 1, dtype=np.int64) * f.size
        else:
            if f.kind in ("dynamic", "relative"):
                v = rec[f"f{i}"].astype(np.int64)  # type: ignore[index]
                if f.size == 4:
                    off = v & 0xFFFF
                    ln = v >> 16
                else:  # ancient 2-byte __data_loc: offset only, data to the end of the record
                    off = v
                    ln = lengths - v
                if f.kind == "relative":
                    off = off + f.offset + f.size
            else:  # tail: from the field's offset to the end of the (padded) payload
                off = np.full(n, f.offset, dtype=np.int64)
                ln = lengths - f.offset
            s = starts + off
            # out-of-record locations read as empty, as libtraceevent does
            okr = (off >= 0) & (ln >= 0) & (s + ln <= ends)
            ln = np.where(okr, ln, 0)
            s = np.where(okr, s, 0)
            wmax = int(ln.max()) if n else 0
            if pa.types.is_string(atype) and 0 < wmax <= _SHORT:
                # short strings (device and driver names): fixed-width rows, then a mask, no per-byte index
                m = _row_view(data, wmax)[s].view(np.uint8).reshape(n, wmax)
                out.append(_short_strings(m, ln))
                continue
            flat, offs = _gather_ranges(data, s, ln)
        if pa.types.is_string(atype):
            out.append(_string_array(flat, offs))
        elif pa.types.is_binary(atype):
            out.append(_binary_array(flat, offs))
        else:
            es = f.elem_size
            lens = (offs[1:] - offs[:-1]) // es * es
            flat2, offs2 = _gather_ranges(flat, offs[:-1], lens)
            vals = np.frombuffer(flat2.tobytes(), dtype=bo + _NP_INT[(es, f.signed)])
            vals = vals.astype(vals.dtype.newbyteorder("="))
            out.append(pa.ListArray.from_arrays(pa.array((offs2 // es).astype(np.int32)),
                                                pa.array(vals, type=atype.value_type)))
    if common is not None:
        out += [np.ascontiguousarray(rec["c_flags"]), np.ascontiguousarray(rec["c_preempt"]),  # type: ignore[index]
                rec["c_pid"].astype(np.int32)]  # type: ignore[index]
    return out
