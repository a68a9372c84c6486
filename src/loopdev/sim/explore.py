"""The exploration loop: many runs of one program, each on a fresh scheduler, under a strategy
(:mod:`loopdev.sim.strategy`), summarised as run counts, failures and lockdep reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loopdev.sim.lockdep import LockdepReport, LockGraph
from loopdev.sim.sched import RunOutcome, Scheduler
from loopdev.sim.strategy import Strategy

#: sets one run up on its fresh scheduler (boots the machine, spawns the first tasks)
RunSetup = Callable[[Scheduler], object]
Check = Callable[[Scheduler, RunOutcome], "str | None"]


@dataclass
class ExplorationResult:
    """What an exploration saw: run counts by outcome, failures, distinct lockdep reports."""

    runs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: list[RunOutcome] = field(default_factory=list)
    first_failure_run: int | None = None
    lockdep: list[LockdepReport] = field(default_factory=list)
    exhausted: bool = False
    messages: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        tail = " (exhausted)" if self.exhausted else ""
        return f"{self.runs} runs: {counts}; {len(self.lockdep)} lockdep report(s){tail}"


def explore(
    setup: RunSetup,
    strategy: Strategy | Callable[[int], Strategy],
    budget: int,
    *,
    trace: bool = False,
    max_steps: int = 200_000,
    check: Check | None = None,
    stop_on_failure: bool = True,
    keep_failures: int = 5,
    persist_lockdep: bool = False,
) -> ExplorationResult:
    """Run `setup`'s program up to `budget` times under `strategy` (an instance reused across
    runs, or a factory called with the run index). A run fails if its outcome is not ok or
    `check` returns a message."""
    result = ExplorationResult()
    graph = LockGraph() if persist_lockdep else None
    seen_reports: set[tuple[str, ...]] = set()
    for i in range(budget):
        strat = strategy if isinstance(strategy, Strategy) else strategy(i)
        if strat.exhausted():
            result.exhausted = True
            break
        sched = Scheduler(strat, trace=trace, max_steps=max_steps, lockdep_graph=graph)
        setup(sched)
        out = sched.run()
        result.runs += 1
        result.outcomes[out.kind] = result.outcomes.get(out.kind, 0) + 1
        for rep in out.lockdep:
            if rep.key not in seen_reports:
                seen_reports.add(rep.key)
                result.lockdep.append(rep)
        message = check(sched, out) if check is not None and out.ok else None
        if message is not None:
            result.messages.append(message)
        if (not out.ok and out.kind != "pruned") or message is not None:
            if result.first_failure_run is None:
                result.first_failure_run = i
            if len(result.failures) < keep_failures:
                result.failures.append(out)
            if stop_on_failure:
                break
        if strat.exhausted():
            result.exhausted = True
            break
    return result


__all__ = ["Check", "ExplorationResult", "RunSetup", "explore"]
