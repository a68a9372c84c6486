"""The model claims of RESEARCH.md §3 (all but 6), each checked by exploring schedules.

Every run boots a fresh model machine of one loop-driver variant, registers the modelled
util-linux of one version, optionally starts the modelled udevd, and runs the shell loop of the
report. A run "fails" when a user would have seen a failure (mount/umount exit status and
message, what a concurrent opener saw); which runs fail is decided by the model's mechanics
under the scheduler's choices, never named here. Each failure found prints its replay token,
and replaying the token gives the same failure.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from loopdev.lab import hunt as lab_hunt
from loopdev.lab.hunt import (
    SEEN,
    Check,
    Hunt,
    boot,
    loop3,
    nested,
    pct,
    random,
    replay,
    shell,
    user_failure,
)
from loopdev.lab.userspace.mkfs import make_image
from loopdev.lab.userspace.scripts import ProbeSeen, clr_fd_vs_opener, last_close_vs_opener
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import Replay, RunOutcome, Scheduler, Strategy


def hunt(
    program: Callable[[Scheduler], None],
    strategy: Callable[[int], Strategy],
    budget: int,
    check: Check = user_failure,
    *,
    stop_on_failure: bool = True,
) -> Hunt:
    """Explore; a model error (a bug in the model, not a verdict) fails the test at once."""
    h = lab_hunt.hunt(program, strategy, budget, check, stop_on_failure=stop_on_failure)
    assert not h.model_errors, h.model_errors[0]
    if h.token:
        print(f"\nfailure: {h.failures.most_common(1)[0][0]}\nreplay token: {h.token}")
    return h


# -- claim 1 ----------------------------------------------------------------------------------


def test_claim1_v5_17_rc1_udev_and_old_mount_fails_reading_the_superblock() -> None:
    prog = shell("v5.17-rc1", "2.37", True, loop3)
    h = hunt(prog, pct(0), 200)
    assert h.first is not None, "no schedule failed"
    msg = h.failures.most_common(1)[0][0]
    assert "can't read superblock on /dev/loop" in msg and "exit 32" in msg, msg
    assert replay(prog, h.token) == msg


def test_claim1_without_udev_the_loop_never_fails_under_fair_scheduling() -> None:
    h = hunt(shell("v5.17-rc1", "2.37", False, loop3), random(1000), 150)
    assert h.first is None, h.describe()


# -- claim 2 ----------------------------------------------------------------------------------


def test_claim2_v5_17_rc1_second_umount_is_ebusy() -> None:
    prog = shell("v5.17-rc1", "2.38", False, nested)
    h = hunt(prog, random(0), 200)
    assert h.first is not None, "no schedule failed"
    msg = h.failures.most_common(1)[0][0]
    assert msg == "umount outer #0: exit 32: umount: /mnt/outer: target is busy.", msg
    assert replay(prog, h.token) == msg


@pytest.mark.parametrize("variant", ["taskwork", "v5.17"])
def test_claim2_synchronous_teardown_never_leaves_the_outer_busy(variant: str) -> None:
    prog = shell(variant, "2.38", False, nested)
    h = hunt(prog, random(0), 100)
    assert h.first is None, h.describe()
    h = hunt(prog, pct(0), 100)
    assert h.first is None, h.describe()


# -- claim 3: task_work fixes 2 (above) but not 1 -------------------------------------------------


def test_claim3_taskwork_does_not_fix_the_mount_loop_with_udev() -> None:
    prog = shell("taskwork", "2.37", True, loop3)
    h = hunt(prog, random(0), 300)
    assert h.first is not None, "no schedule failed"
    msg = h.failures.most_common(1)[0][0]
    assert msg.startswith("mount #") and "exit 32" in msg, msg
    assert replay(prog, h.token) == msg


# -- claim 4 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "ul"), [("taskwork-openwait", "2.37"), ("v5.17-rc1", "2.38")])
def test_claim4_openwait_or_mount_2_38_fix_the_mount_loop(variant: str, ul: str) -> None:
    prog = shell(variant, ul, True, loop3)
    h = hunt(prog, random(0), 150)
    assert h.first is None, h.describe()
    h = hunt(prog, pct(0), 150)
    assert h.first is None, h.describe()


# -- claims 5 and 7: what a concurrent opener sees ---------------------------------------------


def opener(
    variant: str, race: Callable[[SimKernel, str, ProbeSeen], None]
) -> Callable[[Scheduler], None]:
    def program(sched: Scheduler) -> None:
        k = boot(sched, variant, "2.38")
        seen = ProbeSeen()
        sched.registry[SEEN] = seen

        def sh() -> None:
            make_image(k, "/tmp/img", "squashfs", 65536)
            race(k, "/tmp/img", seen)

        k.spawn(sh, "sh")

    return program


def saw(sched: Scheduler, out: RunOutcome) -> ProbeSeen:
    seen = sched.registry[SEEN]
    assert isinstance(seen, ProbeSeen)
    return seen


def inconsistent(sched: Scheduler, out: RunOutcome) -> str | None:
    """A verified device that then fails I/O, or an unverifiable one that serves data."""
    s = saw(sched, out)
    if s.verified and (s.read_errno or s.read_bytes == 0):
        return f"verified, then: {s.describe()}"
    if s.status_errno and s.read_bytes:
        return f"not verifiable, yet: {s.describe()}"
    return None


def half_dead(sched: Scheduler, out: RunOutcome) -> str | None:
    """The opener got an fd, and on it LOOP_GET_STATUS64 and a read both fail."""
    s = saw(sched, out)
    if s.open_errno == 0 and s.status_errno and s.read_errno:
        return s.describe()
    return None


def open_refused(sched: Scheduler, out: RunOutcome) -> str | None:
    s = saw(sched, out)
    return s.describe() if s.open_errno else None


@pytest.mark.parametrize("variant", ["v5.16", "v5.17-rc1", "taskwork", "v5.19", "v6.11"])
def test_claim5_verify_after_open_is_consistent(variant: str) -> None:
    for race in (last_close_vs_opener, clr_fd_vs_opener):
        h = hunt(opener(variant, race), random(0), 120, inconsistent, stop_on_failure=False)
        assert h.first is None, h.describe()


def test_claim5_in_rundown_status_and_io_fail() -> None:
    prog = opener("v5.17-rc1", last_close_vs_opener)
    h = hunt(prog, random(0), 200, half_dead)
    assert h.first is not None, "the opener never caught the device in rundown"
    msg = h.failures.most_common(1)[0][0]
    assert msg == "open ok, GET_STATUS64 ENXIO, read EIO (0 bytes)", msg
    sched = Scheduler(Replay(h.token), trace=False)
    prog(sched)
    assert half_dead(sched, sched.run()) == msg


def test_claim7_v6_11_open_during_rundown_is_enxio() -> None:
    prog = opener("v6.11", clr_fd_vs_opener)
    h = hunt(prog, random(0), 200, open_refused)
    assert h.first is not None, "no opener was refused"
    assert h.failures.most_common(1)[0][0] == "open ENXIO, GET_STATUS64 -, read - (0 bytes)"
    sched = Scheduler(Replay(h.token), trace=False)
    prog(sched)
    assert open_refused(sched, sched.run()) == h.failures.most_common(1)[0][0]


@pytest.mark.parametrize("variant", ["v5.16", "v5.17-rc1", "v5.19"])
def test_claim7_before_v6_11_open_during_rundown_succeeds(variant: str) -> None:
    h = hunt(opener(variant, clr_fd_vs_opener), random(0), 200, open_refused, stop_on_failure=False)
    assert h.first is None, h.describe()
