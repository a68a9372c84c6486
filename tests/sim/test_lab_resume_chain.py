"""The lab's resume-chain scenario on the model (RESEARCH §3 claim 6): lockdep's open_mutex
cycle emerges on v5.16 and v5.17, nothing on v5.17-rc1, v5.19 and v6.11, class for class what
the real 6.1 lockdep kernel printed for the same scenario (tests/vm/data); the claims view
computes claim 6's verdict; a failure token replays. With LOOP_CLR_FD instead of autoclear
(``resume-chain[clr-fd]``) v5.16 closes the cycle through lo_mutex alone and v5.17-rc1 still
has none. And a finding of the model: sharing one open file of /sys/power/resume between the
sendfile and the resume write deadlocks every loop version while the host filesystem
freezes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loopdev.lab import model
from loopdev.lab.cells import LabConfig, run_model
from loopdev.lab.claims import CLAIMS, NOT_REPRODUCED, judge
from loopdev.lab.userspace import resume as R
from loopdev.sim.explore import explore
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk
from loopdev.vm.lockdep_report import normalized_class, parse_reports

SCENARIO, ROW = "resume-chain", "loopdev"


def run(variant: str, seed: int) -> Any:
    rec, out = model.run_once(SCENARIO, ROW, variant, model.make_strategy("portfolio", seed), seed)
    return rec, out


@pytest.mark.parametrize("variant", ["v5.16", "v5.17"])
def test_open_mutex_cycle_in_the_kernels_report_shape(variant: str) -> None:
    for seed in range(4):
        rec, out = run(variant, seed)
        assert rec.outcome.kind == "lockdep", rec.outcome
        assert any("open_mutex" in k and "sb_writers" in k and "of->mutex" in k
                   for k in rec.lockdep_kinds), rec.lockdep_kinds  # fmt: skip
        rep = next(r for r in out.lockdep if "&disk->open_mutex" in r.classes)
        text = rep.format()
        assert "WARNING: possible circular locking dependency detected" in text
        for frame in ("resume_store", "swsusp_check", "kernfs_seq_start", "do_sendfile",
                      "lo_write_simple", "destroy_workqueue", "__loop_clr_fd", "lo_release"):  # fmt: skip
            assert frame in text, frame
        assert "*** DEADLOCK ***" in text


REAL = Path(__file__).parents[1] / "vm" / "data"


@pytest.mark.parametrize("variant", ["v5.16", "v5.17-rc1", "v5.17", "v5.19", "v6.11"])
def test_the_models_lockdep_says_what_real_6_1_lockdep_said(variant: str) -> None:
    """The real 6.1 lockdep kernel ran resume-chain on each design's loop.ko; the model's
    lockdep (the kernel's edge rule, kn->active a trylock, no freeze map before v6.13)
    reports the same cycle: the same classes in the same order, closed holding the same
    locks, or no report where the real kernel had none."""
    real = parse_reports((REAL / f"resume-chain-{variant}.console").read_text(errors="replace"))
    _rec, out = run(variant, 0)
    ours = [r for r in out.lockdep if r.kind == "circular"]
    if not real:
        assert ours == [], [r.classes for r in ours]
        return
    assert ours, f"the real kernel reported {real[0].cycle()}"
    norm = [normalized_class(c) for c in real[0].classes]
    assert [normalized_class(c) for c in ours[0].classes] == norm
    held = [line.split("(", 1)[1].split(")", 1)[0] for line in ours[0].text.splitlines()
            if line.startswith(" #")]  # fmt: skip
    assert tuple(held) == real[0].held


@pytest.mark.parametrize(("variant", "cycle"), [("v5.16", True), ("v5.17-rc1", False)])
def test_with_loop_clr_fd_v5_16_closes_it_through_lo_mutex(variant: str, cycle: bool) -> None:
    """The other path claim 6's "the async variant keeps it through lo_mutex" could mean:
    LOOP_CLR_FD tears down inside the ioctl. v5.16 holds lo_mutex across the workqueue's
    destruction there; 6050fa4c (in 5.17-rc1 with 322c4293) stopped that."""
    rec, out = model.run_once(
        "resume-chain[clr-fd]", ROW, variant, model.make_strategy("portfolio", 0), 0
    )
    assert out is not None
    reports = [r for r in out.lockdep if r.kind == "circular"]
    assert bool(reports) == cycle, rec.outcome
    if cycle:
        assert "&lo->lo_mutex" in reports[0].classes
        assert " #0: " in reports[0].text and "&lo->lo_mutex" in reports[0].text.split(" #0: ")[1]
        assert "lo_ioctl" in reports[0].text


@pytest.mark.parametrize("variant", ["v5.19", "v6.11"])
def test_no_cycle_and_the_device_detaches_after_5_19(variant: str) -> None:
    for seed in range(4):
        rec, out = run(variant, seed)
        assert rec.outcome.kind == "pass", rec.outcome
        assert out.lockdep == []


def test_claim_6_v5_16_part_holds_the_lo_mutex_part_does_not() -> None:
    """The chain on v5.16/v5.17 and its absence on v5.19/v6.11 hold; "the async variant keeps
    it through lo_mutex" is contradicted by autoclear and by LOOP_CLR_FD alike, as on the
    real 6.1 lockdep kernel."""
    claim6 = next(c for c in CLAIMS if c.number == 6)
    cfg = LabConfig(scenarios=[SCENARIO, "resume-chain[clr-fd]"],
                    variants=["v5.16", "v5.17-rc1", "v5.17", "v5.19", "v6.11"],
                    userspaces=[ROW], budget=2, workers=1, real=False)  # fmt: skip
    cells = run_model(cfg, [e.key for e in claim6.expects])
    verdict = judge(claim6, cells)
    status = {(e.scenario, e.column): r.status for e, r in ((r.expect, r) for r in verdict.results)}
    assert verdict.verdict == NOT_REPRODUCED
    assert status == {
        (SCENARIO, "v5.16"): "holds", (SCENARIO, "v5.17"): "holds",
        (SCENARIO, "v5.19"): "holds", (SCENARIO, "v6.11"): "holds",
        (SCENARIO, "v5.17-rc1"): "contradicted",
        ("resume-chain[clr-fd]", "v5.17-rc1"): "contradicted",
        ("resume-chain[clr-fd]", "v5.16"): "holds",
    }  # fmt: skip


def test_a_lockdep_token_replays_to_the_same_report() -> None:
    rec, _ = run("v5.16", 1)
    again, out = model.replay(rec.token, SCENARIO, ROW, "v5.16")
    assert again.outcome.label == rec.outcome.label
    assert out is not None and out.trace.render_text()


def shared_file_program(variant: str) -> Any:
    """The scenario's four programs, but sendfile and the resume write share one open file."""

    def setup(sched: Scheduler) -> None:
        k = SimKernel.boot(variant, sched, nr_loop=4)

        def main() -> None:
            c = R.setup_chain(k)
            rfd = k.open(R.RESUME, 2)  # O_RDWR
            kids = [
                k.spawn(lambda: R.backing_writer(k, c.inner_fd), "writer"),
                k.spawn(lambda: R.resume_writer(k, c.inner_rdev, rfd), "resume"),
                k.spawn(lambda: R.sendfile_resume(k, f"{c.host}/copy", rfd), "sendfile"),
                k.spawn(lambda: R.freezer(k, c.host), "freezer"),
            ]
            k.close(rfd)
            for p in kids:
                p.wait()
            k.close(c.inner_fd)

        k.spawn(main, "main")

    return setup


@pytest.mark.parametrize("variant", ["v5.19", "v6.11"])
def test_a_shared_resume_file_deadlocks_every_version_during_a_freeze(variant: str) -> None:
    res = explore(shared_file_program(variant), lambda i: RandomWalk(i), 200, max_steps=20_000)
    assert res.failures, res.summary()
    found = res.failures[0]
    assert found.kind == "deadlock", found.describe()
    waits = [str(w) for w in found.waits]
    # resume holds of->mutex and waits for its header read, queued behind the write that the
    # loop worker cannot finish while the freeze waits for sendfile, which waits for of->mutex
    assert any(w.startswith("sendfile/") and "of->mutex" in w and "held by resume/" in w
               for w in waits), waits  # fmt: skip
    assert any(w.startswith("freezer/") and "sb_writers" in w and "held by sendfile/" in w
               for w in waits), waits  # fmt: skip
