"""The lab's runner: scenario x kernel (model variants, this kernel) x userspace x strategy and
budget → cells of outcomes, counts, failure rates, time to first failure and replay tokens,
the claims' verdicts and the model's fidelity gaps.

The column for this kernel runs first (:mod:`loopdev.lab.realkernel`), then the model cells
in a pool of workers (:mod:`loopdev.lab.cells`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loopdev.lab.cells import REFERENCE, LabConfig, run_model
from loopdev.lab.claims import ClaimVerdict, claim_cells, judge_all
from loopdev.lab.outcome import THIS_KERNEL, CellKey, CellResult, Example
from loopdev.lab.scenarios import all_scenarios, optional_scenarios
from loopdev.lab.scenarios.base import Scenario


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

    def cell(
        self, scenario: str, userspace: str, column: str, backend: str | None = None
    ) -> CellResult | None:
        """A cell by row and column; the backend defaults to the column's own (``host`` for
        this kernel, else ``model``)."""
        if backend is None:
            backend = "host" if column == THIS_KERNEL else "model"
        return self.cells.get(CellKey(scenario, userspace, column, backend))

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


def fidelity_gaps(cells: dict[CellKey, CellResult], reference: str = REFERENCE) -> list[str]:
    """Outcomes seen on this kernel that the reference model variant ran and did not reach.
    A reference cell the time limit left without a run is no gap (see :func:`not_compared`)."""
    gaps: list[str] = []
    for key, real in sorted(cells.items(), key=lambda kv: str(kv[0])):
        if key.backend != "host" or real.checked == 0:
            continue
        mkey = CellKey(key.scenario, key.userspace, reference)
        sim = cells.get(mkey)
        if sim is None or (sim.runs == 0 and not sim.unsupported):
            continue
        seen = {
            lab
            for lab in real.counts
            if lab != "unsupported" and not lab.startswith("error")
        }
        if sim.checked == 0:
            gaps.append(
                f"{key.scenario} / {key.userspace}: the {reference} model could not run it "
                f"({sim.unsupported or 'no verdict'}); this kernel saw {sorted(seen)}"
            )
            continue
        cut = f", {sim.cut} more cut by the time limit" if sim.cut else ""
        for lab in sorted(seen - set(sim.counts)):
            gaps.append(
                f"{key.scenario} / {key.userspace}: '{lab}' seen on this kernel "
                f"({real.counts[lab]}/{real.checked}) but not reached in the {reference} model "
                f"({sim.checked} runs{cut})"
            )
    return gaps


def not_compared(cells: dict[CellKey, CellResult], reference: str = REFERENCE) -> list[str]:
    """Rows run on this kernel whose reference model cell the time limit left without a run."""
    out: list[str] = []
    for key, real in sorted(cells.items(), key=lambda kv: str(kv[0])):
        sim = cells.get(CellKey(key.scenario, key.userspace, reference))
        if key.backend == "host" and real.checked and sim is not None and sim.runs == 0 \
                and not sim.unsupported and sim.cut:
            out.append(
                f"{key.scenario} / {key.userspace}: not compared with the {reference} model "
                f"(its cell was not run: time limit)"
            )
    return out


def run_lab(
    cfg: LabConfig,
    *,
    progress_total: Callable[[int], None] | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> LabResult:
    """The whole lab: model matrix, then (as root) the column for this kernel."""
    from loopdev.lab import realkernel

    t0 = time.monotonic()
    known = (*all_scenarios(), *optional_scenarios())
    scenarios: list[Scenario] = [s for s in known if s.name in cfg.scenarios]
    rows = [(s.name, us) for s in scenarios for us in cfg.userspaces if _accepts(s, us)]
    keys = [CellKey(s, us, v) for s, us in rows for v in cfg.variants]
    notes: list[str] = []
    real_rows: list[str] = []
    real_ok = cfg.real and realkernel.unavailable() is None
    if cfg.real and not real_ok:
        notes.append(f"this kernel: not run ({realkernel.unavailable()})")
    trials = dict(cfg.real_trials or realkernel.DEFAULT_TRIALS)
    trials = {k: max(1, int(v * cfg.real_scale)) for k, v in trials.items()}
    if real_ok:
        ul = realkernel.util_linux_row()
        real_rows = [r for r in (ul, "loopdev") if r is not None and r in cfg.userspaces]
        if ul is None:
            notes.append("util-linux not found: this kernel ran the loopdev library only")
    real_total = sum(
        trials.get(s.name, 20) * len(real_rows) for s in scenarios if not s.model_only
    )
    if progress_total is not None:
        progress_total(sum(cfg.cell_budget(k) for k in keys) + real_total)
    columns = list(cfg.variants)
    real_cells: dict[CellKey, CellResult] = {}

    def real_column() -> None:
        if not (real_ok and real_rows):
            return
        plan = realkernel.RealPlan(scenarios, real_rows, trials)

        def on_trial(key: CellKey, i: int) -> None:
            if progress is not None:
                progress(1, f"{key}")

        got, real_notes = realkernel.run_real(plan, on_trial=on_trial)
        real_cells.update(got)
        notes.extend(real_notes)

    # the real column runs first, on an otherwise quiet machine: the model pool's load shifts
    # the real races' timing (docs/findings.md has an example)
    real_column()
    cells = run_model(cfg, keys, first=claim_cells(), progress=progress)
    if real_cells:
        cells.update(real_cells)
        columns.append(THIS_KERNEL)
    notes.extend(not_compared(cells))
    return LabResult(
        config=cfg,
        rows=rows,
        columns=columns,
        cells=cells,
        claims=judge_all(cells),
        gaps=fidelity_gaps(cells),
        notes=notes,
        seconds=time.monotonic() - t0,
        scenario_titles={s.name: (s.title, s.source) for s in scenarios},
    )


def _accepts(scenario: Scenario, userspace: str) -> bool:
    only = getattr(scenario, "userspaces", None)
    return only is None or userspace in only


def to_json(result: LabResult, *, with_events: bool = False) -> dict[str, Any]:
    """The machine-readable form of a lab run."""
    cfg = result.config
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
        },
        "seconds": round(result.seconds, 2),
        "columns": result.columns,
        "rows": [{"scenario": s, "userspace": u} for s, u in result.rows],
        "cells": [c.to_json(with_events=with_events) for c in result.cells.values()],
        "claims": [v.to_json() for v in result.claims],
        "model_gaps": result.gaps,
        "notes": result.notes,
    }
