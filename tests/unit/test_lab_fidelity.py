"""The fidelity check per variant: each real cell (a guest's, or this kernel's) against the
model cell beside it, by outcomes reached, by one side never failing, and by rates whose 95%
Wilson intervals do not overlap; and where a claim's verdict rests on such a cell."""

from __future__ import annotations

import pytest

from loopdev.lab import fidelity
from loopdev.lab.cells import REFERENCE
from loopdev.lab.outcome import PASS, THIS_KERNEL, CellKey, CellResult, Outcome, RunRecord
from loopdev.lab.stats import interval_text, overlap, wilson

EIO = Outcome("fail", "mount: EIO", "mount: /x: can't read superblock on /dev/loop0.")
ENOENT = Outcome("fail", "mount: ENOENT", "mount: /x: special device does not exist.")


def cell(key: CellKey, outcomes: list[Outcome], distorted: str = "") -> CellResult:
    c = CellResult(key, timing_distorted=distorted)
    for i, o in enumerate(outcomes):
        c.add(RunRecord(i, o))
    return c


def pair(
    model: list[Outcome], real: list[Outcome], distorted: str = "", column: str = "v5.17-rc1"
) -> dict[CellKey, CellResult]:
    m = CellKey("mount-loop", "util-linux-2.37", column)
    r = m.on("vm")
    return {m: cell(m, model), r: cell(r, real, distorted)}


def test_wilson_intervals_are_the_textbook_ones() -> None:
    lo, hi = wilson(0, 8)
    assert lo == 0.0 and hi == pytest.approx(0.3244, abs=1e-4)
    lo, hi = wilson(40, 40)
    assert lo == pytest.approx(0.9124, abs=1e-4) and hi == 1.0
    lo, hi = wilson(3, 8)
    assert (lo, hi) == (pytest.approx(0.1368, abs=1e-4), pytest.approx(0.6943, abs=1e-4))
    assert wilson(0, 0) == (0.0, 1.0)
    assert overlap((0.0, 0.32), (0.3, 1.0)) and not overlap((0.0, 0.32), (0.91, 1.0))
    assert interval_text(3, 8) == "3/8 = 38% [14-69%]"


def test_agreeing_cells_have_no_finding() -> None:
    cells = pair([EIO] * 38 + [PASS] * 2, [EIO] * 7 + [PASS])
    assert fidelity.compare(cells) == []


def test_a_real_outcome_the_model_never_reached_is_listed() -> None:
    cells = pair([EIO] * 40, [EIO] * 8 + [ENOENT])
    (f,) = fidelity.compare(cells)
    assert f.kind == fidelity.UNREACHED and f.real.backend == "vm" and f.model.backend == "model"
    assert "'fail: mount: ENOENT' seen on the real kernel (1/9)" in f.detail
    assert f.where == "mount-loop / util-linux-2.37 / v5.17-rc1"


def test_one_side_never_failing_against_a_clear_failure_is_a_disagreement() -> None:
    # the model never fails, the real module fails 3 of 8 (95% interval 14-69%)
    cells = pair([PASS] * 40, [EIO] * 3 + [PASS] * 5, distorted="udevd is slow")
    kinds = {f.kind: f for f in fidelity.compare(cells)}
    assert set(kinds) == {fidelity.UNREACHED, fidelity.DISAGREE}
    d = kinds[fidelity.DISAGREE]
    assert "the model never fails" in d.detail and "real 3/8 = 38% [14-69%]" in d.detail
    assert d.distorted == "udevd is slow" and "timing-distorted: udevd is slow" in d.line()
    # one failure in eight is not clear (its interval starts at 2%)
    assert not [f for f in fidelity.compare(pair([PASS] * 40, [EIO] + [PASS] * 7))
                if f.kind == fidelity.DISAGREE]  # fmt: skip


def test_rates_whose_intervals_do_not_overlap_are_flagged() -> None:
    # both fail, at 5% and at 97%: the io_uring row's shape of issue 12
    cells = pair([EIO] * 2 + [PASS] * 38, [EIO] * 29 + [PASS])
    (f,) = fidelity.compare(cells)
    assert f.kind == fidelity.RATES and "do not overlap" in f.detail


def test_this_kernel_is_compared_with_the_reference_model() -> None:
    m = CellKey("iouring-kill", "util-linux-2.38", REFERENCE)
    h = CellKey("iouring-kill", "util-linux-2.38", THIS_KERNEL, "host")
    busy = Outcome("fail", "umount: EBUSY", "target is busy")
    cells = {m: cell(m, [PASS] * 40), h: cell(h, [busy] * 20 + [PASS] * 10)}
    found = fidelity.compare(cells)
    assert {f.kind for f in found} == {fidelity.UNREACHED, fidelity.DISAGREE}
    assert all(f.model == m for f in found)
    assert found[0].where == f"iouring-kill / util-linux-2.38 / this kernel vs {REFERENCE}"


def test_lockdep_reports_compare_by_kind_not_by_class_names() -> None:
    real = Outcome("lockdep", "circular (&disk->open_mutex, sb_writers#7)", "WARNING: ...")
    model = Outcome("lockdep", "circular (&disk->open_mutex, sb_writers#ext4)", "WARNING: ...")
    m = CellKey("resume-chain", "loopdev", "v5.16")
    cells = {m: cell(m, [model] * 4), m.on("vm"): cell(m.on("vm"), [real])}
    assert fidelity.compare(cells) == []


def test_a_model_cell_the_time_limit_left_unrun_is_not_compared() -> None:
    m = CellKey("parallel-attach", "loopdev", "v6.11")
    unrun = CellResult(m, planned=40, cut=40)
    cells = {m: unrun, m.on("vm"): cell(m.on("vm"), [PASS] * 3)}
    assert fidelity.compare(cells) == []
    (note,) = fidelity.not_compared(cells)
    assert "the real v6.11 not compared with the v6.11 model" in note


def test_findings_are_found_by_the_model_cells_claims_name() -> None:
    cells = pair([EIO] * 40, [PASS] * 10)
    found = fidelity.compare(cells)
    key = CellKey("mount-loop", "util-linux-2.37", "v5.17-rc1")
    assert [f.kind for f in fidelity.resting_on([key], found)] == [
        fidelity.UNREACHED, fidelity.DISAGREE]  # fmt: skip
    assert fidelity.resting_on([CellKey("mount-loop", "loopdev", "v6.11")], found) == []
    d = found[1].to_json(cells)
    assert d["backend"] == "vm" and d["column"] == "v5.17-rc1"
    assert d["model"] == {"failures": 40, "checked": 40, "interval95": [0.9124, 1.0]}
