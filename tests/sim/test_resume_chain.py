"""RESEARCH §3 claim 6: the 2022 lockdep chain open_mutex → (wait for loop I/O) → sb_writers →
kernfs ``of->mutex`` (/sys/power/resume) → open_mutex, built from the model's freeze,
sendfile, kernfs and hibernate code plus the loop driver variants; and a schedule of the same
programs that really deadlocks on v5.16."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from simkit import run_model

from loopdev import abi
from loopdev.lab.userspace import resume as R
from loopdev.sim.explore import explore
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import RunOutcome, Scheduler
from loopdev.sim.strategy import RandomWalk, Replay

OPEN, OF = "&disk->open_mutex", "&of->mutex"
SBW = "sb_writers#ext4"


def lockdep_sequence(k: SimKernel, notes: dict[str, Any]) -> None:
    """Each link once, one after the other (lockdep needs no race)."""
    c = R.setup_chain(k, inner_flags=abi.LO_FLAGS_AUTOCLEAR)
    notes["wq"] = f"(wq_completion)loop{c.inner_n}"
    R.backing_writer(k, c.inner_fd)  # loop worker: sb_start_write on the host fs
    notes["copied"] = R.sendfile_resume(k, f"{c.host}/copy")  # sb_writers → of->mutex
    R.resume_writer(k, c.inner_rdev)  # of->mutex → open_mutex
    k.close(c.inner_fd)  # last close: autoclear teardown under open_mutex


@pytest.mark.parametrize("variant", ["v5.16", "v5.17"])
def test_lockdep_reports_the_cycle(variant: str) -> None:
    run = run_model(variant, lockdep_sequence)
    assert run.ok, run.outcome.describe()
    wq = run.notes["wq"]
    reports = [r for r in run.outcome.lockdep if r.kind == "circular"]
    chain = next(r for r in reports if {OPEN, OF, SBW, wq} <= set(r.classes))
    text = chain.format()
    assert "WARNING: possible circular locking dependency detected" in text
    assert "is trying to acquire lock:\nffff" in text and f"({wq})" in text
    for frame in ("resume_store", "swsusp_check", "kernfs_seq_start", "do_sendfile",
                  "lo_write_simple", "__loop_clr_fd", "lo_release"):  # fmt: skip
        assert frame in text, frame
    assert "*** DEADLOCK ***" in text


@pytest.mark.parametrize("variant", ["v5.19", "v6.11"])
def test_no_cycle_after_the_5_19_series(variant: str) -> None:
    run = run_model(variant, lockdep_sequence)
    assert run.ok, run.outcome.describe()
    assert [r for r in run.outcome.lockdep if r.kind == "circular"] == []


def test_sendfile_copies_the_resume_attribute() -> None:
    run = run_model("v6.11", lockdep_sequence)
    assert run.notes["copied"] == len(b"0:0\n")


def test_freeze_and_thaw_errors() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        c = R.setup_chain(k)
        fd = k.open(c.host, abi.O_RDONLY | abi.O_DIRECTORY)
        k.ioctl(fd, R.FIFREEZE)
        notes["again"] = _errno(lambda: k.ioctl(fd, R.FIFREEZE))
        k.ioctl(fd, R.FITHAW)
        notes["thawed"] = _errno(lambda: k.ioctl(fd, R.FITHAW))
        k.close(fd)
        tfd = k.open("/tmp", abi.O_RDONLY | abi.O_DIRECTORY)
        notes["tmpfs"] = _errno(lambda: k.ioctl(tfd, R.FIFREEZE))
        k.close(tfd)

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.outcome.lockdep == []  # thaw's lockdep re-acquire is a trylock: no s_umount cycle
    assert (run.notes["again"], run.notes["thawed"], run.notes["tmpfs"]) == (
        errno.EBUSY, errno.EINVAL, errno.EOPNOTSUPP
    )  # fmt: skip


def test_a_frozen_filesystem_blocks_the_loop_worker_until_thawed() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        c = R.setup_chain(k)
        fd = k.open(c.host, abi.O_RDONLY | abi.O_DIRECTORY)
        k.ioctl(fd, R.FIFREEZE)
        w = k.spawn(lambda: R.backing_writer(k, c.inner_fd), "writer")
        k.sleep(1.0)
        notes["while_frozen"] = w.wait(0.0)
        k.ioctl(fd, R.FITHAW)
        notes["after_thaw"] = w.wait()
        k.close(fd)

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["while_frozen"] is None and run.notes["after_thaw"] == 0


def deadlock_program(variant: str) -> Any:
    """Five processes sharing one open file of /sys/power/resume and the loop fd: a write
    to the inner loop device, LOOP_CLR_FD on it, the resume write, the sendfile from
    /sys/power/resume into the host fs, and a freeze of the host fs."""

    def setup(sched: Scheduler) -> None:
        k = SimKernel.boot(variant, sched, nr_loop=4)

        def main() -> None:
            c = R.setup_chain(k)
            rfd = k.open(R.RESUME, abi.O_RDWR)
            kids = [
                k.spawn(lambda: R.backing_writer(k, c.inner_fd), "writer"),
                k.spawn(lambda: R.clear_fd(k, c.inner_fd), "clr"),
                k.spawn(lambda: R.resume_writer(k, c.inner_rdev, rfd), "resume"),
                k.spawn(lambda: R.sendfile_resume(k, f"{c.host}/copy", rfd), "sendfile"),
                k.spawn(lambda: R.freezer(k, c.host), "freezer"),
            ]
            k.close(rfd)
            k.close(c.inner_fd)
            for p in kids:
                p.wait()

        k.spawn(main, "main")

    return setup


def _lo_mutex_deadlock(out: RunOutcome) -> bool:
    waits = [str(w) for w in out.waits]
    return any(w.startswith("resume/") and "lo_mutex" in w and "held by clr/" in w
               for w in waits)  # fmt: skip


def test_explorer_finds_the_v5_16_deadlock_and_replays_it() -> None:
    res = explore(deadlock_program("v5.16"), lambda i: RandomWalk(i), 200, max_steps=20_000)
    assert res.failures, res.summary()
    found = res.failures[0]
    assert found.kind == "deadlock", found.describe()
    # the v5.16 chain: the resume write waits in lo_open for lo_mutex, which LOOP_CLR_FD
    # holds while its queue freeze waits for the write stuck behind the fs freeze
    assert _lo_mutex_deadlock(found), found.describe()
    assert "replay token:" in found.describe()
    sched = Scheduler(Replay(found.token), trace=False, max_steps=20_000)
    deadlock_program("v5.16")(sched)
    again = sched.run()
    assert again.kind == "deadlock" and [str(w) for w in again.waits] == [
        str(w) for w in found.waits
    ]


@pytest.mark.parametrize("variant", ["v5.19", "v6.11"])
def test_the_lo_mutex_deadlock_is_gone_after_5_19(variant: str) -> None:
    res = explore(deadlock_program(variant), lambda i: RandomWalk(i), 200, max_steps=20_000,
                  stop_on_failure=False, keep_failures=200)  # fmt: skip
    assert not any(_lo_mutex_deadlock(f) for f in res.failures), res.summary()


def _errno(fn: Any) -> int | None:
    try:
        fn()
    except OSError as e:
        return e.errno
    return None
