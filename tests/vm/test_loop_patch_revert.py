"""``loopdev lab --loop-patch`` with a patch that is not one of the project's: the v6.11 design
with 18048c1af783's ``lo_open()`` taken out again (data/v6.11-without-lo_open.patch). In
detach-open[held] (a holder keeps its fd open across LOOP_CLR_FD while an opener opens and
reads) the stock v6.11 module refuses the open (ENXIO: a clean refusal, the trial passes),
while the patched module lets it in and its read fails with EIO on every trial; the model's
v6.11 cell beside them passes every run."""

from __future__ import annotations

import json

import pytest
from conftest import DATA

from loopdev.cli.main import main

pytestmark = pytest.mark.usefixtures("guests_available", "nothing_left")

SCENARIO = "detach-open[held]"
LABEL = "no-lo_open"


def _vm_cell(cells: list[dict[str, object]], column: str) -> dict[str, object]:
    (cell,) = [c for c in cells if c["backend"] == "vm" and c["column"] == column]
    return cell


def test_reverting_lo_open_lets_the_open_in_and_its_read_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    patch = DATA / "v6.11-without-lo_open.patch"
    argv = ["lab", "--no-host", "--loop-patch", str(patch), "--label", LABEL,
            "--scenario", SCENARIO, "--variant", "v6.11", "--real-scale", "1", "--json",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    cells = out["cells"]
    v611, revert = _vm_cell(cells, "v6.11"), _vm_cell(cells, LABEL)
    assert v611["checked"] == 4 and v611["counts"] == {"pass": 4}, v611["counts"]
    assert revert["checked"] == 4, revert["counts"]
    assert revert["counts"] == {"fail: read after open: EIO": 4}, revert["counts"]
    (model,) = [c for c in cells if c["backend"] == "model" and c["column"] == "v6.11"]
    assert model["counts"] == {"pass": 40}, model["counts"]
