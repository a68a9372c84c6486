"""RESEARCH.md §3's claims (all but 6, whose lockdep chain has its own tests), checked exactly as
``loopdev lab claims`` checks them: the lab's scenarios on the cells each claim names, run by
the lab's runner with its default strategy (a portfolio of random walks and PCT), budget and
seeds, judged by :func:`loopdev.lab.claims.judge` (see :func:`loopdev.lab.claims.claim_verdicts`).
Which runs fail is decided by the model's mechanics under the scheduler's choices; every
failure found replays to the same outcome from its token.

Claim 1 leaves open whether 5.17-rc1 fails without udev; the lab answers it, without judging:
the model fails every run, for a reason it can name (the rundown work's queue freeze waits an
RCU grace period, 13-17 ms measured, longer than mount(8)'s start-up, 1-3 ms), as the real
v5.17-rc1 module did in a guest. The loop never fails without udev where the teardown
completes before umount returns (v5.16, taskwork, v5.17): claim 3's open question (Tetsuo's
guess about task_work) is answered "it does not fail".
"""

from __future__ import annotations

import pytest

from loopdev.lab import model
from loopdev.lab.cells import run_cells
from loopdev.lab.claims import REPRODUCED, ClaimVerdict, claim_verdicts
from loopdev.lab.outcome import CellKey, CellResult

UL37, UL38 = "util-linux-2.37", "util-linux-2.38"


@pytest.fixture(scope="module")
def lab() -> tuple[dict[int, ClaimVerdict], dict[CellKey, CellResult]]:
    """The verdicts on claims 1-5 and 7 from one run of their cells (the lab's defaults)."""
    verdicts, cells = claim_verdicts([1, 2, 3, 4, 5, 7])
    return {v.claim.number: v for v in verdicts}, cells


def explain(v: ClaimVerdict) -> str:
    return "\n".join(
        f"  {r.status}: {r.expect.describe()}: {r.evidence}" for r in v.results
    )


def replays(cell: CellResult) -> None:
    """The first run of each failing outcome replays, from its token, to the same outcome."""
    for label, ex in cell.examples.items():
        if label == "pass" or not ex.token:
            continue
        rec, _ = model.replay(ex.token, cell.key.scenario, cell.key.userspace, cell.key.column)
        assert rec.outcome.label == label, (label, rec.outcome.label)


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5, 7])
def test_claim_is_reproduced(
    lab: tuple[dict[int, ClaimVerdict], dict[CellKey, CellResult]], number: int
) -> None:
    verdicts, cells = lab
    v = verdicts[number]
    assert v.verdict == REPRODUCED, f"claim {number}: {v.verdict}\n{explain(v)}"
    for r in v.results:
        if r.expect.fails:
            replays(cells[r.expect.key])


def test_claim1_udev_and_old_mount_fail_reading_the_superblock(
    lab: tuple[dict[int, ClaimVerdict], dict[CellKey, CellResult]],
) -> None:
    verdicts, cells = lab
    first = verdicts[1].results[0]
    assert first.expect.scenario == "mount-loop+udev" and first.status == "holds", explain(
        verdicts[1]
    )
    cell = cells[first.expect.key]
    ex = cell.examples["fail: mount: EIO"]
    assert "can't read superblock on /dev/loop" in ex.message, ex.message
    replays(cell)


def test_claim1_open_question_the_model_fails_without_udev_too(
    lab: tuple[dict[int, ClaimVerdict], dict[CellKey, CellResult]],
) -> None:
    """The model's answer to the question the thread leaves open (see the module
    docstring): v5.17-rc1 fails without udev, every run; answered, not judged."""
    verdicts, cells = lab
    v = verdicts[1]
    second = v.results[1]
    assert second.expect.scenario == "mount-loop" and second.expect.question
    assert second.status == "answered" and v.verdict == REPRODUCED, explain(v)
    cell = cells[second.expect.key]
    assert set(cell.counts) == {"fail: mount: EIO"}, cell.counts  # every run, same failure
    assert f"observed in {cell.checked} of {cell.checked} runs" in second.evidence
    replays(cell)


def test_claim3_open_question_task_work_does_not_fail_without_udev(
    lab: tuple[dict[int, ClaimVerdict], dict[CellKey, CellResult]],
) -> None:
    verdicts, _cells = lab
    q = next(r for r in verdicts[3].results if r.expect.question)
    assert q.status == "answered" and q.evidence.startswith("observed in 0 of"), q.evidence


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_without_udev_the_loop_never_fails_where_umount_tears_down(strategy: str) -> None:
    keys = [CellKey("mount-loop", UL37, v) for v in ("v5.16", "taskwork", "v5.17")]
    cells = run_cells(keys, strategy=strategy)
    for key in keys:
        assert cells[key].counts == {"pass": cells[key].checked}, (key, cells[key].counts)


@pytest.mark.parametrize(
    ("scenario", "userspace", "variant"),
    [
        ("mount-loop+udev", UL37, "taskwork-openwait"),  # claim 4
        ("mount-loop+udev", UL38, "v5.17-rc1"),  # claims 4 and 5
        ("nested-umount", UL38, "taskwork"),  # claims 2 and 3
        ("detach-open", "loopdev", "v6.11"),  # claim 7
    ],
)
def test_negative_expectations_hold_under_pct_alone(
    scenario: str, userspace: str, variant: str
) -> None:
    """The portfolio alternates random walks and PCT; PCT alone (which starves low-priority
    tasks as long as it can) finds no failure either."""
    key = CellKey(scenario, userspace, variant)
    cell = run_cells([key], strategy="pct")[key]
    assert cell.counts == {"pass": cell.checked}, cell.counts
