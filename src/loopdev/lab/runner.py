"""The lab's runner: scenario x kernel (model variants, this kernel) x userspace x strategy and
budget → cells of outcomes, counts, failure rates, time to first failure and replay tokens.

Model exploration runs in a process pool (2 workers by default). Work is split by seeds: every
model run is a pure function of (scenario, userspace, variant, strategy, seed), chunks of seeds
go to workers, and the parent folds the records back in seed order — so results do not depend
on which worker ran what.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loopdev.lab import model
from loopdev.lab.claims import CLAIMS, ClaimVerdict, judge_all
from loopdev.lab.outcome import THIS_KERNEL, CellKey, CellResult, RunRecord
from loopdev.lab.scenarios import all_scenarios, by_name
from loopdev.lab.scenarios.base import Scenario

#: runs per model cell in the default budget
DEFAULT_BUDGET = 40
CHUNK = 20
#: the model column this kernel is compared with (the fidelity check)
REFERENCE = "v6.11"
#: default runs per cell of scenarios whose model runs are costly. Measured on this machine
#: (2 workers busy): iouring-kill ~250 ms a run, its exit-cancel-wait row ~180 ms, every other
#: scenario 5-50 ms. At 40 runs these two rows alone need ~230 s of the 2 workers, more than
#: the whole lab may take (3 minutes, the real column included); at 6 runs the default
#: matrix fits in ~100 s. No claim reads these cells. The REFERENCE cells of a scenario that
#: also runs on this kernel keep DEFAULT_BUDGET: the model's umount EBUSY after the kill is
#: about 1 run in 40, and the fidelity check must not miss it for want of runs.
COSTLY_BUDGETS: dict[str, int] = {"iouring-kill": 6, "iouring-kill[exit-cancel-wait]": 6}


@dataclass
class LabConfig:
    """What one lab run covers."""

    scenarios: list[str] = field(default_factory=lambda: [s.name for s in all_scenarios()])
    variants: list[str] = field(default_factory=lambda: list(model.VARIANTS))
    userspaces: list[str] = field(default_factory=lambda: list(model.MODEL_USERSPACES))
    strategy: str = "portfolio"
    budget: int | None = None  # runs per model cell; None: the default plan (cell_budget)
    seed: int = 0
    workers: int = 2
    real: bool = True
    real_trials: dict[str, int] | None = None
    real_scale: float = 1.0
    time_limit: float = 120.0  # seconds for the model part; chunks not started are skipped
    max_steps: int = model.MAX_STEPS

    def cell_budget(self, key: CellKey) -> int:
        """Runs planned for one model cell: ``budget`` when given, else DEFAULT_BUDGET, fewer
        for COSTLY_BUDGETS scenarios except in their fidelity (REFERENCE) cells."""
        if self.budget is not None:
            return self.budget
        costly = COSTLY_BUDGETS.get(key.scenario)
        if costly is None or (key.column == REFERENCE and not _model_only(key.scenario)):
            return DEFAULT_BUDGET
        return costly

    def budget_text(self) -> str:
        """``40/cell`` or ``40/cell (iouring-kill 6, ...)`` for the reports."""
        if self.budget is not None:
            return f"{self.budget}/cell"
        costly = [f"{s} {n}" for s, n in COSTLY_BUDGETS.items() if s in self.scenarios]
        if not costly:
            return f"{DEFAULT_BUDGET}/cell"
        return f"{DEFAULT_BUDGET}/cell ({', '.join(costly)}; {REFERENCE} cells compared with " \
            f"this kernel {DEFAULT_BUDGET})"


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

    def cell(self, scenario: str, userspace: str, column: str) -> CellResult | None:
        return self.cells.get(CellKey(scenario, userspace, column))


@dataclass(frozen=True)
class _Chunk:
    key: CellKey
    strategy: str
    seeds: tuple[int, ...]
    max_steps: int
    deadline: float


def _run_chunk(chunk: _Chunk) -> tuple[CellKey, list[RunRecord], int, int]:
    """Runs one chunk; returns the cell, its records, the runs planned and the runs the time
    limit cut (seeds not run because the deadline had passed)."""
    recs = model.run_seeds(
        chunk.key.scenario,
        chunk.key.userspace,
        chunk.key.column,
        chunk.strategy,
        chunk.seeds,
        max_steps=chunk.max_steps,
        deadline=chunk.deadline,
    )
    missing = len(chunk.seeds) - len(recs)
    stopped = bool(recs) and recs[-1].outcome.kind == "unsupported"
    cut = missing if missing and not stopped and time.monotonic() > chunk.deadline else 0
    return chunk.key, recs, len(chunk.seeds), cut


def _chunks(keys: Sequence[CellKey], cfg: LabConfig, deadline: float) -> list[_Chunk]:
    budgets = {k: cfg.cell_budget(k) for k in keys}
    most = max(budgets.values(), default=0)
    out: list[_Chunk] = []
    size = most if cfg.strategy == "dfs" else CHUNK
    # the cells RESEARCH §3's claims name first (all their chunks), so that a time limit never
    # leaves a claim unchecked; then round-robin over the other cells, so that a time limit
    # cuts every cell short, not the last ones
    named = {e.key for c in CLAIMS for e in c.expects}
    for group in ([k for k in keys if k in named], [k for k in keys if k not in named]):
        for start in range(0, most, max(1, size)):
            for key in group:
                end = min(start + size, budgets[key])
                if start < end:
                    seeds = tuple(range(cfg.seed + start, cfg.seed + end))
                    out.append(_Chunk(key, cfg.strategy, seeds, cfg.max_steps, deadline))
    return out


def run_model(
    cfg: LabConfig,
    keys: Sequence[CellKey],
    *,
    progress: Callable[[int, str], None] | None = None,
) -> dict[CellKey, CellResult]:
    """Run the model cells in a pool; returns cells folded in seed order."""
    deadline = time.monotonic() + cfg.time_limit
    chunks = _chunks(keys, cfg, deadline)
    got: dict[CellKey, list[RunRecord]] = {k: [] for k in keys}
    cut: dict[CellKey, int] = dict.fromkeys(keys, 0)
    skipped: set[CellKey] = set()

    def take(key: CellKey, recs: list[RunRecord], planned: int, lost: int = 0) -> None:
        got[key].extend(recs)
        cut[key] += lost
        if recs and recs[-1].outcome.kind == "unsupported":
            skipped.add(key)
        if progress is not None:
            progress(planned, str(key))

    if cfg.workers <= 1:
        for ch in chunks:
            if ch.key in skipped:
                take(ch.key, [], len(ch.seeds))
                continue
            take(*_run_chunk(ch))
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(cfg.workers) as pool:
            for key, recs, planned, lost in pool.imap_unordered(_run_chunk, chunks, chunksize=1):
                take(key, recs, planned, lost)
    cells: dict[CellKey, CellResult] = {}
    for key in keys:
        cell = cells[key] = CellResult(key, strategy=cfg.strategy, planned=cfg.cell_budget(key))
        recs = sorted(got[key], key=lambda r: r.seed)
        if recs and any(r.outcome.kind == "unsupported" for r in recs):
            recs = [next(r for r in recs if r.outcome.kind == "unsupported")]
        else:
            cell.cut = cut[key]
        for r in recs:
            cell.add(r)
    return cells


def fidelity_gaps(cells: dict[CellKey, CellResult], reference: str = REFERENCE) -> list[str]:
    """Outcomes seen on this kernel that the reference model variant ran and did not reach.
    A reference cell the time limit left without a run is no gap (see :func:`not_compared`)."""
    gaps: list[str] = []
    for key, real in sorted(cells.items(), key=lambda kv: str(kv[0])):
        if key.column != THIS_KERNEL or real.checked == 0:
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
        if key.column == THIS_KERNEL and real.checked and sim is not None and sim.runs == 0 \
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
    scenarios: list[Scenario] = [s for s in all_scenarios() if s.name in cfg.scenarios]
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
    # the real races' timing (nested-umount+udev with util-linux: 7% alone, 0-2% alongside)
    real_column()
    cells = run_model(cfg, keys, progress=progress)
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


def _model_only(scenario: str) -> bool:
    try:
        return bool(by_name(scenario).model_only)
    except KeyError:
        return True


def _accepts(scenario: Scenario, userspace: str) -> bool:
    only = getattr(scenario, "userspaces", None)
    return only is None or userspace in only


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


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
