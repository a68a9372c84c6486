"""The API the lab calls: run scenarios on real loop modules in guests.

``run_variant(variant_or_patch, scenarios, userspaces, trials, ...)`` builds (or takes from
the cache) the module, boots guests, and returns a :class:`VariantResult`: per (scenario,
userspace) a :class:`~loopdev.lab.outcome.CellResult` of real trials, keyed by
``CellKey(scenario, userspace, column, "vm")`` with the variant's name (or the patch's label)
as the column, plus every guest's status, boot time and logs. ``run_variants`` does the same for
several variants, ``parallel`` guests at a time.

``GuestOptions(kernel="lockdep")`` boots the lockdep kernel instead of Debian's: a trial during
which lockdep reported becomes a ``lockdep`` outcome keyed like the model's
(``lockdep: circular (<classes, sorted>)``), the report's text on the cell's example
(``cell.examples[label].lockdep``, parsed back with
:func:`loopdev.vm.lockdep_report.example_reports`) and its key in ``cell.lockdep``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopdev.lab.outcome import CellKey, CellResult
from loopdev.lab.scenarios import by_name
from loopdev.sim.kernel import release_of
from loopdev.sim.loop import driver_class
from loopdev.vm import build, kernels, qemu, results, stacks
from loopdev.vm.guest import GuestOptions, GuestRun, run_guest
from loopdev.vm.protocol import CellPlan, Event, Job
from loopdev.vm.timeshare import TimeShare
from loopdev.vm.userspaces import USERSPACES
from loopdev.vm.variants import ModuleSource, module_source

#: scenarios a guest runs (iouring-kill's model-only exit-cancel-wait row has no real
#: counterpart); resume-chain writes /sys/power/resume and freezes a filesystem, which only
#: a guest's own kernel may have done to it, and gives a lockdep verdict on kernel="lockdep"
GUEST_SCENARIOS = (
    "mount-loop+udev", "mount-loop", "nested-umount", "nested-umount+udev", "iouring-kill",
    "detach-open", "parallel-attach", "resume-chain", "resume-chain[clr-fd]", "detach-open[held]",
    "detach-open[partscan]",
)  # fmt: skip

#: a progress callback: (column, event) for every event of every guest
OnEvent = Callable[[str, Event], None]


@dataclass
class GuestSummary:
    """One guest as the reports show it."""

    column: str
    status: str
    message: str
    boot_seconds: float | None
    seconds: float
    kernel: str
    console: str
    dmesg: str
    warnings: list[str] = field(default_factory=list)
    #: lockdep when the agent finished: "on" (it checked every trial: no report means none),
    #: "off" (it switched itself off after a report), "absent" (no lockdep), "" (unknown)
    lockdep: str = ""

    def to_json(self, *, with_logs: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "column": self.column,
            "status": self.status,
            "message": self.message,
            "boot_seconds": round(self.boot_seconds, 2) if self.boot_seconds else None,
            "seconds": round(self.seconds, 2),
            "kernel": self.kernel,
            "warnings": self.warnings,
            "lockdep": self.lockdep,
        }
        if with_logs:
            d["console"] = self.console
            d["dmesg"] = self.dmesg
        return d


@dataclass
class VariantResult:
    """Everything one variant (or user patch) produced."""

    column: str
    variant: str | None  # the model variant it stands for (None: a user's patch)
    origin: str
    cells: dict[CellKey, CellResult] = field(default_factory=dict)
    guests: list[GuestSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unavailable: str = ""  # why no guest ran (n/a design, patch or build failure)
    build_seconds: float = 0.0
    kernel: str = kernels.DEFAULT  # the guest kernel (loopdev.vm.kernels.KERNELS)
    kernel_release: str = ""
    #: whether the guest kernel checks locking: then a trial's lockdep report is its
    #: ``lockdep`` outcome and the report's text is on the cell's example (see lockdep_report)
    lockdep: bool = False

    def to_json(self, *, with_logs: bool = False) -> dict[str, Any]:
        cells = [cell.to_json() for cell in self.cells.values()]
        return {
            "column": self.column,
            "variant": self.variant,
            "origin": self.origin,
            "backend": "vm",
            "kernel": self.kernel,
            "kernel_release": self.kernel_release,
            "lockdep": self.lockdep,
            "unavailable": self.unavailable,
            "build_seconds": round(self.build_seconds, 2),
            "cells": cells,
            "guests": [g.to_json(with_logs=with_logs) for g in self.guests],
            "notes": self.notes,
        }


def plan_cells(
    scenarios: Sequence[str], userspaces: Sequence[str], trials: int | dict[str, int]
) -> list[CellPlan]:
    """Cells in scenario order; ``trials`` per cell or per scenario name (default 10). A
    scenario that names the userspaces it runs with (resume-chain: loopdev) skips the others,
    as the lab does. ValueError for a scenario or userspace a guest cannot run."""
    out: list[CellPlan] = []
    for s in scenarios:
        if s not in GUEST_SCENARIOS:
            raise ValueError(f"scenario {s!r} does not run in a guest; these do: "
                             + ", ".join(GUEST_SCENARIOS))  # fmt: skip
        only = getattr(by_name(s), "userspaces", None)
        for u in userspaces:
            if u not in USERSPACES:
                raise ValueError(f"unknown userspace {u!r}; known: {', '.join(USERSPACES)}")
        rows = [u for u in userspaces if only is None or u in only]
        if not rows:
            raise ValueError(f"scenario {s!r} runs only with the userspace {', '.join(only or ())}")
        for u in rows:
            n = trials if isinstance(trials, int) else trials.get(s, 10)
            out.append(CellPlan(s, u, n))
    return out


def split(cells: list[CellPlan], guests: int) -> list[list[CellPlan]]:
    """Cells dealt to ``guests`` jobs so the trial counts balance (largest first)."""
    jobs: list[list[CellPlan]] = [[] for _ in range(max(1, min(guests, len(cells))))]
    load = [0] * len(jobs)
    for cell in sorted(cells, key=lambda c: -c.trials):
        i = load.index(min(load))
        jobs[i].append(cell)
        load[i] += cell.trials
    return [j for j in jobs if j]


def _summary(column: str, run: GuestRun) -> GuestSummary:
    ready = run.ready()
    done = next((e for e in run.events if e.kind == "done"), None)
    return GuestSummary(
        column=column,
        status=run.status,
        message=run.message,
        boot_seconds=run.boot_seconds,
        seconds=run.seconds,
        kernel=str(ready.data.get("kernel", "")) if ready else "",
        console=run.console,
        dmesg=run.dmesg,
        warnings=stacks.warnings(run.dmesg or run.console),
        lockdep=str(done.data.get("lockdep", "")) if done else "",
    )


def _strategy(options: GuestOptions) -> str:
    m = options.machine
    return f"real trials (vm: {options.kernel} kernel, {m.accel}, {m.vcpus} vCPU)"


def design_release(variant: str | None) -> str | None:
    """The release the model reports for ``variant`` (None for a user's patch: the guest's
    own ``uname -r``)."""
    if variant is None:
        return None
    return release_of(driver_class(variant))


def _prepare(
    src: ModuleSource, kernel: kernels.BootKernel
) -> tuple[build.BuiltModule | None, str]:
    try:
        return build.build_module(src, kernel.target), ""
    except (build.PatchError, build.ModuleBuildError) as e:
        return None, str(e)


def run_variant(
    variant_or_patch: str | Path,
    scenarios: Sequence[str],
    userspaces: Sequence[str],
    trials: int | dict[str, int] = 10,
    *,
    label: str | None = None,
    trial_timeout: float = 60.0,
    options: GuestOptions | None = None,
    guests: int = 1,
    udevd: bool = True,
    on_event: OnEvent | None = None,
) -> VariantResult:
    """Run the cells on one variant (a model variant's name, or a patch file) in ``guests``
    guests one after the other, booting ``options.kernel`` (Debian's 6.1 by default;
    ``GuestOptions(kernel="lockdep")`` for the lockdep kernel, the module then built against
    its tree). A design that cannot be a module (post-*), a patch that does not apply and a
    module that does not build give a result with ``unavailable`` set; a guest kernel that is
    not there raises VmSetupError."""
    return run_variants(
        [variant_or_patch], scenarios, userspaces, trials, labels=[label],
        trial_timeout=trial_timeout, options=options, guests_per_variant=guests,
        parallel=1, udevd=udevd, on_event=on_event,
    )[0]  # fmt: skip


def run_variants(
    variants: Sequence[str | Path],
    scenarios: Sequence[str],
    userspaces: Sequence[str],
    trials: int | dict[str, int] = 10,
    *,
    labels: Sequence[str | None] | None = None,
    trial_timeout: float = 60.0,
    options: GuestOptions | None = None,
    guests_per_variant: int = 1,
    parallel: int = 2,
    udevd: bool = True,
    on_event: OnEvent | None = None,
) -> list[VariantResult]:
    """:func:`run_variant` for each variant, up to ``parallel`` guests at once (modules are
    built first, one at a time). Results come back in the order given."""
    cells = plan_cells(scenarios, userspaces, trials)
    requests = [
        Request(v, cells, label=labels[i] if labels and i < len(labels) else None,
                options=options or GuestOptions(), guests=guests_per_variant)
        for i, v in enumerate(variants)
    ]  # fmt: skip
    return run_requests(
        requests, trial_timeout=trial_timeout, parallel=parallel, udevd=udevd,
        on_event=on_event,
    )  # fmt: skip


@dataclass
class Request:
    """One column's guests: a variant's module (or a patch file's) with the cells to run on
    it (:func:`plan_cells`), booting ``options.kernel``. ``tag`` names its guests in
    progress events (default: the column), so that two requests for one column on two
    kernels can be told apart."""

    variant_or_patch: str | Path
    cells: list[CellPlan]
    label: str | None = None
    options: GuestOptions = field(default_factory=GuestOptions)
    guests: int = 1
    tag: str | None = None
    #: seconds its guests should take together (boot included): under a deadline, each
    #: guest's share of the time left follows it (:class:`~loopdev.vm.timeshare.TimeShare`)
    estimate: float = 60.0


def run_requests(
    requests: Sequence[Request],
    *,
    trial_timeout: float = 60.0,
    parallel: int = 2,
    udevd: bool = True,
    on_event: OnEvent | None = None,
    deadline: float | None = None,
) -> list[VariantResult]:
    """Run every request's guests, up to ``parallel`` at once, in the order given (modules
    are built first, one at a time). Requests may boot different kernels. ``deadline`` (a
    ``time.monotonic()`` value): each guest gets its share of the time left when it starts
    (:class:`~loopdev.vm.timeshare.TimeShare`, by the requests' estimates) and starts no trial
    after it, a guest that would start too late is not started, and every trial left out
    counts as cut. Besides the agent's events, ``on_event`` gets ``launch`` (a guest is
    booting; ``kernel``) and ``exit`` (it is gone; ``status``) for each guest. Results come
    back in the order of the requests."""
    out: list[VariantResult] = []
    work: list[tuple[VariantResult, build.BuiltModule, Job, Request]] = []
    for req in requests:
        result, module = _prepare_request(req)
        out.append(result)
        if module is None:
            continue
        release = design_release(result.variant)
        chunks = split(req.cells, req.guests)
        for chunk in chunks:
            job = Job(cells=chunk, trial_timeout=trial_timeout, udevd=udevd, release=release)
            work.append((result, module, job, req))
    lock = threading.Lock()
    share = None
    if deadline is not None:
        share = TimeShare(deadline, parallel, [
            r.estimate / len(split(r.cells, r.guests)) for _, _, _, r in work
        ])  # fmt: skip
    index = {id(item[2]): i for i, item in enumerate(work)}

    def one(item: tuple[VariantResult, build.BuiltModule, Job, Request]) -> None:
        result, module, job, req = item
        options, tag = req.options, req.tag or result.column
        column = result.column
        try:
            guest(result, module, job, options, tag, column)
        finally:
            if share is not None:
                share.finish(index[id(job)])

    def guest(result: VariantResult, module: build.BuiltModule, job: Job,
              options: GuestOptions, tag: str, column: str) -> None:  # fmt: skip

        def event(ev: Event) -> None:
            if on_event is not None:
                with lock:
                    on_event(tag, ev)

        def boot() -> GuestRun | None:
            if share is not None:
                budget = share.start(index[id(job)])
                if budget is None:
                    return None
                job.stop_after = budget
            event(Event("launch", {"kernel": options.kernel}))
            return run_guest(module, job, options, event)

        run = boot()
        if run is not None and run.boot_seconds is None:  # never came up (a hiccup): again
            first = f"{run.status}: {run.message}"
            run = boot() or run
            with lock:
                result.notes.append(f"a guest did not come up ({first}); booted again")
        if run is None:
            folded = results.not_started(job, column, _strategy(options))
            with lock:
                result.cells.update(folded)
                result.notes.append("a guest was not started: the time limit had passed "
                                    f"({planned_trials(job.cells)} trials cut)")  # fmt: skip
            event(Event("exit", {"status": "not started"}))
            return
        notes: list[str] = []
        folded = results.fold(run, job, column, _strategy(options), notes)
        with lock:
            result.notes.extend(notes)
            result.cells.update(folded)
            result.guests.append(_summary(column, run))
            result.notes.extend(str(e.data.get("text", "")) for e in run.events
                                if e.kind == "note")  # fmt: skip
        event(Event("exit", {"status": run.status}))

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(one, item) for item in work]
        try:
            for future in futures:
                future.result()
        except BaseException:  # Ctrl-C or a failed guest: no guest outlives the call
            for future in futures:
                future.cancel()
            qemu.kill_all()
            raise
    for result, req in zip(out, requests, strict=True):
        order = {(c.scenario, c.userspace): i for i, c in enumerate(req.cells)}
        result.cells = dict(sorted(result.cells.items(),
                                   key=lambda kv: order.get((kv[0].scenario, kv[0].userspace), 0)))  # fmt: skip
    return out


def _prepare_request(req: Request) -> tuple[VariantResult, build.BuiltModule | None]:
    """The request's result shell and its module (None, with ``unavailable`` set, for a
    design without a module, a patch that does not apply or a module that does not
    build)."""
    kernel = kernels.boot_kernel(req.options.kernel)

    def shell(column: str, variant: str | None, origin: str) -> VariantResult:
        return VariantResult(column, variant, origin, kernel=kernel.name,
                             kernel_release=kernel.release, lockdep=kernel.lockdep)  # fmt: skip

    try:
        src = module_source(req.variant_or_patch, req.label)
    except ValueError as e:  # a design without a module
        name = str(req.variant_or_patch)
        result = shell(name, name, name)
        result.unavailable = str(e).split(": ", 1)[-1]
        return result, None
    result = shell(src.label, src.variant, src.origin)
    module, why = _prepare(src, kernel)
    if module is None:
        result.unavailable = why
        return result, None
    result.build_seconds = module.seconds
    return result, module


def planned_trials(cells: list[CellPlan]) -> int:
    return sum(c.trials for c in cells)

