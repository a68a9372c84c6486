"""Turning a guest's events into the lab's cells (:class:`~loopdev.lab.outcome.CellResult`),
the same shape the host's real column produces. A trial the guest never finished becomes an
outcome of its own: ``deadlock: hang`` (the watchdog fired and tasks were blocked in the
kernel; the message ends with their stacks), ``fail: kernel panic`` (an oops or panic ended the guest), ``error: hang`` (the
trial did not finish but nothing was blocked in the kernel: a lab bug); the trials after it
are counted as cut."""

from __future__ import annotations

from loopdev.lab.outcome import CellKey, CellResult, Outcome, RunRecord
from loopdev.lab.scenarios import by_name
from loopdev.vm import stacks
from loopdev.vm.guest import HANG, OK, PANIC, GuestRun
from loopdev.vm.lockdep_report import reports_by_trial, trial_starts, trial_verdict
from loopdev.vm.protocol import CellPlan, Job, record_from_json
from loopdev.vm.userspaces import timing_distortion


def unfinished_outcome(run: GuestRun) -> Outcome:
    """What the trial that was running when the guest stopped counts as."""
    log = run.dmesg or run.console
    if run.status == PANIC:
        return Outcome("fail", "kernel panic", stacks.panic_reason(run.console + run.dmesg))
    if run.status == HANG:
        blocked = stacks.blocked_tasks(log)
        if blocked:
            where = "; ".join(t.summary() for t in blocked[:3])
            trace = "\n".join(t.format() for t in blocked)
            return Outcome(
                "deadlock", "hang",
                f"no progress by the watchdog's deadline; blocked: {where}\n{trace}",
            )  # fmt: skip
        return Outcome(
            "error", "hang",
            "no progress by the watchdog's deadline and no task was blocked in the kernel (a "
            "lab bug, not a kernel verdict)",
        )  # fmt: skip
    return Outcome("error", run.status, run.message or "the guest stopped")


def fold(
    run: GuestRun, job: Job, column: str, strategy: str, notes: list[str] | None = None
) -> dict[CellKey, CellResult]:
    """One cell per planned (scenario, userspace), with every trial the guest reported, the
    unfinished one (or a hung prepare) classified, and the rest counted as cut. A guest that
    stopped in a cleanup, after all the trials of its cell, adds to ``notes``."""
    notes = notes if notes is not None else []
    cells: dict[CellKey, CellResult] = {}
    plans: dict[tuple[str, str], CellPlan] = {}
    for plan in job.cells:
        key = CellKey(plan.scenario, plan.userspace, column, "vm")
        cells[key] = CellResult(key, strategy=strategy, planned=plan.trials)
        plans[(plan.scenario, plan.userspace)] = plan
    running: tuple[CellKey, str, int] | None = None
    for ev in run.events:
        if ev.kind not in ("start", "trial"):
            continue
        key = CellKey(str(ev.data["scenario"]), str(ev.data["userspace"]), column, "vm")
        if key not in cells:
            continue
        if ev.kind == "start":
            running = (key, str(ev.data.get("phase", "trial")), int(ev.data.get("i", -1)))
        else:
            cells[key].add(record_from_json(ev.data))
            running = None
    if running is not None and run.status != OK:
        key, phase, index = running
        outcome = unfinished_outcome(run)
        if phase == "cleanup":  # every trial has its verdict; the hang is the guest's note
            notes.append(f"{key}: the guest stopped in the scenario's cleanup: "
                         f"{outcome.label}: {outcome.message}")  # fmt: skip
        else:
            if phase == "prepare":
                outcome = Outcome(outcome.kind, outcome.failure, f"prepare: {outcome.message}")
            # the agent never read the kernel log after this trial: its reports, if any, are
            # the console's (or saved kernel log's) after the trial's start
            by_trial = reports_by_trial(run.dmesg or run.console, trial_starts(run.events))
            reports = by_trial.get((key.scenario, key.userspace, index), [])
            cells[key].add(trial_verdict(RunRecord(cells[key].runs, outcome), reports, None))
    for cell in cells.values():
        cell.timing_distorted = distortion(cell.key)
        if cell.is_unsupported:
            continue
        cell.cut = max(0, cell.planned - cell.runs)
    return cells


def distortion(key: CellKey) -> str:
    """Why a guest cell's timing is not hardware's ('' when it is comparable)."""
    return timing_distortion(key.scenario, by_name(key.scenario).udev, key.userspace)


def not_started(job: Job, column: str, strategy: str) -> dict[CellKey, CellResult]:
    """The cells of a guest the lab's time limit left unstarted: every planned trial cut."""
    return {
        key: CellResult(key, strategy=strategy, planned=plan.trials, cut=plan.trials,
                        timing_distorted=distortion(key))
        for plan in job.cells
        for key in [CellKey(plan.scenario, plan.userspace, column, "vm")]
    }
