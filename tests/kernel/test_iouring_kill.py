"""RESEARCH §6 on the real kernel, through the lab's ``iouring-kill`` scenario (the same code
the model runs): real ``fio --ioengine=io_uring`` is killed with SIGKILL, then the filesystem
is unmounted, the loop device opened exclusively and the image mounted again.

util-linux's umount fails with EBUSY in most trials (the killed process's io_uring requests
drop their file references later, from kernel threads); the loopdev library's umount waits
that out and never fails.
"""

from __future__ import annotations

import shutil

import pytest

from loopdev.lab.realkernel import RealPlan, run_real, util_linux_row
from loopdev.lab.scenarios.iouring_kill import IouringKill

TRIALS = 12

pytestmark = [
    pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed"),
    pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 not installed"),
]


def _cells(rows: list[str]) -> dict[str, tuple[int, int, dict[str, int]]]:
    plan = RealPlan([IouringKill()], rows, {"iouring-kill": TRIALS}, udevd=False)
    cells, notes = run_real(plan, take_lock=False)  # the session holds the machine lock
    out = {}
    for key, cell in cells.items():
        assert not cell.unsupported, cell.unsupported
        out[key.userspace] = (cell.failures, cell.checked, dict(cell.counts))
    assert out, notes
    return out


def test_umount_after_sigkill_of_io_uring_fio_util_linux_fails_loopdev_does_not() -> None:
    row = util_linux_row()
    if row is None:
        pytest.skip("util-linux mount/umount not installed")
    got = _cells([row, "loopdev"])
    ul_fail, ul_checked, ul_counts = got[row]
    lib_fail, lib_checked, lib_counts = got["loopdev"]
    assert ul_checked == TRIALS and lib_checked == TRIALS, (ul_counts, lib_counts)
    # util-linux: EBUSY from umount(8) in most trials on a quiet machine (RESEARCH §6: 117 of
    # 120; benchmarks/stress.py measures the rate). How many of 12 land inside the window
    # depends on machine load, so the test asks for a clear signal, not the rate.
    assert ul_fail >= TRIALS // 4, ul_counts
    assert all("umount" in k and "EBUSY" in k for k in ul_counts if k != "pass"), ul_counts
    # the library waits for the deferred fputs: never fails
    assert lib_fail == 0, lib_counts
