"""Terminal output of the lab: the matrix (model and real side by side), the claims, the
fidelity check, one line per kind of failure, and a progress bar that shows the guests.

The default output fits in about 60 lines; ``verbose`` adds every finding, every failure with
its full replay token, and each real cell's rate with its 95% interval.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from loopdev.lab import fidelity
from loopdev.lab.backends import USERSPACES
from loopdev.lab.cells import REFERENCE
from loopdev.lab.outcome import THIS_KERNEL, CellKey, CellResult, Example
from loopdev.lab.replayref import ref_text
from loopdev.lab.runner import LabResult
from loopdev.lab.stats import interval_text
from loopdev.sim.loop import VARIANTS

#: short column headers for the terminal: each variant's label, and this kernel's
SHORT = {**{name: cls.label for name, cls in VARIANTS.items()}, THIS_KERNEL: "THIS"}
#: short row names for the terminal (the HTML shows the scenario's own row label)
ROW_SHORT = {"util-linux-2.37": "ul-2.37", "util-linux-2.38": "ul-2.38", "loopdev": "loopdev",
             "util-linux-2.38-bin": "ul-bin"}  # fmt: skip
#: findings and failure kinds printed without --verbose
FINDINGS_SHOWN = 4
KINDS_SHOWN = 10


def cell_text(cell: CellResult | None) -> str:
    """``37`` (% of runs with a verdict that failed) / ``0`` / ``n/a`` (cannot run) / ``-``
    (not part of this run) / ``cut`` (not run: time limit) / ``err``; a ``*`` marks a cell
    the time limit cut short."""
    if cell is None or cell.runs == 0:
        return "cut" if cell is not None and cell.time_limited else "-"
    star = "*" if cell.time_limited else ""
    if cell.checked == 0:
        return ("n/a" if cell.unsupported else "err") + star
    rate = cell.failure_rate or 0.0
    if cell.failures == 0:
        return "0" + star
    return (f"{rate * 100:.0f}" if rate >= 0.01 else f"{rate * 100:.1f}") + star


def row_label(scenario: str, userspace: str) -> str:
    """A matrix row's userspace column: the userspace's name, or what the scenario says it
    does there (detach-open: who detaches and who opens)."""
    shown = USERSPACES.get(userspace, userspace)
    label = getattr(_scenarios().get(scenario), "row_label", None)
    return str(label(shown)) if callable(label) else shown


def _scenarios() -> dict[str, object]:
    if not _SCENARIOS:
        from loopdev.lab.scenarios import all_scenarios, optional_scenarios

        _SCENARIOS.update((s.name, s) for s in (*all_scenarios(), *optional_scenarios()))
    return _SCENARIOS


_SCENARIOS: dict[str, object] = {}


def replay_ref(scenario: str, userspace: str, variant: str, token: str) -> str:
    """The full replay reference: ``scenario/userspace/variant/token``."""
    return ref_text(scenario, userspace, variant, token, short=False)


# -- the matrix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubColumn:
    """One column of numbers: a column's model, real (vm) or this kernel's cells."""

    column: str
    backend: str

    @property
    def head(self) -> str:
        return {"model": "mod", "vm": "vm", "host": "host"}[self.backend]


def sub_columns(result: LabResult) -> list[SubColumn]:
    """Per column: its model cells, and beside them its real cells where guests ran it."""
    real_cols = {k.column for k in result.cells if k.backend == "vm"} | set(result.real)
    out: list[SubColumn] = []
    for c in result.columns:
        if c == THIS_KERNEL:
            out.append(SubColumn(c, "host"))
            continue
        if not result.patch(c):
            out.append(SubColumn(c, "model"))
        if c in real_cols:
            out.append(SubColumn(c, "vm"))
    return out


def _flagged(result: LabResult) -> set[CellKey]:
    return {f.real for f in result.findings}


def sub_text(result: LabResult, sub: SubColumn, scenario: str, userspace: str) -> str:
    """A cell's text in the matrix: the rate, ``!`` when the fidelity check flags the real
    cell, ``~`` when its timing is distorted (in the guest, or this machine was loaded)."""
    cell = result.cell(scenario, userspace, sub.column, sub.backend)
    col = result.real.get(sub.column) if sub.backend == "vm" else None
    if cell is None and col is not None and col.unavailable:
        return "n/a"
    text = cell_text(cell)
    if sub.backend == "model" or cell is None or cell.checked == 0:
        return text
    key = cell.key
    return text + ("!" if key in _flagged(result) else "") + ("~" if key in result.distorted else "")


def matrix_table(result: LabResult) -> str:
    """The matrix: rows scenario x userspace; per column the model's rate and, beside it, the
    real one (a guest running that variant's loop.c, or this kernel)."""
    subs = sub_columns(result)
    texts = [[sub_text(result, sub, s, u) for sub in subs] for s, u in result.rows]
    widths = [max([len(sub.head), *(len(t[i]) for t in texts)]) + 1 for i, sub in enumerate(subs)]
    for i, sub in enumerate(subs):  # the last sub-column of a column makes room for its name
        if i + 1 == len(subs) or subs[i + 1].column != sub.column:
            first = next(j for j, s in enumerate(subs) if s.column == sub.column)
            need = len(SHORT.get(sub.column, sub.column)) + 1 - sum(widths[first : i + 1])
            widths[i] += max(0, need)
    name_w = max(len(s) for s, _ in result.rows)
    label_w = name_w + 2 + max(len(ROW_SHORT.get(u, u)) for _, u in result.rows) + 1
    groups: list[tuple[str, int]] = []  # (column header, width of its sub-columns)
    for sub, w in zip(subs, widths, strict=True):
        if groups and groups[-1][0] == sub.column:
            groups[-1] = (sub.column, groups[-1][1] + w)
        else:
            groups.append((sub.column, w))
    head1 = "".join(SHORT.get(c, c).rjust(w) for c, w in groups)
    head2 = "".join(sub.head.rjust(w) for sub, w in zip(subs, widths, strict=True))
    lines = [
        "failure rate in % (runs that failed / runs with a verdict), model and real side by side",
        " " * label_w + head1,
        " " * label_w + head2,
    ]
    prev = ""
    for (s, u), row in zip(result.rows, texts, strict=True):
        name = s if s != prev else ""
        prev = s
        label = f"{name:<{name_w}}  {ROW_SHORT.get(u, u)}"
        lines.append(f"{label:<{label_w}}" + "".join(
            t.rjust(w) for t, w in zip(row, widths, strict=True)
        ))  # fmt: skip
    lines += _legend(result, subs)
    return "\n".join(lines)


def _legend(result: LabResult, subs: Sequence[SubColumn]) -> list[str]:
    backends = {s.backend for s in subs}
    parts = ["mod: the model"]
    if "vm" in backends:
        kernels = sorted({k for c in result.real.values() for k in c.kernels})
        parts.append("vm: the variant's loop.c built for 6.1 in a QEMU guest"
                     + (" (resume-chain on the lockdep kernel)" if "lockdep" in kernels else ""))  # fmt: skip
    if "host" in backends:
        parts.append(f"host: this machine's kernel (compared with the {REFERENCE} model)")
    out = ["; ".join(parts)]
    marks = "-: not run; cut: time limit; n/a: cannot run there"
    na = [c.column for c in result.real.values() if c.unavailable and c.variant is not None]
    if na:
        why = result.real[na[0]].unavailable.split(",", 1)[0].split(" (", 1)[0]
        marks += f" (real {', '.join(na)}: {why})"
    marks += "; *: cut short"
    if any(k.backend == "vm" for k in result.cells) or result.distorted:
        marks += "; !: model and real disagree (below); ~: timing-distorted (guest; busy host)"
    out.append(marks)
    reasons = sorted({_short_reason(r) for r in result.distorted.values()})
    if reasons:
        out.append("~ " + "; ".join(reasons))
    return out


def _short_reason(why: str) -> str:
    """The reason without its parenthesised figures (the legend has one line for them)."""
    out: list[str] = []
    depth = 0
    for ch in why:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    return " ".join("".join(out).split())


# -- claims and fidelity --------------------------------------------------------------------


def claims_text(result: LabResult, *, verbose: bool = True) -> str:
    """Each claim: text, verdict, and where its verdict rests on a cell the fidelity check
    flags; ``verbose`` adds the source, what to observe and the evidence."""
    out: list[str] = []
    resting = result.resting_on_findings()
    for v in result.claims:
        c = v.claim
        flagged = resting.get(c.number, [])
        text = c.text if verbose else _first_sentence(c.text, 64 if flagged else 100)
        both = v.disagreement_text()
        line = f"claim {c.number}: [{v.verdict}{'; ' + both if both else ''}] {text}"
        if flagged:
            kinds: dict[str, list[str]] = {}
            marks: dict[str, str] = {}
            for f in flagged:
                kinds.setdefault(_where(f.real), []).append(f.kind)
                marks[_where(f.real)] = " ~" if f.distorted else ""
            cells = "; ".join(f"{w} ({', '.join(dict.fromkeys(k))}){marks[w]}"
                              for w, k in kinds.items())  # fmt: skip
            line += f"  ! rests on: {cells}"
        out.append(line)
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
            for f in flagged:
                out.append(f"    ! {f.line()}")
    return "\n".join(out)


def _first_sentence(text: str, width: int = 110) -> str:
    """A claim's first sentence, cut to ``width`` characters."""
    first = text.split(". ", 1)[0].rstrip(".")
    return first if len(first) <= width else first[: width - 3].rstrip() + "..."


def fidelity_text(result: LabResult, *, verbose: bool = False) -> str:
    """The fidelity check's findings, the strongest first (all of them when ``verbose``)."""
    if not result.has_real:
        return "fidelity: no real cells in this run (not root, --no-real, or guests cannot run)"
    fs = result.findings
    if not fs:
        return "fidelity: every real cell agrees with the model beside it (outcomes and rates)"
    flagged = fidelity.flagged_cells(fs)
    distorted = sum(1 for c in flagged if c.distorted)
    real = sum(1 for k, c in result.cells.items() if k.backend != "model" and c.checked)
    lines = [f"fidelity: {len(flagged)} of {real} real cells differ from the model beside them"
             + (f" ({distorted} of those timing-distorted, ~)" if distorted else "")
             + ("; hardware-timed ones first:" if not verbose else ":")]  # fmt: skip
    shown = flagged if verbose else flagged[:FINDINGS_SHOWN]
    for c in shown:
        where = _where(c.real)
        mark = " ~" if c.distorted else ""
        lines.append(f"  {where}: {c.summary(result.cells)}{mark}")
        if verbose and c.distorted:
            lines.append(f"      ~ {c.distorted}")
    if len(shown) < len(flagged):
        lines.append(f"  ... {len(flagged) - len(shown)} more (--verbose, --json, --html)")
    return "\n".join(lines)


def _where(key: CellKey) -> str:
    """``detach-open ul-2.38 5.19`` (``THIS`` for this kernel)."""
    return (f"{key.scenario} {ROW_SHORT.get(key.userspace, key.userspace)} "
            f"{SHORT.get(key.column, key.column)}")  # fmt: skip


# -- failures ---------------------------------------------------------------------------------


@dataclass
class FailureKind:
    """One kind of failure: a scenario's outcome, with every cell that showed it."""

    scenario: str
    label: str  # the outcome label (lockdep reports and deadlocks by kind)
    cells: list[tuple[CellKey, CellResult, Example]] = field(default_factory=list)

    def columns(self, backend: str) -> list[str]:
        return list(dict.fromkeys(k.column for k, _, _ in self.cells if k.backend == backend))

    def first_model(self) -> tuple[CellKey, Example] | None:
        """The model example to replay: the first row and column that showed it."""
        for k, _, ex in self.cells:
            if k.backend == "model" and ex.token:
                return k, ex
        return None


def failure_kinds(result: LabResult) -> list[FailureKind]:
    """The failures grouped by (scenario, outcome), in the order of the failure list."""
    kinds: dict[tuple[str, str], FailureKind] = {}
    order = {c: i for i, c in enumerate(result.columns)}
    for key, cell, ex in sorted(result.failures(),
                                key=lambda t: (order.get(t[0].column, 99), t[0].backend)):  # fmt: skip
        label = fidelity.comparable_label(ex.label) if ex.label.startswith(
            ("lockdep", "deadlock")) else ex.label  # fmt: skip
        kinds.setdefault((key.scenario, label), FailureKind(key.scenario, label)).cells.append(
            (key, cell, ex))  # fmt: skip
    scen_order = {s: i for i, (s, _) in enumerate(result.rows)}
    return sorted(kinds.values(), key=lambda k: (
        not (k.columns("vm") or k.columns("host")),  # what a real kernel showed first
        not k.label.startswith(("fail", "deadlock")), scen_order.get(k.scenario, 99), k.label))  # fmt: skip


def _short_cols(cols: Sequence[str]) -> str:
    return " ".join(SHORT.get(c, c) for c in cols)


def kind_line(kind: FailureKind, name_w: int, label_w: int) -> str:
    """``scenario  outcome  N cells: model ...; real ...  replay HANDLE``."""
    model, vm, host = kind.columns("model"), kind.columns("vm"), kind.columns("host")
    where = []
    if model:
        where.append(f"model {_short_cols(model)}")
    real = vm + (["THIS"] if host else [])
    if real:
        where.append(f"real {_short_cols(real)}")
    n = len(kind.cells)
    text = f"  {kind.scenario:<{name_w}} {kind.label:<{label_w}} {n:>2} cell{'s' if n > 1 else ' '}: "
    text += "; ".join(where)
    first = kind.first_model()
    if first is not None:
        k, ex = first
        text += f"  {ref_text(k.scenario, k.userspace, k.column, ex.token, short=True)}"
    elif kind.cells and kind.cells[0][2].message:  # a real kernel's only: what it said
        text += f"  ({_said(kind.cells[0][2].message)})"
    return text


def _said(message: str, width: int = 70) -> str:
    """A message's first line without the paths in it: ``mount: mount failed: No such
    device.``"""
    parts = [p for p in message.splitlines()[0].split(": ") if not p.startswith("/")]
    text = ": ".join(parts)
    return text if len(text) <= width else text[: width - 3] + "..."


def lockdep_pair_lines(kind: FailureKind, result: LabResult) -> list[str]:
    """A real lockdep report beside the model's, for the first column that has both."""
    from loopdev.vm.lockdep_report import example_reports

    for key, cell, _ in kind.cells:
        if key.backend != "vm":
            continue
        model = result.cells.get(key.on("model"))
        real_reps = [r for rs in example_reports(cell).values() for r in rs]
        model_reps = [r for rs in example_reports(model).values() for r in rs] if model else []
        if real_reps and model_reps:
            col = SHORT.get(key.column, key.column)
            pad = " " * len(col)
            return [f"      {col} model: {_cycle_line(model_reps[0])}",
                    f"      {pad} real:  {_cycle_line(real_reps[0])}"]  # fmt: skip
    return []


def _cycle_line(report: Any) -> str:
    closing = " <- ".join(report.closing_stack()[:3]) or report.call_function
    return f"{report.cycle()}  [closed in {closing}]"


def failures_text(result: LabResult, *, verbose: bool = False, limit: int = KINDS_SHOWN) -> str:
    """One line per kind of failure (scenario, outcome, the cells and columns that showed it,
    a replay handle), a real lockdep report beside the model's; ``verbose``: every failing
    cell with its message and full replay token."""
    if verbose:
        return _every_failure(result)
    kinds = failure_kinds(result)
    if not kinds:
        return "no failures"
    name_w = max(len(k.scenario) for k in kinds)
    label_w = min(34, max(len(k.label) for k in kinds))
    lines = ["failures, one line per kind (replay a model run: loopdev lab replay HANDLE):"]
    for kind in kinds[:limit]:
        lines.append(kind_line(kind, name_w, label_w))
        if kind.label.startswith("lockdep"):
            lines += lockdep_pair_lines(kind, result)
    if len(kinds) > limit:
        lines.append(f"  ... {len(kinds) - limit} more kinds (--verbose lists every failure)")
    return "\n".join(lines)


def _every_failure(result: LabResult) -> str:
    out: list[str] = []
    for key, cell, ex in result.failures():
        n = cell.counts.get(ex.label, 0)
        msg = ex.message.splitlines()[0][:110] if ex.message else ""
        out.append(f"  {key}: {ex.label} x{n} - {msg}")
        if ex.token:
            out.append(f"      replay: loopdev lab replay "
                       f"{replay_ref(key.scenario, key.userspace, key.column, ex.token)}")  # fmt: skip
    return "failures found:\n" + "\n".join(out) if out else "no failures"


def real_cells_text(result: LabResult) -> str:
    """Every real cell beside its model cell, with counts and 95% intervals (--verbose)."""
    lines = ["real cells beside the model (failures/verdicts = rate [95% interval]):"]
    for key, real in result.cells.items():
        if key.backend == "model":
            continue
        mkey = fidelity.model_key(key)
        model = result.cells.get(mkey) if mkey is not None else None
        m = interval_text(model.failures, model.checked) if model and model.checked else "-"
        r = interval_text(real.failures, real.checked) if real.checked else cell_text(real)
        mark = f"  ~ {result.distorted[key]}" if key in result.distorted else ""
        lines.append(f"  {key.scenario:<20} {ROW_SHORT.get(key.userspace, key.userspace):<8} "
                     f"{SHORT.get(key.column, key.column):<9} model {m:<24} real {r}{mark}")  # fmt: skip
    return "\n".join(lines)


# -- the whole output -----------------------------------------------------------------------


def _budget(result: LabResult) -> str:
    cfg = result.config
    if cfg.budget is not None:
        return f"{cfg.budget}/cell"
    return cfg.budget_text().split(" (", 1)[0] + " (costly cells fewer)"


def summary_text(result: LabResult, *, verbose: bool = False) -> str:
    """What ``loopdev lab`` prints: matrix, claims, fidelity, failure kinds, notes, run line."""
    parts = [matrix_table(result), ""]
    parts.append("claims (docs/lab.md; `loopdev lab claims` for the evidence):")
    parts.append(claims_text(result, verbose=False))
    parts += ["", fidelity_text(result, verbose=verbose), "", failures_text(result, verbose=verbose)]
    if verbose and result.has_real:
        parts += ["", real_cells_text(result)]
    guests = guests_line(result)
    if guests and "all ok" not in guests:
        parts.append(guests)
    for n in result.notes:
        parts.append(f"note: {n}")
    parts.append(run_line(result))
    return "\n".join(parts)


def guests_line(result: LabResult) -> str:
    """``guests: 14 booted (...), all ok`` or the ones that were not."""
    if not result.real:
        return ""
    statuses = [(c.column, g) for c in result.real.values() for g in c.guests]
    bad = [f"{col}: {g['status']} {g.get('message', '')}".strip() for col, g in statuses
           if g["status"] != "ok"]  # fmt: skip
    kernels = sorted({k for c in result.real.values() for k in c.kernels})
    text = f"guests: {len(statuses)} booted ({', '.join(kernels)} kernel"
    text += "s)" if len(kernels) > 1 else ")"
    return text + (", all ok" if not bad else f"; not ok: {'; '.join(bad)[:200]}")


def run_line(result: LabResult) -> str:
    """``N model runs, M real trials in Ts (...); K/K model cells ran fully``."""
    model = [c for c in result.cells.values() if c.key.backend == "model"]
    runs = sum(c.runs for c in model)
    host = sum(c.runs for c in result.cells.values() if c.key.backend == "host")
    vm = sum(c.runs for c in result.cells.values() if c.key.backend == "vm")
    cut = [c for c in model if c.time_limited]
    full = f"{len(model) - len(cut)}/{len(model)} model cells ran fully"
    if cut:
        none = sum(1 for c in cut if c.runs == 0)
        full += (
            f"; the {result.config.time_limit:.0f}s time limit cut {len(cut)} "
            f"({none} not run at all, {sum(c.cut for c in cut)} runs left out)"
        )
    cfg = result.config
    real = []
    if host:
        real.append(f"{host} trials on this kernel")
    if vm:
        ok = all(g["status"] == "ok" for c in result.real.values() for g in c.guests)
        real.append(f"{vm} in {result.guests} guests" + (" (all ok)" if ok else ""))
    phases = ", ".join(f"{k} {v:.0f}s" for k, v in result.phases.items() if v >= 0.5)
    return (
        f"{runs} model runs" + (f", {' and '.join(real)}" if real else "")
        + f" in {result.seconds:.0f}s ({phases}); {cfg.strategy}, budget {_budget(result)}, "
        f"{cfg.workers} workers; {full}"
    )


# -- progress -------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr, drawn only on a terminal (or when forced): the phase, its
    share done, and while guests run, what each running guest is doing."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.name = ""
        self.total = 0
        self.done = 0
        self._last = 0.0
        self._t0 = time.monotonic()
        self.board: dict[str, str] = {}  # running guest -> what it does
        self.booted = 0
        self.finished = 0

    def set_total(self, total: int) -> None:
        self.total = max(1, total)

    def phase(self, name: str, total: int) -> None:
        self.name = name
        self.done = 0
        self.set_total(total)
        self.draw()

    def advance(self, n: int, what: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self.draw(what)

    def guest(self, tag: str, kind: str, data: dict[str, Any]) -> None:
        """Follow a guest's events: booting, its cell and trial, gone."""
        from loopdev.lab.vmcells import BOOT_UNITS

        if kind == "launch":
            self.booted += 1
            self.board[tag] = "booting"
        elif kind == "ready":
            self.board[tag] = "up"
            self.advance(BOOT_UNITS)
            return
        elif kind == "cell":
            us = ROW_SHORT.get(str(data.get("userspace")), str(data.get("userspace")))
            self.board[tag] = f"{data.get('scenario')} {us} 0/{data.get('trials')}"
        elif kind == "trial":
            state = self.board.get(tag, "")
            head, _, count = state.rpartition(" ")
            if "/" in count:
                i, n = count.split("/", 1)
                self.board[tag] = f"{head} {int(i) + 1}/{n}"
            self.advance(1)
            return
        elif kind == "exit":
            self.board.pop(tag, None)
            self.finished += 1
        self.advance(0)

    def _guests(self) -> str:
        if not self.booted:
            return ""
        running = " | ".join(f"{t}: {s}" for t, s in self.board.items())
        return f"{self.finished} guests done" + (f" | {running}" if running else "")

    def draw(self, what: str = "") -> None:
        if not self.enabled:
            return
        frac = min(1.0, self.done / self.total) if self.total else 0.0
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        tail = self._guests() if self.name == "guests" else what
        cols = shutil.get_terminal_size((120, 24)).columns
        line = f"{self.name:<11} [{bar}] {frac * 100:3.0f}% {time.monotonic() - self._t0:5.0f}s {tail}"
        self.stream.write("\r" + line[: cols - 1].ljust(cols - 1))
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            cols = shutil.get_terminal_size((120, 24)).columns
            self.stream.write("\r" + " " * (cols - 1) + "\r")
            self.stream.flush()

