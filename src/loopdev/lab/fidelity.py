"""The model's fidelity, checked per variant: every real cell (a variant's module in a guest,
or this machine's kernel) against the model cell it stands beside (the same variant's; for
this kernel the :data:`~loopdev.lab.cells.REFERENCE` variant's).

Three kinds of finding, the strongest first:

* ``unreached``: an outcome the real kernel showed that the model, having run, never reached;
* ``disagree``: one side never fails while the other fails clearly (the lower end of its 95%
  Wilson interval is at least :data:`CLEAR`);
* ``rates``: both sides have verdicts and their 95% intervals do not overlap.

A real cell whose timing the emulated CPU distorts keeps its findings; they carry the reason,
since the disagreement may be the emulator's rather than the model's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from loopdev.lab.cells import REFERENCE
from loopdev.lab.outcome import CellKey, CellResult
from loopdev.lab.stats import interval_text, overlap, wilson

UNREACHED, DISAGREE, RATES, NO_MODEL = "unreached", "disagree", "rates", "no model"
#: the order findings are listed in
KINDS = (UNREACHED, DISAGREE, RATES, NO_MODEL)
#: a side "fails clearly" when its 95% interval starts at or above this rate
CLEAR = 0.10


@dataclass(frozen=True)
class Finding:
    """One real cell that the model beside it does not match."""

    kind: str
    real: CellKey
    model: CellKey
    detail: str
    distorted: str = ""  # why the real cell's timing is not hardware's ('' if comparable)

    @property
    def where(self) -> str:
        """``mount-loop / util-linux-2.37 / v5.17-rc1`` (and, for this kernel, the model
        variant it is compared with)."""
        k = self.real
        if k.backend == "host":
            return f"{k.scenario} / {k.userspace} / this kernel vs {self.model.column}"
        return f"{k.scenario} / {k.userspace} / {k.column}"

    def line(self) -> str:
        mark = f" (timing-distorted: {self.distorted})" if self.distorted else ""
        return f"{self.where}: {self.detail}{mark}"

    def to_json(self, cells: Mapping[CellKey, CellResult]) -> dict[str, object]:
        d: dict[str, object] = {
            "kind": self.kind,
            "scenario": self.real.scenario,
            "userspace": self.real.userspace,
            "column": self.real.column,
            "backend": self.real.backend,
            "model_column": self.model.column,
            "detail": self.detail,
            "timing_distorted": self.distorted,
        }
        for side, key in (("model", self.model), ("real", self.real)):
            cell = cells.get(key)
            if cell is not None and cell.checked:
                lo, hi = wilson(cell.failures, cell.checked)
                d[side] = {"failures": cell.failures, "checked": cell.checked,
                           "interval95": [round(lo, 4), round(hi, 4)]}  # fmt: skip
        return d


def model_key(real: CellKey) -> CellKey | None:
    """The model cell a real cell is compared with (None for a model cell)."""
    if real.backend == "vm":
        return real.on("model")
    if real.backend == "host":
        return real.on("model", REFERENCE)
    return None


def comparable_label(label: str) -> str:
    """What reachability compares: the label, except that a lockdep report counts by its
    kind (the real kernel names lock classes by instance, ``sb_writers#7``, the model by
    filesystem, ``sb_writers#ext4``: docs/findings.md, claim 6) and a deadlock
    as one (the model names the wait-for cycle, a guest says ``hang``)."""
    if label.startswith("lockdep:"):
        return label.split(" (", 1)[0]
    if label.startswith("deadlock"):
        return "deadlock"
    return label


def _verdict_labels(cell: CellResult) -> set[str]:
    return {
        lab for lab in cell.counts if lab != "unsupported" and not lab.startswith("error")
    }


def _reached(cell: CellResult) -> set[str]:
    labels = {comparable_label(lab) for lab in _verdict_labels(cell)}
    labels |= {comparable_label(f"lockdep: {kind}") for kind in cell.lockdep}
    return labels


def compare_pair(
    real_key: CellKey, real: CellResult, model_key_: CellKey, model: CellResult, distorted: str
) -> list[Finding]:
    """The findings of one real cell against its model cell (none when they agree or when
    either side has no verdict to compare)."""
    if real.checked == 0:
        return []
    if model.checked == 0:
        if model.runs == 0:  # the time limit left it without a run: see not_compared
            return []
        why = model.unsupported or "no run produced a verdict"
        seen = sorted(_verdict_labels(real))
        return [Finding(NO_MODEL, real_key, model_key_,
                        f"the model could not run it ({why}); the real kernel saw {seen}",
                        distorted)]  # fmt: skip
    out: list[Finding] = []
    reached = _reached(model)
    cut = f", {model.cut} more cut by the time limit" if model.cut else ""
    for lab in sorted(_verdict_labels(real)):
        if comparable_label(lab) not in reached:
            out.append(Finding(
                UNREACHED, real_key, model_key_,
                f"'{lab}' seen on the real kernel ({real.counts[lab]}/{real.checked}) but "
                f"not reached in the model ({model.checked} runs{cut})", distorted,
            ))  # fmt: skip
    m = wilson(model.failures, model.checked)
    r = wilson(real.failures, real.checked)
    sides = (f"model {interval_text(model.failures, model.checked)}, "
             f"real {interval_text(real.failures, real.checked)}")  # fmt: skip
    if (model.failures == 0 and r[0] >= CLEAR) or (real.failures == 0 and m[0] >= CLEAR):
        quiet = "the model" if model.failures == 0 else "the real kernel"
        out.append(Finding(DISAGREE, real_key, model_key_,
                           f"{sides}: {quiet} never fails", distorted))  # fmt: skip
    elif not overlap(m, r):
        out.append(Finding(RATES, real_key, model_key_,
                           f"{sides}: the intervals do not overlap", distorted))  # fmt: skip
    return out


def compare(cells: Mapping[CellKey, CellResult]) -> list[Finding]:
    """Every real cell against its model cell, findings sorted by kind, then by cell (a
    finding on a real cell whose timing is distorted carries the reason)."""
    out: list[Finding] = []
    for key, real in cells.items():
        mkey = model_key(key)
        model = cells.get(mkey) if mkey is not None else None
        if mkey is None or model is None:
            continue
        out.extend(compare_pair(key, real, mkey, model, real.timing_distorted))
    out.sort(key=lambda f: (KINDS.index(f.kind), f.real.backend, str(f.real)))
    return out


def not_compared(cells: Mapping[CellKey, CellResult]) -> list[str]:
    """Real cells whose model cell the time limit left without a run."""
    out: list[str] = []
    for key, real in sorted(cells.items(), key=lambda kv: str(kv[0])):
        mkey = model_key(key)
        sim = cells.get(mkey) if mkey is not None else None
        if sim is not None and real.checked and sim.runs == 0 and not sim.unsupported \
                and sim.cut:
            where = "this kernel" if key.backend == "host" else f"the real {key.column}"
            out.append(f"{key.scenario} / {key.userspace}: {where} not compared with the "
                       f"{sim.key.column} model (its cell was not run: time limit)")  # fmt: skip
    return out


def by_model_cell(findings: Iterable[Finding]) -> dict[CellKey, list[Finding]]:
    """Findings indexed by the model cell they concern (what the claims' expectations name)."""
    out: dict[CellKey, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.model, []).append(f)
    return out


def resting_on(expect_keys: Sequence[CellKey], findings: Iterable[Finding]) -> list[Finding]:
    """The findings about the model cells a claim's verdict rests on (its expectations'
    cells), in the claim's order."""
    index = by_model_cell(findings)
    return [f for key in dict.fromkeys(expect_keys) for f in index.get(key, [])]


@dataclass(frozen=True)
class FlaggedCell:
    """A real cell with every finding about it."""

    real: CellKey
    findings: tuple[Finding, ...]

    @property
    def distorted(self) -> str:
        return self.findings[0].distorted

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(f.kind for f in self.findings))

    def summary(self, cells: Mapping[CellKey, CellResult]) -> str:
        """``model 40/40 = 100% [91-100%], real 3/6 = 50% [19-81%]; one side never fails;
        unreached: 'pass'``."""
        f0 = self.findings[0]
        parts: list[str] = []
        model, real = cells.get(f0.model), cells.get(self.real)
        if model is not None and real is not None and model.checked and real.checked:
            parts.append(f"model {interval_text(model.failures, model.checked)}, "
                         f"real {interval_text(real.failures, real.checked)}")  # fmt: skip
        if DISAGREE in self.kinds:
            parts.append("one side never fails")
        elif RATES in self.kinds:
            parts.append("intervals apart")
        unreached = [f.detail.split("'")[1] for f in self.findings if f.kind == UNREACHED]
        if unreached:
            parts.append("the model never reached " + ", ".join(f"'{u}'" for u in unreached))
        parts += [f.detail for f in self.findings if f.kind == NO_MODEL]
        return "; ".join(parts)


def flagged_cells(findings: Iterable[Finding]) -> list[FlaggedCell]:
    """The findings by real cell: cells whose timing is hardware's first (what the emulator
    cannot explain), then by their strongest finding."""
    by_cell: dict[CellKey, list[Finding]] = {}
    for f in findings:
        by_cell.setdefault(f.real, []).append(f)
    out = [FlaggedCell(k, tuple(fs)) for k, fs in by_cell.items()]
    out.sort(key=lambda c: (bool(c.distorted), min(KINDS.index(k) for k in c.kinds),
                            c.real.backend != "host", str(c.real)))  # fmt: skip
    return out
