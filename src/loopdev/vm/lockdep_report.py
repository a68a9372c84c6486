"""Lockdep reports read from a guest kernel's console, in the lab's terms.

The kernel prints a report (``kernel/locking/lockdep.c``) as a block of lines, each with a
``[  12.345678]`` time stamp when ``CONFIG_PRINTK_TIME`` is on. For a circular dependency:

* ``<comm>/<pid> is trying to acquire lock:`` and the lock being taken, ``at: <call>``: the
  task and the call that closed the cycle;
* ``-> #N (<class>){usage}-{a:b}:`` entries, each with the stack that first took that class
  while holding the next one: the cycle, ``#0`` being the lock being acquired;
* the held locks and the stack backtrace.

:func:`parse_reports` finds every report in a console log; :func:`lockdep_outcome` turns the
first into the lab's ``lockdep`` outcome, keyed the way the model keys its own reports
(``circular (<classes, sorted>)``), so a real cell and a model cell count the same label.
Lockdep switches itself off after its first report (``debug_locks_off``), so one boot shows
at most one report of that kind; later ones, if any, are other checkers' (e.g. ``BUG:
sleeping function called from invalid context``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from loopdev.lab.outcome import CellResult, Outcome, RunRecord
from loopdev.vm.protocol import Event

#: report titles -> the kind names the model uses (loopdev.sim.lockdep.LockdepReport.kind)
TITLES = {
    "WARNING: possible circular locking dependency detected": "circular",
    "WARNING: possible recursive locking detected": "recursive",
    "BUG: sleeping function called from invalid context": "atomic-sleep",
    "WARNING: lock held when returning to user space!": "user-return",
    "WARNING: inconsistent lock state": "inconsistent",
    "WARNING: possible irq lock inversion dependency detected": "irq-inversion",
    "WARNING: bad unlock balance detected!": "bad-unlock",
    "WARNING: held lock freed!": "held-lock-freed",
    "WARNING: suspicious RCU usage": "suspicious-rcu",
}
_IRQ_ORDER = re.compile(r"^WARNING: \S+-safe -> \S+-unsafe lock order detected$")

_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_STAMP_VALUE = re.compile(r"^\[\s*(\d+\.\d+)\]")
_ACQUIRE = re.compile(r"^(?P<task>.+/\d+) is trying to acquire lock:$")
# "ffff888004a3c0b8 (&disk->open_mutex){+.+.}-{3:3}, at: blkdev_get_by_dev+0x4d/0x2f0"
_LOCK = re.compile(
    r"^\s*(?:#\d+:\s*)?(?P<addr>[0-9a-f]+) \((?P<cls>.+)\)\{(?P<usage>[^}]*)\}-\{\d+:\d+\}"
    r", at: (?P<at>.*)$"
)
_ENTRY = re.compile(r"^-> #(?P<n>\d+) \((?P<cls>.+)\)\{[^}]*\}-\{\d+:\d+\}:$")
_HELD = re.compile(r"^(?P<n>\d+) locks? held by (?P<task>.+/\d+):$")
# "       lo_open+0x23/0x50 [loop]" (the kernel) or "       lo_open" (the model's reports)
_FRAME = re.compile(
    r"^\s+(?:\? )?(?P<fn>[A-Za-z_.][\w.]*)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: \[\w+\])?\s*$"
)
_END = ("</TASK>", "---[ end trace")
#: lockdep's own frames at the top of the stack of the acquisition that closed a cycle
_LOCKDEP_FRAMES = ("__lock_acquire", "lock_acquire", "lock_map_acquire", "lock_acquire.part")


def function_name(frame: str) -> str:
    """``lo_open+0x1a/0x80 [loop]`` -> ``lo_open``."""
    m = _FRAME.match(" " + frame.strip())
    return m.group("fn") if m else frame.strip()


def console_lines(text: str) -> list[str]:
    """Console text as lines without carriage returns and printk time stamps."""
    return [_STAMP.sub("", line) for line in _raw_lines(text)]


def _raw_lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.replace("\r\n", "\n").split("\n")]


def _uptime(line: str) -> float | None:
    m = _STAMP_VALUE.match(line)
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class KernelLockdepReport:
    """One lockdep report from a real kernel's console."""

    kind: str  # as the model names it: "circular", "recursive", ...
    title: str  # the WARNING:/BUG: line
    classes: tuple[str, ...]  # a cycle: #0 (the lock being acquired), #1, ... as printed
    thread: str  # "comm/pid" of the task that closed the cycle
    call: str  # where it was acquiring: "blkdev_get_by_dev+0x4d/0x2f0"
    held: tuple[str, ...]  # classes the task held, outermost first
    stacks: tuple[tuple[str, ...], ...]  # per entry of `classes`: the functions of its stack
    text: str
    uptime: float | None = None  # the printk time stamp of its title line (seconds of uptime)

    @property
    def key(self) -> tuple[str, ...]:
        """Kind and the set of classes, as the model's ``LockdepReport.key``."""
        return (self.kind, *sorted(set(self.classes)))

    @property
    def label(self) -> str:
        """``circular (&disk->open_mutex, &of->mutex, ...)``: the lab's lockdep failure key."""
        classes = ", ".join(sorted(dict.fromkeys(self.classes)))
        return f"{self.kind} ({classes})" if classes else self.kind

    @property
    def call_function(self) -> str:
        return function_name(self.call)

    def closing_stack(self) -> tuple[str, ...]:
        """The stack (innermost first) of the acquisition that closed the cycle, without
        lockdep's own frames: ``__flush_workqueue, drain_workqueue, destroy_workqueue, ...``."""
        frames = self.stacks[0] if self.stacks else ()
        return tuple(f for f in frames if not f.startswith(_LOCKDEP_FRAMES))

    def cycle(self) -> str:
        """The cycle in dependency order (``#0 -> #1 -> ... -> #0``): each class was taken
        while holding the one before it, and the task held the last while acquiring ``#0``."""
        return " -> ".join([*self.classes, self.classes[0]]) if self.classes else ""

    def format(self) -> str:
        """The report as the kernel printed it (time stamps removed)."""
        return self.text

    def summary(self, depth: int = 6) -> list[str]:
        """Three lines for a report beside another: the cycle in dependency order, the task
        and the call stack that closed it, the locks it held."""
        lines = [f"{self.title}"]
        if self.classes:
            lines.append(f"cycle: {self.cycle()}")
        closing = " <- ".join(self.closing_stack()[:depth]) or self.call_function
        lines.append(f"closed by {self.thread or '?'} in {closing}")
        if self.held:
            lines.append(f"holding {', '.join(self.held)}")
        return lines


def _kind(title: str) -> str | None:
    if title in TITLES:
        return TITLES[title]
    if _IRQ_ORDER.match(title):
        return "irq-order"
    return None


def parse_reports(console: str) -> list[KernelLockdepReport]:
    """Every lockdep report in a console log, in the order printed."""
    raw = _raw_lines(console)
    lines = [_STAMP.sub("", line) for line in raw]
    starts = [i for i, line in enumerate(lines) if _kind(line.strip()) is not None]
    reports = []
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else len(lines)
        for j in range(start, stop):
            if lines[j].strip().startswith(_END):
                stop = j + 1
                break
        # the "=====" bar above the title belongs to the report
        first = start - 1 if start > 0 and lines[start - 1].strip().startswith("===") else start
        reports.append(_parse_one(lines[first:stop], lines[start].strip(), _uptime(raw[start])))
    return reports


def _parse_one(lines: list[str], title: str, uptime: float | None) -> KernelLockdepReport:
    kind = _kind(title) or title
    thread = call = ""
    entries: dict[int, tuple[str, list[str]]] = {}
    held: list[str] = []
    current: list[str] | None = None
    section = ""
    for raw in lines:
        line = raw.rstrip()
        stripped = line.strip()
        if m := _ACQUIRE.match(stripped):
            thread, section = m.group("task"), "acquire"
            continue
        if m := _ENTRY.match(stripped):
            frames: list[str] = []
            entries[int(m.group("n"))] = (m.group("cls"), frames)
            current, section = frames, "entry"
            continue
        if m := _HELD.match(stripped):
            section, current = "held", None
            thread = thread or m.group("task")
            continue
        if stripped.startswith(("other info", "stack backtrace:", "Chain exists")):
            section, current = "other", None
            continue
        if (m := _LOCK.match(line)) and section in ("acquire", "held"):
            if section == "acquire" and not call:
                call = m.group("at").strip()
            elif section == "held":
                held.append(m.group("cls"))
            continue
        if current is not None and (m := _FRAME.match(line)):
            current.append(m.group("fn"))
    order = sorted(entries)
    return KernelLockdepReport(
        kind=kind,
        title=title,
        classes=tuple(entries[i][0] for i in order),
        thread=thread,
        call=call,
        held=tuple(held),
        stacks=tuple(tuple(entries[i][1]) for i in order),
        text="\n".join(lines).strip("\n") + "\n",
        uptime=uptime,
    )


#: a trial as the guest's agent announces it: (scenario, userspace, index, uptime at its start)
TrialStart = tuple[str, str, int, float]


def trial_starts(events: Iterable[Event]) -> list[TrialStart]:
    """The ``start`` events of a guest run, in order."""
    return [
        (str(e.data["scenario"]), str(e.data["userspace"]), int(e.data["i"]),
         float(e.data["uptime"]))
        for e in events
        if e.kind == "start" and "uptime" in e.data
    ]  # fmt: skip


def reports_by_trial(
    console: str, starts: Sequence[TrialStart]
) -> dict[tuple[str, str, int], list[KernelLockdepReport]]:
    """Each report of the console, given to the trial that was running when the kernel
    printed it (the last trial started at or before its time stamp; one printed before the
    first trial, during a cell's set-up, goes to that cell's first trial)."""
    out: dict[tuple[str, str, int], list[KernelLockdepReport]] = {}
    ordered = sorted(starts, key=lambda s: s[3])
    for report in parse_reports(console):
        if not ordered:
            break
        at = report.uptime if report.uptime is not None else ordered[-1][3]
        before = [s for s in ordered if s[3] <= at]
        scenario, userspace, index, _ = before[-1] if before else ordered[0]
        out.setdefault((scenario, userspace, index), []).append(report)
    return out


def lockdep_outcome(reports: list[KernelLockdepReport]) -> tuple[Outcome, str] | None:
    """The lab's ``lockdep`` outcome for a run whose console showed ``reports`` (the first
    report decides, as in the model), with the reports' text; None without reports."""
    if not reports:
        return None
    first = reports[0]
    text = "\n\n".join(r.format() for r in reports)
    return Outcome("lockdep", first.label, first.title), text


def example_reports(cell: CellResult) -> dict[str, list[KernelLockdepReport]]:
    """The lockdep reports on a cell's examples, by outcome label: the first trial of each
    label that carried any. Works on a real (vm) cell and on a model cell alike (the model
    prints its reports in the kernel's shape)."""
    return {
        label: parse_reports(example.lockdep)
        for label, example in cell.examples.items()
        if example.lockdep
    }


#: the message of a trial that passed while lockdep was already off in its guest
LOCKDEP_OFF = (
    "no lockdep verdict: lockdep had switched itself off in this guest (it reports once per "
    "boot, and an earlier trial's report used that)"
)


def trial_verdict(
    rec: RunRecord, reports: Sequence[KernelLockdepReport], lockdep_was_on: bool | None
) -> RunRecord:
    """A real trial's record with the lockdep reports its kernel printed during it, as the
    model's records carry its own: the reports' text and keys; a trial that otherwise passed
    becomes the first report's ``lockdep`` outcome (a failure, a hang or an error stays what
    it is, as in the model). A pass while lockdep was already off (``lockdep_was_on`` False)
    is ``unsupported``: no lockdep verdict. ``lockdep_was_on`` is None on a kernel without
    lockdep, whose passes stay passes."""
    if reports:
        found = lockdep_outcome(list(reports))
        assert found is not None
        outcome, text = found
        return replace(
            rec,
            outcome=outcome if rec.outcome.kind == "pass" else rec.outcome,
            lockdep=text,
            lockdep_kinds=tuple(r.label for r in reports),
        )
    if lockdep_was_on is False and rec.outcome.kind == "pass":
        return replace(rec, outcome=Outcome("unsupported", "", LOCKDEP_OFF))
    return rec


def normalized_class(name: str) -> str:
    """A class name without lockdep's instance number and subclass (``sb_writers#3`` and the
    model's ``sb_writers#ext4`` are both ``sb_writers``; ``&disk->open_mutex/1`` is
    ``&disk->open_mutex``), for comparing a real cycle with the model's."""
    return re.sub(r"(#\w+)?(/\d+)?$", "", name)


def cycle_difference(
    real: tuple[str, ...], model: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Lock classes (normalized) only in the real cycle, and only in the model's, each in
    its cycle's order."""
    real_n = [normalized_class(c) for c in real]
    model_n = [normalized_class(c) for c in model]
    only_real = tuple(dict.fromkeys(c for c in real_n if c not in model_n))
    only_model = tuple(dict.fromkeys(c for c in model_n if c not in real_n))
    return only_real, only_model
