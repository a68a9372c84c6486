"""detach-open's start and detach-open[held] in the model.

* The start gate (scenarios.common.StartGate): children run their part only once every child
  has started, so a child whose process is slow to start (a fork under emulation) does not
  leave the others racing alone.
* detach-open[held]: a holder keeps its fd open across LOOP_CLR_FD while an opener opens and
  reads; no modelled design hands the opener a half-dead device (before 6.11 the ioctl tore
  the device down, 6.11 refuses the open), and the device is gone afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from loopdev.lab import model
from loopdev.lab.cells import LabConfig, run_model
from loopdev.lab.outcome import CellKey
from loopdev.lab.scenarios.base import Env, ScenarioFailure
from loopdev.lab.scenarios.common import StartGate
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk

SLOW_START = 0.05


@dataclass
class _GateProbe:
    """A scenario whose trial starts a fast and a slow child through a StartGate and records
    when each one's part began (virtual seconds)."""

    began: dict[str, float] = field(default_factory=dict)
    udev: bool = False
    model_only: bool = True
    name: str = "gate-probe"
    title: str = "gate probe"
    source: str = "test"

    def prepare(self, env: Env) -> None:
        pass

    def trial(self, env: Env) -> None:
        k = env.kernel
        gate = StartGate(env, ["fast", "slow"])

        def part(name: str) -> None:
            self.began[name] = k.monotonic()

        fast = gate.wrap("fast", lambda: part("fast"))
        slow = gate.wrap("slow", lambda: part("slow"))

        def slow_start() -> None:
            k.sleep(SLOW_START)  # the slow child's start-up, before it reaches the gate
            slow()

        t0 = k.monotonic()
        procs = [k.spawn(fast, "fast"), k.spawn(slow_start, "slow")]
        gate.open(5.0, procs)
        for p in procs:
            if p.wait(5.0) != 0:
                raise ScenarioFailure("child", "exit", "a child failed")
        self.began = {n: t - t0 for n, t in self.began.items()}

    def cleanup(self, env: Env) -> None:
        pass


@pytest.mark.parametrize("seed", range(5))
def test_children_begin_together_after_the_slowest_start(seed: int) -> None:
    probe = _GateProbe()
    sched = Scheduler(RandomWalk(seed))
    run = model.start(sched, probe, "loopdev", "v6.11")
    sched.run()
    assert run.outcome is not None and run.outcome.kind == "pass", run.outcome
    assert set(probe.began) == {"fast", "slow"}
    assert min(probe.began.values()) >= SLOW_START, probe.began
    assert abs(probe.began["fast"] - probe.began["slow"]) < 0.005, probe.began


def test_held_open_during_loop_clr_fd_is_never_half_dead_in_the_modelled_designs() -> None:
    variants = ("v5.16", "v5.17-rc1", "v5.19", "v6.11")
    keys = [CellKey("detach-open[held]", "loopdev", v) for v in variants]
    cells = run_model(LabConfig(budget=8, workers=1, real=False), keys)
    for key in keys:
        assert cells[key].counts == {"pass": 8}, (key.column, cells[key].counts)
