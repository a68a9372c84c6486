"""The lab's runner: scenario x userspace x column, where a column is a model variant (its model
cell and, in a QEMU guest, its real loop module's cell), a user's patch (a real cell only) or
this machine's kernel → cells of outcomes, counts, failure rates and replay tokens, the claims'
verdicts and the fidelity check of every real cell against the model beside it.

Phases, one after another so that none disturbs another's timing: this kernel's column
(:mod:`loopdev.lab.realkernel`), the model cells in a pool of workers
(:mod:`loopdev.lab.cells`), then the guests, two at once, until the deadline
(:mod:`loopdev.lab.vmcells`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from loopdev.lab import fidelity
from loopdev.lab.cells import REFERENCE, TOTAL_TIME_LIMIT, LabConfig, run_model
from loopdev.lab.claims import ClaimVerdict, claim_cells, judge_all
from loopdev.lab.outcome import THIS_KERNEL, CellKey, CellResult, Example
from loopdev.lab.scenarios import all_scenarios, optional_scenarios
from loopdev.lab.scenarios.base import Scenario
from loopdev.lab.vmcells import RealColumn, VmRun


class ProgressSink(Protocol):
    """What the runner reports progress to (the terminal's bar)."""

    def phase(self, name: str, total: int) -> None:
        """A phase begins with ``total`` units of work."""

    def advance(self, n: int, what: str = "") -> None:
        """``n`` units done."""

    def guest(self, tag: str, kind: str, data: dict[str, Any]) -> None:
        """An event of the guest ``tag``: ``launch``, ``ready``, ``cell``, ``trial``, ...,
        ``exit`` (see loopdev.vm.protocol)."""


@dataclass
class LabResult:
    """Everything the reports show."""

    config: LabConfig
    rows: list[tuple[str, str]]
    columns: list[str]
    cells: dict[CellKey, CellResult]
    claims: list[ClaimVerdict]
    gaps: list[str]
    notes: list[str]
    seconds: float
    scenario_titles: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: the real columns run in guests (variants and users' patches), by column
    real: dict[str, RealColumn] = field(default_factory=dict)
    #: real cells whose timing the emulated CPU distorts, with the reason
    distorted: dict[CellKey, str] = field(default_factory=dict)
    findings: list[fidelity.Finding] = field(default_factory=list)
    #: seconds per phase ("this kernel", "model", "guests")
    phases: dict[str, float] = field(default_factory=dict)
    #: guests booted
    guests: int = 0

    def cell(
        self, scenario: str, userspace: str, column: str, backend: str | None = None
    ) -> CellResult | None:
        """A cell by row and column; the backend defaults to the column's own (``host`` for
        this kernel, ``vm`` for a user's patch, else ``model``)."""
        if backend is None:
            backend = "host" if column == THIS_KERNEL else "vm" if self.patch(column) else "model"
        return self.cells.get(CellKey(scenario, userspace, column, backend))

    def real_cell(self, scenario: str, userspace: str, column: str) -> CellResult | None:
        """The real cell of a column: a guest's, or this kernel's."""
        backend = "host" if column == THIS_KERNEL else "vm"
        return self.cells.get(CellKey(scenario, userspace, column, backend))

    def patch(self, column: str) -> bool:
        """Whether a column is a user's patch (a real column without a model)."""
        col = self.real.get(column)
        return col is not None and col.variant is None

    @property
    def has_real(self) -> bool:
        """Whether any column has real cells (guests or this kernel)."""
        return any(k.backend != "model" for k in self.cells)

    def failures(self) -> list[tuple[CellKey, CellResult, Example]]:
        """The first run of every outcome a cell saw other than a pass or unsupported: user-
        visible failures and deadlocks first, then lockdep reports and lab errors, by cell."""
        found = [
            (key, cell, ex)
            for key, cell in self.cells.items()
            for ex in cell.examples.values()
            if ex.label != "unsupported"
        ]
        found.sort(key=lambda t: (not t[2].label.startswith(("fail", "deadlock")), str(t[0])))
        return found

    def resting_on_findings(self) -> dict[int, list[fidelity.Finding]]:
        """Per claim, the fidelity findings about the cells its verdict rests on."""
        out: dict[int, list[fidelity.Finding]] = {}
        for v in self.claims:
            found = fidelity.resting_on([r.expect.key for r in v.results], self.findings)
            if found:
                out[v.claim.number] = found
        return out


def run_lab(cfg: LabConfig, *, progress: ProgressSink | None = None) -> LabResult:
    """The whole lab: this kernel's column (as root), the model matrix, then (as root, when
    guests can run) every variant's real module in guests."""
    t0 = time.monotonic()
    known = (*all_scenarios(), *optional_scenarios())
    scenarios: list[Scenario] = [s for s in known if s.name in cfg.scenarios]
    rows = [(s.name, us) for s in scenarios for us in cfg.userspaces if _accepts(s, us)]
    keys = [CellKey(s, us, v) for s, us in rows for v in cfg.variants]
    notes: list[str] = []
    phases: dict[str, float] = {}

    host_cells = _host_column(cfg, scenarios, notes, progress)
    phases["this kernel"] = time.monotonic() - t0
    t1 = time.monotonic()
    if progress is not None:
        progress.phase("model", sum(cfg.cell_budget(k) for k in keys))
    cells = run_model(cfg, keys, first=claim_cells(),
                      progress=progress.advance if progress else None)  # fmt: skip
    phases["model"] = time.monotonic() - t1
    columns = list(cfg.variants)
    vm = _guests(cfg, t0, notes, progress)
    if vm is not None:
        phases["guests"] = vm.seconds
        cells.update(vm.cells)
        columns += [c for c in vm.columns if c not in columns]
    if host_cells:
        cells.update(host_cells)
        columns.append(THIS_KERNEL)
    distorted = {k: c.timing_distorted for k, c in cells.items() if c.timing_distorted}
    findings = fidelity.compare(cells)
    notes.extend(fidelity.not_compared(cells))
    return LabResult(
        config=cfg,
        rows=rows,
        columns=columns,
        cells=cells,
        claims=judge_all(cells),
        gaps=[f.line() for f in findings],
        notes=notes,
        seconds=time.monotonic() - t0,
        scenario_titles={s.name: (s.title, s.source) for s in scenarios},
        real=vm.columns if vm is not None else {},
        distorted=distorted,
        findings=findings,
        phases=phases,
        guests=vm.guests if vm is not None else 0,
    )


def _host_column(
    cfg: LabConfig, scenarios: list[Scenario], notes: list[str], progress: ProgressSink | None
) -> dict[CellKey, CellResult]:
    """This machine's kernel, first, on an otherwise quiet machine: load shifts the real
    races' timing (docs/findings.md has an example)."""
    from loopdev.lab import realkernel

    if not (cfg.real and cfg.host):
        return {}
    why = realkernel.unavailable()
    if why is not None:
        notes.append(f"this kernel: not run ({why})")
        return {}
    trials = dict(cfg.real_trials or realkernel.DEFAULT_TRIALS)
    trials = {k: max(1, int(v * cfg.real_scale)) for k, v in trials.items()}
    ul = realkernel.util_linux_row()
    real_rows = [r for r in (ul, "loopdev") if r is not None and r in cfg.userspaces]
    if ul is None:
        notes.append("util-linux not found: this kernel ran the loopdev library only")
    if not real_rows:
        return {}
    if progress is not None:
        progress.phase("this kernel", sum(
            trials.get(s.name, 20) * len(real_rows) for s in scenarios if not s.model_only
        ))  # fmt: skip

    def on_trial(key: CellKey, i: int) -> None:
        if progress is not None:
            progress.advance(1, f"{key.scenario} / {key.userspace}")

    plan = realkernel.RealPlan(scenarios, real_rows, trials)
    got, real_notes = realkernel.run_real(plan, on_trial=on_trial, take_lock=cfg.host_lock)
    notes.extend(real_notes)
    loaded = [c for c in got.values() if c.timing_distorted]
    if loaded:
        worst = max(c.cpu_others or 0.0 for c in loaded)
        notes.append(f"this kernel: other work kept the CPUs up to {worst * 100:.0f}% busy while "
                     f"{len(loaded)} of its cells ran (marked ~: their rates are not an idle "
                     "machine's)")  # fmt: skip
    return got


def _guests(
    cfg: LabConfig, t0: float, notes: list[str], progress: ProgressSink | None
) -> VmRun | None:
    """The real columns in guests, or None when they were not asked for or cannot run (the
    notes say why). ``cfg.real`` and ``cfg.vm`` ask for every variant's; a user's patch is
    run whenever it is given."""
    from loopdev.lab import vmcells

    with_variants = cfg.real and cfg.vm
    if not with_variants and not cfg.loop_patches:
        return None
    why = vmcells.unavailable()
    if why is not None:
        notes.append(f"real loop modules in guests: not run ({why})")
        return None
    patches = [vmcells.UserPatch(Path(p), label) for p, label in cfg.loop_patches]
    variants = list(cfg.variants) if with_variants else []
    requests, plan_notes = vmcells.plan_requests(
        variants, cfg.scenarios, cfg.userspaces, scale=cfg.real_scale, patches=patches,
        lockdep=vmcells.lockdep_kernel_built(),
    )  # fmt: skip
    notes.extend(plan_notes)
    now = time.monotonic()
    limit = cfg.vm_time_limit or vmcells.DEFAULT_TIME_LIMIT * cfg.real_scale
    total = cfg.total_time_limit or TOTAL_TIME_LIMIT * cfg.real_scale
    deadline = min(now + limit, t0 + total)
    if progress is not None:
        booting = [r for r in requests if vmcells.has_module(r)]
        progress.phase("guests", sum(
            c.trials for r in booting for c in r.cells
        ) + vmcells.BOOT_UNITS * len(booting))  # fmt: skip

    def on_event(tag: str, ev: Any) -> None:
        if progress is not None:
            progress.guest(tag, ev.kind, ev.data)

    vm = vmcells.run(requests, deadline=deadline, on_event=on_event)
    cut = sum(c.cut for c in vm.cells.values())
    if cut:
        notes.append(f"guests: the time limit ({deadline - now:.0f} s) cut {cut} planned real "
                     f"trials (cells shown as cut; --real-scale or --vm-time-limit run more)")  # fmt: skip
    return vm


def _accepts(scenario: Scenario, userspace: str) -> bool:
    only = getattr(scenario, "userspaces", None)
    return only is None or userspace in only


def to_json(result: LabResult, *, with_events: bool = False) -> dict[str, Any]:
    """The machine-readable form of a lab run: every cell carries its ``backend`` (model, vm,
    host), ``column`` and ``timing_distorted`` (why a guest's timing is not hardware's)."""
    cfg = result.config
    cells = [c.to_json(with_events=with_events) for c in result.cells.values()]
    resting = result.resting_on_findings()
    return {
        "config": {
            "scenarios": cfg.scenarios,
            "variants": cfg.variants,
            "userspaces": cfg.userspaces,
            "strategy": cfg.strategy,
            "budget": cfg.budget,
            "budget_text": cfg.budget_text(),
            "seed": cfg.seed,
            "workers": cfg.workers,
            "real_scale": cfg.real_scale,
            "loop_patches": [{"file": p, "label": lab} for p, lab in cfg.loop_patches],
        },
        "seconds": round(result.seconds, 2),
        "phases": {k: round(v, 2) for k, v in result.phases.items()},
        "columns": result.columns,
        "rows": [{"scenario": s, "userspace": u} for s, u in result.rows],
        "cells": cells,
        "claims": [
            {
                **v.to_json(),
                "rests_on_findings": [
                    f.to_json(result.cells) for f in resting.get(v.claim.number, [])
                ],
            }
            for v in result.claims
        ],
        "fidelity": [f.to_json(result.cells) for f in result.findings],
        "model_gaps": result.gaps,
        "real_columns": [c.to_json() for c in result.real.values()],
        "reference": REFERENCE,
        "notes": result.notes,
    }
