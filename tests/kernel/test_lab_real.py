"""The lab's column for this kernel: real loop devices, real util-linux, the loopdev library.

Runs a few trials of each real-kernel scenario and checks what RESEARCH §6 measured, in
direction: util-linux's umount after killing an io_uring reader fails with EBUSY, the loopdev
library fails no scenario; and the lab leaves nothing mounted or attached behind.
"""

from __future__ import annotations

import os

from loopdev.lab.outcome import THIS_KERNEL, CellKey
from loopdev.lab.realkernel import RealPlan, run_real, util_linux_row
from loopdev.lab.scenarios import all_scenarios


def _leftovers() -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        found += [ln.split()[4] for ln in f if "/loopdev-lab-" in ln.split()[4]]
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                if "/loopdev-lab-" in f.read():
                    found.append(name)
        except OSError:
            pass
    return found


def test_real_column_direction_and_cleanup() -> None:
    row = util_linux_row()
    assert row is not None, "util-linux mount(8) not found"
    names = {"mount-loop+udev", "iouring-kill", "detach-open", "parallel-attach"}
    scenarios = [s for s in all_scenarios() if s.name in names]
    trials = {"mount-loop+udev": 10, "iouring-kill": 6, "detach-open": 6, "parallel-attach": 4}
    cells, notes = run_real(RealPlan(scenarios, [row, "loopdev"], trials), take_lock=False)
    assert not _leftovers()
    uring = cells[CellKey("iouring-kill", row, THIS_KERNEL, "host")]
    assert uring.checked == 6
    assert uring.counts.get("fail: umount: EBUSY", 0) >= 1, uring.counts
    example = uring.examples["fail: umount: EBUSY"]
    assert "target is busy" in example.message  # util-linux's own words
    for name in names:
        lib = cells[CellKey(name, "loopdev", THIS_KERNEL, "host")]
        assert lib.checked == trials[name], (name, lib.counts, notes)
        assert lib.failures == 0, (name, lib.counts, [e.message for e in lib.examples.values()])
    ml = cells[CellKey("mount-loop+udev", row, THIS_KERNEL, "host")]
    assert len(ml.measurements["umount_latency"]) == 10
    assert all(0 < v < 5 for v in ml.measurements["umount_latency"])
