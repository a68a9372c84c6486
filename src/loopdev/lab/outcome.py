"""What one lab run produced, and what a matrix cell aggregates from many runs.

Everything here is plain data (picklable, JSON-able): workers send it back to the parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopdev.lab.stats import spread

#: Outcome kinds. ``fail`` is a user-visible failure of an operation, ``deadlock`` no task can
#: run (model) or a hang (real kernel), ``lockdep`` a circular locking dependency was reported,
#: ``unsupported`` the backend lacks a capability the scenario needs (it is not a verdict),
#: ``error`` the scenario itself broke (a bug in the lab or the model, shown as such).
KINDS = ("pass", "fail", "deadlock", "lockdep", "unsupported", "error", "step-limit")


@dataclass(frozen=True)
class Outcome:
    """The result of one run: its kind, a failure key and the message a user would see."""

    kind: str
    failure: str = ""  # e.g. "umount outer: EBUSY", "mount: EIO"
    message: str = ""  # e.g. "umount: /mnt/outer: target is busy."

    @property
    def label(self) -> str:
        """The key outcomes are counted by."""
        if self.kind == "fail":
            return f"fail: {self.failure}"
        if self.kind in ("lockdep", "deadlock", "error", "step-limit") and self.failure:
            return f"{self.kind}: {self.failure}"
        return self.kind

    @property
    def is_failure(self) -> bool:
        return self.kind in ("fail", "deadlock", "lockdep", "step-limit")


PASS = Outcome("pass")


@dataclass
class Example:
    """The first run that produced one outcome label: enough to replay and draw it."""

    label: str
    seed: int
    message: str
    token: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    lockdep: str = ""  # the lockdep report text, if any

    def to_json(self, *, with_events: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "label": self.label,
            "seed": self.seed,
            "message": self.message,
            "token": self.token,
        }
        if self.lockdep:
            d["lockdep"] = self.lockdep
        if with_events:
            d["events"] = self.events
        return d


@dataclass
class RunRecord:
    """One run: seed, outcome, replay token, wall time and any measurements (seconds)."""

    seed: int
    outcome: Outcome
    token: str = ""
    seconds: float = 0.0
    measurements: dict[str, float] = field(default_factory=dict)
    events: list[dict[str, Any]] | None = None
    lockdep: str = ""
    lockdep_kinds: tuple[str, ...] = ()  # every lockdep report kind of the run


#: where a cell's runs happened: the model kernel, a real loop module in a QEMU guest, or the
#: kernel of the machine the lab runs on
BACKENDS = ("model", "vm", "host")


@dataclass(frozen=True)
class CellKey:
    """One cell of the matrix: scenario x userspace x column (a model variant, a user's patch or
    'this kernel') x backend (``model``, ``vm`` or ``host``). A variant's model cell and its real
    cell in a guest share the column and differ in the backend."""

    scenario: str
    userspace: str
    column: str
    backend: str = "model"

    def __str__(self) -> str:
        where = "" if self.backend == "model" else f" [{self.backend}]"
        return f"{self.scenario} / {self.userspace} / {self.column}{where}"

    def on(self, backend: str, column: str | None = None) -> CellKey:
        """The same row's cell on another backend (and column)."""
        return CellKey(self.scenario, self.userspace, column or self.column, backend)


THIS_KERNEL = "this kernel"


@dataclass
class CellResult:
    """All runs of one cell, aggregated."""

    key: CellKey
    runs: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    failure_runs: list[int] = field(default_factory=list)  # run indices, in seed order
    seconds: float = 0.0
    first_failure_seconds: float | None = None
    examples: dict[str, Example] = field(default_factory=dict)
    measurements: dict[str, list[float]] = field(default_factory=dict)
    unsupported: str = ""  # why the cell could not run
    strategy: str = ""
    lockdep: dict[str, int] = field(default_factory=dict)  # runs with a report, by kind
    planned: int = 0  # runs the budget planned (model cells; 0: not planned by a budget)
    cut: int = 0  # planned runs the lab's time limit left out (not run; no verdict either way)
    #: a real cell whose timing is not hardware's (a guest under emulation) or not an idle
    #: machine's (this kernel while other work loaded the CPUs), and why
    timing_distorted: str = ""
    #: this kernel's cells: the share of the CPUs other work used while the cell ran
    cpu_others: float | None = None

    @property
    def checked(self) -> int:
        """Runs that produced a verdict (not unsupported, not a lab error)."""
        return self.runs - self.counts.get("unsupported", 0) - sum(
            n for k, n in self.counts.items() if k.startswith("error")
        )

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.checked if self.checked else None

    @property
    def time_to_first_failure(self) -> int | None:
        """Runs until the first failure (1 = the first run failed)."""
        return self.failure_runs[0] + 1 if self.failure_runs else None

    def failure_gaps(self) -> list[int]:
        """Runs between consecutive failures (the first counts from the start): the
        time-to-first-failure distribution if one restarted after every failure."""
        gaps: list[int] = []
        prev = -1
        for i in self.failure_runs:
            gaps.append(i - prev)
            prev = i
        return gaps

    def add(self, rec: RunRecord) -> None:
        """Fold one run in (runs must arrive in seed order)."""
        label = rec.outcome.label
        index = self.runs
        self.runs += 1
        self.seconds += rec.seconds
        self.counts[label] = self.counts.get(label, 0) + 1
        if rec.outcome.kind == "unsupported" and not self.unsupported:
            self.unsupported = rec.outcome.message
        if rec.outcome.is_failure:
            self.failures += 1
            self.failure_runs.append(index)
            if self.first_failure_seconds is None:
                self.first_failure_seconds = self.seconds
        if label not in self.examples and label != "pass":
            self.examples[label] = Example(
                label,
                rec.seed,
                rec.outcome.message,
                rec.token,
                list(rec.events or []),
                rec.lockdep,
            )
        for kind in dict.fromkeys(rec.lockdep_kinds):
            self.lockdep[kind] = self.lockdep.get(kind, 0) + 1
        for name, value in rec.measurements.items():
            self.measurements.setdefault(name, []).append(value)

    @property
    def time_limited(self) -> bool:
        """The time limit left some of the planned runs out."""
        return self.cut > 0

    @property
    def is_unsupported(self) -> bool:
        return self.runs > 0 and self.counts.get("unsupported", 0) == self.runs

    def to_json(self, *, with_events: bool = False) -> dict[str, Any]:
        return {
            "scenario": self.key.scenario,
            "userspace": self.key.userspace,
            "column": self.key.column,
            "backend": self.key.backend,
            "strategy": self.strategy,
            "runs": self.runs,
            "checked": self.checked,
            "failures": self.failures,
            "failure_rate": self.failure_rate,
            "counts": dict(sorted(self.counts.items())),
            "time_to_first_failure_runs": self.time_to_first_failure,
            "time_to_first_failure_seconds": self.first_failure_seconds,
            "seconds": round(self.seconds, 4),
            "unsupported": self.unsupported,
            "planned": self.planned,
            "cut_by_time_limit": self.cut,
            "timing_distorted": self.timing_distorted,
            "cpu_others": None if self.cpu_others is None else round(self.cpu_others, 3),
            "lockdep_reports": dict(sorted(self.lockdep.items())),
            "examples": [e.to_json(with_events=with_events) for e in self.examples.values()],
            "measurements": {k: v for k, v in sorted(self.measurements.items())},
            "measurement_spread": {
                k: sp.to_json()
                for k, v in sorted(self.measurements.items())
                if (sp := spread(v)) is not None
            },
        }
