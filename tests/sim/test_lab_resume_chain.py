"""The lab's resume-chain scenario on the model (RESEARCH §3 claim 6): lockdep's open_mutex
cycle emerges on v5.16 and v5.17, a cycle closed by the queue freeze on v5.17-rc1, nothing on
v5.19 and v6.11; the claims view computes claim 6 as reproduced; a failure token replays.
And a finding of the model: sharing one open file of /sys/power/resume between the sendfile
and the resume write deadlocks every loop version while the host filesystem freezes."""

from __future__ import annotations

from typing import Any

import pytest

from loopdev.lab import model
from loopdev.lab.cells import LabConfig, run_model
from loopdev.lab.claims import CLAIMS, REPRODUCED, judge
from loopdev.lab.outcome import CellKey
from loopdev.lab.userspace import resume as R
from loopdev.sim.explore import explore
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk

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


def test_async_v5_17_rc1_keeps_a_cycle_without_open_mutex() -> None:
    _rec, out = run("v5.17-rc1", 0)
    kinds = [r.classes for r in out.lockdep if r.kind == "circular"]
    assert kinds and all("&disk->open_mutex" not in c for c in kinds), kinds
    assert any(
        {"&of->mutex", "sb_writers#ext4", "&q->q_usage_counter(io)"} <= set(c) for c in kinds
    )


@pytest.mark.parametrize("variant", ["v5.19", "v6.11"])
def test_no_cycle_and_the_device_detaches_after_5_19(variant: str) -> None:
    for seed in range(4):
        rec, out = run(variant, seed)
        assert rec.outcome.kind == "pass", rec.outcome
        assert out.lockdep == []


def test_claim_6_is_reproduced_from_the_cells() -> None:
    cfg = LabConfig(scenarios=[SCENARIO], variants=["v5.16", "v5.17-rc1", "v5.17", "v5.19", "v6.11"],
                    userspaces=[ROW], budget=3, workers=1, real=False)  # fmt: skip
    keys = [CellKey(SCENARIO, ROW, v) for v in cfg.variants]
    cells = run_model(cfg, keys)
    claim6 = next(c for c in CLAIMS if c.number == 6)
    verdict = judge(claim6, cells)
    assert verdict.verdict == REPRODUCED, [
        (r.expect.describe(), r.evidence) for r in verdict.results
    ]


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
