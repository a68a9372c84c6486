"""The claims of RESEARCH.md §3, each with its source, what should be observed, and how the
lab's verdict is computed from the outcomes the matrix actually observed.

A claim is a list of expectations on matrix cells ("this cell shows a failure whose label
contains X" / "this cell shows none"). The verdict is computed, never stated: *reproduced* when
every expectation holds, *not reproduced* when one is contradicted, *not yet checkable* when a
cell it needs could not run (the model lacks the machinery: the scenario reported
``unsupported``) or was not part of this lab run. :func:`claim_verdicts` runs the cells some
claims name, exactly as the lab runs them, and judges them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loopdev.lab.cells import run_cells
from loopdev.lab.outcome import CellKey, CellResult

REPRODUCED = "reproduced"
#: labels of user-visible failures and deadlocks
USER_VISIBLE = r"^(fail|deadlock)"
NOT_REPRODUCED = "NOT reproduced"
NOT_CHECKABLE = "not yet checkable"


@dataclass(frozen=True)
class Expect:
    """An expectation on one cell: ``fails`` → some outcome label matches the regular
    expression ``match``; otherwise none does. The default matches every user-visible failure
    and every deadlock (labels ``fail: <step>: <kind>`` and ``deadlock: ...``)."""

    scenario: str
    userspace: str
    column: str
    fails: bool
    match: str = USER_VISIBLE

    @property
    def key(self) -> CellKey:
        return CellKey(self.scenario, self.userspace, self.column)

    def describe(self) -> str:
        what = "user-visible failures" if self.match == USER_VISIBLE else f"outcomes matching {self.match!r}"
        verb = "shows" if self.fails else "shows no"
        return f"{self.column}: {self.scenario} with {self.userspace} {verb} {what}"


@dataclass(frozen=True)
class Claim:
    """One claim of RESEARCH §3."""

    number: int
    text: str
    source: str
    observe: str
    expects: tuple[Expect, ...]


@dataclass
class ExpectResult:
    expect: Expect
    status: str  # "holds" | "contradicted" | "unchecked"
    evidence: str
    token: str = ""


@dataclass
class ClaimVerdict:
    claim: Claim
    verdict: str
    results: list[ExpectResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        c = self.claim
        return {
            "claim": c.number,
            "text": c.text,
            "source": c.source,
            "observe": c.observe,
            "verdict": self.verdict,
            "evidence": [
                {
                    "expect": r.expect.describe(),
                    "status": r.status,
                    "evidence": r.evidence,
                    "token": r.token,
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


def check_expect(e: Expect, cells: Mapping[CellKey, CellResult]) -> ExpectResult:
    """Evaluate one expectation on the observed cells."""
    cell = cells.get(e.key)
    if cell is None:
        return ExpectResult(e, "unchecked", "cell not run in this lab run")
    if cell.checked == 0:
        why = cell.unsupported or "no run produced a verdict"
        errors = {k: n for k, n in cell.counts.items() if k.startswith("error")}
        if errors and not cell.unsupported:
            why = f"every run hit a lab/model error: {errors}"
        if cell.runs == 0 and cell.cut:
            why = "not run (time limit)"
        return ExpectResult(e, "unchecked", f"not checkable: {why}")
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
            evidence += f"; first: seed {first.seed}: {first.message.splitlines()[0][:160] if first.message else first.label}"
    ok = total > 0 if e.fails else total == 0
    return ExpectResult(e, "holds" if ok else "contradicted", evidence, token)


def judge(claim: Claim, cells: Mapping[CellKey, CellResult]) -> ClaimVerdict:
    """The verdict on one claim from the observed cells."""
    results = [check_expect(e, cells) for e in claim.expects]
    if any(r.status == "contradicted" for r in results):
        verdict = NOT_REPRODUCED
    elif any(r.status == "unchecked" for r in results):
        verdict = NOT_CHECKABLE
    else:
        verdict = REPRODUCED
    return ClaimVerdict(claim, verdict, results)


def judge_all(
    cells: Mapping[CellKey, CellResult], claims: Sequence[Claim] | None = None
) -> list[ClaimVerdict]:
    return [judge(c, cells) for c in (CLAIMS if claims is None else claims)]


_THREAD = "linux-block thread 'loop: make autoclear operation asynchronous' (2022-01)"
#: a lockdep cycle through disk->open_mutex (claim 6's chain)
_OPEN_MUTEX_CYCLE = r"^lockdep: circular \(.*open_mutex"
#: a lockdep cycle through the kernfs open-file lock and the backing filesystem's sb_writers
_SB_WRITERS_CYCLE = r"^lockdep: circular \(.*of->mutex.*sb_writers"
_ANY_CYCLE = r"^lockdep: circular"
UL37, UL38, LIB = "util-linux-2.37", "util-linux-2.38", "loopdev"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        1,
        "With v5.17-rc1, a mount -o loop,ro / umount loop fails ('can't read superblock') when "
        "udev opens the loop device asynchronously and mount(8) has the pre-2.38 reuse logic; "
        "without an asynchronous opener it does not fail.",
        f"LTP isofs.sh regression report on 322c4293; {_THREAD}",
        "mount-loop with udev, util-linux 2.37 on v5.17-rc1: mount fails with EIO; the same "
        "without udev: no failure.",
        (
            Expect("mount-loop+udev", UL37, "v5.17-rc1", True, r"^fail: mount: EIO"),
            Expect("mount-loop", UL37, "v5.17-rc1", False),
        ),
    ),
    Claim(
        2,
        "With v5.17-rc1, 'umount ext2-image-on-xfs; umount xfs' fails: the second umount gets "
        "EBUSY because the backing file is still open.",
        f"xfstests xfs/049 regression report; {_THREAD}",
        "nested-umount (no udev) on v5.17-rc1: umount of the outer xfs fails with EBUSY.",
        (Expect("nested-umount", UL38, "v5.17-rc1", True, r"^fail: umount outer: EBUSY"),),
    ),
    Claim(
        3,
        "task_work in the rundown fixes (2) but not (1): with udev the last close is udev's, so "
        "the teardown is not bound to umount's return.",
        "Tetsuo Handa, '[PATCH v2 2/2] loop: use task_work for autoclear operation' "
        "(2022-01-07); Jan Kara's reduced version (2022-01-14)",
        "taskwork: nested-umount (no udev) shows no EBUSY; mount-loop with udev and util-linux 2.37 still "
        "fails with EIO.",
        (
            Expect("nested-umount", UL38, "taskwork", False, r"^fail: .*EBUSY"),
            Expect("mount-loop+udev", UL37, "taskwork", True, r"^fail: mount: EIO"),
        ),
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
        f"Jan Kara in {_THREAD}",
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
        "dependency (open_mutex → I/O wait → sb_writers → freeze → kernfs open-file lock of "
        "/sys/power/resume → open_mutex); the async variant keeps it (through lo_mutex), the 5.19 "
        "series removes it.",
        "syzbot/lockdep report discussed in the thread; hch/Tetsuo 5.19 series (46dc967445bd "
        "... d292dc80686a)",
        "resume-chain: lockdep reports the open_mutex cycle on v5.16 and on v5.17 (the revert "
        "to the synchronous teardown); the async v5.17-rc1 (which also stopped holding lo_mutex, "
        "6050fa4c) keeps a cycle through sb_writers and the kernfs lock, closed by its queue "
        "freeze rather than by open_mutex; no cycle at all on v5.19 and v6.11.",
        (
            Expect("resume-chain", LIB, "v5.16", True, _OPEN_MUTEX_CYCLE),
            Expect("resume-chain", LIB, "v5.17", True, _OPEN_MUTEX_CYCLE),
            Expect("resume-chain", LIB, "v5.17-rc1", True, _SB_WRITERS_CYCLE),
            Expect("resume-chain", LIB, "v5.19", False, _ANY_CYCLE),
            Expect("resume-chain", LIB, "v6.11", False, _ANY_CYCLE),
        ),
    ),
    Claim(
        7,
        "A loop device must not be torn down under an opener that already verified it; v6.11 "
        "refuses an open during rundown with ENXIO instead of handing out a half-dead device.",
        "18048c1af783 'loop: Fix a race between loop detach and loop open'",
        "detach-open, losetup -d (LOOP_CLR_FD) detaching: on v5.19 an open racing it succeeds "
        "and its I/O fails with EIO; on v6.11 no successful open ever reads EIO. (loopdev "
        "detaches with AUTOCLEAR + close before 6.11, T28, so its rows stay clean on v5.19.)",
        (
            Expect("detach-open", UL38, "v5.19", True, r"^fail: read after open: EIO"),
            Expect("detach-open", UL38, "v6.11", False, r"^fail: read after (open|verify): EIO"),
        ),
    ),
)


# -- running the cells the claims name -------------------------------------------------------


def claim(number: int) -> Claim:
    """RESEARCH §3 claim ``number``."""
    return next(c for c in CLAIMS if c.number == number)


def claim_cells(numbers: Sequence[int] | None = None) -> list[CellKey]:
    """The matrix cells the claims' expectations name (every claim's by default), in order,
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
