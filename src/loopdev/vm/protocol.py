"""What the host and the guest's agent exchange through the job directory (a 9p share).

* ``job.json`` (host -> agent): :class:`Job`, the cells to run and the per-trial timeout.
* ``events.jsonl`` (agent -> host): one JSON object per line, appended and flushed as they
  happen, so the host shows progress and keeps every finished trial even if the guest dies.
  Kinds: ``ready`` (agent started: kernel, util-linux), ``cell`` (a cell begins), ``start``
  (a trial, ``i`` = -1 with ``phase`` for a cell's prepare and cleanup, begins), ``trial`` (a
  trial's outcome, with the lockdep reports the kernel printed during it), ``note``, ``test``
  (one pytest test's outcome), ``output`` (a script's or pytest's exit status and output),
  ``done`` (all cells ran).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from loopdev.lab.outcome import Outcome, RunRecord


@dataclass(frozen=True)
class CellPlan:
    """One (scenario, userspace) cell and its trial count."""

    scenario: str
    userspace: str
    trials: int


@dataclass
class Job:
    """Everything the agent is asked to do."""

    cells: list[CellPlan]
    trial_timeout: float = 60.0  # seconds of guest uptime per trial before the watchdog fires
    udevd: bool = True  # start systemd-udevd for the scenarios that want udev
    #: run the model's trial shape: scenarios that shape real trials differently (mount-loop:
    #: one cycle, then wait until the device is detached) run as in the model (three
    #: back-to-back cycles), so a real cell measures what the model cell does
    model_shape: bool = True
    #: instead of cells: run this Python file (a path on the host's root) with its arguments,
    #: its stdout/stderr captured into the agent log and ``output`` events
    script: list[str] = field(default_factory=list)
    #: what ``uname_release()`` answers in the guest: the release of the module's design
    #: (``6.11.0``, ``5.17.0-rc1+taskwork``), as the model kernel answers; None: the real one
    release: str | None = None
    #: the guest's uptime (seconds) after which the agent starts no more trials (the lab's
    #: time limit); the trials it leaves out are counted as cut. None: no limit
    stop_after: float | None = None
    #: instead of cells: run pytest with these arguments (test files are paths on the host's
    #: root); one ``test`` event per test and an ``output`` event with pytest's exit status
    pytest: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Job:
        raw = json.loads(text)
        cells = [CellPlan(**c) for c in raw.pop("cells")]
        return cls(cells=cells, **raw)


def outcome_to_json(o: Outcome) -> dict[str, str]:
    return {"kind": o.kind, "failure": o.failure, "message": o.message}


def outcome_from_json(d: dict[str, Any]) -> Outcome:
    return Outcome(str(d["kind"]), str(d.get("failure", "")), str(d.get("message", "")))


def record_to_json(rec: RunRecord) -> dict[str, Any]:
    d: dict[str, Any] = {
        "i": rec.seed,
        "outcome": outcome_to_json(rec.outcome),
        "seconds": round(rec.seconds, 6),
        "measurements": {k: round(v, 6) for k, v in rec.measurements.items()},
    }
    if rec.lockdep or rec.lockdep_kinds:
        d["lockdep"] = rec.lockdep
        d["lockdep_kinds"] = list(rec.lockdep_kinds)
    return d


def record_from_json(d: dict[str, Any]) -> RunRecord:
    return RunRecord(
        int(d["i"]),
        outcome_from_json(d["outcome"]),
        "",
        float(d.get("seconds", 0.0)),
        {str(k): float(v) for k, v in d.get("measurements", {}).items()},
        lockdep=str(d.get("lockdep", "")),
        lockdep_kinds=tuple(str(k) for k in d.get("lockdep_kinds", ())),
    )


@dataclass
class Event:
    """One line of ``events.jsonl``."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_line(self) -> str:
        return json.dumps({"e": self.kind, **self.data}, sort_keys=True) + "\n"

    @classmethod
    def from_line(cls, line: str) -> Event | None:
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(raw, dict) or "e" not in raw:
            return None
        kind = str(raw.pop("e"))
        return cls(kind, raw)
