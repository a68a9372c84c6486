"""detach-open[partscan] in guests (Debian's 6.1 kernel, which parses the MSDOS partition tables
this host's kernel does not): a partitioned image attached with partition scanning is detached
while a prober and a scanner open its partitions and the whole device.

* v5.17-rc1 tears the device down from a worker, outside ``disk->open_mutex``: with
  ``losetup -d`` the partition drop meets an open partition (EBUSY) and the partitions stay
  behind on the unbound device, 18048c1af783's stale partitions (32 of 32 trials in a lab
  run); the library deletes them while the device is still bound, so they do not (0 of 32);
* v5.19 with the library's detach (AUTOCLEAR + close) runs the teardown in the last close,
  under ``open_mutex``, where no partition is open: never any stale partition.
"""

from __future__ import annotations

import pytest

from loopdev.lab.outcome import CellKey, CellResult
from loopdev.vm.run import VariantResult, run_variants

pytestmark = pytest.mark.usefixtures("guests_available", "nothing_left")

SCENARIO = "detach-open[partscan]"
TRIALS = 4
STALE = "fail: after detach: stale partitions"


def _cell(results: list[VariantResult], column: str, row: str) -> CellResult:
    r = next(r for r in results if r.column == column)
    assert all(g.status == "ok" for g in r.guests), [(g.status, g.message) for g in r.guests]
    cell = r.cells[CellKey(SCENARIO, row, column, "vm")]
    # every trial gave a verdict: the guest's kernel found the partitions (no n/a), no lab
    # error, nothing cut
    assert cell.runs == TRIALS and cell.checked == TRIALS, (column, row, cell.counts)
    return cell


def test_stale_partitions_after_losetup_d_and_none_after_the_librarys_detach() -> None:
    results = run_variants(
        ["v5.17-rc1", "v5.19"], [SCENARIO], ["util-linux-2.38", "loopdev"], TRIALS
    )
    losetup = _cell(results, "v5.17-rc1", "util-linux-2.38")
    library = _cell(results, "v5.17-rc1", "loopdev")
    assert losetup.counts.get(STALE, 0) >= 1, losetup.counts
    assert "still show" in losetup.examples[STALE].message
    assert library.counts.get(STALE, 0) < losetup.counts[STALE], library.counts
    v519 = _cell(results, "v5.19", "loopdev")
    assert STALE not in v519.counts and "fail: after detach: still bound" not in v519.counts
