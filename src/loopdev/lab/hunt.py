"""Hunting failures in the model, and checking RESEARCH §3's claims.

* :func:`scenario_program` / :func:`scenario_failure` — one lab scenario cell as an exploration
  program, for :func:`hunt` and :func:`replay`.
* :func:`shell` — shell-loop programs over the modelled util-linux (+ udevd) for the benchmarks
  (benchmarks/bench_model.py): a run "fails" when the script returns the line a user would
  have seen.

Which runs fail is decided by the model under the scheduler's choices, never named here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from loopdev.lab import model as lab_model
from loopdev.lab.scenarios import by_name
from loopdev.lab.userspace import register_util_linux
from loopdev.lab.userspace.scripts import mount_loop, nested_umount
from loopdev.lab.userspace.udevd import start_udevd
from loopdev.sim.explore import explore
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import RunOutcome, Scheduler
from loopdev.sim.strategy import PCT, RandomWalk, Replay, Strategy

#: registry key where a program stores what the user saw (a failure line, or None)
SEEN = "claims.seen"

Program = Callable[[Scheduler], None]
Check = Callable[[Scheduler, RunOutcome], "str | None"]


def boot(sched: Scheduler, variant: str, ul: str, nr_loop: int = 4) -> SimKernel:
    """A fresh model machine with util-linux ``ul``'s programs registered."""
    k = SimKernel.boot(variant, sched, nr_loop=nr_loop)
    register_util_linux(k, ul)
    return k


def shell(variant: str, ul: str, udev: bool, script: Callable[[SimKernel], str | None]) -> Program:
    """A model program: ``script`` as the shell, with or without udevd running alongside."""

    def program(sched: Scheduler) -> None:
        k = boot(sched, variant, ul)

        def sh() -> None:
            d = start_udevd(k) if udev else None
            try:
                sched.registry[SEEN] = script(k)
            finally:
                if d is not None:
                    d.stop()

        k.spawn(sh, "sh")

    return program


def user_failure(sched: Scheduler, out: RunOutcome) -> str | None:
    """The failure line the shell script stored, if any."""
    seen = sched.registry.get(SEEN)
    return seen if isinstance(seen, str) else None


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
    program: Program,
    strategy: Strategy | Callable[[int], Strategy],
    budget: int,
    check: Check = user_failure,
    *,
    stop_on_failure: bool = True,
) -> Hunt:
    """Explore ``program``; count the runs ``check`` flags. A run whose outcome is not ``ok``
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

    res = explore(program, strategy, budget, check=counting, stop_on_failure=stop_on_failure)
    for out in res.failures:
        if out.kind != "ok":
            h.model_errors.append(out.describe())
        elif not h.token:
            h.token = out.token
    return h


def replay(program: Program, token: str, check: Check = user_failure) -> str | None:
    """Run ``program`` once under the token's choices; what ``check`` says of that run."""
    sched = Scheduler(Replay(token), trace=False)
    program(sched)
    return check(sched, sched.run())


def random(seed0: int) -> Callable[[int], Strategy]:
    """Run i: a random walk seeded ``seed0 + i``."""
    return lambda i: RandomWalk(seed0 + i)


def pct(seed0: int, depth: int = 3) -> Callable[[int], Strategy]:
    """Run i: PCT seeded ``seed0 + i``."""
    return lambda i: PCT(seed0 + i, depth=depth)


def loop3(k: SimKernel) -> str | None:
    """``mount -o loop,ro; umount`` three times (claims 1, 3, 4)."""
    return mount_loop(k, iterations=3)


def loop1(k: SimKernel) -> str | None:
    """One ``mount -o loop,ro; umount`` (the benchmark's scenario)."""
    return mount_loop(k, iterations=1)


def nested(k: SimKernel) -> str | None:
    """``umount inner; umount outer`` of a nested loop mount (claim 2)."""
    return nested_umount(k)


#: claim 1: v5.17-rc1 + udev + util-linux 2.37's mount loop fails reading the superblock
CLAIM1 = ("v5.17-rc1", "2.37", True, loop3)
#: claim 2: v5.17-rc1, nested loop mounts: the outer umount is EBUSY
CLAIM2 = ("v5.17-rc1", "2.38", False, nested)


# -- one lab scenario cell as an exploration program ------------------------------------------


#: registry key of a scenario run's box (its outcome)
_BOX = "hunt.scenario"


def scenario_program(scenario: str, userspace: str, variant: str) -> Program:
    """A lab scenario cell as a program for :func:`hunt` / :func:`replay` (the lab's own
    setup: fresh machine, userspace row, udevd if the scenario wants it)."""
    sc = by_name(scenario)

    def program(sched: Scheduler) -> None:
        box = lab_model._Box()
        sched.registry[_BOX] = box
        lab_model.program(sc, userspace, variant, box)(sched)

    return program


def scenario_failure(sched: Scheduler, out: RunOutcome) -> str | None:
    """What the lab records for a run of :func:`scenario_program`, when it is not a pass:
    ``fail: <step>: <kind>``, ``deadlock: ...``, ``lockdep: ...``."""
    box = sched.registry.get(_BOX)
    assert isinstance(box, lab_model._Box)
    outcome, _report = lab_model.outcome_of(out, box)
    return None if outcome.kind == "pass" else outcome.label


__all__ = [
    "CLAIM1", "CLAIM2", "SEEN", "Hunt", "boot", "hunt", "loop1", "loop3", "nested", "pct",
    "random", "replay",
    "scenario_failure", "scenario_program", "shell", "user_failure",
]  # fmt: skip
