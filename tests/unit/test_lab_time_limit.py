"""The lab's default budget plan and what a report says about cells its time limit cut: they
are "not run", never a model gap and never a verdict."""

from __future__ import annotations

from loopdev.lab.cells import COSTLY_BUDGETS, DEFAULT_BUDGET, REFERENCE, LabConfig
from loopdev.lab.fidelity import compare, not_compared
from loopdev.lab.outcome import THIS_KERNEL, CellKey, CellResult, Outcome, RunRecord
from loopdev.lab.report import cell_text

EBUSY = Outcome("fail", "umount: EBUSY", "umount: target is busy.")


def _cell(key: CellKey, outcomes: list[Outcome], *, planned: int = 0, cut: int = 0) -> CellResult:
    cell = CellResult(key, planned=planned, cut=cut)
    for seed, o in enumerate(outcomes):
        cell.add(RunRecord(seed, o))
    return cell


def test_default_plan_gives_costly_cells_fewer_runs_but_not_the_fidelity_cells() -> None:
    cfg = LabConfig(real=False)
    assert cfg.cell_budget(CellKey("mount-loop", "loopdev", "v5.19")) == DEFAULT_BUDGET
    assert cfg.cell_budget(CellKey("iouring-kill", "loopdev", "v5.19")) == COSTLY_BUDGETS[
        "iouring-kill"
    ] < DEFAULT_BUDGET
    # compared with this kernel: full budget; the model-only row has no real counterpart
    assert cfg.cell_budget(CellKey("iouring-kill", "loopdev", REFERENCE)) == DEFAULT_BUDGET
    ecw = "iouring-kill[exit-cancel-wait]"
    assert cfg.cell_budget(CellKey(ecw, "loopdev", REFERENCE)) == COSTLY_BUDGETS[ecw]
    # a budget the user gives applies to every cell
    assert LabConfig(budget=7).cell_budget(CellKey("iouring-kill", "loopdev", "v5.19")) == 7


def test_a_cell_the_time_limit_cut_is_shown_as_such() -> None:
    key = CellKey("detach-open", "loopdev", "v6.11")
    assert cell_text(_cell(key, [], planned=40, cut=40)) == "cut"
    assert cell_text(_cell(key, [Outcome("pass")] * 3, planned=40, cut=37)) == "0*"
    assert cell_text(_cell(key, [Outcome("pass")] * 40, planned=40)) == "0"
    assert cell_text(None) == "-"


def test_an_unrun_model_cell_is_no_model_gap() -> None:
    real_key = CellKey("parallel-attach", "loopdev", THIS_KERNEL, "host")
    sim_key = CellKey("parallel-attach", "loopdev", REFERENCE)
    cells = {
        real_key: _cell(real_key, [Outcome("pass")] * 5),
        sim_key: _cell(sim_key, [], planned=40, cut=40),
    }
    assert compare(cells) == []
    assert len(not_compared(cells)) == 1 and "time limit" in not_compared(cells)[0]


def test_an_outcome_the_model_ran_and_never_reached_is_a_gap() -> None:
    real_key = CellKey("iouring-kill", "util-linux-2.38", THIS_KERNEL, "host")
    sim_key = CellKey("iouring-kill", "util-linux-2.38", REFERENCE)
    cells = {
        real_key: _cell(real_key, [EBUSY] * 4),
        sim_key: _cell(sim_key, [Outcome("pass")] * 6, planned=40, cut=34),
    }
    gaps = [f.line() for f in compare(cells) if f.kind == "unreached"]
    assert len(gaps) == 1
    assert "'fail: umount: EBUSY'" in gaps[0] and "(6 runs, 34 more cut by the time limit)" in gaps[0]
    assert not_compared(cells) == []


def test_a_model_cell_without_machinery_is_still_reported_as_such() -> None:
    real_key = CellKey("iouring-kill", "loopdev", THIS_KERNEL, "host")
    sim_key = CellKey("iouring-kill", "loopdev", REFERENCE)
    cells = {
        real_key: _cell(real_key, [Outcome("pass")]),
        sim_key: _cell(sim_key, [Outcome("unsupported", message="fio is not modelled")]),
    }
    assert cell_text(cells[sim_key]) == "n/a"
    assert ["could not run it (fio is not modelled)" in f.detail for f in compare(cells)] == [True]
