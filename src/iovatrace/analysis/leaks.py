"""Leak diagnosis, step 2: link reported objects into chains and give each chain a verdict with its reasons.

Theory of operation: kmemleak reports objects nothing seems to reference; whether that is a leak depends on what
the objects are and on how they point at each other. After :mod:`.leaks_decode` has classified and decoded every
object, :func:`build_chains` links them through pointer words: a magazine through its first word (``next`` in a
v6.7+ depot list), any other object through every word that points into another reported object. Each weakly
connected group becomes one :class:`Chain` whose ``shape`` says how it hangs together:

* ``list``: a path whose tail's first word is NULL (a depot list tail); ``open``: a path whose tail points at an
  object kmemleak did not report (a missing middle); ``lone``: one object linked to nothing; ``fork``: two objects
  point at the same one (impossible in a singly linked list); ``cycle``: no head at all.

Heads are objects no other reported object points to. :func:`judge` then applies the root-cause rules of
model_spec.md §3(a) and the 2019 struct iova leak (472d26df5e80) and writes a verdict, the reasoning as a list of
sentences, the evidence lines (header and dump rows of the input) and what to do next. Everything here is pure:
no files, no printing; :mod:`.leaks_cli` renders.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..parsers.logs.dmadebug import DmaDebugReport, parse_dma_debug
from ..parsers.logs.kmemleak import KmemleakObject, UnusableReportError, parse_kmemleak
from .leaks_decode import IOVA_ANCHOR, DecodedObject, KernelFacts, decode, infer_kernel

__all__ = ["Chain", "LeakDiagnosis", "assess_dma_debug", "build_chains", "cross_references", "judge", "diagnose", "FIX_TRANSIENT", "FIX_IOVA_INIT"]

#: 7591c127f3b1 "kmemleak: iommu/iova: fix transient kmemleak false positive" (v6.13-rc1; 6.12.y 992ea37a8ada).
FIX_TRANSIENT = "7591c127f3b1"
#: 472d26df5e80 "iommu/iova: Init the struct iova to fix the possible memleak" (v5.5; Fixes: bb68b2fbfbd6).
FIX_IOVA_INIT = "472d26df5e80"
#: IOVA granule assumed when turning pfns into addresses (4 KiB: x86 VT-d/AMD, most arm64 SMMU setups).
GRANULE_SHIFT = 12


@dataclass(slots=True)
class Chain:
    """A group of reported objects linked by pointer words, with its verdict.

    Attributes:
        chain_id: number of the chain.
        members: decoded objects from head to tail (for forks: each branch in turn; for cycles: from the lowest
            address).
        shape: ``"list"``, ``"open"``, ``"lone"``, ``"fork"`` or ``"cycle"``.
        terminal: what the tail's link word holds: ``"NULL"``, ``"0x… (not reported)"``, ``"size N (not a link)"``,
            or ``None``.
        what: what the chain is, in words.
        verdict: verdict code (``transient_false_positive``, ``real_leak``, ``suspect_leak``,
            ``uninitialised_iova``, ``ambiguous``, ``inconsistent``, ``not_iova``, ``unknown``).
        verdict_text: the verdict in a sentence.
        reasoning: the steps that led to it.
        evidence_lines: input line numbers that support it.
        next_steps: what to do next.
    """

    chain_id: int
    members: list[DecodedObject]
    shape: str
    terminal: str | None
    what: str = ""
    verdict: str = "unknown"
    verdict_text: str = ""
    reasoning: list[str] = field(default_factory=list)
    evidence_lines: list[int] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> list[int]:
        """Member addresses in chain order."""
        return [m.address for m in self.members]


@dataclass(slots=True)
class LeakDiagnosis:
    """The whole diagnosis of one report.

    Attributes:
        path: the report's name.
        kernel: what is known about the kernel.
        objects: every decoded object in report order.
        chains: the chains with verdicts.
        dma_debug: dma-debug and page_pool warnings found in the same input.
        dma_assessment: what the dma-debug and page_pool warnings mean, one sentence per device or pool.
        notes: report-wide remarks (hashed addresses, skipped lines).
        lines: input text by line number (for evidence).
    """

    path: str | None
    kernel: KernelFacts
    objects: list[DecodedObject]
    chains: list[Chain]
    dma_debug: list[DmaDebugReport]
    notes: list[str]
    lines: dict[int, str]
    dma_assessment: list[str] = field(default_factory=list)


class _Spans:
    """Reported objects by address range, for "which object does this word point into" in O(log n)."""

    def __init__(self, objs: list[DecodedObject]) -> None:
        self.objs = sorted(objs, key=lambda d: d.address)
        self.starts = [d.address for d in self.objs]

    def find(self, word: int) -> DecodedObject | None:
        i = bisect.bisect_right(self.starts, word) - 1
        if i < 0:
            return None
        d = self.objs[i]
        return d if word < d.address + max(d.obj.size, 1) else None


def _links(d: DecodedObject, by_addr: dict[int, DecodedObject], spans: _Spans) -> list[int]:
    """Addresses of reported objects ``d`` points at."""
    if d.kind == "iova_magazine":
        # Only the first word links magazines (the depot's next); pfns are small numbers, never pointers.
        w0 = d.first_word
        return [w0] if w0 is not None and d.first_word_role == "next" and w0 in by_addr else []
    out: list[int] = []
    for _, w in d.pointers:
        t = spans.find(w)
        # Chains join objects of one kind; a reference across kinds is reported, not followed (see judge).
        if t is not None and t.address != d.address and t.address not in out and t.kind == d.kind:
            out.append(t.address)
    return out


def cross_references(objs: list[DecodedObject]) -> list[tuple[int, int, int]]:
    """References between reported objects of different kinds.

    Returns:
        ``(from address, word index, to address)`` for every pointer word of one object that points into a
        reported object of another kind.
    """
    spans = _Spans(objs)
    out = []
    for d in objs:
        for i, w in d.pointers:
            t = spans.find(w)
            if t is not None and t.kind != d.kind:
                out.append((d.address, i, t.address))
    return out


def build_chains(objs: list[DecodedObject]) -> list[Chain]:
    """Link decoded objects into chains (see the module docstring for the shapes).

    Args:
        objs: decoded objects.

    Returns:
        Chains ordered by their first member's position in the report; every object is in exactly one.
    """
    by_addr = {d.address: d for d in objs}
    spans = _Spans(objs)
    succ = {d.address: _links(d, by_addr, spans) for d in objs}
    pred: dict[int, list[int]] = {d.address: [] for d in objs}
    for a, outs in succ.items():
        for b in outs:
            pred[b].append(a)
    # Weakly connected components, in report order.
    seen: set[int] = set()
    comps: list[list[int]] = []
    for d in objs:
        if d.address in seen:
            continue
        stack, comp = [d.address], []
        seen.add(d.address)
        while stack:
            a = stack.pop()
            comp.append(a)
            for b in succ[a] + pred[a]:
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
        comps.append(comp)
    order = {d.address: i for i, d in enumerate(objs)}
    chains: list[Chain] = []
    for comp in sorted(comps, key=lambda c: min(order[a] for a in c)):
        heads = sorted((a for a in comp if not pred[a]), key=order.__getitem__)
        simple = all(len(succ[a]) <= 1 and len(pred[a]) <= 1 for a in comp)
        if not heads:
            start = min(comp)
            path = [start]
            while succ[path[-1]] and succ[path[-1]][0] != start:
                path.append(succ[path[-1]][0])
            rest = [a for a in sorted(comp, key=order.__getitem__) if a not in path]
            shape, members = "cycle", path + rest
        else:
            members = []
            placed: set[int] = set()
            for h in heads:
                cur: int | None = h
                while cur is not None and cur not in placed:
                    members.append(cur)
                    placed.add(cur)
                    cur = succ[cur][0] if succ[cur] else None
            members += [a for a in sorted(comp, key=order.__getitem__) if a not in placed]
            shape = "fork" if not simple else ("lone" if len(comp) == 1 else "path")
        tail = by_addr[members[-1]]
        terminal = _terminal(tail, by_addr)
        if shape == "path":
            shape = "list" if terminal == "NULL" else "open"
        elif shape == "lone" and terminal is not None and terminal != "NULL" and tail.first_word_role == "next":
            shape = "open"
        chains.append(Chain(len(chains), [by_addr[a] for a in members], shape, terminal))
    return chains


def _terminal(tail: DecodedObject, by_addr: dict[int, DecodedObject]) -> str | None:
    if tail.kind != "iova_magazine" or tail.first_word is None:
        return None
    if tail.first_word_role == "null_or_empty":
        return "NULL"
    if tail.first_word_role == "next" and tail.first_word not in by_addr:
        return f"0x{tail.first_word:x} (not reported)"
    if tail.first_word_role == "size":
        return f"size {tail.mag_size} (not a link)"
    return None


def _evidence(chain: Chain) -> list[int]:
    out: list[int] = []
    for m in chain.members:
        out.append(m.obj.line)
        # Header, comm and hex rows come first; the backtrace (not evidence about contents) follows.
        for ln, text in m.obj.lines[1:]:
            if text.startswith("backtrace"):
                break
            out.append(ln)
    return sorted(set(out))


def _pfn_text(pfns: Iterable[int]) -> str:
    return ", ".join(f"0x{p:x}" for p in pfns) or "none visible"


def judge(chain: Chain, k: KernelFacts) -> None:
    """Fill in the chain's ``what``, ``verdict``, ``verdict_text``, ``reasoning``, ``evidence_lines``, ``next_steps``.

    Args:
        chain: a chain from :func:`build_chains`.
        k: what is known about the kernel.
    """
    chain.evidence_lines = _evidence(chain)
    kinds = {m.kind for m in chain.members}
    if kinds == {"iova_magazine"}:
        _judge_magazines(chain, k)
    elif kinds == {"iova"} and len(chain.members) == 1:
        _judge_iova(chain.members[0], chain, k)
    elif kinds == {"rcache_array"}:
        chain.what = "the rcache array of an iova_domain"
        chain.verdict, chain.verdict_text = "real_leak", (
            "real leak: the per-domain rcache array is freed only by put_iova_domain(); a domain was dropped "
            "without it, or iova_domain_init_rcaches() failed half-way")
        chain.reasoning.append("allocated by the kcalloc in iova_domain_init_rcaches; nothing references it")
        chain.next_steps.append("find the iova_domain owner that was freed without put_iova_domain() "
                                "(record with 'iovatrace record' and run 'iovatrace leaks --trace')")
    elif kinds <= {"other"}:
        m = chain.members[0]
        chain.what = f"{len(chain.members)} object(s) not from the IOVA code (allocated in {m.caller or '?'})"
        chain.verdict, chain.verdict_text = "not_iova", "not an IOVA object: outside what this tool can judge"
        chain.reasoning.append("neither its size nor its backtrace matches an iova_magazine, struct iova or "
                               "rcache array")
        chain.next_steps.append("read it with 'iovatrace kmemleak'; the allocating function is the place to look")
    else:
        chain.what = "objects of different kinds pointing at each other: " + ", ".join(sorted(kinds))
        chain.verdict, chain.verdict_text = "inconsistent", (
            "inconsistent: IOVA objects do not point at each other like this; stale or reused memory")
        chain.reasoning.append("a pointer word links objects of different kinds")
        chain.next_steps.append("re-scan (echo scan > /sys/kernel/debug/kmemleak) and compare")
    if chain.verdict in ("transient_false_positive", "real_leak", "suspect_leak", "uninitialised_iova") and \
            any(m.hashed for m in chain.members):
        chain.reasoning.append("the backtrace addresses are hashed %p values: they cannot be symbolised or matched "
                               "against System.map; only symbol+offset/size can (faddr2line)")


def _judge_magazines(chain: Chain, k: KernelFacts) -> None:
    ms = chain.members
    n = len(ms)
    callers = sorted({m.caller or "?" for m in ms})
    timer = all(m.in_fq_timer for m in ms)
    where = f"all allocated from {', '.join(callers)}" + (" in the flush-queue timer" if timer else "")
    r = chain.reasoning
    r.append(f"{n} object(s) of {ms[0].obj.size} bytes allocated under {', '.join(callers)}: struct iova_magazine "
             f"(kernel {k.label}, {'given' if k.given else 'inferred from the report'}; magazine layout: "
             + ("next/size word then pfns" if k.list_depot else "size word then pfns" if k.list_depot is False
                else "size word, or next in a v6.7+ depot") + ")")
    for m in ms:
        role = {"next": f"next = 0x{m.first_word or 0:x}", "null_or_empty": "first word 0 (next = NULL, or size 0)",
                "size": f"size = {m.mag_size}", "garbage": f"first word 0x{m.first_word or 0:x} (garbage)"}.get(
            m.first_word_role or "", "no dump")
        r.append(f"0x{m.address:x} (line {m.obj.line}): {role}; pfns {_pfn_text(m.pfns)}")
    if chain.shape in ("fork", "cycle"):
        chain.what = f"{n} magazines linked as a {chain.shape}"
        chain.verdict, chain.verdict_text = "inconsistent", (
            f"inconsistent: a depot list is singly linked and ends in NULL, so a {chain.shape} means stale next "
            "words of freed and reused magazines or a corrupted list")
        r.append("two magazines point at the same next" if chain.shape == "fork" else "the next words form a loop")
        chain.next_steps += ["re-scan and compare; if it persists, run with KASAN (use-after-free of a magazine)"]
        return
    sizes = [m for m in ms if m.first_word_role == "size"]
    if sizes:
        m = sizes[0]
        chain.what = f"a magazine holding {m.mag_size} pfn(s) (size word set), not in a depot list"
        chain.verdict, chain.verdict_text = "real_leak", (
            f"real leak: an unreferenced magazine with a valid size {m.mag_size} and cached pfns; the IOVAs it "
            "holds never go back to the rbtree")
        r.append("a valid size word means the magazine was a CPU's loaded/prev magazine (or an array-depot entry), "
                 "which the rcache always references while the domain lives")
        chain.next_steps += ["check rcache teardown (free_iova_rcaches / iova_cpuhp_dead) for the domain that held "
                             "these pfns", "correlate with a trace: iovatrace leaks REPORT --trace TRACE"]
        return
    if chain.shape == "open":
        chain.what = f"{n} magazine(s) whose list continues into {chain.terminal}"
        chain.verdict, chain.verdict_text = "suspect_leak", (
            "suspect: the list continues into an object kmemleak did not report (still referenced, or freed), so "
            "this is not a plain depot tail; a missing middle")
        chain.next_steps += ["re-scan (echo scan > /sys/kernel/debug/kmemleak): transient reports disappear",
                             "check whether the unreported object is another chain's missing link"]
        return
    if chain.terminal != "NULL":
        chain.what = f"{n} magazine(s) whose contents cannot be read"
        chain.verdict, chain.verdict_text = "unknown", "unknown: no usable first word"
        chain.next_steps.append("get a report with hex dumps (kmemleak prints the first 32 bytes)")
        return
    head_note = "no head reported" if n > 1 else "nothing reported points at it"
    desc = (f"a depot list tail of {n} magazines" if n > 1 else "a single magazine whose first word is 0 "
            "(a one-magazine depot tail, or an empty magazine)")
    chain.what = f"{desc}, {where}, {head_note}"
    if k.list_depot is False:
        chain.verdict, chain.verdict_text = "real_leak", (
            f"real leak: on {k.label} the depot is an array and a magazine starts with its size; size 0 = an "
            "empty magazine nothing references")
        r.append("array-depot kernels have no next word, so a 0 first word is size 0")
        chain.next_steps.append("check free_iova_rcaches for this kernel")
        return
    fixed = k.transient_fixed
    if n > 1:
        r.append("every next word points at another reported magazine and the tail's is NULL: the layout of the "
                 "v6.7+ depot list (911aa1245da8), which only full magazines enter")
    elif k.list_depot is None:
        chain.verdict, chain.verdict_text = "ambiguous", (
            f"ambiguous on {k.label}: on 6.7-6.12 probably the kmemleak transient false positive (a one-magazine "
            f"depot tail, fixed by {FIX_TRANSIENT}); on 6.6 or older an empty magazine nothing references (a real "
            "but harmless leak of one magazine, no IOVAs lost)")
        r.append("a first word of 0 is next = NULL in a v6.7+ depot and size = 0 elsewhere; the report does not "
                 "say which kernel wrote it")
        chain.next_steps += ["pass --kernel VERSION", "re-scan (echo scan > /sys/kernel/debug/kmemleak): a "
                             "transient report disappears"]
        return
    else:
        r.append("on a v6.7+ kernel a first word of 0 in a magazine full of pfns is a depot tail's NULL next "
                 "(only full magazines enter the depot)")
    r.append(f"{head_note}: the head is still referenced (by rcache->depot or by a magazine just popped), so the "
             "list is reachable; kmemleak saw it unreferenced because iova_depot_pop() rewrote the popped "
             "magazine's next word with its size before kmemleak scanned that magazine, and the successors' "
             "contents (hence checksums) did not change")
    if fixed is True and not any(p.name == "6.12" for p in k.profiles):
        chain.verdict, chain.verdict_text = "suspect_leak", (
            f"suspect leak: looks like the transient false positive, but this kernel ({k.label}) has "
            f"{FIX_TRANSIENT} (kmemleak_transient_leak in iova_depot_pop), so a depot list that stays "
            "unreferenced means its head was lost (e.g. an rcache freed without draining its depot)")
        chain.next_steps += ["re-scan twice; if still reported, trace domain teardown (put_iova_domain) with "
                             "'iovatrace record' and run 'iovatrace leaks --trace'"]
        return
    sure = "" if n > 1 else "probably "
    maybe = " (6.12: unless your 6.12.y already has the backport 992ea37a8ada)" if fixed is not False else ""
    chain.verdict = "transient_false_positive"
    chain.verdict_text = (f"{sure}the 6.7-6.12 kmemleak transient false positive, fixed by {FIX_TRANSIENT} "
                          f"(v6.13-rc1, 6.12-stable 992ea37a8ada){maybe}; not a leak")
    chain.next_steps += [
        "nothing leaked: the magazines are in the depot; 'echo scan > /sys/kernel/debug/kmemleak' again and they "
        "are no longer reported once referenced",
        f"to stop the reports, use a kernel with {FIX_TRANSIENT} (6.13+, or 6.12.y with 992ea37a8ada)",
    ]


def _judge_iova(m: DecodedObject, chain: Chain, k: KernelFacts) -> None:
    r = chain.reasoning
    r.append(f"0x{m.address:x} (line {m.obj.line}): {m.obj.size} bytes allocated under {m.caller}: a struct iova "
             "(rb_node, then pfn_hi at offset 24 and pfn_lo at offset 32)")
    r += m.notes
    lo, hi = m.pfn_lo, m.pfn_hi
    if lo is None or hi is None:
        chain.what = f"a struct iova (pfn_hi = {'?' if hi is None else hex(hi)}; pfn_lo beyond the dump)"
        chain.verdict, chain.verdict_text = "suspect_leak", (
            "suspect leak of an IOVA range; the dump is too short to show pfn_lo (kmemleak prints 32 bytes)")
        r.append("pfn_lo lies at offset 32, past the dump")
        chain.next_steps += ["correlate with a trace (--trace) to find the allocation with this pfn_hi"]
        return
    if lo == IOVA_ANCHOR or lo > hi:
        chain.what = (f"a struct iova with pfn_lo = 0x{lo:x}{' (IOVA_ANCHOR)' if lo == IOVA_ANCHOR else ''} and "
                      f"pfn_hi = 0x{hi:x}: not a live range")
        chain.verdict = "uninitialised_iova"
        chain.verdict_text = (
            "real leak of an uninitialised node left behind on the allocation-failure path: alloc_iova_mem() "
            "returned uninitialised memory whose pfn_lo happened to equal IOVA_ANCHOR, so when "
            "__alloc_and_insert_iova_range() failed (-ENOMEM) free_iova_mem() skipped it as if it were the anchor; "
            f"fixed by {FIX_IOVA_INIT} ('iommu/iova: Init the struct iova to fix the possible memleak', v5.5, "
            "Fixes: bb68b2fbfbd6)")
        r.append("pfn_lo > pfn_hi cannot be an allocated range; IOVA_ANCHOR (~0) in pfn_lo is the anchor's marker, "
                 "which free_iova_mem() refuses to free")
        if k.lo >= (5, 5):
            r.append(f"this kernel ({k.label}) should already zero new nodes ({FIX_IOVA_INIT}); look for another "
                     "path that allocates struct iova without initialising it")
        else:
            r.append(f"kernels before {FIX_IOVA_INIT} (v5.5) allocate struct iova with kmem_cache_alloc, not "
                     f"kmem_cache_zalloc; this report's kernel is {k.label}")
        chain.next_steps += [f"use a kernel with {FIX_IOVA_INIT} (v5.5; in 5.4.y stable from January 2020)",
                             "the failing allocation itself means the IOVA space was exhausted (iova32_full): "
                             "check the driver's DMA mask and outstanding mappings"]
        return
    pages = hi - lo + 1
    chain.what = (f"a struct iova holding pfns 0x{lo:x}-0x{hi:x} ({pages} page(s); IOVA 0x{lo << GRANULE_SHIFT:x}-"
                  f"0x{((hi + 1) << GRANULE_SHIFT) - 1:x} at a 4 KiB granule)")
    chain.verdict, chain.verdict_text = "real_leak", (
        "real leak of an IOVA range: the node left the rbtree's references (or never entered it) without "
        "free_iova(); the range stays allocated as far as the allocator knows")
    chain.next_steps += [f"find who mapped IOVA 0x{lo << GRANULE_SHIFT:x} and never unmapped it (the allocating "
                         f"path above {m.caller})", "correlate with a trace: iovatrace leaks REPORT --trace TRACE"]


def assess_dma_debug(reports: list[DmaDebugReport]) -> list[str]:
    """Say what dma-debug ``pending DMA allocations`` and page_pool stall warnings mean (model_spec.md §8.4).

    Args:
        reports: parsed warnings.

    Returns:
        One sentence per device with pending mappings, per stalled pool, and per other DMA-API error.
    """
    out: list[str] = []
    pools = [r for r in reports if r.kind == "page_pool_stalled"]
    for r in reports:
        if r.kind == "pending_at_release":
            who = " ".join(x for x in (r.driver, r.device) if x) or "a device"
            entry = ", ".join(x for x in (
                None if r.device_address is None else f"address 0x{r.device_address:x}",
                None if r.size is None else f"{r.size} bytes", r.direction, r.mapped_as) if x)
            text = (f"line {r.line}: {who} was unbound from its driver with {r.count if r.count is not None else '?'}"
                    f" DMA mapping(s) still live (one: {entry or 'no details'}); the driver's remove() did not "
                    "unmap them")
            caller = next((f for f in r.mapped_at if not f.startswith(("debug_dma", "dma_", "__dma", "iommu_dma",
                                                                        "__iommu_dma"))), None)
            if caller:
                text += f"; the entry shown was mapped in {caller} (dma-debug's 'Mapped at' stack)"
            if pools:
                text += ("; page_pool stall warnings in the same log point at pool pages still in flight: before "
                         "ee62ce7a1d90 (v6.15) a destroyed pool keeps its pages mapped until they return, and their "
                         "late unmap can hit a device whose IOMMU domain is gone")
            out.append(text)
        elif r.kind == "dma_api":
            out.append(f"line {r.line}: DMA-API error: {r.message}")
    for r in pools:
        pid = "" if r.pool_id is None else f" {r.pool_id}"
        out.append(f"line {r.line}: page_pool{pid} destroyed {r.stalled_s} s ago still has {r.inflight} page(s) "
                   "in flight (held by sockets, XDP or skbs); they stay DMA-mapped until returned")
    return out


def _dedupe(objects: list[KmemleakObject]) -> tuple[list[KmemleakObject], list[str]]:
    """One record per address: repeated reads of the debugfs file print the same object again."""
    index: dict[int, int] = {}
    out: list[KmemleakObject] = []
    same = reused = 0
    for o in objects:
        i = index.get(o.address)
        if i is None:
            index[o.address] = len(out)
            out.append(o)
        elif out[i].jiffies == o.jiffies:
            same += 1
        else:  # the address was freed and reallocated between reports: the later record is the current object
            reused += 1
            out[i] = o
    notes = []
    if same:
        notes.append(f"{same} repeated record(s) of the same object (same address and jiffies) merged")
    if reused:
        notes.append(f"{reused} address(es) reported for two different allocations (jiffies differ): the later "
                     "record was used")
    return out, notes


def diagnose(data: str | bytes, *, path: str | None = None, kernel: str | None = None) -> LeakDiagnosis:
    """Parse a report and diagnose every kmemleak object and dma-debug warning in it.

    Args:
        data: the report text (any log or mail containing kmemleak records).
        path: its name, for messages.
        kernel: ``--kernel`` (a version or profile name); inferred from the report when ``None``.

    Returns:
        The :class:`LeakDiagnosis`.

    Raises:
        UnusableReportError: no kmemleak record and no dma-debug warning, a damaged record, or a bad ``--kernel``.
    """
    report = parse_kmemleak(data, path=path)
    dma = parse_dma_debug(data)
    if not report.objects and not dma:
        raise UnusableReportError("Cannot find any kmemleak record or dma-debug warning: expected 'unreferenced "
                                  "object 0x… (size N):' or 'DMA-API: …'", path=path)
    try:
        facts = infer_kernel(report.objects, kernel)
    except ValueError as exc:
        raise UnusableReportError(str(exc), path=path) from None
    unique, dup_notes = _dedupe(report.objects)
    objs = [decode(i, o, facts) for i, o in enumerate(unique)]
    chains = build_chains(objs)
    for c in chains:
        judge(c, facts)
    notes: list[str] = list(dup_notes)
    for src, word, dst in cross_references(objs):
        notes.append(f"0x{src:x} (word {word}) points into reported object 0x{dst:x}: it is referenced from a "
                     "reported object of another kind, so it leaks (or not) with 0x" + f"{src:x}")
    if any(d.hashed for d in objs):
        notes.append("frame addresses are hashed %p values (kernels 4.15-6.1): they cannot be symbolised; use the "
                     "symbol+offset/size columns (scripts/faddr2line)")
    for reason, count in report.skipped.items():
        notes.append(f"skipped {count} line(s): {reason}")
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    lines = {i: t.rstrip() for i, t in enumerate(text.replace("\r\n", "\n").split("\n"), 1)}
    return LeakDiagnosis(path, facts, objs, chains, dma, notes, lines, assess_dma_debug(dma))
