"""``loopdev lab`` with real loop modules in guests: a variant's real cell stands beside its
model cell (v5.17-rc1's mount-loop fails with util-linux 2.37's reuse logic on both, v5.16's
on neither), a design that cannot be a module shows n/a with the reason, resume-chain runs on
the lockdep kernel (when it is built) and its real report is drawn beside the model's, and
every --json cell says where it ran."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA

from loopdev.cli.main import main
from loopdev.lab import report
from loopdev.lab.cells import LabConfig
from loopdev.lab.runner import LabResult, run_lab, to_json
from loopdev.vm.cache import cache_dir
from loopdev.vm.kbuild import find_lockdep_kernel

pytestmark = pytest.mark.usefixtures("guests_available", "nothing_left")

LOCKDEP = find_lockdep_kernel() is not None


@pytest.fixture(scope="module")
def result() -> LabResult:
    cfg = LabConfig(
        scenarios=["mount-loop", "resume-chain"],
        variants=["v5.16", "v5.17-rc1", "post-release-2026"],
        userspaces=["util-linux-2.37", "loopdev"],
        budget=6, workers=2, host=False,
        real_scale=0.4,  # mount-loop: 4 trials a cell; resume-chain: 1
    )  # fmt: skip
    return run_lab(cfg)


def test_real_cells_stand_beside_the_model(result: LabResult) -> None:
    rc1 = result.cell("mount-loop", "util-linux-2.37", "v5.17-rc1", "vm")
    assert rc1 is not None and rc1.checked == 4, rc1 and rc1.counts
    assert rc1.counts.get("fail: mount: EIO", 0) >= 1, rc1.counts
    v516 = result.cell("mount-loop", "util-linux-2.37", "v5.16", "vm")
    assert v516 is not None and v516.checked == 4 and v516.failures == 0, v516 and v516.counts
    assert result.real["post-release-2026"].unavailable
    table = report.matrix_table(result)
    assert table.splitlines()[2].split() == ["mod", "vm"] * 3
    assert "n/a: cannot run there (real post-release-2026: needs new block-layer" in table
    assert all(g["status"] == "ok" for c in result.real.values() for g in c.guests)


def test_json_cells_say_where_they_ran(result: LabResult) -> None:
    cells = to_json(result)["cells"]
    vm = [c for c in cells if c["backend"] == "vm"]
    assert vm and all(c["column"] in ("v5.16", "v5.17-rc1") for c in vm)
    assert {c["backend"] for c in cells} == {"model", "vm"}
    assert all("timing_distorted" in c for c in cells)


@pytest.mark.skipif(not LOCKDEP, reason="the lockdep kernel is not built (loopdev vm build-kernel --lockdep)")
def test_a_real_lockdep_report_is_drawn_beside_the_models(result: LabResult) -> None:
    cell = result.cell("resume-chain", "loopdev", "v5.16", "vm")
    assert cell is not None and any(k.startswith("lockdep: circular") for k in cell.counts)
    assert "lockdep" in result.real["v5.16"].kernels
    text = report.failures_text(result)
    assert "5.16 model: " in text and "real:  " in text and "&disk->open_mutex" in text


def test_a_loop_patch_that_does_not_apply_or_build_stops_the_lab_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cached = sorted(cache_dir("loop", "modules").rglob("loop.ko"))
    assert main(["lab", "--loop-patch", str(DATA / "does-not-apply.patch"), "--label", "x"]) == 2
    err = capsys.readouterr().err
    assert "does not apply to Debian's loop.c: hunk #1 @@ -1753,6 +1753,8 @@" in err
    broken = tmp_path / "broken.patch"
    broken.write_text(
        "--- a/drivers/block/loop.c\n+++ b/drivers/block/loop.c\n"
        "@@ -1747,6 +1747,7 @@\n \n static void lo_release(struct gendisk *disk, fmode_t mode)\n"
        " {\n+\tlo_release_was_renamed(disk);\n \tstruct loop_device *lo = disk->private_data;\n"
        " \n \tif (disk_openers(disk) > 0)\n"
    )  # fmt: skip
    assert main(["lab", "--loop-patch", str(broken), "--no-vm"]) == 2
    err = capsys.readouterr().err
    assert "loop.ko does not build" in err and "lo_release_was_renamed" in err
    assert sorted(cache_dir("loop", "modules").rglob("loop.ko")) == cached  # nothing left
