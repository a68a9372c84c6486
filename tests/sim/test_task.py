"""Tasks: syscalls, task_work order, SIGKILL, exit closing files, kthreads."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable

import pytest

from loopdev.sim import task as task_mod
from loopdev.sim.sched import RunOutcome, Scheduler, Thread, sleep
from loopdev.sim.strategy import RandomWalk
from loopdev.sim.sync import WaitQueue, wait_event, wait_event_killable
from loopdev.sim.task import (
    SIGKILL,
    Task,
    add_exit_hook,
    current,
    kthread_run,
    kthread_should_stop,
    kthread_stop,
    send_sig,
    task_work_add,
    task_work_run,
)


def run(prog: Callable[[Scheduler], None], seed: int = 0) -> RunOutcome:
    s = Scheduler(RandomWalk(seed))
    prog(s)
    return s.run()


def spawn_task(s: Scheduler, task: Task) -> None:
    s.spawn(task)


class FakeFile:
    """An fd-table entry whose fput queues task_work, as the VFS's fput does."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def fput(self) -> None:
        self.log.append(f"fput {self.name}")
        task_work_add(current(), lambda: self.log.append(f"__fput {self.name}"))


def test_task_work_runs_lifo_before_the_syscall_returns() -> None:
    log: list[str] = []

    def body() -> None:
        me = current()

        def close() -> int:
            for name in ("first", "second", "third"):
                task_work_add(me, functools.partial(log.append, name))
            log.append("body done")
            return 0

        assert me.syscall("close", close) == 0
        log.append("back in user space")

    out = run(lambda s: spawn_task(s, Task("umount", body)))
    assert out.ok
    assert log == ["body done", "third", "second", "first", "back in user space"]
    kinds = [(e.kind, e.name) for e in out.trace.events if e.kind in ("syscall", "sysret")]
    assert kinds == [("syscall", "close"), ("sysret", "close")]
    assert any(e.thread == "umount/100" for e in out.trace.events)


def test_syscall_errors_are_oserrors_after_task_work() -> None:
    log: list[str] = []

    def body() -> None:
        me = current()

        def failing(path: str, flags: int) -> None:
            task_work_add(me, lambda: log.append("work"))
            raise OSError(errno.EBUSY, "busy")

        with pytest.raises(OSError) as exc:
            me.syscall("umount2", failing, "/mnt", 0)
        log.append(f"errno {exc.value.errno}")

    out = run(lambda s: spawn_task(s, Task("umount", body)))
    assert out.ok and log == ["work", f"errno {errno.EBUSY}"]
    assert "sysret   umount2  = -EBUSY" in out.trace.render_text()
    assert "syscall  umount2  ('/mnt', 0)" in out.trace.render_text()


def test_process_exit_closes_files_then_runs_their_task_work_then_esrch() -> None:
    log: list[str] = []
    late: list[int] = []

    def prog(s: Scheduler) -> None:
        def body() -> None:
            me = current()
            me.files[3] = FakeFile("loop0", log)
            me.files[4] = FakeFile("image", log)

        proc = s.spawn(Task("losetup", body))
        assert isinstance(proc, Task)

        def other() -> None:
            s.join(proc)
            late.append(task_work_add(proc, lambda: log.append("never")))

        s.spawn(Thread("other", other))

    out = run(prog)
    assert out.ok
    assert log == ["fput loop0", "fput image", "__fput image", "__fput loop0"]
    assert late == [-errno.ESRCH]


def test_sigkill_interrupts_a_killable_wait_and_the_task_dies_on_the_way_out() -> None:
    log: list[str] = []

    def prog(s: Scheduler) -> None:
        wq = WaitQueue("io")

        def victim() -> None:
            me = current()
            me.files[5] = FakeFile("ring", log)

            def read() -> None:
                wait_event_killable(wq, lambda: False)

            try:
                me.syscall("io_uring_enter", read)
            finally:
                log.append("unwound")
            log.append("not reached: user code after a fatal signal")

        v = s.spawn(Task("fio", victim))

        def killer() -> None:
            sleep(1)
            assert isinstance(v, Task)
            send_sig(v, SIGKILL)

        s.spawn(Task("kill", killer))

    out = run(prog)
    assert out.ok
    assert log == ["fput ring", "__fput ring", "unwound"]
    assert "-EINTR" not in out.trace.render_text()  # the task never returned to user space
    assert "do_exit" in out.trace.render_text()


def test_sigkill_does_not_interrupt_uninterruptible_waits() -> None:
    def prog(s: Scheduler) -> None:
        wq = WaitQueue("d-state")
        v = s.spawn(
            Task("stuck", lambda: current().syscall("sync", lambda: wait_event(wq, lambda: False)))
        )

        def killer() -> None:
            sleep(1)
            assert isinstance(v, Task)
            send_sig(v, SIGKILL)

        s.spawn(Task("kill", killer))

    out = run(prog)
    assert out.kind == "deadlock"
    assert [str(w) for w in out.waits] == ["stuck/100 waits for WaitQueue(d-state)"]


def test_kthreads_never_return_to_user_mode_and_can_be_stopped() -> None:
    log: list[str] = []

    def prog(s: Scheduler) -> None:
        def worker() -> None:
            while not kthread_should_stop():
                sleep(1)
            log.append(f"stopped kthread={current().is_kthread}")

        def main() -> None:
            k = kthread_run(worker, "loop0")
            sleep(2.5)
            kthread_stop(k)
            log.append("joined")

        s.spawn(Task("main", main))

    out = run(prog)
    assert out.ok
    assert log == ["stopped kthread=True", "joined"]
    with pytest.raises(Exception, match="kernel threads"):
        s = Scheduler(RandomWalk(0))

        def bad() -> None:
            current().syscall("open", lambda: 0)

        s.spawn(Task("k", bad, is_kthread=True))
        result = s.run()
        assert result.error is not None
        raise result.error


def test_exit_hooks_run_before_pf_exiting_so_their_task_work_still_runs() -> None:
    """kernel/exit.c: io_uring_files_cancel (an exit hook) runs before exit_signals sets
    PF_EXITING; task_work it queues and runs is handled, and the task can still get more
    (the fputs of exit_files) until exit_task_work."""
    seen: list[str] = []

    def hook(task: Task) -> None:
        if task.comm != "fio":
            return
        seen.append(f"exiting={task.exiting}")
        task_work_add(task, lambda: seen.append("hook work"))
        task_work_run()

    add_exit_hook(hook)
    try:

        def prog(s: Scheduler) -> None:
            def body() -> None:
                current().files[3] = FakeFile("ring", seen)

            s.spawn(Task("fio", body))

        assert run(prog).ok
    finally:
        task_mod.exit_hooks.remove(hook)
    assert seen == ["exiting=False", "hook work", "fput ring", "__fput ring"]
