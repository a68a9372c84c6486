"""Hunting failures in the model: explore one setup with a strategy, count what a user would
have seen, and replay a token to the same verdict.

* :func:`scenario_setup` / :func:`scenario_failure` — one lab scenario cell (the lab's own
  :func:`loopdev.lab.model.start`) as an exploration setup and the check of its runs.
* :func:`hunt` — explore a setup; :class:`Hunt` says how many runs failed, how, how soon.
* :func:`replay` — one run under a token's choices, and what the check says of it.

Which runs fail is decided by the model under the scheduler's choices, never named here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from loopdev.lab import model
from loopdev.lab.scenarios import by_name
from loopdev.lab.scenarios.base import Scenario
from loopdev.sim.explore import Check, RunSetup, explore
from loopdev.sim.sched import RunOutcome, Scheduler
from loopdev.sim.strategy import PCT, RandomWalk, Replay, Strategy

#: registry key of a scenario cell's run (its :class:`~loopdev.lab.model.ModelRun`)
RUN = "hunt.scenario"


def scenario_setup(scenario: Scenario | str, userspace: str, variant: str) -> RunSetup:
    """A lab scenario cell as an exploration setup: the lab's own run of it (fresh machine,
    the row's userspace, udevd if the scenario wants it), kept in the scheduler's registry."""
    sc = by_name(scenario) if isinstance(scenario, str) else scenario

    def setup(sched: Scheduler) -> None:
        sched.registry[RUN] = model.start(sched, sc, userspace, variant)

    return setup


def scenario_failure(sched: Scheduler, out: RunOutcome) -> str | None:
    """What the lab records for a run of :func:`scenario_setup` when it is not a pass: its
    label (``fail: <step>: <kind>``, ``lockdep: ...``) and the message's first line."""
    run = sched.registry.get(RUN)
    assert isinstance(run, model.ModelRun)
    outcome, _report = model.outcome_of(out, run)
    if outcome.kind == "pass":
        return None
    first = outcome.message.splitlines()[0] if outcome.message else ""
    return f"{outcome.label} - {first}" if first else outcome.label


@dataclass
class Hunt:
    """An exploration's result as a user would summarise it."""

    runs: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    first: int | None = None
    seconds_to_first: float | None = None
    token: str = ""
    model_errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        top = "; ".join(f"{n}x {m}" for m, n in self.failures.most_common(3))
        first = (
            ""
            if self.first is None
            else f", first at run {self.first} ({self.seconds_to_first:.2f}s)"
        )
        return f"{sum(self.failures.values())}/{self.runs} runs failed{first}: {top}"


def hunt(
    setup: RunSetup,
    strategy: Strategy | Callable[[int], Strategy],
    budget: int,
    check: Check,
    *,
    stop_on_failure: bool = True,
) -> Hunt:
    """Explore ``setup``; count the runs ``check`` flags. A run whose outcome is not ``ok``
    (deadlock, step limit, a model error) is recorded in ``model_errors``."""
    h = Hunt()
    t0 = time.perf_counter()

    def counting(sched: Scheduler, out: RunOutcome) -> str | None:
        msg = check(sched, out)
        if msg is not None:
            h.failures[msg] += 1
            if h.first is None:
                h.first, h.seconds_to_first = h.runs, time.perf_counter() - t0
        h.runs += 1
        return msg

    res = explore(setup, strategy, budget, check=counting, stop_on_failure=stop_on_failure)
    for out in res.failures:
        if out.kind != "ok":
            h.model_errors.append(out.describe())
        elif not h.token:
            h.token = out.token
    return h


def replay(setup: RunSetup, token: str, check: Check) -> str | None:
    """Run ``setup`` once under the token's choices; what ``check`` says of that run."""
    sched = Scheduler(Replay(token), trace=False)
    setup(sched)
    return check(sched, sched.run())


def random(seed0: int) -> Callable[[int], Strategy]:
    """Run i: a random walk seeded ``seed0 + i``."""
    return lambda i: RandomWalk(seed0 + i)


def pct(seed0: int, depth: int = 3) -> Callable[[int], Strategy]:
    """Run i: PCT seeded ``seed0 + i``."""
    return lambda i: PCT(seed0 + i, depth=depth)


__all__ = [
    "RUN", "Hunt", "hunt", "pct", "random", "replay", "scenario_failure", "scenario_setup",
]  # fmt: skip
