"""Claim 6 on the real lockdep kernel, v5.16 against v6.11: the lab's resume-chain scenario in
two guests at once, booted with the lockdep kernel (``GuestOptions(kernel="lockdep")``), each
with its variant's loop.ko built against that kernel's tree.

What a kernel engineer checks: on v5.16 lockdep reports a possible circular locking
dependency that contains ``&disk->open_mutex``, closed by the synchronous teardown in the last
close (``destroy_workqueue`` from ``__loop_clr_fd`` under ``blkdev_put``, holding
``open_mutex``), and the chain runs through kernfs's ``&of->mutex`` (/sys/power/resume) and the
backing filesystem's ``sb_writers``; on v6.11 lockdep stays on through every trial and reports
nothing. Runs when the lockdep kernel is built on this machine (scripts/setup.sh builds it as
root; LOOPDEV_NO_LOCKDEP_KERNEL=1 skips that); ~30 s.
"""

from __future__ import annotations

import pytest

from loopdev.lab.outcome import CellKey
from loopdev.vm import kbuild
from loopdev.vm import lockdep_report as L
from loopdev.vm.guest import GuestOptions
from loopdev.vm.run import VariantResult, run_variants

pytestmark = pytest.mark.usefixtures("guests_available", "nothing_left")

TRIALS = 2


@pytest.fixture(scope="module")
def results() -> dict[str, VariantResult]:
    if kbuild.find_lockdep_kernel() is None:
        pytest.skip("the lockdep kernel is not built here (loopdev vm build-kernel --lockdep)")
    out = run_variants(["v5.16", "v6.11"], ["resume-chain"], ["loopdev"], TRIALS,
                       options=GuestOptions(kernel="lockdep"), parallel=2)  # fmt: skip
    return {r.column: r for r in out}


def _check_guests(r: VariantResult) -> None:
    assert r.unavailable == "" and r.kernel == "lockdep" and r.lockdep
    assert [g.status for g in r.guests] == ["ok"], [(g.status, g.message) for g in r.guests]
    assert r.guests[0].kernel == r.kernel_release


def test_v5_16_reports_a_cycle_through_open_mutex(results: dict[str, VariantResult]) -> None:
    r = results["v5.16"]
    _check_guests(r)
    cell = r.cells[CellKey("resume-chain", "loopdev", "v5.16", "vm")]
    (label,) = [k for k in cell.counts if k.startswith("lockdep: ")]
    assert label.startswith("lockdep: circular (") and "&disk->open_mutex" in label
    # the first trial closed the cycle; lockdep is off for the rest of the boot (no verdict)
    assert cell.counts == {label: 1, "unsupported": TRIALS - 1}
    assert cell.examples[label].seed == 0 and r.guests[0].lockdep == "off"
    (report,) = L.example_reports(cell)[label]
    assert report.kind == "circular"
    assert "&disk->open_mutex" in report.held
    closing = report.closing_stack()
    assert closing[:3] == ("__flush_workqueue", "drain_workqueue", "destroy_workqueue")
    assert "__loop_clr_fd" in closing and "blkdev_put" in closing
    classes = {L.normalized_class(c) for c in report.classes}
    assert {"&disk->open_mutex", "&of->mutex", "sb_writers"} <= classes


def test_v6_11_reports_nothing_with_lockdep_on(results: dict[str, VariantResult]) -> None:
    r = results["v6.11"]
    _check_guests(r)
    cell = r.cells[CellKey("resume-chain", "loopdev", "v6.11", "vm")]
    assert cell.counts == {"pass": TRIALS} and cell.lockdep == {}
    assert r.guests[0].lockdep == "on"  # it was checking until the end
    assert L.parse_reports(r.guests[0].dmesg) == []
