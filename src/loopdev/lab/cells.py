"""The model's cells of a lab run: what a run covers (:class:`LabConfig`, its budget plan), and
:func:`run_model`, which explores model cells in a pool of worker processes.

Work is split by seeds: every model run is a pure function of (scenario, userspace, variant,
strategy, seed), chunks of seeds go to workers, and the parent folds the records back in seed
order — so results do not depend on which worker ran what.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from loopdev.lab import model
from loopdev.lab.outcome import CellKey, CellResult, RunRecord
from loopdev.lab.scenarios import all_scenarios, by_name

#: runs per model cell in the default budget
DEFAULT_BUDGET = 40
CHUNK = 20
#: the model column this kernel is compared with (the fidelity check)
REFERENCE = "v6.11"
#: seconds a default lab run with guests may take, everything included (the guests stop in
#: time for it; the issue's limit is 6 minutes on a 2-core machine)
TOTAL_TIME_LIMIT = 330.0
#: default runs per cell of scenarios whose model runs are costly (a run of theirs costs
#: several times any other scenario's; at DEFAULT_BUDGET they alone would outlast the lab's
#: time limit; docs/findings.md has the figures). No claim reads these cells. The REFERENCE
#: cells of a scenario that also runs on this kernel keep DEFAULT_BUDGET: the model's umount
#: EBUSY after the kill is rare, and the fidelity check must not miss it for want of runs.
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
    #: with ``real``: run every variant's real loop module in QEMU guests (as root, when
    #: guests can run); ``real`` False runs the model alone
    vm: bool = True
    #: with ``real``: run the scenarios on this machine's kernel (as root)
    host: bool = True
    #: take the machine-wide real-kernel lock for this kernel's column (False: the caller
    #: holds it already, as a test session does)
    host_lock: bool = True
    #: seconds the guests may take (None: lab.vmcells.DEFAULT_TIME_LIMIT x real_scale)
    vm_time_limit: float | None = None
    #: seconds the whole run may take when guests run: they stop in time for it (None:
    #: TOTAL_TIME_LIMIT x real_scale)
    total_time_limit: float | None = None
    #: users' patches to the 6.1 loop.c, each one more real column: (patch file, label)
    loop_patches: list[tuple[str, str]] = field(default_factory=list)

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


def _chunks(
    keys: Sequence[CellKey], cfg: LabConfig, deadline: float, first: Collection[CellKey]
) -> list[_Chunk]:
    budgets = {k: cfg.cell_budget(k) for k in keys}
    most = max(budgets.values(), default=0)
    out: list[_Chunk] = []
    size = most if cfg.strategy == "dfs" else CHUNK
    # the ``first`` cells first (all their chunks), so that a time limit never leaves them
    # unchecked; then round-robin over the other cells, so that a time limit cuts every cell
    # short, not the last ones
    for group in ([k for k in keys if k in first], [k for k in keys if k not in first]):
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
    first: Collection[CellKey] = (),
    progress: Callable[[int, str], None] | None = None,
) -> dict[CellKey, CellResult]:
    """Run the model cells in a pool (the ``first`` ones before the others); returns cells
    folded in seed order."""
    deadline = time.monotonic() + cfg.time_limit
    chunks = _chunks(keys, cfg, deadline, first)
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


def run_cells(
    keys: Sequence[CellKey],
    *,
    budget: int | None = None,
    strategy: str = "portfolio",
    seed: int = 0,
    workers: int = 2,
) -> dict[CellKey, CellResult]:
    """Run exactly these model cells as the lab runs them (its defaults unless given)."""
    cfg = LabConfig(
        scenarios=sorted({k.scenario for k in keys}),
        variants=sorted({k.column for k in keys}),
        userspaces=sorted({k.userspace for k in keys}),
        strategy=strategy,
        budget=DEFAULT_BUDGET if budget is None else budget,
        seed=seed,
        workers=workers,
        real=False,
        time_limit=600.0,
    )
    return run_model(cfg, keys)


def _model_only(scenario: str) -> bool:
    try:
        return bool(by_name(scenario).model_only)
    except KeyError:
        return True


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
