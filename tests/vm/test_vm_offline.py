"""Reading what a guest left behind, without a guest: blocked tasks from a kernel log recorded
in a real hung guest (tests/vm/data/hang-dmesg.txt: the deadlock-on-last-close module), and
how events become the lab's cells."""

from __future__ import annotations

from conftest import DATA

from loopdev.lab.outcome import CellKey
from loopdev.vm import stacks
from loopdev.vm.guest import HANG, OK, PANIC, GuestRun
from loopdev.vm.protocol import CellPlan, Event, Job
from loopdev.vm.results import fold

HANG_LOG = (DATA / "hang-dmesg.txt").read_text()


def test_blocked_task_summary_names_the_loop_function() -> None:
    (task,) = stacks.blocked_tasks(HANG_LOG)
    assert task.name == "python"
    assert task.summary().startswith("python: lo_release [loop] <- blkdev_put <- ")
    assert stacks.hung_task_names(HANG_LOG) == ["python"]


def test_panic_reason_is_the_bug_line() -> None:
    log = "[ 3.1] loop: module loaded\n[ 9.5] kernel BUG at drivers/block/loop.c:1143!\n" \
          "[ 9.6] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI\n" \
          "[ 9.9] Kernel panic - not syncing: Fatal exception\n"  # fmt: skip
    assert stacks.panic_reason(log) == "kernel BUG at drivers/block/loop.c:1143!"


def _run(status: str, events: list[Event], dmesg: str = "") -> GuestRun:
    return GuestRun(status, events, "", dmesg, "", 30.0, 10.0)


def _trial(i: int, kind: str = "pass", failure: str = "") -> Event:
    return Event("trial", {"scenario": "nested-umount", "userspace": "loopdev", "i": i,
                           "outcome": {"kind": kind, "failure": failure, "message": ""},
                           "seconds": 0.1, "measurements": {}})  # fmt: skip


def _start(i: int, phase: str = "trial") -> Event:
    return Event("start", {"scenario": "nested-umount", "userspace": "loopdev", "i": i,
                           "phase": phase})  # fmt: skip


JOB = Job(cells=[CellPlan("nested-umount", "loopdev", 5)], trial_timeout=15)
KEY = CellKey("nested-umount", "loopdev", "v9", "vm")


def test_the_trial_a_hung_guest_was_running_is_a_hang_and_the_rest_is_cut() -> None:
    events = [_start(-1, "prepare"), _start(0), _trial(0), _start(1)]
    cell = fold(_run(HANG, events, HANG_LOG), JOB, "v9", "real")[KEY]
    assert cell.counts == {"pass": 1, "deadlock: hang": 1}
    assert cell.cut == 3 and cell.failures == 1
    assert "lo_release [loop]" in cell.examples["deadlock: hang"].message


def test_a_hang_without_blocked_tasks_is_a_lab_error_not_a_verdict() -> None:
    cell = fold(_run(HANG, [_start(0)], "nothing blocked"), JOB, "v9", "real")[KEY]
    assert cell.counts == {"error: hang": 1} and cell.failures == 0 and cell.checked == 0


def test_a_panic_during_prepare_is_recorded_as_such() -> None:
    run = _run(PANIC, [_start(-1, "prepare")], "[1.0] BUG: unable to handle page fault\n")
    cell = fold(run, JOB, "v9", "real")[KEY]
    assert cell.counts == {"fail: kernel panic": 1}
    assert cell.examples["fail: kernel panic"].message == "prepare: BUG: unable to handle page fault"


def test_a_hang_in_cleanup_is_a_note_after_complete_trials() -> None:
    events = [_start(-1, "prepare")]
    for i in range(5):
        events += [_start(i), _trial(i, "fail", "umount outer: EBUSY")]
    notes: list[str] = []
    cell = fold(_run(HANG, [*events, _start(-1, "cleanup")], HANG_LOG), JOB, "v9", "r", notes)[KEY]
    assert cell.runs == 5 and cell.failures == 5 and cell.cut == 0
    assert len(notes) == 1 and "cleanup" in notes[0] and "deadlock: hang" in notes[0]


def test_a_complete_guest_has_every_trial_and_nothing_cut() -> None:
    events = []
    for i in range(5):
        events += [_start(i), _trial(i)]
    cell = fold(_run(OK, events), JOB, "v9", "real")[KEY]
    assert cell.counts == {"pass": 5} and cell.cut == 0 and cell.planned == 5


def test_host_directories_under_tmp_are_bound_back_into_the_guests_tmp() -> None:
    """A checkout, venv or cache under /tmp (a CI clone) stays visible in the guest, whose
    /tmp is its own tmpfs."""
    from pathlib import Path

    from loopdev.vm.guest import tmp_roots
    from loopdev.vm.init_script import InitParams, render

    roots = tmp_roots([Path("/tmp/ci-clone/.venv"), Path("/tmp/ci-cache/vm-code/k"),
                       Path("/tmp/ci-clone/tests/kernel/x.py"), Path("/usr/bin")])  # fmt: skip
    assert roots == [Path("/tmp/ci-clone"), Path("/tmp/ci-cache")]
    params = InitParams([], [], "6.1.192", None, "/usr/bin/python3", Path("/p"), keep_tmp=roots)
    init = render(params)
    tmpfs = init.index("mount -t tmpfs -o mode=1777 tmp $H/tmp")
    assert init.index("mount --bind $H/tmp /hosttmp") < tmpfs
    assert init.index("mount --bind /hosttmp/ci-clone $H/tmp/ci-clone") > tmpfs
    assert "$H/lib/modules" not in init  # everything built in: no module tree to bind
    assert "/hosttmp" not in render(InitParams([], [], "r", None, "py", Path("/p")))
