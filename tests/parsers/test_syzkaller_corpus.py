"""Cross-check of the oops parser against syzkaller's own golden corpus (pkg/report/testdata/linux/report).

Each corpus file states, in headers written by syzkaller's maintainers, the title its reference implementation
gives the log (``TITLE:``, ``ALT:``), the crash type and whether the report is corrupted; files without a title
hold no crash. The files are read the way syzkaller's test harness reads them (``\\r`` removed, the optional
``REPORT:`` section cut off). The test prints accuracy per kind and every miss.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iovatrace.parsers.logs.oops import OopsReport, parse_oops


@dataclass
class Case:
    name: str
    log: bytes
    title: str | None = None
    alts: list[str] = field(default_factory=list)
    type: str | None = None
    corrupted: bool = False


def load_case(path: Path) -> Case:
    """Parse one corpus file: headers up to the first empty line, then the log until an empty line + REPORT:."""
    data = path.read_bytes().replace(b"\r", b"")
    lines = data.split(b"\n")
    case = Case(path.name, b"")
    i = 0
    while i < len(lines) and lines[i] != b"":
        h = lines[i].decode("utf-8", "replace")
        if h.startswith("TITLE: "):
            case.title = h[len("TITLE: "):] or None
        elif h.startswith("ALT: "):
            case.alts.append(h[len("ALT: "):])
        elif h.startswith("TYPE: "):
            case.type = h[len("TYPE: "):]
        elif h.startswith("CORRUPTED: "):
            case.corrupted = h.endswith("Y")
        i += 1
    log: list[bytes] = []
    prev_empty = False
    for ln in lines[i + 1:]:
        if prev_empty and ln == b"REPORT:":
            break
        log.append(ln)
        prev_empty = ln == b""
    case.log = b"\n".join(log)
    return case


@pytest.fixture(scope="module")
def results(shared_data: Path) -> list[tuple[Case, OopsReport | None]]:
    corpus = shared_data / "syzkaller" / "report"
    files = sorted((p for p in corpus.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert len(files) > 300, "corpus incomplete"
    out = []
    for p in files:
        case = load_case(p)
        res = parse_oops(case.log, path=p.name)
        out.append((case, res.reports[0] if res.reports else None))
    return out


def _family(title: str) -> str:
    t = title
    for key in ("KASAN", "KMSAN", "KFENCE", "KCSAN", "UBSAN", "memory leak", "possible deadlock",
                "inconsistent lock state", "INFO: rcu detected stall", "INFO: task hung", "BUG: soft lockup",
                "general protection fault", "BUG: unable to handle kernel NULL", "BUG: unable to handle kernel paging",
                "kernel BUG", "kernel panic", "WARNING in", "WARNING:"):
        if t.startswith(key):
            return key
    return "other"


def test_titles_match_syzkaller(results: list[tuple[Case, OopsReport | None]]) -> None:
    per_kind: Counter[str] = Counter()
    per_kind_ok: Counter[str] = Counter()
    misses = []
    for case, rep in results:
        if case.title is None:
            continue
        fam = _family(case.title)
        per_kind[fam] += 1
        got = rep.title if rep else None
        if got == case.title or got in case.alts:
            per_kind_ok[fam] += 1
        else:
            misses.append(f"{case.name}: want {case.title!r} got {got!r}")
    total, ok = sum(per_kind.values()), sum(per_kind_ok.values())
    print(f"\nsyzkaller corpus titles: {ok}/{total} = {ok / total:.1%}")
    for fam in sorted(per_kind):
        print(f"  {fam:40} {per_kind_ok[fam]:3}/{per_kind[fam]:3}")
    for m in misses:
        print("  MISS", m)
    assert ok / total >= 0.97, "\n".join(misses)


def test_no_report_where_syzkaller_finds_none(results: list[tuple[Case, OopsReport | None]]) -> None:
    negatives = [(c, r) for c, r in results if c.title is None]
    assert len(negatives) >= 15
    false = [f"{c.name}: {r.title!r} (line {r.first_line})" for c, r in negatives if r is not None]
    assert not false, false


def test_corrupted_flag_agrees(results: list[tuple[Case, OopsReport | None]]) -> None:
    cases = [(c, r) for c, r in results if c.title is not None and r is not None]
    agree = sum(1 for c, r in cases if r.corrupted == c.corrupted)
    wrong = [f"{c.name}: want {c.corrupted} got {r.corrupted} ({r.corrupted_reason})"
             for c, r in cases if r.corrupted != c.corrupted]
    print(f"\ncorrupted flag: {agree}/{len(cases)} = {agree / len(cases):.1%}")
    for w in wrong:
        print("  CORRUPTED", w)
    assert agree / len(cases) >= 0.90, wrong


def test_crash_type_agrees(results: list[tuple[Case, OopsReport | None]]) -> None:
    cases = [(c, r) for c, r in results if c.type and r is not None and r.title == c.title]
    agree = sum(1 for c, r in cases if r.type == c.type)
    wrong = [f"{c.name}: {c.title!r}: want {c.type} got {r.type}" for c, r in cases if r.type != c.type]
    assert agree / len(cases) >= 0.97, wrong


def test_title_without_frame_is_flagged_corrupted(results: list[tuple[Case, OopsReport | None]]) -> None:
    # A title whose guilty frame could not be extracted ("... in corrupted") must carry the corrupted flag.
    for case, rep in results:
        if rep is None or case.title is None or rep.title != case.title:
            continue
        if rep.title.endswith(" in corrupted"):
            assert rep.corrupted, case.name
