"""Running one scenario once in the model: a fresh SimKernel of a variant, the chosen userspace,
optionally the modelled udevd, under a scheduler with a given strategy and seed.

:func:`boot` is the one way a fresh model machine is made for a run (the lab, the hunts of
:mod:`loopdev.lab.hunt` and the benchmarks all use it); :func:`start` sets a scenario cell's run
up on it, :func:`outcome_of` reads the result and :func:`run_once` does all three.

The outcome is what the run showed: the scenario's user-visible failure, a deadlock (no task
can run), a lockdep cycle, or pass. Nothing here knows which variant "should" fail.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loopdev.kernel import Kernel, Process
from loopdev.lab.backends import LoopdevLibrary, UtilLinux
from loopdev.lab.outcome import PASS, Outcome, RunRecord
from loopdev.lab.scenarios import by_name
from loopdev.lab.scenarios.base import (
    Env,
    ImageMaker,
    Scenario,
    ScenarioFailure,
    Unsupported,
    Userspace,
)
from loopdev.lab.userspace import register_util_linux
from loopdev.lab.userspace.fio import register_fio
from loopdev.lab.userspace.udevd import Udevd, start_udevd
from loopdev.sim import loop
from loopdev.sim.io_uring import use_io_uring_variant
from loopdev.sim.kernel import SimKernel
from loopdev.sim.lockdep import LockdepReport
from loopdev.sim.sched import RunOutcome, Scheduler
from loopdev.sim.strategy import PCT, BoundedDFS, NondeterminismError, RandomWalk, Replay, Strategy

#: the model's loop variants, in history order (the registry in :mod:`loopdev.sim.loop`)
VARIANTS: tuple[str, ...] = tuple(loop.VARIANTS)
MODEL_USERSPACES: tuple[str, ...] = ("util-linux-2.37", "util-linux-2.38", "loopdev")
STRATEGIES = ("portfolio", "random", "pct", "dfs")
WORKDIR = "/tmp/lab"
MAX_STEPS = 60_000
#: events kept per example trace (the tail, where the failure is)
MAX_EVENTS = 3000


def make_strategy(name: str, seed: int) -> Strategy:
    """The strategy for run ``seed`` (portfolio: random walk and PCT alternate)."""
    if name == "random" or (name == "portfolio" and seed % 2 == 0):
        return RandomWalk(seed)
    if name in ("pct", "portfolio"):
        return PCT(seed, depth=3)
    raise ValueError(f"unknown strategy {name!r}")


def _model_image_maker(kernel: Kernel) -> ImageMaker:
    def make(
        kind: str, path: str, *, size_mib: int = 16, files: dict[str, bytes] | None = None
    ) -> str:
        del files  # the model's images carry a superblock, not contents
        size_mib = min(size_mib, 2)  # sizes do not matter to the model; memory does
        if kind == "squashfs":
            argv = ["mksquashfs", f"{path}.src", path, "-noappend"]
        else:
            argv = [f"mkfs.{kind}", "-q", "-F", path, f"{size_mib}M"]
        try:
            r = kernel.run(argv)
        except OSError as e:
            raise Unsupported(f"{argv[0]}: not modelled ({e.strerror})") from e
        if r.returncode != 0:
            raise Unsupported(f"{argv[0]} failed in the model: {r.stderr.strip()}")
        return path

    return make


def _model_starter(kernel: SimKernel) -> Callable[[Sequence[str], str], Process]:
    """``env.start``: fork + exec of a modelled program without waiting (``SimKernel.start``),
    so that the process *is* the program: killing it kills the program, as on Linux."""

    def start(argv: Sequence[str], name: str) -> Process:
        if not kernel.has_program(argv[0]):
            raise Unsupported(f"{argv[0]} is not modelled")
        return kernel.start(argv, name)

    return start


def _use_io_uring(sched: Scheduler, variant: str | None) -> str | None:
    """Select the run's io_uring variant; the reason when the model cannot."""
    if not variant:
        return None
    try:
        use_io_uring_variant(sched, variant)
    except ValueError as e:
        return f"io_uring variant {variant!r} is not modelled ({e})"
    return None


def _userspace(kernel: SimKernel, row: str) -> Userspace:
    """The row's userspace; the modelled util-linux programs (and mkfs) are registered with
    the kernel in every case (loopdev rows use them only to build images)."""
    version = "2.38" if row == "loopdev" else row.removeprefix("util-linux-")
    register_util_linux(kernel, version)
    return LoopdevLibrary(kernel) if row == "loopdev" else UtilLinux(kernel, row)


def boot(
    sched: Scheduler, variant: str, row: str, *, nr_loop: int = 8
) -> tuple[SimKernel, Userspace]:
    """A fresh model machine for one run on ``sched``: the kernel of ``variant`` with the
    modelled programs registered (util-linux in the version ``row`` names, mkfs, fio), and
    the userspace of ``row``."""
    kernel = SimKernel.boot(variant, sched, nr_loop=nr_loop)
    userspace = _userspace(kernel, row)
    register_fio(kernel)
    return kernel, userspace


@dataclass
class ModelRun:
    """One scenario run in the model as :func:`start` set it up: the kernel, the modelled
    udevd when the scenario wants one, and what the scenario's task reported when it ended."""

    kernel: SimKernel | None = None
    udevd: Udevd | None = None
    outcome: Outcome | None = None
    env: Env | None = None


def start(sched: Scheduler, scenario: Scenario, row: str, variant: str) -> ModelRun:
    """Set up one run of ``scenario`` on ``sched``: boot the machine, start udevd if the
    scenario wants it, and spawn the scenario's task (``sched.run()`` then runs it)."""
    run = ModelRun()
    why = _use_io_uring(sched, getattr(scenario, "io_uring", None))
    if why is not None:
        run.outcome = Outcome("unsupported", message=why)
        return run
    kernel, us = boot(sched, variant, row)
    udevd = start_udevd(kernel) if scenario.udev else None
    run.kernel, run.udevd = kernel, udevd
    env = Env(
        kernel=kernel,
        userspace=us,
        workdir=WORKDIR,
        make_image=_model_image_maker(kernel),
        start=_model_starter(kernel),
        is_model=True,
        udev=scenario.udev,
    )
    run.env = env

    def main() -> None:
        try:
            with contextlib.suppress(OSError):
                kernel.mkdir(WORKDIR)
            scenario.prepare(env)
            scenario.trial(env)
            run.outcome = PASS
        except ScenarioFailure as f:
            run.outcome = Outcome("fail", f.key, f.message)
        except Unsupported as u:
            run.outcome = Outcome("unsupported", message=str(u))
        finally:
            if udevd is not None:
                udevd.stop()

    kernel.spawn(main, "lab")
    return run


def outcome_of(out: RunOutcome, run: ModelRun) -> tuple[Outcome, str]:
    """The run's outcome (and any lockdep report text) from the scheduler and the scenario."""
    report = "\n\n".join(r.format() for r in out.lockdep)
    if run.outcome is not None and run.outcome.kind == "unsupported":
        return run.outcome, report
    if out.kind == "deadlock":
        who = " -> ".join(out.cycle) if out.cycle else ", ".join(w.thread for w in out.waits)
        return Outcome("deadlock", who[:80], out.describe()), report
    if out.kind == "step_limit":
        return Outcome("step-limit", "", f"no progress within {out.steps} steps"), report
    if out.kind == "error":
        err = out.error
        if isinstance(err, Unsupported):
            return Outcome("unsupported", message=str(err)), report
        name = type(err).__name__ if err is not None else "error"
        return Outcome("error", name, out.traceback.strip().splitlines()[-1] if out.traceback else name), report
    if run.outcome is not None and run.outcome.kind == "fail":
        return run.outcome, report
    if out.lockdep:
        rep = out.lockdep[0]
        return Outcome("lockdep", _lockdep_key(rep), rep.title), report
    if run.outcome is None:
        return Outcome("error", "no result", "the scenario task never finished"), report
    return run.outcome, report


def run_once(
    scenario_name: str,
    row: str,
    variant: str,
    strategy: Strategy,
    seed: int,
    *,
    trace: bool = False,
    max_steps: int = MAX_STEPS,
) -> tuple[RunRecord, RunOutcome | None]:
    """One run of a scenario in the model."""
    scenario = by_name(scenario_name)
    sched = Scheduler(strategy, trace=trace, max_steps=max_steps)
    t0 = time.perf_counter()
    run = start(sched, scenario, row, variant)
    if run.outcome is not None and run.outcome.kind == "unsupported":
        return RunRecord(seed, run.outcome, "", time.perf_counter() - t0), None
    out = sched.run()
    outcome, report = outcome_of(out, run)
    rec = RunRecord(
        seed,
        outcome,
        out.token,
        time.perf_counter() - t0,
        lockdep=report,
        lockdep_kinds=tuple(_lockdep_key(r) for r in out.lockdep),
    )
    if run.env is not None:
        rec.measurements = dict(run.env.measurements)  # virtual seconds
    if trace:
        rec.events = [_event(e) for e in out.trace.to_json()[-MAX_EVENTS:]]
    return rec, out


def _lockdep_key(rep: LockdepReport) -> str:
    """``circular (open_mutex, sb_writers, ...)``: the report kind and its lock classes."""
    classes = ", ".join(sorted(dict.fromkeys(rep.classes)))
    return f"{rep.kind} ({classes})" if classes else str(rep.kind)


def _event(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e[k] for k in ("step", "time", "thread", "kind", "name", "detail") if k in e}


def replay(
    token: str, scenario_name: str, row: str, variant: str, *, max_steps: int = MAX_STEPS
) -> tuple[RunRecord, RunOutcome | None]:
    """Re-run a recorded schedule with tracing on."""
    return run_once(
        scenario_name, row, variant, Replay(token), 0, trace=True, max_steps=max_steps
    )


def run_seeds(
    scenario_name: str,
    row: str,
    variant: str,
    strategy_name: str,
    seeds: Sequence[int],
    *,
    max_steps: int = MAX_STEPS,
    deadline: float | None = None,
) -> list[RunRecord]:
    """Runs for ``seeds`` (in order); the first run of each failure label is replayed with
    tracing on, so its example carries the interleaving."""
    out: list[RunRecord] = []
    traced: set[str] = set()
    dfs = BoundedDFS(preemption_bound=2) if strategy_name == "dfs" else None
    for seed in seeds:
        if deadline is not None and time.monotonic() > deadline:
            break
        strat: Strategy = dfs if dfs is not None else make_strategy(strategy_name, seed)
        if dfs is not None and dfs.exhausted():
            break
        rec, _ = run_once(scenario_name, row, variant, strat, seed, max_steps=max_steps)
        label = rec.outcome.label
        if rec.outcome.kind not in ("pass", "unsupported") and label not in traced and rec.token:
            traced.add(label)
            try:
                again, _ = replay(rec.token, scenario_name, row, variant, max_steps=max_steps)
                rec.events = again.events
            except NondeterminismError as e:
                rec.outcome = Outcome("error", "nondeterminism", str(e))
        out.append(rec)
        if rec.outcome.kind == "unsupported":
            break  # the backend lacks something: more seeds will not change that
    return out
