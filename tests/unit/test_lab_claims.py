"""Claim verdicts are computed from observed cells: reproduced, contradicted, not checkable; a
real cell of the same design weighs in; open questions are answered, not judged; a sweep that
flips an expectation inside a parameter's measured range makes the verdict timing-dependent."""

from __future__ import annotations

from loopdev.lab.claims import (
    CLAIMS,
    NOT_CHECKABLE,
    NOT_REPRODUCED,
    OPEN_QUESTION,
    REPRODUCED,
    Claim,
    Expect,
    judge,
    judge_all,
)
from loopdev.lab.outcome import PASS, CellKey, CellResult, Outcome, RunRecord
from loopdev.sim.params import PARAMS, RCU_GRACE_PERIOD


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


REAL = CellKey("ml+udev", "ul", "v", "vm")


def test_a_real_cell_that_contradicts_the_model_decides_against_the_claim() -> None:
    cells = {
        CellKey("ml+udev", "ul", "v"): _cell(CellKey("ml+udev", "ul", "v"), [EIO]),
        CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [PASS]),
        REAL: _cell(REAL, [PASS, PASS, PASS]),  # the real module never failed
    }
    v = judge(CLAIM, cells)
    assert v.verdict == NOT_REPRODUCED and v.disagreement
    first = v.results[0]
    assert (first.status, first.real_status) == ("holds", "contradicted")
    assert "observed in 0 of 3 runs" in first.real_evidence


def test_a_real_cell_that_agrees_is_shown_beside_the_model() -> None:
    cells = {
        CellKey("ml+udev", "ul", "v"): _cell(CellKey("ml+udev", "ul", "v"), [EIO]),
        CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [PASS]),
        REAL: _cell(REAL, [PASS, EIO]),
    }
    v = judge(CLAIM, cells)
    assert v.verdict == REPRODUCED and not v.disagreement
    assert v.results[0].real_status == "holds"
    assert v.results[1].real_status == ""  # no real cell for the second expectation


QUESTION = Claim(
    98,
    "fails with udev; without, nobody knows",
    "test",
    "observe",
    (
        Expect("ml+udev", "ul", "v", True, "EIO"),
        Expect("ml", "ul", "v", True, "EIO", question="does it fail without udev?"),
    ),
)


def test_an_open_question_is_answered_never_judged() -> None:
    cells = {
        CellKey("ml+udev", "ul", "v"): _cell(CellKey("ml+udev", "ul", "v"), [EIO]),
        CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [PASS, PASS]),
        CellKey("ml", "ul", "v", "vm"): _cell(CellKey("ml", "ul", "v", "vm"), [EIO]),
    }
    v = judge(QUESTION, cells)
    assert v.verdict == REPRODUCED  # the question does not count either way
    q = v.results[1]
    assert (q.status, q.real_status) == ("answered", "answered")
    assert "observed in 0 of 2 runs" in q.evidence and "observed in 1 of 1 runs" in q.real_evidence
    only = Claim(97, "open", "test", "observe", (QUESTION.expects[1],))
    assert judge(only, cells).verdict == OPEN_QUESTION


def test_a_verdict_that_flips_inside_a_measured_range_is_timing_dependent() -> None:
    key = CellKey("ml+udev", "ul", "v")
    fails, passes = _cell(key, [EIO]), _cell(key, [PASS])
    base = {key: fails, CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [PASS])}
    lo, hi = PARAMS[RCU_GRACE_PERIOD].lo, PARAMS[RCU_GRACE_PERIOD].hi
    flips = {RCU_GRACE_PERIOD: [(lo, {key: passes}), (hi, {key: fails})]}
    v = judge(CLAIM, base, flips)
    assert v.timing_dependent and v.verdict == REPRODUCED
    assert f"holds at {RCU_GRACE_PERIOD} = {hi:g}" in v.results[0].timing
    outside = {RCU_GRACE_PERIOD: [(lo / 10, {key: passes}), (hi, {key: fails})]}
    assert not judge(CLAIM, base, outside).timing_dependent  # flips only outside the range


def test_a_distorted_real_cell_disagrees_without_deciding() -> None:
    model = {
        CellKey("ml+udev", "ul", "v"): _cell(CellKey("ml+udev", "ul", "v"), [EIO, EIO]),
        CellKey("ml", "ul", "v"): _cell(CellKey("ml", "ul", "v"), [PASS]),
    }
    real = _cell(REAL, [PASS, PASS, PASS])
    real.timing_distorted = "udevd runs emulated"
    v = judge(CLAIM, {**model, REAL: real})
    assert v.verdict == REPRODUCED  # the emulator's timing cannot contradict the claim
    assert v.disagreement and v.disagreement_distorted
    assert v.disagreement_text() == "the real cell disagrees, timing-distorted"
    assert v.results[0].real_distorted == "udevd runs emulated"
    hardware = _cell(REAL, [PASS, PASS, PASS])  # the same outcomes with hardware's timing
    w = judge(CLAIM, {**model, REAL: hardware})
    assert w.verdict == NOT_REPRODUCED
    assert w.disagreement and not w.disagreement_distorted
    assert w.disagreement_text() == "the real cell disagrees"
    agree = judge(CLAIM, {**model, REAL: _cell(REAL, [EIO])})
    assert not agree.disagreement and agree.disagreement_text() == ""
