"""The 2022 linux-block thread's claims (docs/lab.md lists them with their sources), each with its source, what should be observed, and how the
lab's verdict is computed from the outcomes the matrix actually observed.

A claim is a list of expectations on matrix cells ("this cell shows a failure whose label
contains X" / "this cell shows none"). The verdict is computed, never stated: *reproduced* when
every expectation holds, *not reproduced* when one is contradicted, *not yet checkable* when a
cell it needs could not run (the model lacks the machinery: the scenario reported
``unsupported``) or was not part of this lab run.

Each expectation is checked on the model's cell and, when the lab ran one, on the real cell of
the same scenario, userspace and design in a guest (``CellKey(..., backend="vm")``): a real
cell that contradicts what the model shows makes the claim *not reproduced* too (unless its
timing is distorted by emulation), and the evidence says which side disagrees.

A question the thread leaves open (does 5.17-rc1 fail without udev?) is an expectation marked
as a question: it never decides a verdict; the evidence gives the model's answer and, when the
lab ran the real module, the real one. A claim made only of questions is an *open question*.

Timing: a verdict that flips when a timing parameter moves inside its measured range
(``loopdev lab sweep``; :mod:`loopdev.sim.params`) is *timing-dependent*; the evidence names
the parameter and the values at which the expectation holds.

:func:`claim_verdicts` runs the cells the claims name, exactly as the lab runs them, and
judges them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loopdev.lab.cells import run_cells
from loopdev.lab.outcome import CellKey, CellResult
from loopdev.sim.params import PARAMS

REPRODUCED = "reproduced"
#: labels of user-visible failures and deadlocks
USER_VISIBLE = r"^(fail|deadlock)"
NOT_REPRODUCED = "NOT reproduced"
NOT_CHECKABLE = "not yet checkable"
OPEN_QUESTION = "open question"

#: a sweep of one timing parameter: (value, the model cells run with it), in value order
SweepRuns = Sequence[tuple[float, Mapping[CellKey, CellResult]]]


@dataclass(frozen=True)
class Expect:
    """An expectation on one cell: ``fails`` → some outcome label matches the regular
    expression ``match``; otherwise none does. The default matches every user-visible failure
    and every deadlock (labels ``fail: <step>: <kind>`` and ``deadlock: ...``). With
    ``question`` the thread leaves it open: the cell is observed and reported, never judged
    (``fails`` is then what the question asks about)."""

    scenario: str
    userspace: str
    column: str
    fails: bool
    match: str = USER_VISIBLE
    question: str = ""

    @property
    def key(self) -> CellKey:
        """The model's cell."""
        return CellKey(self.scenario, self.userspace, self.column)

    @property
    def real_key(self) -> CellKey:
        """The same design's real cell: its loop module in a guest."""
        return self.key.on("vm")

    def describe(self) -> str:
        what = "user-visible failures" if self.match == USER_VISIBLE else f"outcomes matching {self.match!r}"
        if self.question:
            return f"open: {self.question} ({self.column}: {self.scenario} with {self.userspace}: {what}?)"
        verb = "shows" if self.fails else "shows no"
        return f"{self.column}: {self.scenario} with {self.userspace} {verb} {what}"


@dataclass(frozen=True)
class Claim:
    """One claim of the 2022 thread, and what the lab found out about it beyond the cells
    (``note``: the finding, with its evidence, in a sentence or two)."""

    number: int
    text: str
    source: str
    observe: str
    expects: tuple[Expect, ...]
    note: str = ""


@dataclass
class ExpectResult:
    expect: Expect
    status: str  # "holds" | "contradicted" | "unchecked" | "answered" (a question)
    evidence: str
    token: str = ""
    real_status: str = ""  # the same check on the real cell; "" when the lab ran none
    real_evidence: str = ""
    timing: str = ""  # how a sweep moved it inside a parameter's measured range
    real_distorted: str = ""  # why the real cell's timing is not hardware's ('' if it is)

    @property
    def disagrees(self) -> bool:
        """The model's cell and the real one both give a verdict, and not the same one."""
        judged = ("holds", "contradicted")
        return self.status in judged and self.real_status in judged and self.status != self.real_status


@dataclass
class ClaimVerdict:
    claim: Claim
    verdict: str
    results: list[ExpectResult] = field(default_factory=list)
    timing_dependent: bool = False
    #: an expectation where the model's cell and the real one disagree
    disagreement: bool = False

    @property
    def disagreement_distorted(self) -> bool:
        """Every real cell that disagrees with its model cell has emulation-distorted timing
        (so the disagreement may be the emulator's); False when one is hardware-timed."""
        against = [r for r in self.results if r.disagrees]
        return bool(against) and all(r.real_distorted for r in against)

    def disagreement_text(self) -> str:
        """'' or how the real cells disagree, for the verdict's brackets."""
        if not self.disagreement:
            return ""
        if self.disagreement_distorted:
            return "the real cell disagrees, timing-distorted"
        return "the real cell disagrees"

    def to_json(self) -> dict[str, Any]:
        c = self.claim
        return {
            "claim": c.number,
            "text": c.text,
            "source": c.source,
            "observe": c.observe,
            "note": c.note,
            "verdict": self.verdict,
            "timing_dependent": self.timing_dependent,
            "model_real_disagreement": self.disagreement,
            "disagreement_timing_distorted": self.disagreement_distorted,
            "evidence": [
                {
                    "expect": r.expect.describe(),
                    "question": bool(r.expect.question),
                    "status": r.status,
                    "evidence": r.evidence,
                    "token": r.token,
                    "real_status": r.real_status,
                    "real_evidence": r.real_evidence,
                    "timing": r.timing,
                    "real_timing_distorted": r.real_distorted,
                }
                for r in self.results
            ],
        }


def _matching(cell: CellResult, match: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for label, n in cell.counts.items():
        if label in ("pass", "unsupported") or label.startswith("error"):
            continue
        if re.search(match, label, re.IGNORECASE):
            out[label] = n
    for kind, n in cell.lockdep.items():  # reports seen in runs whose outcome was another
        label = f"lockdep: {kind}"
        if re.search(match, label, re.IGNORECASE):
            out[label] = max(n, out.get(label, 0))
    return out


def _observe(e: Expect, cell: CellResult | None) -> tuple[str, str, str, bool | None]:
    """(status, evidence, token, whether the cell shows a match) for one cell; status is
    "unchecked" (and the last None) when the cell gives no verdict."""
    if cell is None:
        return "unchecked", "cell not run in this lab run", "", None
    if cell.checked == 0:
        why = cell.unsupported or "no run produced a verdict"
        errors = {k: n for k, n in cell.counts.items() if k.startswith("error")}
        if errors and not cell.unsupported:
            why = f"every run hit a lab/model error: {errors}"
        if cell.runs == 0 and cell.cut:
            why = "not run (time limit)"
        return "unchecked", f"not checkable: {why}", "", None
    hits = _matching(cell, e.match)
    total = sum(hits.values())
    counts = ", ".join(f"{k} x{n}" for k, n in sorted(hits.items())) or "none"
    evidence = f"observed in {total} of {cell.checked} runs ({counts})"
    token = ""
    if hits:
        first = min(
            (cell.examples[k] for k in hits if k in cell.examples),
            key=lambda ex: ex.seed,
            default=None,
        )
        if first is not None:
            token = first.token
            line = first.message.splitlines()[0][:160] if first.message else first.label
            evidence += f"; first: seed {first.seed}: {line}"
    seen = total > 0
    return ("holds" if seen == e.fails else "contradicted"), evidence, token, seen


def check_expect(
    e: Expect,
    cells: Mapping[CellKey, CellResult],
    sweeps: Mapping[str, SweepRuns] | None = None,
) -> ExpectResult:
    """Evaluate one expectation on the observed cells: the model's, the real one when the lab
    ran it, and the model's across any sweep that covered the cell."""
    status, evidence, token, _ = _observe(e, cells.get(e.key))
    real = cells.get(e.real_key)
    real_status = real_evidence = distorted = ""
    if real is not None:
        real_status, real_evidence, _, _ = _observe(e, real)
        distorted = str(getattr(real, "timing_distorted", "") or "")
        if distorted:
            real_evidence += f" (timing distorted under emulation: {distorted})"
    if e.question:
        status = "answered" if status != "unchecked" else status
        if real_status and real_status != "unchecked":
            real_status = "answered"
    result = ExpectResult(
        e, status, evidence, token, real_status, real_evidence, real_distorted=distorted
    )
    if sweeps and not e.question:
        result.timing = _timing(e, sweeps)
    return result


def _timing(e: Expect, sweeps: Mapping[str, SweepRuns]) -> str:
    """How the expectation fares across each sweep inside the parameter's measured range: ""
    when it never flips there, else which values it holds at."""
    notes: list[str] = []
    for name, runs in sweeps.items():
        p = PARAMS.get(name)
        if p is None:
            continue
        inside = [(v, c) for v, c in runs if p.lo <= v <= p.hi and e.key in c]
        seen = {v: _observe(e, c.get(e.key))[0] for v, c in inside}
        statuses = set(seen.values()) - {"unchecked"}
        if statuses == {"holds", "contradicted"}:
            holds = [v for v, s in seen.items() if s == "holds"]
            at = ", ".join(f"{v:g}" for v in holds)
            notes.append(
                f"timing-dependent: flips inside {name}'s measured range "
                f"({p.lo:g}-{p.hi:g} {p.unit}); holds at {name} = {at}"
            )
    return "; ".join(notes)


def judge(
    claim: Claim,
    cells: Mapping[CellKey, CellResult],
    sweeps: Mapping[str, SweepRuns] | None = None,
) -> ClaimVerdict:
    """The verdict on one claim from the observed cells (and sweeps, when given)."""
    results = [check_expect(e, cells, sweeps) for e in claim.expects]
    judged = [r for r in results if not r.expect.question]
    usable_real = [
        r for r in judged if r.real_status in ("holds", "contradicted") and not r.real_distorted
    ]
    if not judged:
        verdict = OPEN_QUESTION
    elif any(r.status == "contradicted" for r in judged) or any(
        r.real_status == "contradicted" for r in usable_real
    ):
        verdict = NOT_REPRODUCED
    elif any(r.status == "unchecked" for r in judged):
        verdict = NOT_CHECKABLE
    else:
        verdict = REPRODUCED
    disagreement = any(r.disagrees for r in results)
    return ClaimVerdict(
        claim, verdict, results, any(r.timing for r in results), disagreement
    )


def judge_all(
    cells: Mapping[CellKey, CellResult],
    claims: Sequence[Claim] | None = None,
    sweeps: Mapping[str, SweepRuns] | None = None,
) -> list[ClaimVerdict]:
    return [judge(c, cells, sweeps) for c in (CLAIMS if claims is None else claims)]


_THREAD = "linux-block thread 'loop: make autoclear operation asynchronous' (2022-01)"
#: a lockdep cycle through disk->open_mutex (claim 6's chain)
_OPEN_MUTEX_CYCLE = r"^lockdep: circular \(.*open_mutex"
#: a lockdep cycle through lo->lo_mutex
_LO_MUTEX_CYCLE = r"^lockdep: circular \(.*lo_mutex"
_ANY_CYCLE = r"^lockdep: circular"
UL37, UL38, LIB = "util-linux-2.37", "util-linux-2.38", "loopdev"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        1,
        "With v5.17-rc1, `while :; do mount -o loop,ro isofs.iso isofs/; umount isofs/; done` "
        "fails ('can't read superblock') with mount(8) before 2.38. The reports came from "
        "systems running udev; Jan Kara explains the failure by the rundown work still pending "
        "on the workqueue after umount returns, so mount(8) reuses a device that is then torn "
        "down under it. Whether 5.17-rc1 fails without udev the thread leaves open (the "
        "sentence 'without an asynchronous opener it does not fail' was Tetsuo's untested "
        "guess about the task_work variant).",
        f"LTP isofs.sh regression reports (Jan Stancek, Mike Galbraith) on 322c4293; Jan Kara "
        f"and Tetsuo Handa in the {_THREAD}",
        "mount-loop with udev, util-linux 2.37, v5.17-rc1: mount fails with EIO. Open: the "
        "same without udev; it turns on the rundown's queue freeze (one RCU grace period) "
        "against mount(8)'s start-up.",
        (
            Expect("mount-loop+udev", UL37, "v5.17-rc1", True, r"^fail: mount: EIO"),
            Expect(
                "mount-loop", UL37, "v5.17-rc1", True, r"^fail: mount: EIO",
                question="does 5.17-rc1 fail without udev?",
            ),
        ),
        "Without udev the model fails as well: the rundown work's queue freeze waits an RCU "
        "grace period (13-17 ms measured) while mount(8) starts in 1-3 ms and reuses the "
        "device sysfs still shows bound. The real v5.17-rc1 module in a guest agrees (30/30 "
        "EIO without udev; with udev 24-28 of 30 trials, 9 of 18 in a lab run beside another "
        "guest). Some of its failures say 'operation permitted for root only': mount(8) 2.37's "
        "overlap scan lost the device's sysfs attributes to the teardown (ENODEV or ENOENT "
        "from open(2)) and libmount before fb4b6b115 reports that as -EPERM; the model reaches "
        "it only when scan and teardown meet in virtual time (docs/findings.md).",
    ),
    Claim(
        2,
        "With v5.17-rc1, 'umount ext2-image-on-xfs; umount xfs' fails: the second umount gets "
        "EBUSY because the backing file is still open (xfs/049).",
        f"xfstests xfs/049 regression report (kernel test robot); {_THREAD}",
        "nested-umount (no udev) on v5.17-rc1: umount of the outer filesystem fails with "
        "EBUSY; not on v5.16 or v6.11.",
        (
            Expect("nested-umount", UL38, "v5.17-rc1", True, r"^fail: umount outer: EBUSY"),
            Expect("nested-umount", UL38, "v5.16", False, r"^fail: .*EBUSY"),
            Expect("nested-umount", UL38, "v6.11", False, r"^fail: .*EBUSY"),
        ),
    ),
    Claim(
        3,
        "task_work in the rundown fixes (2) but not (1): with udev the last close is udev's, "
        "so the teardown is not bound to umount's return. Without an asynchronous opener, "
        "Tetsuo expects the task_work variant not to fail (untested in the thread).",
        "Tetsuo Handa, '[PATCH v2 2/2] loop: use task_work for autoclear operation' "
        "(2022-01-07); Jan Kara's reduced version (2022-01-14); Tetsuo's reply of 2022-01-11",
        "taskwork: nested-umount (no udev) shows no EBUSY; mount-loop with udev and util-linux "
        "2.37 still fails with EIO. Open: mount-loop without udev on taskwork.",
        (
            Expect("nested-umount", UL38, "taskwork", False, r"^fail: .*EBUSY"),
            Expect("mount-loop+udev", UL37, "taskwork", True, r"^fail: mount: EIO"),
            Expect(
                "mount-loop", UL37, "taskwork", True, r"^fail: mount: EIO",
                question="does the task_work variant fail without udev (Tetsuo expects not)?",
            ),
        ),
        "With udev the real taskwork module fails too, less often than the model (1-14 of "
        "18-60 trials in guests against 22/40 of the model's runs): in a guest mount(8) "
        "reaches its loop scan 5-24 ms after it starts, not 1-3 ms, while udevd's last close "
        "(3-44 ms after an attach) and the RCU grace period barely move; the model at that "
        "start-up (userspace.exec_time 9 ms) fails 11/100 on taskwork and 100/100 on "
        "v5.17-rc1 (docs/findings.md).",
    ),
    Claim(
        4,
        "Waiting in lo_open for rundown to finish (Tetsuo's v2) fixes (1) as well; the fix "
        "finally taken is in mount(8): open, then verify with LOOP_GET_STATUS64.",
        "Tetsuo Handa v2 (2022-01-07); util-linux 3e1fc3bbee99 (Jan Kara, 2022-01-25)",
        "taskwork-openwait: mount-loop with udev and util-linux 2.37 never fails; v5.17-rc1 with "
        "util-linux 2.38 never fails.",
        (
            Expect("mount-loop+udev", UL37, "taskwork-openwait", False),
            Expect("mount-loop+udev", UL38, "v5.17-rc1", False),
        ),
    ),
    Claim(
        5,
        "Once a teardown has started (Lo_rundown), LOOP_GET_STATUS and new I/O fail, so "
        "userspace that verifies after opening is consistent.",
        f"Jan Kara in the {_THREAD}",
        "util-linux 2.38 (open, then LOOP_GET_STATUS64) never hits EIO in mount-loop with udev, "
        "on every variant where 2.37 does; an opener that verified a device never reads EIO "
        "from it (detach-open).",
        (
            Expect("mount-loop+udev", UL38, "v5.17-rc1", False, r"^fail: .*EIO"),
            Expect("mount-loop+udev", UL38, "taskwork", False, r"^fail: .*EIO"),
            Expect("mount-loop+udev", UL38, "v6.11", False, r"^fail: .*EIO"),
            Expect("detach-open", LIB, "v5.17-rc1", False, r"^fail: read after verify"),
            Expect("detach-open", LIB, "v5.19", False, r"^fail: read after verify"),
            Expect("detach-open", LIB, "v6.11", False, r"^fail: read after verify"),
        ),
    ),
    Claim(
        6,
        "v5.16's synchronous teardown under disk->open_mutex has a possible circular locking "
        "dependency: open_mutex → (wait for I/O: the loop worker writes to the backing file) → "
        "sb_start_write on the backing fs (waits for a freeze) → freeze_super waits for writers "
        "→ a sendfile() holding sb_start_write reads /sys/power/resume (kernfs open-file lock) "
        "→ a write to /sys/power/resume opens the loop device → open_mutex. The async variant "
        "does not remove the dependency (lockdep still sees it through lo_mutex), the 5.19 "
        "series does.",
        "syzbot/lockdep report discussed in the thread; hch/Tetsuo 5.19 series (46dc967445bd "
        "... d292dc80686a)",
        "resume-chain: lockdep reports the open_mutex cycle on v5.16 and on v5.17 (the revert), "
        "none on v5.19 and v6.11; on v5.17-rc1 a cycle through lo_mutex, whether the device "
        "goes by autoclear or by LOOP_CLR_FD (resume-chain[clr-fd]).",
        (
            Expect("resume-chain", LIB, "v5.16", True, _OPEN_MUTEX_CYCLE),
            Expect("resume-chain", LIB, "v5.17", True, _OPEN_MUTEX_CYCLE),
            Expect("resume-chain", LIB, "v5.19", False, _ANY_CYCLE),
            Expect("resume-chain", LIB, "v6.11", False, _ANY_CYCLE),
            Expect("resume-chain", LIB, "v5.17-rc1", True, _LO_MUTEX_CYCLE),
            Expect("resume-chain[clr-fd]", LIB, "v5.17-rc1", True, _LO_MUTEX_CYCLE),
            Expect("resume-chain[clr-fd]", LIB, "v5.16", True, _LO_MUTEX_CYCLE),
        ),
        "Its first part holds in the model and on the real 6.1 lockdep kernel, class for "
        "class. 'Through lo_mutex' does not: 6050fa4c, merged with 322c4293 in 5.17-rc1, "
        "stopped holding lo_mutex across the teardown, so 5.17-rc1 shows no cycle by autoclear "
        "or by LOOP_CLR_FD (v5.16 does close it through lo_mutex on the LOOP_CLR_FD path). In "
        "the thread the dependency came back only when the rundown work was waited for under "
        "open_mutex (Tetsuo, 2022-01-18: (wq_completion)loop0 → &disk->open_mutex → "
        "(work_completion)(&lo->rundown_work)), or through the flush of the system-wide "
        "workqueue the revert bf23747ee053 cites (syzbot, 'possible deadlock in worker_thread').",
    ),
    Claim(
        7,
        "Before 6.11, an open() that lands while a LOOP_CLR_FD teardown runs (5.19-6.10: no "
        "lo_open at all; teardown outside lo_mutex and open_mutex) succeeds and hands out a "
        "half-dead device: the opener's reads fail with EIO (18048c1af783's reproducer: "
        "blkid/udev probing during losetup -d). 6.11 refuses such an open with ENXIO. An opener "
        "that verifies with LOOP_GET_STATUS64 after opening never reads a half-dead device (it "
        "sees ENXIO and skips).",
        "18048c1af783 'loop: Fix a race between loop detach and loop open' (Gulam Mohamed, 6.11)",
        "detach-open, losetup -d (LOOP_CLR_FD) detaching: on v5.19 an open racing it succeeds "
        "and its direct reads fail with EIO; on v6.11 no open ever reads EIO; the verifier "
        "never reads EIO on either. (loopdev detaches with AUTOCLEAR + close before 6.11, T28, "
        "so its rows stay clean on v5.19.)",
        (
            Expect("detach-open", UL38, "v5.19", True, r"^fail: read after open: EIO"),
            Expect("detach-open", UL38, "v6.11", False, r"^fail: read after (open|verify): EIO"),
            Expect("detach-open", UL38, "v5.19", False, r"^fail: read after verify"),
        ),
        "The half-dead device shows through a direct read: a read through the page cache that "
        "fails in the teardown is retried once, and by then invalidate_disk() has usually set "
        "the capacity to 0, so the retry zero-fills and the read returns EOF (real v5.19 code: "
        "no EIO in 30 buffered trials, 7 of 20 with O_DIRECT). 18048c1af783's I/O errors came "
        "from blkid on stale partitions, whose size the failed rescan left in place.",
    ),
)


# -- running the cells the claims name -------------------------------------------------------


def claim(number: int) -> Claim:
    """The thread's claim ``number``."""
    return next(c for c in CLAIMS if c.number == number)


def claim_cells(numbers: Sequence[int] | None = None) -> list[CellKey]:
    """The model cells the claims' expectations name (every claim's by default), in order,
    without repeats."""
    chosen = CLAIMS if numbers is None else [claim(n) for n in numbers]
    keys: dict[CellKey, None] = {}
    for c in chosen:
        for e in c.expects:
            keys.setdefault(e.key)
    return list(keys)


def claim_verdicts(
    numbers: Sequence[int],
    *,
    budget: int | None = None,
    strategy: str = "portfolio",
    seed: int = 0,
    workers: int = 2,
) -> tuple[list[ClaimVerdict], dict[CellKey, CellResult]]:
    """The verdicts on claims ``numbers`` from the cells they name, run as the lab runs them
    (``loopdev lab claims`` with the same budget, strategy and seed computes the same)."""
    cells = run_cells(
        claim_cells(numbers), budget=budget, strategy=strategy, seed=seed, workers=workers
    )
    return [judge(claim(n), cells) for n in numbers], cells
