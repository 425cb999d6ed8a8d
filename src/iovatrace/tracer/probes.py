"""The probe catalogue: which kprobes, kretprobes and tracepoints the replay's event adapter expects, and how to
write them for one kernel.

Theory of operation
-------------------
The catalogue (:data:`CATALOGUE`) is the ONE source of the probe definitions: ``iovatrace probes`` prints them,
``iovatrace record`` installs them, and ``record --emit-script`` bakes them into the shell script the QEMU lab runs
inside a busybox guest. A probe is written abstractly -- "argument 2 as u64", "the u64 at struct iova's pfn_lo in
the return value" -- and rendered for one kernel by :func:`plan_probes`:

* **arguments** follow the architecture's calling convention (:data:`ARG_REGISTERS`: x86-64 ``%di %si %dx %cx
  %r8 %r9``; arm64 ``%x0``..``%x7``), or, with ``btf_names``, the kernel's own parameter names (6.6+ kernels with
  ``CONFIG_PROBE_EVENTS_BTF_ARGS`` resolve them through BTF);
* **struct offsets** come from the kernel's :class:`Profile` (e.g. ``iova_fq.head`` exists only since the 6.7 flush
  queue rework); an argument whose field the profile does not know is left out, with a warning;
* **symbols** are checked against kallsyms: a function the compiler inlined has no symbol, cannot be probed, and is
  left out with a warning that says what the replay loses (:attr:`ProbeSpec.loses`); where a catalogue entry has an
  alternative (6.12's ``fq_ring_free`` is inlined into ``fq_ring_free_locked``) the first present one is used;
* **tracepoints** (:func:`plan_tracepoints`): ``iommu:*`` and ``intel_iommu:*`` always, ``dma:*`` where the kernel
  has them (6.12+: preferred, they never miss), and the kmem cache events of IOVA magazines where magazines have
  their own cache (6.9+), filtered on call sites inside iova.c's text (computed from kallsyms).

The rendering is pure (no I/O): callers pass kallsyms text and the kernel release. :func:`parse_kprobe_line`
reads a definition back (as written, or as the kernel lists it in ``kprobe_events``) for semantic comparison.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import CaptureError

__all__ = [
    "ARG_REGISTERS",
    "CATALOGUE",
    "Fetch",
    "ProbeArg",
    "ProbeSpec",
    "Profile",
    "profile_for",
    "parse_release",
    "Kallsyms",
    "ProbePlan",
    "Tracepoint",
    "plan_probes",
    "plan_tracepoints",
    "parse_kprobe_line",
    "KprobeDef",
    "IOVA_C_FUNCTIONS",
    "event_name",
    "infer_version",
]

#: Argument registers in kprobe fetch syntax, by architecture (x86-64 SysV ABI; AAPCS64).
ARG_REGISTERS: dict[str, tuple[str, ...]] = {
    "x86_64": ("%di", "%si", "%dx", "%cx", "%r8", "%r9"),
    "arm64": tuple(f"%x{i}" for i in range(8)),
}


# ---------------------------------------------------------------------------------------------------------------
# Kernel version profiles: struct offsets the fetch-args need
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """What one kernel family looks like to a probe: its version and the struct offsets fetch-args use.

    Attributes:
        name: profile name ("6.1", "6.12").
        version: (major, minor) of the kernel this profile was made for (or inferred).
        offsets: ``"struct.member"`` -> byte offset (may be negative: relative to an embedded member).
    """

    name: str
    version: tuple[int, int]
    offsets: dict[str, int] = field(default_factory=dict)


# struct iova { struct rb_node node (24 bytes); unsigned long pfn_hi; unsigned long pfn_lo; }: stable since 4.x.
# struct iova_magazine { unsigned long size (a union with `next` from 6.7); unsigned long pfns[]; }.
_COMMON_OFFSETS = {"iova.pfn_hi": 24, "iova.pfn_lo": 32, "iova_magazine.size": 0, "device.name_ptr": 0}

# 6.7+: struct iova_rcache { spinlock_t lock; unsigned int depot_size; struct iova_magazine *depot;
#   struct iova_cpu_rcache __percpu *cpu_rcaches; struct iova_domain *iovad; struct delayed_work work; } -- the depot
# work function receives &rcache->work, so the other members sit at negative offsets from it; iova_domain.rcaches
# at +104; struct iova_fq { spinlock_t lock; unsigned int head, tail, mod_mask; entries[] } (6.9+ layout).
# Checked with the lab's BTF dump of Debian's 6.12.107 and by that kernel accepting and filling them.
_OFFSETS_612 = {
    **_COMMON_OFFSETS,
    "iova_rcache.work->iovad": -8,
    "iova_rcache.work->depot_size": -28,
    "iova_rcache.work->depot": -24,
    "iova_domain.rcaches": 104,
    "iova_fq.head": 4,
    "iova_fq.tail": 8,
    "iova_fq.mod_mask": 12,
}

_PROFILES = [
    Profile("6.1", (6, 1), dict(_COMMON_OFFSETS)),
    Profile("6.12", (6, 12), _OFFSETS_612),
]


def parse_release(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string ("6.12.107+deb13-amd64", "6.1", "6.1.0-56-amd64").

    Raises:
        CaptureError: the string does not start with ``<major>.<minor>``.
    """
    m = re.match(r"\s*(\d+)\.(\d+)", release)
    if not m:
        raise CaptureError(f"Cannot read kernel release {release!r}: expected <major>.<minor>[...]")
    return int(m.group(1)), int(m.group(2))


def profile_for(version: tuple[int, int]) -> Profile:
    """The profile for a kernel version: 6.12's layouts from 6.9 on (own magazine cache, fq mod_mask), else 6.1's.

    Versions between 6.7 and 6.8 get 6.1's offsets plus nothing version-specific: their iova_fq had no mod_mask and
    we have no verified layout, so those fields are left out rather than guessed.
    """
    base = _PROFILES[1] if version >= (6, 9) else _PROFILES[0]
    return Profile(base.name, version, dict(base.offsets))


# ---------------------------------------------------------------------------------------------------------------
# Abstract fetch-args
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch:
    """Where a probe argument's value comes from.

    ``kind`` is ``"arg"`` (the ``index``-th function argument, 0-based), ``"ret"`` (the return value) or
    ``"deref"`` (memory at ``base`` + the profile offset named ``member``, or the literal ``offset``).
    """

    kind: str
    index: int = 0
    member: str = ""
    offset: int = 0
    base: Fetch | None = None

    def render(self, regs: tuple[str, ...], offsets: dict[str, int], names: tuple[str, ...] | None) -> str | None:
        """kprobe fetch syntax, or None when the profile lacks a needed offset."""
        if self.kind == "arg":
            if names is not None:
                return names[self.index]
            return regs[self.index]
        if self.kind == "ret":
            return "$retval"
        assert self.base is not None
        # BTF names are only used for whole arguments: dereferences keep registers (always accepted).
        inner = self.base.render(regs, offsets, None)
        if inner is None:
            return None
        if self.member:
            if self.member not in offsets:
                return None
            off = offsets[self.member]
        else:
            off = self.offset
        return f"{'+' if off >= 0 else '-'}{abs(off)}({inner})"


def A(i: int) -> Fetch:
    """The i-th (0-based) function argument."""
    return Fetch("arg", index=i)


RET = Fetch("ret")


def D(base: Fetch, member: str = "", offset: int = 0) -> Fetch:
    """Memory at base + offset of ``member`` (from the profile), or at a literal offset."""
    return Fetch("deref", member=member, offset=offset, base=base)


@dataclass(frozen=True)
class ProbeArg:
    """One named, typed fetch-arg of a probe (type: x64, u64, u32, u8, s32, string)."""

    name: str
    fetch: Fetch
    type: str


@dataclass(frozen=True)
class ProbeSpec:
    """One catalogue entry: a kprobe (``kind="p"``) or kretprobe (``"r"``) the replay's adapter understands.

    Attributes:
        group: event group (``iova`` or ``dmaiommu``).
        event: event name in the group.
        funcs: the probed symbol; more than one = alternatives, the first present in kallsyms wins.
        kind: ``"p"`` or ``"r"``.
        args: fetch-args.
        params: the function's parameter names in order (for BTF-named arguments).
        since: first kernel version that has the function at all (absent before: no warning).
        loses: what the replay cannot see when the function is not probe-able.
    """

    group: str
    event: str
    funcs: tuple[str, ...]
    kind: str
    args: tuple[ProbeArg, ...]
    params: tuple[str, ...] = ()
    since: tuple[int, int] = (0, 0)
    loses: str = ""


def _p(group: str, func: str | tuple[str, ...], params: str, args: Iterable[tuple[str, Fetch, str]], *,
       event: str | None = None, kind: str = "p", since: tuple[int, int] = (0, 0), loses: str = "") -> ProbeSpec:
    funcs = (func,) if isinstance(func, str) else func
    return ProbeSpec(group, event or funcs[0], funcs, kind, tuple(ProbeArg(*a) for a in args),
                     tuple(params.split()), since, loses)


X, U64, U32, U8, S32, STR = "x64", "u64", "u32", "u8", "s32", "string"
_ALLOC_FAST = "iovad size limit_pfn flush_rcache"
_IOVAD = [("iovad", A(0), X)]

#: The catalogue, in the order the lab's kprobe files list them.
CATALOGUE: tuple[ProbeSpec, ...] = (
    _p("iova", "alloc_iova_fast", _ALLOC_FAST,
       [("iovad", A(0), X), ("size", A(1), U64), ("limit_pfn", A(2), X), ("flush_rcache", A(3), U8)],
       loses="every rcache/tree allocation request (the replay has nothing to check)"),
    _p("iova", "alloc_iova_fast", _ALLOC_FAST, [("pfn", RET, X)], event="alloc_iova_fast_ret", kind="r",
       loses="the kernel's chosen pfn (no fidelity check)"),
    _p("iova", "free_iova_fast", "iovad pfn size",
       [("iovad", A(0), X), ("pfn", A(1), X), ("size", A(2), U64)], loses="rcache frees"),
    _p("iova", "alloc_iova", "iovad size limit_pfn size_aligned",
       [("iovad", A(0), X), ("size", A(1), U64), ("limit_pfn", A(2), X), ("size_aligned", A(3), U8)],
       loses="rbtree allocations outside the rcache (reserved regions, large sizes)"),
    _p("iova", "alloc_iova", "iovad size limit_pfn size_aligned",
       [("iova", RET, X), ("pfn_hi", D(RET, "iova.pfn_hi"), X), ("pfn_lo", D(RET, "iova.pfn_lo"), X)],
       event="alloc_iova_ret", kind="r", loses="the range alloc_iova chose"),
    _p("iova", "free_iova", "iovad pfn", [("iovad", A(0), X), ("pfn", A(1), X)],
       loses="tree frees of large IOVAs and of full magazines"),
    _p("iova", "__free_iova", "iovad iova",
       [("iovad", A(0), X), ("iova", A(1), X), ("pfn_hi", D(A(1), "iova.pfn_hi"), X),
        ("pfn_lo", D(A(1), "iova.pfn_lo"), X)], loses="frees by struct iova pointer"),
    _p("iova", "reserve_iova", "iovad pfn_lo pfn_hi",
       [("iovad", A(0), X), ("pfn_lo", A(1), X), ("pfn_hi", A(2), X)], loses="reserved windows (MSI, RMRR)"),
    _p("iova", "init_iova_domain", "iovad granule start_pfn",
       [("iovad", A(0), X), ("granule", A(1), U64), ("start_pfn", A(2), X)], loses="domain creation"),
    _p("iova", "iova_domain_init_rcaches", "iovad", _IOVAD, loses="rcache creation"),
    _p("iova", "put_iova_domain", "iovad", _IOVAD, loses="domain teardown"),
    _p("iova", "free_iova_rcaches", "iovad", _IOVAD, loses="rcache teardown"),
    _p("iova", "free_cpu_cached_iovas", "cpu iovad", [("cpu", A(0), U32), ("iovad", A(1), X)],
       loses="per-CPU rcache flushes"),
    _p("iova", "iova_magazine_free_pfns", "mag iovad",
       [("mag", A(0), X), ("iovad", A(1), X), ("mag_size", D(A(0), "iova_magazine.size"), U64)],
       loses="magazines emptied back to the tree"),
    _p("iova", "iova_cpuhp_dead", "cpu node", [("cpu", A(0), U32)], loses="CPU-offline rcache flushes"),
    _p("iova", "iova_depot_work_func", "work",
       [("work", A(0), X), ("iovad", D(A(0), "iova_rcache.work->iovad"), X),
        ("depot_size", D(A(0), "iova_rcache.work->depot_size"), U32),
        ("depot", D(A(0), "iova_rcache.work->depot"), X),
        ("rcaches", D(D(A(0), "iova_rcache.work->iovad"), "iova_domain.rcaches"), X)],
       since=(6, 7), loses="depot trims (6.7+ depot list)"),
    _p("dmaiommu", "iommu_dma_alloc_iova", "domain size dma_limit dev",
       [("domain", A(0), X), ("size", A(1), U64), ("dma_limit", A(2), X), ("dev", A(3), X),
        ("devname", D(D(A(3), "device.name_ptr")), STR)], loses="which device and domain each IOVA is for"),
    _p("dmaiommu", "iommu_dma_alloc_iova", "domain size dma_limit dev", [("iova", RET, X)],
       event="iommu_dma_alloc_iova_ret", kind="r", loses="the dma address handed to the driver"),
    _p("dmaiommu", "__iommu_dma_map", "dev phys size prot dma_mask",
       [("dev", A(0), X), ("phys", A(1), X), ("size", A(2), U64), ("prot", A(3), S32), ("dma_mask", A(4), X)],
       loses="single-page mappings per device"),
    _p("dmaiommu", "__iommu_dma_unmap", "dev dma_addr size",
       [("dev", A(0), X), ("dma_addr", A(1), X), ("size", A(2), U64)], loses="unmaps per device"),
    _p("dmaiommu", "iommu_dma_map_sg", "dev sg nents dir",
       [("dev", A(0), X), ("sg", A(1), X), ("nents", A(2), S32), ("dir", A(3), S32)], loses="scatterlist maps"),
    _p("dmaiommu", "iommu_dma_unmap_sg", "dev sg nents dir",
       [("dev", A(0), X), ("sg", A(1), X), ("nents", A(2), S32), ("dir", A(3), S32)], loses="scatterlist unmaps"),
    # 6.7+: fq_ring_free is inlined into fq_ring_free_locked, which sees the ring's head/tail.
    _p("dmaiommu", ("fq_ring_free_locked", "fq_ring_free"), "cookie fq",
       [("cookie", A(0), X), ("fq", A(1), X), ("head", D(A(1), "iova_fq.head"), U32),
        ("tail", D(A(1), "iova_fq.tail"), U32), ("mod_mask", D(A(1), "iova_fq.mod_mask"), U32)],
       loses="flush-queue drains (lazy mode: when deferred IOVAs return to the rcache)"),
    _p("dmaiommu", "fq_flush_iotlb", "cookie", [("cookie", A(0), X)], loses="flush-queue IOTLB flushes"),
    _p("dmaiommu", "fq_flush_timeout", "t", [("timer", A(0), X)], loses="flush-queue timer runs"),
    _p("dmaiommu", "iommu_dma_init_fq", "domain", [("domain", A(0), X)], since=(6, 7),
       loses="flush-queue setup on DMA-FQ domain type changes"),
    # Functions the replay would like but that are usually inlined; probed when a kernel keeps them.
    _p("dmaiommu", "queue_iova", "cookie pfn pages freelist",
       [("cookie", A(0), X), ("pfn", A(1), X), ("pages", A(2), U64)],
       loses="the moment a lazy unmap enters the flush queue (inferred from __iommu_dma_unmap instead)"),
    _p("dmaiommu", "iommu_dma_free_iova", "cookie iova size gather",
       [("cookie", A(0), X), ("iova", A(1), X), ("size", A(2), U64)],
       loses="strict/lazy choice per free (inferred from the domain type)"),
    _p("iova", ("iova_rcache_insert", "__iova_rcache_insert"), "iovad pfn size",
       [("iovad", A(0), X), ("pfn", A(1), X), ("size", A(2), U64)],
       loses="whether a free hit the rcache or went to the tree (the model decides)"),
    _p("iova", ("iova_rcache_get", "__iova_rcache_get"), "iovad size limit_pfn",
       [("iovad", A(0), X), ("size", A(1), U64), ("limit_pfn", A(2), X)],
       loses="whether an allocation came from the rcache (the model decides)"),
    _p("iova", "iova_magazine_alloc", "flags", [("flags", A(0), U32)],
       loses="magazine births (kmem events give them on 6.9+)"),
    _p("iova", "free_global_cached_iovas", "iovad", _IOVAD, loses="depot flushes after a failed allocation"),
)

#: Functions whose text spans iova.c (for the kmem call_site filter). Same list as the lab's guest scripts.
IOVA_C_FUNCTIONS = (
    "init_iova_domain alloc_iova free_iova __free_iova alloc_iova_fast free_iova_fast iova_domain_init_rcaches "
    "put_iova_domain reserve_iova free_iova_rcaches free_cpu_cached_iovas iova_magazine_free_pfns iova_cpuhp_dead "
    "iova_depot_work_func remove_iova find_iova iova_cache_get iova_cache_put"
).split()


# ---------------------------------------------------------------------------------------------------------------
# kallsyms
# ---------------------------------------------------------------------------------------------------------------


class Kallsyms:
    """Text symbols of a kernel, from /proc/kallsyms, a (filtered) copy of it, or a System.map.

    Args:
        text: the file's text ("addr type name [module]" per line).
        path: for error messages.

    Raises:
        CaptureError: the text holds no line of that shape.
    """

    _LINE = re.compile(r"^([0-9a-fA-F]+)\s+([a-zA-Z])\s+(\S+)(?:\s+\[(\S+)\])?\s*$")

    def __init__(self, text: str, path: str = "<kallsyms>") -> None:
        self.path = path
        self.rows: list[tuple[int, str, str]] = []
        self.text_syms: dict[str, int] = {}
        bad = 0
        for line in text.splitlines():
            m = self._LINE.match(line)
            if not m:
                bad += line.strip() != ""
                continue
            addr, typ, name = int(m.group(1), 16), m.group(2), m.group(3)
            self.rows.append((addr, typ, name))
            if typ in "tT" and not m.group(4):
                self.text_syms.setdefault(name, addr)
        if not self.rows:
            raise CaptureError(f"{path}: no kallsyms lines (expected '<hex address> <type> <name>')")
        self.rows.sort()
        #: all-zero addresses: kallsyms read without privilege (kptr_restrict); symbols still usable
        self.addresses_hidden = all(a == 0 for a, _, _ in self.rows)

    def has(self, func: str) -> bool:
        """Is ``func`` a text symbol of the kernel (exactly; compiler clones do not count)?"""
        return func in self.text_syms

    def clones(self, func: str) -> list[str]:
        """Compiler clones of ``func`` (``func.isra.0``, ``.constprop.0``, ``.part.0``; not ``.cold`` fragments)."""
        pre = func + "."
        return sorted(n for n in self.text_syms if n.startswith(pre) and not n.endswith(".cold"))

    def text_range(self, funcs: Iterable[str]) -> tuple[int, int] | None:
        """[lowest start of ``funcs``, start of the first symbol after the highest one), or None if none found."""
        want = set(funcs)
        idx = [i for i, (_, t, n) in enumerate(self.rows) if n in want and t in "tT"]
        if not idx or self.addresses_hidden:
            return None
        lo, hi_i = self.rows[idx[0]][0], idx[-1]
        hi_addr = self.rows[hi_i][0]
        for a, _, _ in self.rows[hi_i + 1:]:
            if a > hi_addr:
                return lo, a
        return None


def infer_version(ks: Kallsyms) -> tuple[int, int]:
    """A kernel family guessed from symbols when no release is given: 6.7+ has the depot work function."""
    return (6, 12) if ks.has("iova_depot_work_func") or ks.has("fq_ring_free_locked") else (6, 1)


# ---------------------------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tracepoint:
    """A tracepoint (or a whole system with ``name="*"``) to enable, with an optional filter."""

    system: str
    name: str = "*"
    filter: str = ""
    why: str = ""

    @property
    def key(self) -> str:
        """``system:name``."""
        return f"{self.system}:{self.name}"


@dataclass
class ProbePlan:
    """The probes and tracepoints for one kernel.

    Attributes:
        release: the kernel release (or inferred family) the plan is for.
        arch: x86_64 or arm64.
        profile: the version profile used for offsets.
        definitions: kprobe_events lines, in catalogue order.
        specs: the catalogue entry behind each definition (same order), with the symbol chosen.
        tracepoints: tracepoints to enable.
        warnings: one line per probe or argument left out, saying what the replay loses.
    """

    release: str
    arch: str
    profile: Profile
    definitions: list[str] = field(default_factory=list)
    specs: list[tuple[ProbeSpec, str]] = field(default_factory=list)
    tracepoints: list[Tracepoint] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        """Kprobe groups used (``iova``, ``dmaiommu``)."""
        return sorted({s.group for s, _ in self.specs})

    def event_names(self) -> list[str]:
        """``group:event`` of every kprobe in the plan."""
        return [f"{s.group}:{event_name(s, f)}" for s, f in self.specs]


def event_name(spec: ProbeSpec, func: str) -> str:
    """The event name for ``spec`` probing ``func``: an alternative symbol names its own event."""
    return func if spec.event == spec.funcs[0] and spec.kind == "p" else spec.event


def _render(spec: ProbeSpec, func: str, regs: tuple[str, ...], prof: Profile, btf: bool,
            warnings: list[str]) -> str:
    ev = event_name(spec, func)
    parts = [f"{spec.kind}:{spec.group}/{ev}", func]
    names = spec.params if btf and len(spec.params) > 0 else None
    missing = []
    for a in spec.args:
        if a.fetch.kind == "arg" and a.fetch.index >= len(regs):
            warnings.append(f"{spec.group}/{ev}: argument {a.name} is not in a register; left out")
            continue
        fetch = a.fetch.render(regs, prof.offsets, names if a.fetch.kind == "arg" else None)
        if fetch is None:
            missing.append(a.name)
            continue
        if btf and a.fetch.kind == "arg" and names is not None:
            # BTF resolves the type; the kernel lists such args as name=name
            parts.append(f"{a.name}={fetch}")
        else:
            parts.append(f"{a.name}={fetch}:{a.type}")
    if missing:
        warnings.append(f"{spec.group}/{ev}: {', '.join(missing)} left out (no verified struct offset for "
                        f"{func} in the {prof.name} profile)")
    return " ".join(parts)


def plan_probes(kallsyms: Kallsyms, *, release: str | None = None, arch: str = "x86_64", btf_names: bool = False,
                include: Iterable[str] | None = None) -> ProbePlan:
    """The kprobe definitions for one kernel, checked against its symbols.

    Args:
        kallsyms: the kernel's symbols.
        release: kernel release ("6.1.0-56-amd64"); None = inferred from the symbols.
        arch: ``x86_64`` or ``arm64``.
        btf_names: write plain arguments by their BTF parameter names (6.6+ kernels with BTF probe args).
        include: only these ``group/event`` names (default: all).

    Returns:
        The plan; ``warnings`` lists what was left out and what the replay loses.

    Raises:
        CaptureError: unknown architecture.
    """
    if arch not in ARG_REGISTERS:
        raise CaptureError(f"Unknown architecture {arch!r}: expected one of {', '.join(ARG_REGISTERS)}")
    version = parse_release(release) if release else infer_version(kallsyms)
    prof = profile_for(version)
    plan = ProbePlan(release or f"{version[0]}.{version[1]} (inferred from kallsyms)", arch, prof)
    wanted = set(include) if include else None
    regs = ARG_REGISTERS[arch]
    for spec in CATALOGUE:
        if wanted is not None and f"{spec.group}/{spec.event}" not in wanted:
            continue
        if version < spec.since:
            continue
        func = next((f for f in spec.funcs if kallsyms.has(f)), None)
        if func is None:
            clones = [c for f in spec.funcs for c in kallsyms.clones(f)]
            why = (f"only compiler clones ({', '.join(clones)}) with a changed calling convention" if clones
                   else "no symbol: inlined")
            plan.warnings.append(f"{spec.group}/{spec.event}: {' / '.join(spec.funcs)} is not probe-able in this "
                                 f"kernel ({why}); the replay loses {spec.loses or 'this event'}")
            continue
        plan.definitions.append(_render(spec, func, regs, prof, btf_names, plan.warnings))
        plan.specs.append((spec, func))
    return plan


def plan_tracepoints(version: tuple[int, int], *, kallsyms: Kallsyms | None = None,
                     available: set[str] | None = None, magazine_cache: bool | None = None) -> tuple[
                         list[Tracepoint], list[str]]:
    """Tracepoints to enable beside the kprobes.

    Args:
        version: kernel (major, minor).
        kallsyms: for the kmem call_site filter (needs real addresses).
        available: event systems and ``system:name`` keys the kernel has (from tracefs); None = by version.
        magazine_cache: whether the ``iommu_iova_magazine`` kmem cache exists; None = by version (6.9+).

    Returns:
        (tracepoints, warnings).
    """
    warnings: list[str] = []

    def have(key: str, since: tuple[int, int]) -> bool:
        return key in available if available is not None else version >= since

    tps = [Tracepoint("iommu", why="map/unmap and group/domain changes (no domain or device: use the kprobes)"),
           Tracepoint("intel_iommu", why="VT-d invalidations (qi_submit, cache_tag_* on 6.11+)")]
    tps = [t for t in tps if have(t.system, (0, 0))]
    if have("dma", (6, 12)):
        tps.append(Tracepoint("dma", why="per-device map/unmap with the device name; tracepoints never miss"))
    mag = magazine_cache if magazine_cache is not None else version >= (6, 9)
    if mag and have("kmem:kmem_cache_alloc", (0, 0)):
        rng = kallsyms.text_range(IOVA_C_FUNCTIONS) if kallsyms is not None else None
        if rng is None:
            warnings.append("kmem: iova.c's text range is unknown (no kallsyms addresses): magazine kmem events "
                            "left out; the replay cannot follow magazine objects")
        else:
            cs = f"call_site >= 0x{rng[0]:x} && call_site < 0x{rng[1]:x}"
            # kmem_cache_alloc has no cache name: object size 1024 (struct iova_magazine) plus the call site.
            tps.append(Tracepoint("kmem", "kmem_cache_alloc", f"bytes_req == 1024 && {cs}", "magazine births"))
            tps.append(Tracepoint("kmem", "kmem_cache_free", f'name == "iommu_iova_magazine" && {cs}',
                                  "magazine deaths"))
    return tps, warnings


# ---------------------------------------------------------------------------------------------------------------
# Reading definitions back
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KprobeDef:
    """A parsed kprobe_events line (maxactive ignored: the kernel adds its default when listing)."""

    kind: str
    group: str
    event: str
    symbol: str
    args: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        """``group/event``."""
        return f"{self.group}/{self.event}"


_KLINE = re.compile(r"^([prPR])(\d*):(?:([^/\s]+)/)?(\S+)\s+(\S+)\s*(.*)$")


def parse_kprobe_line(line: str, *, path: str = "<kprobe_events>", lineno: int | None = None) -> KprobeDef:
    """Parse one kprobe_events definition.

    Raises:
        CaptureError: the line is not ``p|r[N]:[group/]event symbol [name=fetch[:type] ...]``.
    """
    m = _KLINE.match(line.strip())
    if not m:
        loc = f"{path}:{lineno}" if lineno else path
        raise CaptureError(f"{loc}: not a kprobe definition: {line.strip()!r} "
                           "(expected 'p|r[N]:group/event symbol name=fetch:type ...')")
    args = []
    for tok in m.group(6).split():
        name, _, fetch = tok.partition("=")
        args.append((name, fetch))
    return KprobeDef(m.group(1).lower(), m.group(3) or "kprobes", m.group(4), m.group(5), tuple(args))
