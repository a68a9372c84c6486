"""The lab on the model: deterministic per seed whatever the worker split, replayable, and
honest about machinery the model lacks."""

from __future__ import annotations

import pytest

from loopdev.lab import model
from loopdev.lab.cells import LabConfig, run_model
from loopdev.lab.outcome import CellKey, CellResult
from loopdev.lab.scenarios.iouring_kill import IouringKill
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk

KEYS = [
    CellKey("nested-umount", "util-linux-2.38", "v5.17-rc1"),
    CellKey("mount-loop+udev", "util-linux-2.37", "v5.17-rc1"),
    CellKey("detach-open", "loopdev", "v6.11"),
]


def _summary(cells: dict[CellKey, CellResult]) -> dict[CellKey, tuple[object, ...]]:
    return {
        k: (
            c.runs,
            sorted(c.counts.items()),
            c.failure_runs,
            sorted((e.label, e.seed, e.token) for e in c.examples.values()),
        )
        for k, c in cells.items()
    }


def test_results_do_not_depend_on_the_worker_split() -> None:
    serial = run_model(LabConfig(budget=24, workers=1, real=False), KEYS)
    pooled = run_model(LabConfig(budget=24, workers=2, real=False), KEYS)
    assert _summary(serial) == _summary(pooled)
    assert all(c.runs == 24 for c in serial.values())


def test_a_failure_replays_event_for_event() -> None:
    cells = run_model(LabConfig(budget=30, workers=1, real=False), KEYS[:1])
    cell = cells[KEYS[0]]
    failing = [e for e in cell.examples.values() if e.label.startswith("fail")]
    if not failing:
        pytest.skip(f"no user-visible failure in 30 runs: {cell.counts}")
    ex = failing[0]
    assert ex.events, "the first failure of a kind carries its trace"
    key = KEYS[0]
    again, _ = model.replay(ex.token, key.scenario, key.userspace, key.column)
    assert again.outcome.label == ex.label
    assert again.events == ex.events
    assert any(e["kind"] == "syscall" for e in again.events)


def test_missing_machinery_is_not_checkable_not_a_verdict() -> None:
    """A scenario asking for an io_uring the model does not have is unsupported, not a pass."""
    scenario = IouringKill(io_uring="no-such-io_uring")
    run = model.start(Scheduler(RandomWalk(0)), scenario, "util-linux-2.38", "v6.11")
    assert run.outcome is not None and run.outcome.kind == "unsupported"
    assert "no-such-io_uring" in run.outcome.message
