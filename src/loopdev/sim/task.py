"""Tasks: processes and kernel threads, system calls, task_work, signals and exit.

A :class:`Task` is a model thread with a pid, a comm, an fd table and a task_work list. System
calls go through :meth:`Task.syscall`, which returns to user mode the way the kernel does:
pending task_work runs first (LIFO), then a pending SIGKILL makes the task exit
(``do_exit``: ``exit_files`` closes every fd, then ``exit_task_work`` runs the task_work those
closes queued, after which ``task_work_add`` on the task fails with ESRCH).

Closing files at exit: ``exit_files`` hands each fd-table entry to :data:`filp_close_hook` if
the VFS installed one (:func:`set_filp_close_hook`), otherwise calls the entry's ``fput()``
method if it has one.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Callable
from typing import Any

from loopdev.sim import sched as _sched
from loopdev.sim.sched import BLOCKED, CLOCK, Scheduler, Thread, kfunc

SIGKILL = 9
SIGTERM = 15
SIGNAMES = {SIGKILL: "SIGKILL", SIGTERM: "SIGTERM"}

TWA_NONE, TWA_RESUME, TWA_SIGNAL = 0, 1, 2

#: how exit_files closes an fd-table entry: hook(task, fd, file); None -> file.fput()
filp_close_hook: Callable[[Task, int, Any], None] | None = None


def set_filp_close_hook(hook: Callable[[Task, int, Any], None] | None) -> None:
    """Install the VFS's close path for `exit_files` (a stateless function)."""
    global filp_close_hook
    filp_close_hook = hook


#: what ``do_exit`` runs before ``exit_files`` (``io_uring_files_cancel``): stateless functions
#: of the exiting task, which find their per-run state through the scheduler
exit_hooks: list[Callable[[Task], None]] = []


def add_exit_hook(hook: Callable[[Task], None]) -> None:
    """Run `hook(task)` in every ``do_exit`` after PF_EXITING is set, before ``exit_files``."""
    if hook not in exit_hooks:
        exit_hooks.append(hook)


class TaskExit(BaseException):
    """Unwinds a task's stack after ``do_exit`` (never caught by model code)."""


class Task(Thread):
    """A process or kernel thread of the model."""

    def __init__(
        self,
        comm: str,
        fn: Callable[[], object] | None = None,
        *,
        is_kthread: bool = False,
        daemon: bool = False,
        pid: int = 0,
    ) -> None:
        super().__init__(comm, fn, daemon=daemon)
        self.comm = comm
        self.pid = pid
        self.is_kthread = is_kthread
        self.files: dict[int, Any] = {}
        self.task_works: list[tuple[Callable[[], object], str]] = []
        self.signals: set[int] = set()
        self.exiting = False  # PF_EXITING
        self.task_works_dead = False  # exit_task_work installed work_exited
        self.exit_code: int | None = None
        self.in_syscall: str | None = None
        self.should_stop = False  # kthread_stop
        #: what tearing down its address space in exit_mm costs (virtual seconds): set by a
        #: program whose mappings are large (SimKernel.exit_mm_cost)
        self.mm_teardown = 0.0

    def on_spawn(self, sched: Scheduler) -> None:
        if not self.pid:
            self.pid = next(sched.state("task.pids", lambda: itertools.count(100)))
        self.name = f"{self.comm}/{self.pid}"

    @property
    def ident(self) -> str:
        return f"{self.comm}/{self.pid}"

    def fatal_signal_pending(self) -> bool:
        return SIGKILL in self.signals

    def run(self) -> object:
        try:
            self.result = super().run()
            do_exit(0)
        except TaskExit:
            pass
        return self.result

    def syscall(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a system call: trace, scheduling point, body, then return to user mode."""
        s = self.sched
        if s is None or s.current is not self:
            raise _sched.SchedulerError(f"{self.name}: syscall {name} not from the task itself")
        if self.is_kthread:
            raise _sched.SchedulerError(f"{self.name}: kernel threads make no system calls")
        if self.task_works or self.fatal_signal_pending():
            exit_to_user_mode()  # work that arrived while the task was in user space
        if s.tracing:
            s.trace.emit("syscall", name, _fmt_args(args))
        s.yield_point(name)
        self.in_syscall = name
        err: OSError | None = None
        ret: Any = None
        try:
            ret = fn(*args)
        except OSError as e:
            err = e
        finally:
            self.in_syscall = None
        if s.tracing or self.task_works or self.held or SIGKILL in self.signals:
            exit_to_user_mode()  # (with nothing to do and no trace to write, it is a no-op)
        if s.tracing:
            s.trace.emit("sysret", name, _fmt_ret(ret, err))
        if err is not None:
            raise err
        return ret


def _fmt_value(v: object) -> str:
    if v is None or isinstance(v, bool | int | float | str):
        return repr(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return f"<{len(v)} bytes>"
    return type(v).__name__


def _fmt_args(args: tuple[Any, ...]) -> str:
    return "(" + ", ".join(_fmt_value(a) for a in args) + ")"


def _fmt_ret(ret: object, err: OSError | None) -> str:
    if err is not None:
        code = errno.errorcode.get(err.errno or 0, str(err.errno))
        return f"= -{code}"
    return f"= {_fmt_value(ret)}"


def current() -> Task:
    """The running task."""
    s = _sched._current
    if s is not None:
        t = s.current
        if isinstance(t, Task):
            return t
    th = _sched.current_thread()  # SchedulerError outside a run or a thread
    raise _sched.SchedulerError(f"{th.name} is a plain Thread, not a Task")


def _emit(kind: str, name: str, detail: str = "") -> None:
    _sched.emit(kind, name, detail)


def _cb_name(cb: Callable[[], object]) -> str:
    return str(getattr(cb, "__name__", type(cb).__name__))


def task_work_add(task: Task, callback: Callable[[], object], notify: int = TWA_RESUME) -> int:
    """Queue `callback` to run when `task` returns to user mode (or exits).

    Returns 0, or ``-ESRCH`` once the task's exit_task_work has run, as upstream. TWA_SIGNAL is
    treated like TWA_RESUME (the model has no interruptible waits besides killable ones)."""
    s = _sched.current_scheduler()
    s.yield_point(f"task_works:{task.name}")
    if task.task_works_dead:
        if s.tracing:
            s.trace.emit("point", "task_work_add", f"{_cb_name(callback)} -> {task.name}: -ESRCH")
        return -errno.ESRCH
    name = _cb_name(callback)
    task.task_works.append((callback, name))
    if s.tracing:
        s.trace.emit("point", "task_work_add", f"{name} -> {task.name}")
    return 0


@kfunc
def task_work_run() -> None:
    """Run the current task's queued work, most recently added first, until none is left."""
    task = current()
    while True:
        if not task.task_works:
            if task.exiting:
                task.task_works_dead = True
            return
        batch = task.task_works[::-1]
        task.task_works.clear()
        for cb, name in batch:
            _emit("point", "task_work", name)
            cb()


@kfunc
def exit_to_user_mode() -> None:
    """Return-to-user work: task_work, then a fatal signal kills the task."""
    task = current()
    if task.is_kthread:
        return
    if task.held and task.sched is not None:
        task.sched.lockdep.check_user_return(task)
    while True:
        if task.task_works:
            task_work_run()
            continue
        if task.fatal_signal_pending():
            do_exit(SIGKILL)
        return


@kfunc
def exit_files(task: Task) -> None:
    """Close every fd of an exiting task (fput of each file)."""
    for fd in sorted(task.files):
        f = task.files.pop(fd)
        if _sched.tracing():
            _emit("point", "filp_close", f"fd {fd}")
        if filp_close_hook is not None:
            filp_close_hook(task, fd, f)
        else:
            fput = getattr(f, "fput", None)
            if callable(fput):
                fput()


@kfunc
def exit_task_work(task: Task) -> None:
    """Run the remaining task_work; afterwards task_work_add fails with ESRCH."""
    task_work_run()


@kfunc
def do_exit(code: int) -> None:
    """The current task exits: close files, run task_work, unwind.

    In kernel/exit.c's order: ``io_uring_files_cancel`` (the exit hooks) runs before
    ``exit_signals`` sets PF_EXITING, so task_work the hooks run is handled as usual;
    then ``exit_mm``, then ``exit_files``, whose fputs are task_work that ``exit_task_work``
    runs."""
    task = current()
    if task.exit_code is not None:
        raise TaskExit  # already in do_exit
    task.exit_code = code
    _emit("state", "do_exit", str(code))
    for hook in exit_hooks:
        hook(task)
    task.exiting = True  # exit_signals: PF_EXITING
    exit_mm(task)
    exit_files(task)
    exit_task_work(task)
    raise TaskExit


def exit_mm(task: Task) -> None:
    """Tear down the task's address space: ``task.mm_teardown`` of virtual time (nothing for
    the model's small programs), uninterruptible."""
    if task.mm_teardown > 0:
        _emit("state", "exit_mm", f"{task.mm_teardown:g}s")
        _sched.sleep(task.mm_teardown)


def send_sig(task: Task, sig: int) -> None:
    """Send a signal; SIGKILL wakes a task sleeping killably (its wait returns EINTR)."""
    s = _sched.current_scheduler()
    s.yield_point(f"signal:{task.name}")
    if task.done:
        return
    task.signals.add(sig)
    _emit("state", "signal", f"{SIGNAMES.get(sig, str(sig))} -> {task.name}")
    if sig == SIGKILL and task.state == BLOCKED and task.killable:
        s.wake(task)


def sleep_killable(seconds: float) -> None:
    """`schedule_timeout_killable`: sleep on the virtual clock; OSError(EINTR) on SIGKILL."""
    s = _sched.current_scheduler()
    task = current()
    if task.fatal_signal_pending():
        raise OSError(errno.EINTR, "interrupted by a fatal signal")
    _emit("wait", "sleep", f"{seconds:g}s killable")
    if s.block(CLOCK, timeout=max(seconds, 0.0), killable=True) and task.fatal_signal_pending():
        raise OSError(errno.EINTR, "interrupted by a fatal signal")


def kthread_run(
    fn: Callable[[], object], name: str, *, daemon: bool = False, sched: Scheduler | None = None
) -> Task:
    """Create and start a kernel thread."""
    s = sched if sched is not None else _sched.current_scheduler()
    task = Task(name, fn, is_kthread=True, daemon=daemon)
    s.spawn(task)
    return task


def kthread_should_stop() -> bool:
    """Whether kthread_stop() was called on the current kthread."""
    return current().should_stop


def kthread_stop(task: Task) -> None:
    """Ask a kthread to stop, wake it, and wait for it to exit."""
    s = _sched.current_scheduler()
    s.yield_point(task.name)
    task.should_stop = True
    s.wake(task)
    s.join(task)


__all__ = [
    "SIGKILL", "SIGTERM", "TWA_NONE", "TWA_RESUME", "TWA_SIGNAL", "Task", "TaskExit",
    "add_exit_hook", "current",
    "do_exit", "exit_files", "exit_task_work", "exit_to_user_mode", "filp_close_hook",
    "kthread_run", "kthread_should_stop", "kthread_stop", "send_sig", "set_filp_close_hook",
    "sleep_killable", "task_work_add", "task_work_run",
]  # fmt: skip
