"""Terminal output of the lab: the matrix table, the claims view, and a progress bar."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from loopdev.lab.backends import USERSPACES
from loopdev.lab.outcome import THIS_KERNEL, CellResult
from loopdev.lab.runner import LabResult
from loopdev.sim.loop import VARIANTS

#: short column headers for the terminal: each variant's label, and this kernel's
SHORT = {**{name: cls.label for name, cls in VARIANTS.items()}, THIS_KERNEL: "THIS"}


def cell_text(cell: CellResult | None) -> str:
    """``37%`` / ``0`` / ``n/a`` (cannot run) / ``-`` (not part of this run) / ``cut`` (not run:
    time limit) / ``err``; a ``*`` marks a cell the time limit cut short."""
    if cell is None or cell.runs == 0:
        return "cut" if cell is not None and cell.time_limited else "-"
    star = "*" if cell.time_limited else ""
    if cell.checked == 0:
        return ("n/a" if cell.unsupported else "err") + star
    rate = cell.failure_rate or 0.0
    if cell.failures == 0:
        return "0" + star
    return (f"{rate * 100:.0f}%" if rate >= 0.01 else f"{rate * 100:.1f}%") + star


def row_label(scenario: str, userspace: str) -> str:
    """A matrix row's userspace column: the userspace's name, or what the scenario says it
    does there (detach-open: who detaches and who opens)."""
    shown = USERSPACES.get(userspace, userspace)
    label = getattr(_scenarios().get(scenario), "row_label", None)
    return str(label(shown)) if callable(label) else shown


def _scenarios() -> dict[str, object]:
    if not _SCENARIOS:
        from loopdev.lab.scenarios import all_scenarios

        _SCENARIOS.update((s.name, s) for s in all_scenarios())
    return _SCENARIOS


_SCENARIOS: dict[str, object] = {}


def matrix_table(result: LabResult) -> str:
    """The matrix: rows scenario x userspace, columns model variants and this kernel."""
    heads = [SHORT.get(c, c) for c in result.columns]
    widths = [max(6, len(h)) for h in heads]
    name_w = max(len(s) for s, _ in result.rows)
    label_w = name_w + 2 + max(len(row_label(s, u)) for s, u in result.rows) + 2
    lines = [
        "failure rate per cell (runs that failed / runs that produced a verdict)",
        " " * label_w + " ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)),
    ]
    prev = ""
    for s, u in result.rows:
        name = s if s != prev else ""
        prev = s
        label = f"{name:<{name_w}}  {row_label(s, u)}"
        cells = [cell_text(result.cell(s, u, c)) for c in result.columns]
        lines.append(
            f"{label:<{label_w}}" + " ".join(t.rjust(w) for t, w in zip(cells, widths, strict=True))
        )
    lines.append("n/a: the backend lacks what the scenario needs (not yet checkable); -: not run")
    if any(c.time_limited for c in result.cells.values()):
        lines.append(
            "cut: not run (time limit); *: cut short by the time limit (fewer runs than planned)"
        )
    return "\n".join(lines)


def failures_text(result: LabResult, limit: int = 40) -> str:
    """One line per distinct failure: cell, outcome, count, message and replay token."""
    out: list[str] = []
    for key, cell, ex in result.failures():
        n = cell.counts.get(ex.label, 0)
        msg = ex.message.splitlines()[0][:110] if ex.message else ""
        out.append(f"  {key}: {ex.label} x{n} - {msg}")
        if ex.token:
            ref = replay_ref(key.scenario, key.userspace, key.column, ex.token)
            out.append(f"      replay: loopdev lab replay {ref}")
    if not out:
        return "no failures"
    shown = out[: 2 * limit]
    more = "" if len(out) <= len(shown) else f"\n  ... {(len(out) - len(shown)) // 2} more (--json)"
    return "failures found:\n" + "\n".join(shown) + more


def replay_ref(scenario: str, userspace: str, variant: str, token: str) -> str:
    """The full replay reference: ``scenario/userspace/variant/token``."""
    return f"{scenario}/{userspace}/{variant}/{token}"


def claims_text(result: LabResult, *, verbose: bool = True) -> str:
    """Each claim: text, source, what to observe, the verdict and its evidence."""
    out: list[str] = []
    for v in result.claims:
        c = v.claim
        out.append(f"claim {c.number}: [{v.verdict}] {c.text}")
        if verbose:
            out.append(f"    source:  {c.source}")
            out.append(f"    observe: {c.observe}")
            for r in v.results:
                out.append(f"    - {r.status:<12} {r.expect.describe()}: {r.evidence}")
                if r.token:
                    e = r.expect
                    out.append(
                        f"      replay: loopdev lab replay "
                        f"{replay_ref(e.scenario, e.userspace, e.column, r.token)}"
                    )
    return "\n".join(out)


def summary_text(result: LabResult) -> str:
    parts = [matrix_table(result), ""]
    parts.append("claims (RESEARCH §3):")
    parts.append(claims_text(result, verbose=False))
    if result.gaps:
        parts += ["", "model gaps (seen on this kernel, not reached in the v6.11 model):"]
        parts += [f"  - {g}" for g in result.gaps]
    elif any(c == THIS_KERNEL for c in result.columns):
        parts += ["", "fidelity: every outcome seen on this kernel was reached in the v6.11 model"]
    for n in result.notes:
        parts.append(f"note: {n}")
    parts.append(run_line(result))
    return "\n".join(parts)


def run_line(result: LabResult) -> str:
    """``N runs in Ts (...); M/M model cells ran fully`` (and how many the time limit cut)."""
    runs = sum(c.runs for c in result.cells.values())
    model = [c for c in result.cells.values() if c.key.backend == "model"]
    cut = [c for c in model if c.time_limited]
    full = f"{len(model) - len(cut)}/{len(model)} model cells ran fully"
    if cut:
        none = sum(1 for c in cut if c.runs == 0)
        full += (
            f"; the {result.config.time_limit:.0f}s time limit cut {len(cut)} "
            f"({none} not run at all, {sum(c.cut for c in cut)} runs left out)"
        )
    cfg = result.config
    return (
        f"{runs} runs in {result.seconds:.1f}s ({cfg.strategy}, budget {cfg.budget_text()}, "
        f"{cfg.workers} workers); {full}"
    )


class Progress:
    """A progress bar on stderr, drawn only on a terminal (or when forced)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = 0
        self.done = 0
        self._last = 0.0
        self._t0 = time.monotonic()

    def set_total(self, total: int) -> None:
        self.total = max(1, total)

    def advance(self, n: int, what: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self.draw(what)

    def draw(self, what: str = "") -> None:
        frac = min(1.0, self.done / self.total) if self.total else 0.0
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        tail = what[:48]
        self.stream.write(
            f"\r[{bar}] {frac * 100:3.0f}% {self.done}/{self.total} "
            f"{time.monotonic() - self._t0:5.1f}s {tail:<48}"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()
