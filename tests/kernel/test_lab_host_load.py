"""This kernel's cells say when other work loaded the CPUs while they ran: the lab cannot
keep other people's work off the machine, and the real races' rates follow the load."""

from __future__ import annotations

import subprocess
import sys

from loopdev.lab.outcome import THIS_KERNEL, CellKey
from loopdev.lab.realkernel import RealPlan, run_real
from loopdev.lab.scenarios import all_scenarios

SPIN = "import time\nt = time.monotonic() + 60\nwhile time.monotonic() < t: pass\n"


def test_a_cell_run_beside_two_busy_cpus_is_marked_loaded() -> None:
    scenario = next(s for s in all_scenarios() if s.name == "nested-umount")
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
    try:
        cells, notes = run_real(
            RealPlan([scenario], ["loopdev"], {"nested-umount": 20}), take_lock=False
        )
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    cell = cells[CellKey("nested-umount", "loopdev", THIS_KERNEL, "host")]
    assert cell.checked == 20, (cell.counts, notes)
    assert cell.cpu_others is not None and cell.cpu_others >= 0.5, cell.cpu_others
    assert "busy while it ran" in cell.timing_distorted
    assert cell.to_json()["cpu_others"] == round(cell.cpu_others, 3)
