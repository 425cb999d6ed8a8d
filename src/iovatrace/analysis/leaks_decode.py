"""Leak diagnosis, step 1: which kernel wrote the report, what each reported object is, what its bytes say.

Theory of operation:

* **Kernel facts.** The layout of an ``iova_magazine`` depends on the kernel (model_spec.md §2.2): 128 pfns and a
  2048-byte slab object up to v5.19, 127 pfns and 1024 bytes from v6.0; the first word is ``size`` everywhere
  except in a v6.7+ depot, where it is ``next`` (911aa1245da8); magazines come from the named cache
  ``iommu_iova_magazine`` from v6.9 (84e6f56be9c6); the kmemleak false positive is fixed by 7591c127f3b1 (v6.13,
  6.12-stable 992ea37a8ada). These facts are read from the replay's :mod:`iovatrace.replay.profiles`. With
  ``--kernel`` the profile is given; otherwise :func:`infer_kernel` narrows the version range from evidence in the
  report itself (print format, hashed vs real frame addresses, magazine size, allocator frames, whether magazines
  link to each other) and keeps every profile still possible; a fact is known only if all of them agree.
* **Classification** (:func:`classify`) uses size and backtrace: a magazine is 1024/2048 bytes allocated under
  ``free_iova_fast``/``__iova_rcache_insert``/``iova_magazine_alloc``/``iova_domain_init_rcaches``; a ``struct iova``
  (40 bytes, 64 with SLAB_HWCACHE_ALIGN or kmalloc-64) comes from ``alloc_iova_mem``/``alloc_iova``/
  ``reserve_iova``; the rcache array is the ``kcalloc`` in ``iova_domain_init_rcaches``; anything else is ``other``.
* **Decoding** (:func:`decode`) reads the dump as little-endian 64-bit words. Kernel pointers are words whose top
  16 bits are all ones (x86-64 and arm64 kernel halves), except ``~0``. A magazine's first word is ``next``
  (pointer or NULL) or ``size`` (1..mag_size); the following words are pfns. A ``struct iova`` is an rb_node (3
  words) then ``pfn_hi`` (offset 24) and ``pfn_lo`` (offset 32); kmemleak's default 32-byte dump shows only
  ``pfn_hi``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..parsers.logs.kmemleak import KmemleakObject
from ..replay.profiles import PROFILES, KernelProfile, profile_for

__all__ = [
    "IOVA_ANCHOR",
    "KernelFacts",
    "DecodedObject",
    "is_kernel_pointer",
    "infer_kernel",
    "classify",
    "decode",
]

#: pfn_lo/pfn_hi of the rbtree anchor node (~0UL), which free_iova_mem() never frees.
IOVA_ANCHOR = (1 << 64) - 1
_MASK64 = (1 << 64) - 1

_MAG_CALLERS = ("free_iova_fast", "__iova_rcache_insert", "iova_rcache_insert", "iova_magazine_alloc",
                "iova_domain_init_rcaches", "init_iova_rcaches")
_IOVA_CALLERS = ("alloc_iova_mem", "alloc_iova", "reserve_iova", "alloc_and_init_iova", "copy_reserved_iova",
                 "split_and_remove_iova", "__insert_new_range")
_RCACHE_ARRAY_ALLOCS = ("__kmalloc", "__kmalloc_noprof", "kcalloc", "kmalloc_array", "__kmalloc_node",
                        "kmalloc_array_noprof")
_CACHE_ALLOCS = ("kmem_cache_alloc", "kmem_cache_alloc_noprof", "kmem_cache_alloc_lru")


def is_kernel_pointer(word: int) -> bool:
    """True for a 64-bit word that can be a kernel virtual address (top 16 bits set, not ~0)."""
    return word >> 48 == 0xFFFF and word != _MASK64


@dataclass(slots=True)
class KernelFacts:
    """What the diagnosis knows about the reporting kernel.

    Attributes:
        lo: lowest possible ``(major, minor)``.
        hi: highest possible ``(major, minor)``.
        profiles: replay profiles still possible, oldest first.
        how: one sentence per piece of evidence (or ``--kernel``).
        given: the kernel came from ``--kernel``.
    """

    lo: tuple[int, int]
    hi: tuple[int, int]
    profiles: list[KernelProfile]
    how: list[str] = field(default_factory=list)
    given: bool = False

    def _agree(self, attr: str) -> object:
        vals = {getattr(p, attr) for p in self.profiles}
        return vals.pop() if len(vals) == 1 else None

    @property
    def list_depot(self) -> bool | None:
        """The depot is the v6.7+ linked list (``True``), the array (``False``), or unknown (``None``)."""
        v = self._agree("depot_kind")
        return None if v is None else v == "list"

    @property
    def transient_fixed(self) -> bool | None:
        """iova_depot_pop() calls kmemleak_transient_leak() (7591c127f3b1), if known."""
        return self._agree("kmemleak_transient_fixed")  # type: ignore[return-value]

    @property
    def mag_size(self) -> int | None:
        """IOVA_MAG_SIZE (127/128), if known."""
        return self._agree("mag_size")  # type: ignore[return-value]

    @property
    def mag_object_sizes(self) -> set[int]:
        """Every magazine slab size still possible."""
        return {p.mag_object_size for p in self.profiles}

    @property
    def label(self) -> str:
        """The version range in words (``"6.7"``, ``"6.2-6.7"``, ``">=6.13"``)."""
        lo, hi = self.lo, self.hi
        if lo == hi:
            return f"{lo[0]}.{lo[1]}"
        if hi >= (99, 0):
            return f">={lo[0]}.{lo[1]}" if lo > (0, 0) else "unknown"
        if lo <= (0, 0):
            return f"<={hi[0]}.{hi[1]}"
        return f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]}"


def _profiles_in(lo: tuple[int, int], hi: tuple[int, int]) -> list[KernelProfile]:
    return [p for p in PROFILES if p.first <= hi and p.last >= lo]


@dataclass(slots=True)
class DecodedObject:
    """One reported object with its classification and decoded words.

    Attributes:
        object_id: index in the report.
        obj: the parsed record.
        kind: ``"iova_magazine"``, ``"iova"``, ``"rcache_array"`` or ``"other"``.
        caller: the IOVA function in the backtrace that allocated it (or the first non-allocator frame).
        words: the dump as little-endian 64-bit words.
        first_word_role: magazine: ``"next"``, ``"size"``, ``"null_or_empty"``, ``"garbage"``; iova: ``"rb_parent"``.
        mag_size: magazine: pfn count when the first word is a size.
        pfns: magazine: pfns visible in the dump (valid ones only when the count is known).
        pfn_hi: struct iova: word at offset 24.
        pfn_lo: struct iova: word at offset 32, when the dump reaches it.
        pointers: ``(word index, value)`` of every word that looks like a kernel pointer.
        in_fq_timer: allocated in the flush-queue timer (fq_flush_timeout in the backtrace).
        hashed: the backtrace addresses are hashed ``%p`` values.
        notes: observations made while decoding.
    """

    object_id: int
    obj: KmemleakObject
    kind: str
    caller: str | None
    words: list[int]
    first_word_role: str | None = None
    mag_size: int | None = None
    pfns: list[int] = field(default_factory=list)
    pfn_hi: int | None = None
    pfn_lo: int | None = None
    pointers: list[tuple[int, int]] = field(default_factory=list)
    in_fq_timer: bool = False
    hashed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def address(self) -> int:
        """The object's address."""
        return self.obj.address

    @property
    def first_word(self) -> int | None:
        """The first 64-bit word of the dump, if any."""
        return self.words[0] if self.words else None


def _symbols(obj: KmemleakObject) -> list[str]:
    # Compiler suffixes (.isra.0, .constprop.0, .part.0, .cold) do not change which function it is.
    return [f.symbol.split(".")[0] for f in obj.frames if f.symbol]


def infer_kernel(objects: list[KmemleakObject], kernel: str | None = None) -> KernelFacts:
    """Decide which kernels could have written the report.

    Args:
        objects: the parsed records.
        kernel: the ``--kernel`` value, if given (then it wins).

    Returns:
        The :class:`KernelFacts`.

    Raises:
        ValueError: ``kernel`` names no known version.
    """
    if kernel:
        p = profile_for(kernel)
        return KernelFacts(p.first, p.last, [p], [f"--kernel {kernel}: profile {p.name}"], given=True)
    lo, hi = (0, 0), (99, 99)
    how: list[str] = []

    def narrow(new_lo: tuple[int, int], new_hi: tuple[int, int], why: str) -> None:
        nonlocal lo, hi
        if max(lo, new_lo) <= min(hi, new_hi):
            lo, hi = max(lo, new_lo), min(hi, new_hi)
            how.append(why)
        else:
            how.append(f"ignored (contradicts the rest): {why}")

    fmts = {o.format for o in objects}
    if "<=6.7" in fmts:
        narrow((0, 0), (6, 7), "'(age …)' on the comm line: kmemleak before 6.8")
    if "6.8-6.12" in fmts:
        narrow((6, 8), (6, 12), "'backtrace (crc …)' with a '[<addr>]' column: kmemleak 6.8-6.12")
    if ">=6.13" in fmts:
        narrow((6, 12), (99, 99), "no '[<addr>]' column: kmemleak 6.13+ (or 6.12-stable)")
    # Strong evidence first (what the objects are and how they link), weak last (how addresses were printed):
    # a narrowing that contradicts what is already known is reported and ignored.
    mags = [o for o in objects if _caller(o, _MAG_CALLERS)]
    sizes = {o.size for o in mags}
    if 1024 in sizes and 2048 not in sizes:
        narrow((6, 0), (99, 99), "1024-byte magazines: IOVA_MAG_SIZE 127 (6.0+)")
    elif 2048 in sizes and 1024 not in sizes:
        narrow((0, 0), (5, 19), "2048-byte magazines: IOVA_MAG_SIZE 128 (up to 5.19)")
    addrs = {o.address for o in mags}
    linked = sum(1 for o in mags if o.words() and o.words()[0] in addrs)
    if linked:
        narrow((6, 7), (99, 99), f"{linked} magazine(s) whose first word points at another reported magazine: "
                                 "the linked-list depot (911aa1245da8, 6.7+)")
    allocs = {s for o in mags for s in _symbols(o)[:3]}
    if allocs & set(_CACHE_ALLOCS) and 1024 in sizes:
        narrow((6, 9), (99, 99), "magazines from kmem_cache_alloc: named cache iommu_iova_magazine (6.9+)")
    elif allocs & {"kmalloc_trace", "__kmem_cache_alloc_node"}:
        narrow((6, 1), (6, 8), "magazines from kmalloc_trace: kmalloc'd magazines of the 6.1-6.8 allocator")
    kinds = {f.address_kind for o in objects for f in o.frames}
    if "hashed" in kinds:
        # %p hashing (4.15-6.1); later %pK also hashes when kptr_restrict=0, so this is weak evidence.
        narrow((4, 15), (6, 1), "hashed '[<%p>]' frame addresses: 4.15-6.1 (or %pK with kptr_restrict=0)")
    real64 = any(f.address_kind == "real" and len(f.address_text or "") == 16 for o in objects for f in o.frames)
    if real64 and "hashed" not in kinds and lo >= (4, 15):
        # Unhashed 64-bit addresses mean %pK (6.2+) once hashing (4.15) is ruled out.
        narrow((6, 2), (99, 99), "real '[<addr>]' frame addresses (%pK): 6.2+")
    profs = _profiles_in(lo, hi)
    if not profs:  # only possible with contradictions already ignored; fall back to everything
        profs, lo, hi = list(PROFILES), (0, 0), (99, 99)
    return KernelFacts(lo, hi, profs, how)


def _caller(obj: KmemleakObject, names: tuple[str, ...]) -> str | None:
    for s in _symbols(obj):
        if s in names:
            return s
    return None


def classify(obj: KmemleakObject, facts: KernelFacts) -> tuple[str, str | None]:
    """Classify one record.

    Args:
        obj: the record.
        facts: the kernel facts (magazine sizes still possible).

    Returns:
        ``(kind, caller)``: kind is ``"iova_magazine"``, ``"iova"``, ``"rcache_array"`` or ``"other"``; caller the
        IOVA function that allocated it (or ``None``).
    """
    syms = _symbols(obj)
    mag_caller = _caller(obj, _MAG_CALLERS)
    if mag_caller in ("iova_domain_init_rcaches", "init_iova_rcaches"):
        # The same function kcallocs the rcache array and allocates each CPU's loaded/prev magazines; the array
        # comes through the array allocators, a magazine through kmalloc_trace/kmem_cache_alloc.
        idx = syms.index(mag_caller)
        if set(syms[:idx]) & set(_RCACHE_ARRAY_ALLOCS) and obj.size not in facts.mag_object_sizes:
            return "rcache_array", mag_caller
        if set(syms[:idx]) & set(_RCACHE_ARRAY_ALLOCS) and "iova_magazine_alloc" not in syms[:idx]:
            return "rcache_array", mag_caller
    if mag_caller and obj.size in (1024, 2048):
        return "iova_magazine", mag_caller
    iova_caller = _caller(obj, _IOVA_CALLERS)
    if iova_caller and 40 <= obj.size <= 64:
        return "iova", iova_caller
    return "other", next((s for s in syms if not s.startswith(("kmem", "__kmem", "kmalloc", "__kmalloc",
                                                                  "slab", "kmemleak", "create_object"))), None)


def decode(object_id: int, obj: KmemleakObject, facts: KernelFacts) -> DecodedObject:
    """Classify and decode one record.

    Args:
        object_id: its index in the report.
        obj: the record.
        facts: what is known about the kernel.

    Returns:
        The :class:`DecodedObject`.
    """
    kind, caller = classify(obj, facts)
    words = obj.words()
    d = DecodedObject(object_id, obj, kind, caller, words,
                      in_fq_timer="fq_flush_timeout" in _symbols(obj),
                      hashed=any(f.address_kind == "hashed" for f in obj.frames))
    d.pointers = [(i, w) for i, w in enumerate(words) if is_kernel_pointer(w)]
    if len(obj.hexdump) % 8:
        d.notes.append(f"the dump's last {len(obj.hexdump) % 8} byte(s) do not fill a word and are ignored")
    if kind == "iova_magazine":
        _decode_magazine(d, facts)
    elif kind == "iova":
        _decode_iova(d)
    return d


def _decode_magazine(d: DecodedObject, facts: KernelFacts) -> None:
    if not d.words:
        d.notes.append("no hex dump: the magazine's contents cannot be read")
        return
    w0 = d.words[0]
    mag_size = facts.mag_size or (128 if d.obj.size == 2048 else 127)
    if is_kernel_pointer(w0):
        d.first_word_role = "next"
        if facts.list_depot is False:
            d.notes.append(f"first word 0x{w0:x} looks like a pointer, but on {facts.label} a magazine starts "
                           "with its size: the version is wrong or the memory was reused")
            d.first_word_role = "garbage"
    elif w0 == 0:
        d.first_word_role = "null_or_empty"
    elif w0 <= mag_size:
        d.first_word_role = "size"
        d.mag_size = w0
    else:
        d.first_word_role = "garbage"
        d.notes.append(f"first word 0x{w0:x} is neither a pointer nor a size ≤ {mag_size}")
    visible = d.words[1:]
    if d.first_word_role == "size" and d.mag_size is not None:
        d.pfns = visible[:d.mag_size]
    else:
        d.pfns = visible


def _decode_iova(d: DecodedObject) -> None:
    w = d.words
    if w:
        d.first_word_role = "rb_parent"
    if len(w) > 3:
        d.pfn_hi = w[3]
    if len(w) > 4:
        d.pfn_lo = w[4]
    if w and w[0] & ~3 == (d.address + 64) & _MASK64 or (w and w[0] & ~3 == (d.address + d.obj.size) & _MASK64):
        d.notes.append(f"rb_node parent word 0x{w[0]:x} points just past the object itself: the slab free-list "
                       "pointer of a never-initialised object, not a tree link")
