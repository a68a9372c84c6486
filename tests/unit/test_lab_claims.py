"""Claim verdicts are computed from observed cells: reproduced, contradicted, not checkable."""

from __future__ import annotations

from loopdev.lab.claims import (
    CLAIMS,
    NOT_CHECKABLE,
    NOT_REPRODUCED,
    REPRODUCED,
    Claim,
    Expect,
    judge,
    judge_all,
)
from loopdev.lab.outcome import PASS, CellKey, CellResult, Outcome, RunRecord


def _cell(key: CellKey, outcomes: list[Outcome]) -> CellResult:
    c = CellResult(key)
    for i, o in enumerate(outcomes):
        c.add(RunRecord(i, o, token=f"tok{i}"))
    return c


EIO = Outcome("fail", "mount: EIO", "mount: /mnt: can't read superblock on /dev/loop0.")
CLAIM = Claim(
    99,
    "fails with udev, not without",
    "test",
    "observe",
    (
        Expect("ml+udev", "ul", "v", True, "EIO"),
        Expect("ml", "ul", "v", False),
    ),
)


def test_reproduced_when_every_expectation_holds() -> None:
    cells = {
        CellKey("ml+udev", "ul", "v"): _cell(CellKey("ml+udev", "ul", "v"), [PASS, EIO, PASS]),
        CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [PASS, PASS]),
    }
    v = judge(CLAIM, cells)
    assert v.verdict == REPRODUCED
    assert v.results[0].token == "tok1"
    assert "observed in 1 of 3 runs" in v.results[0].evidence


def test_contradicted_when_a_failure_is_missing_or_present() -> None:
    cells = {
        CellKey("ml+udev", "ul", "v"): _cell(CellKey("ml+udev", "ul", "v"), [PASS, PASS]),
        CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [PASS, EIO]),
    }
    v = judge(CLAIM, cells)
    assert v.verdict == NOT_REPRODUCED
    assert [r.status for r in v.results] == ["contradicted", "contradicted"]


def test_not_checkable_when_the_backend_lacks_the_machinery() -> None:
    na = Outcome("unsupported", message="fio is not modelled")
    cells = {
        CellKey("ml+udev", "ul", "v"): _cell(CellKey("ml+udev", "ul", "v"), [na]),
        CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [PASS]),
    }
    v = judge(CLAIM, cells)
    assert v.verdict == NOT_CHECKABLE
    assert "fio is not modelled" in v.results[0].evidence
    assert judge(CLAIM, {}).verdict == NOT_CHECKABLE  # not run at all


def test_a_contradiction_outweighs_an_uncheckable_part() -> None:
    na = Outcome("unsupported", message="no sendfile")
    cells = {
        CellKey("ml+udev", "ul", "v"): _cell(CellKey("ml+udev", "ul", "v"), [na]),
        CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [EIO]),
    }
    assert judge(CLAIM, cells).verdict == NOT_REPRODUCED


def test_every_research_claim_is_registered_with_source_and_observation() -> None:
    assert [c.number for c in CLAIMS] == [1, 2, 3, 4, 5, 6, 7]
    for c in CLAIMS:
        assert c.source and c.observe and c.expects
    assert all(v.verdict == NOT_CHECKABLE for v in judge_all({}))
