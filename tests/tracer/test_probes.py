"""The probe catalogue against what real kernels said: the lab's kprobe_events (as the kernel listed the probes it
accepted), its per-function probe checks, BTF argument names and the kmem filter the 6.12 kernel accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from iovatrace.cli import cli
from iovatrace.errors import CaptureError
from iovatrace.tracer.probes import (
    ARG_REGISTERS,
    CATALOGUE,
    Kallsyms,
    event_name,
    parse_kprobe_line,
    parse_release,
    plan_probes,
    plan_tracepoints,
)

R61 = "6.1.0-56-amd64"
R612 = "6.12.107+deb13-amd64"


def _kernel_defs(path: Path) -> set:
    return {parse_kprobe_line(ln, path=str(path), lineno=i)
            for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.strip()}


@pytest.mark.parametrize("probe_dir,release,recorded", [
    ("probe", R61, "strict_v7"),          # probe/ has no kprobe_events.txt: the 6.1 recordings hold it
    ("probe", R61, "lazy_v7"),
    ("probe-6.12", R612, "probe-6.12"),
    ("probe-6.12", R612, "strict_v7-6.12"),
    ("probe-6.12", None, "lazy_v7-6.12"),  # release inferred from the symbols
])
def test_definitions_equal_what_the_lab_kernel_accepted(shared_data: Path, probe_dir: str, release: str | None,
                                                        recorded: str) -> None:
    lab = shared_data / "traces-lab"
    ks = Kallsyms((lab / probe_dir / "kallsyms_iova.txt").read_text())
    plan = plan_probes(ks, release=release, arch="x86_64")
    got = {parse_kprobe_line(d) for d in plan.definitions}
    want = _kernel_defs(lab / recorded / "kprobe_events.txt")
    assert got == want, (sorted(d.key for d in got ^ want))


def test_inlined_functions_left_out_with_a_warning(shared_data: Path) -> None:
    ks = Kallsyms((shared_data / "traces-lab" / "probe" / "kallsyms_iova.txt").read_text())
    plan = plan_probes(ks, release=R61)
    symbols = {parse_kprobe_line(d).symbol for d in plan.definitions}
    # the 6.1 README lists these as "not observable in this kernel (inlined, no symbol)"
    for func in ("queue_iova", "iommu_dma_free_iova", "iova_magazine_alloc", "iova_rcache_insert", "iova_rcache_get",
                 "free_global_cached_iovas"):
        assert func not in symbols
        warning = [w for w in plan.warnings if f" {func} " in w or f" {func}," in w or f"/{func}:" in w]
        assert warning and "replay loses" in warning[0] and "inlined" in warning[0], (func, plan.warnings)


def test_presence_matches_the_kernels_own_probe_check(shared_data: Path, lab612: Path) -> None:
    """probe_funcs.txt: the 6.12 guest tried `p:chk/<f> <f>` for each function; a catalogue function is planned
    exactly when the kernel accepted it."""
    accepted = {}
    for line in (lab612 / "probe_funcs.txt").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and parts[3] in ("ok", "FAIL"):
            accepted[parts[0]] = parts[3] == "ok"
    plan = plan_probes(Kallsyms((lab612 / "kallsyms_iova.txt").read_text()), release=R612)
    planned = {parse_kprobe_line(d).symbol for d in plan.definitions}
    checked = 0
    for spec in CATALOGUE:
        for func in spec.funcs:
            if func in accepted:
                checked += 1
                if func in planned:
                    assert accepted[func], func
                elif accepted[func]:
                    # only acceptable when an earlier alternative of the same entry was planned instead
                    assert any(f in planned for f in spec.funcs[:spec.funcs.index(func)]), func
    assert checked >= 25


def test_btf_names_are_the_kernels(lab612: Path) -> None:
    """kprobe_btf_args.txt: the 6.12 kernel's listing of `$arg*` probes, i.e. each parameter's BTF name."""
    kernel: dict[str, list[str]] = {}
    for line in (lab612 / "kprobe_btf_args.txt").read_text().splitlines():
        if line.startswith("p:btfchk/") and "->" not in line:
            d = parse_kprobe_line(line)
            kernel[d.symbol] = [f for _, f in d.args]
    plan = plan_probes(Kallsyms((lab612 / "kallsyms_iova.txt").read_text()), release=R612, btf_names=True)
    compared = 0
    for line in plan.definitions:
        d = parse_kprobe_line(line)
        if d.kind == "p" and d.symbol in kernel:
            plain = [f for _, f in d.args if not f.startswith(("+", "-", "%", "$"))]
            assert plain == kernel[d.symbol][:len(plain)], d.symbol
            compared += 1
    assert compared >= 8


def test_kmem_filter_equals_the_one_the_kernel_accepted(lab612: Path) -> None:
    ks = Kallsyms((lab612 / "kallsyms_iova.txt").read_text())
    tps, warns = plan_tracepoints(parse_release(R612), kallsyms=ks)
    accepted = dict(ln.split(": ", 1) for ln in (lab612 / "kmem_filters.txt").read_text().splitlines()
                    if ln.startswith("kmem_cache_"))
    assert "kmem_cache_alloc filter accepted" in (lab612 / "kmem_filter_check.txt").read_text()
    got = {t.name: t.filter for t in tps if t.system == "kmem"}
    assert got == {k: v.strip() for k, v in accepted.items()}
    assert not warns


def test_tracepoints_by_kernel(shared_data: Path) -> None:
    lab = shared_data / "traces-lab"
    sys61 = set((lab / "probe" / "event_systems.txt").read_text().split())
    tps61, _ = plan_tracepoints((6, 1), available=sys61)
    assert [t.key for t in tps61] == ["iommu:*", "intel_iommu:*"]       # 6.1: no dma:*, magazines kmalloc'd
    sys612 = set((lab / "probe-6.12" / "event_systems.txt").read_text().split()) | {"kmem:kmem_cache_alloc"}
    tps612, warns = plan_tracepoints((6, 12), available=sys612)
    assert [t.key for t in tps612][:3] == ["iommu:*", "intel_iommu:*", "dma:*"]
    assert warns  # no kallsyms: the kmem filter cannot be computed, said so


def test_arm64_uses_x_registers(lab612: Path) -> None:
    plan = plan_probes(Kallsyms((lab612 / "kallsyms_iova.txt").read_text()), release=R612, arch="arm64")
    d = {parse_kprobe_line(x).key: dict(parse_kprobe_line(x).args) for x in plan.definitions}
    assert d["dmaiommu/__iommu_dma_map"]["dma_mask"] == "%x4:x64"
    assert d["iova/__free_iova"]["pfn_lo"] == "+32(%x1):x64"
    assert d["iova/alloc_iova_fast_ret"]["pfn"] == "$retval:x64"


@settings(max_examples=60, deadline=None)
@given(arch=st.sampled_from(sorted(ARG_REGISTERS)), btf=st.booleans(),
       present=st.sets(st.sampled_from(sorted({f for s in CATALOGUE for f in s.funcs}))),
       version=st.sampled_from(["5.15", "6.1", "6.8", "6.12", "6.15"]))
def test_every_rendered_definition_reads_back(arch: str, btf: bool, present: set[str], version: str) -> None:
    ks = Kallsyms("".join(f"ffffffff8100{i:04x} t {f}\n" for i, f in enumerate(sorted(present))) or
                  "ffffffff81000000 T _text\n")
    plan = plan_probes(ks, release=version, arch=arch, btf_names=btf)
    regs = set(ARG_REGISTERS[arch])
    for line, (spec, func) in zip(plan.definitions, plan.specs):
        d = parse_kprobe_line(line)
        assert d.symbol == func and func in present and d.event == event_name(spec, func)
        for _, fetch in d.args:
            for reg in (t for t in fetch.replace("(", " ").replace(")", " ").replace(":", " ").split()
                        if t.startswith("%")):
                assert reg in regs
    # every catalogue entry is either planned or explained
    explained = {w.split(":")[0] for w in plan.warnings}
    for spec in CATALOGUE:
        if parse_release(version) >= spec.since:
            assert any(s is spec for s, _ in plan.specs) or f"{spec.group}/{spec.event}" in explained


def test_bad_inputs_raise_capture_error() -> None:
    with pytest.raises(CaptureError, match="expected"):
        Kallsyms("garbage\n")
    with pytest.raises(CaptureError, match="not a kprobe definition"):
        parse_kprobe_line("x:iova/foo")
    with pytest.raises(CaptureError, match="Unknown architecture"):
        plan_probes(Kallsyms("ffffffff81000000 T alloc_iova_fast\n"), arch="mips")
    with pytest.raises(CaptureError, match="release"):
        parse_release("bookworm")


def test_cli_probes_acceptance_command(shared_data: Path) -> None:
    ks = shared_data / "traces-lab" / "probe" / "kallsyms_iova.txt"
    r = CliRunner().invoke(cli, ["probes", "--kallsyms", str(ks), "--arch", "x86_64", "--kernel", R61])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#")]
    assert {parse_kprobe_line(ln) for ln in lines} == _kernel_defs(shared_data / "traces-lab" / "strict_v7" /
                                                                    "kprobe_events.txt")
    assert "queue_iova" in r.stderr and "iova_rcache_insert" in r.stderr and "replay loses" in r.stderr
    r = CliRunner().invoke(cli, ["probes", "--kallsyms", str(ks), "--json"])
    assert r.exit_code == 0 and '"kprobes"' in r.stdout
