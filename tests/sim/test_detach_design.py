"""The library's detach on every loop-driver design (RESEARCH T28), through the lab's
detach-open scenario: while a blkid-like prober and a verifier open the device, loopdev's
detach never hands them a half-dead device wherever a library-side fix is possible, while
losetup -d (LOOP_CLR_FD) does on 5.19. Where the teardown runs outside open_mutex whatever
the library does (5.17-rc1's worker, task_work) nothing is asserted about the library."""

from __future__ import annotations

import pytest

from loopdev.lab.cells import LabConfig, run_model
from loopdev.lab.outcome import CellKey, CellResult

#: designs whose autoclear teardown runs in ->release under open_mutex (or that refuse opens
#: during the rundown), where AUTOCLEAR + close or LOOP_CLR_FD fixes the race
FIXABLE = ("v5.16", "taskwork-openwait", "post-open-release", "v5.17", "v5.19", "v6.11")
BUDGET = 60


@pytest.fixture(scope="module")
def cells() -> dict[CellKey, CellResult]:
    keys = [CellKey("detach-open", "loopdev", v) for v in FIXABLE]
    keys.append(CellKey("detach-open", "util-linux-2.38", "v5.19"))
    return dict(run_model(LabConfig(budget=BUDGET, workers=2, real=False), keys))


@pytest.mark.parametrize("variant", FIXABLE)
def test_loopdev_detach_never_exposes_a_half_dead_device(
    cells: dict[CellKey, CellResult], variant: str
) -> None:
    cell = cells[CellKey("detach-open", "loopdev", variant)]
    assert cell.checked == BUDGET
    assert cell.counts == {"pass": BUDGET}, cell.counts


def test_losetup_detach_does_on_5_19(cells: dict[CellKey, CellResult]) -> None:
    """The same scenario with LOOP_CLR_FD as the detach fails: the test can see the race."""
    cell = cells[CellKey("detach-open", "util-linux-2.38", "v5.19")]
    assert cell.failures > 0, cell.counts
