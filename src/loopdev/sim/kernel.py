"""SimKernel: the :class:`loopdev.kernel.Kernel` port implemented on the model kernel.

Every call is a system call of the *current* model task (``Task.syscall``: entry point, body,
return to user mode running task_work and signals). The same ABI bytes and errnos as Linux.

Typical use::

    sched = Scheduler(RandomWalk(seed))
    k = SimKernel.boot("v6.11", sched, nr_loop=8)
    k.spawn(lambda: scenario(k), "scenario")
    outcome = sched.run()

Modelled userspace programs plug in through :meth:`SimKernel.register_program`: each is an
:data:`Executable`, what ``exec`` finds for a name; :meth:`SimKernel.run` looks ``argv[0]``
(or its basename) up and runs it in a new task, as fork + exec would.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from loopdev import abi
from loopdev.errors import LoopdevError
from loopdev.kernel import RunResult, Stat, Uevent
from loopdev.portio import read_whole
from loopdev.sim import sched as _sched
from loopdev.sim.freeze import do_vfs_ioctl
from loopdev.sim.fs import do_mount, path_umount
from loopdev.sim.io_uring import IoRings, sys_io_uring_enter, sys_io_uring_mmap, sys_io_uring_setup
from loopdev.sim.loop import release_of
from loopdev.sim.machine import Machine
from loopdev.sim.sched import Scheduler, emit
from loopdev.sim.splice import do_sendfile
from loopdev.sim.task import SIGKILL, Task, current, send_sig, sleep_killable
from loopdev.sim.uevent import UeventBus, UeventSocket
from loopdev.sim.vfs import (
    File,
    Inode,
    close_fd,
    err,
    fd_install,
    fdget,
    flock_lock_inode_wait,
    get_file,
    vfs_read,
    vfs_write,
)

#: What ``exec`` runs for a registered name: a modelled userspace program, called
#: (kernel, argv, stdin) in its new task → exit status or a full RunResult.
Executable = Callable[["SimKernel", Sequence[str], bytes | None], "RunResult | int | None"]


class SimProcess:
    """A model user task started by :meth:`SimKernel.spawn` (the ``Process`` protocol)."""

    def __init__(self, kernel: SimKernel, task: Task) -> None:
        self.kernel = kernel
        self.task = task
        self.error: BaseException | None = None
        self.returncode_override: int | None = None

    @property
    def pid(self) -> int:
        return self.task.pid

    def status(self) -> int | None:
        t = self.task
        if not t.done:
            return None
        if t.exit_code == SIGKILL and SIGKILL in t.signals:
            return -SIGKILL
        if self.returncode_override is not None:
            return self.returncode_override
        return t.exit_code or 0

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit status (negative signal number if killed), or None if still running."""
        s = _sched.maybe_scheduler()
        if self.task.done or s is None or s.current is None:
            return self.status()
        cur = s.current
        if isinstance(cur, Task) and not cur.is_kthread:
            cur.syscall("wait4", s.join, self.task, timeout)
        else:
            s.join(self.task, timeout)
        return self.status()

    def kill(self, sig: int) -> None:
        if not self.task.done:
            self.kernel.kill(self.pid, sig)


class SimKernel:
    """The model kernel behind the port."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.sched = machine.sched
        self.variant = machine.variant
        self.name = f"model:{machine.variant}"
        self.programs: dict[str, Executable] = {}

    @classmethod
    def boot(cls, variant: str, sched: Scheduler, nr_loop: int = 8) -> SimKernel:
        """A fresh machine for `sched`'s run, with /dev/loop0..nr_loop-1."""
        return cls(Machine(sched, variant, nr_loop))

    def register_program(self, name: str, factory: Executable) -> None:
        """Make `name` runnable by :meth:`run` in this kernel only."""
        self.programs[name] = factory

    # -- plumbing ---------------------------------------------------------------------------

    def _sys(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        return current().syscall(name, fn, *args)

    def _file(self, fd: int) -> File:
        return fdget(current(), fd)

    # -- files ------------------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        return int(self._sys("open", self.machine.vfs.do_sys_open, path, flags, mode))

    def close(self, fd: int) -> None:
        self._sys("close", close_fd, fd)

    def _read(self, fd: int, size: int, offset: int | None) -> bytes:
        f = self._file(fd)
        if f.f_inode.is_dir():
            raise err(errno.EISDIR)
        pos = f.f_pos if offset is None else offset
        data = vfs_read(f, size, pos)
        if offset is None:
            f.f_pos = pos + len(data)
        return data

    def read(self, fd: int, size: int) -> bytes:
        return bytes(self._sys("read", self._read, fd, size, None))

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return bytes(self._sys("pread64", self._read, fd, size, offset))

    def _write(self, fd: int, data: bytes, offset: int | None) -> int:
        f = self._file(fd)
        if offset is None:
            pos = f.f_pos
            if f.f_flags & abi.O_APPEND and f.f_inode.data is not None:
                pos = len(f.f_inode.data)
        else:
            pos = offset
        n = vfs_write(f, bytes(data), pos)
        if offset is None:
            f.f_pos = pos + n
        return n

    def write(self, fd: int, data: bytes) -> int:
        return int(self._sys("write", self._write, fd, data, None))

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return int(self._sys("pwrite64", self._write, fd, data, offset))

    def _fsync(self, fd: int) -> None:
        f = self._file(fd)
        f.f_op.fsync(f)

    def fsync(self, fd: int) -> None:
        self._sys("fsync", self._fsync, fd)

    def _ioctl(self, fd: int, request: int, arg: int | bytearray) -> int:
        f = self._file(fd)
        ret = do_vfs_ioctl(f, request)  # FIFREEZE/FITHAW come before ->unlocked_ioctl
        if ret is not None:
            return ret
        return f.f_op.ioctl(f, request, arg)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        return int(self._sys("ioctl", self._ioctl, fd, request, arg))

    def _flock(self, fd: int, operation: int) -> None:
        flock_lock_inode_wait(self._file(fd), operation)

    def flock(self, fd: int, operation: int) -> None:
        self._sys("flock", self._flock, fd, operation)

    def _fstat(self, fd: int) -> Stat:
        return self.machine.vfs.stat_of(self._file(fd).f_inode)

    def fstat(self, fd: int) -> Stat:
        st: Stat = self._sys("fstat", self._fstat, fd)
        return st

    def _stat(self, path: str, follow: bool) -> Stat:
        _mnt, inode, _ = self.machine.vfs.walk(path, follow=follow)
        return self.machine.vfs.stat_of(inode)

    def stat(self, path: str, follow_symlinks: bool = True) -> Stat:
        st: Stat = self._sys(
            "stat" if follow_symlinks else "lstat", self._stat, path, follow_symlinks
        )
        return st

    def _readlink(self, path: str) -> str:
        _mnt, inode, _ = self.machine.vfs.walk(path, follow=False)
        if not inode.is_lnk():
            raise err(errno.EINVAL, path)
        return inode.link_fn() if inode.link_fn is not None else inode.target

    def readlink(self, path: str) -> str:
        return str(self._sys("readlink", self._readlink, path))

    def _listdir(self, path: str) -> list[str]:
        _mnt, inode, _ = self.machine.vfs.walk(path)
        if not inode.is_dir():
            raise err(errno.ENOTDIR, path)
        return inode.names()

    def listdir(self, path: str) -> list[str]:
        return list(self._sys("getdents64", self._listdir, path))

    def _realpath(self, path: str) -> str:
        vfs = self.machine.vfs
        try:
            return vfs.walk(path)[2]
        except OSError:
            head, _, tail = path.rstrip("/").rpartition("/")
            if not tail or head == path:
                return os.path.normpath(path)
            return os.path.join(self._realpath(head or "/"), tail)

    def realpath(self, path: str) -> str:
        return str(self._sys("realpath", self._realpath, path))

    def _access(self, path: str, mode: int) -> bool:
        try:
            _mnt, inode, _ = self.machine.vfs.walk(path)
        except OSError:
            return False
        if mode & os.X_OK and not inode.is_dir() and not inode.mode & 0o111:
            return False
        return not (mode & os.W_OK and inode.i_sb.rdonly and not inode.is_blk())

    def access(self, path: str, mode: int) -> bool:
        return bool(self._sys("faccessat2", self._access, path, mode))

    def readfile(self, path: str, limit: int = 1 << 20) -> bytes:
        return read_whole(self, path, limit)

    def _mkdir(self, path: str, mode: int) -> None:
        vfs = self.machine.vfs
        try:
            vfs.walk(path, follow=False)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        else:
            raise err(errno.EEXIST, path)
        mnt, parent, last, _ = vfs.walk_parent(path)
        if parent.children is None:
            raise err(errno.EPERM, path)
        if mnt.mnt_sb.rdonly:
            raise err(errno.EROFS, path)
        from loopdev.sim.vfs import mknod

        mknod(parent, last, abi.S_IFDIR | (mode & 0o7777))
        parent.nlink += 1

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self._sys("mkdir", self._mkdir, path, mode)

    def _unlink(self, path: str, want_dir: bool) -> None:
        vfs = self.machine.vfs
        mnt, parent, last, _ = vfs.walk_parent(path)
        if parent.children is None:
            raise err(errno.EPERM, path)
        node = parent.children.get(last)
        if node is None:
            raise err(errno.ENOENT, path)
        if want_dir:
            if not node.is_dir():
                raise err(errno.ENOTDIR, path)
            if node.children:
                raise err(errno.ENOTEMPTY, path)
            if vfs.lookup_mnt(mnt, node) is not None:
                raise err(errno.EBUSY, path)
        elif node.is_dir():
            raise err(errno.EISDIR, path)
        if mnt.mnt_sb.rdonly:
            raise err(errno.EROFS, path)
        del parent.children[last]
        node.nlink = 0
        if want_dir:
            parent.nlink -= 1

    def rmdir(self, path: str) -> None:
        self._sys("rmdir", self._unlink, path, True)

    def unlink(self, path: str) -> None:
        self._sys("unlink", self._unlink, path, False)

    # -- mounts ---------------------------------------------------------------------------------

    def mount(self, source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
        self._sys("mount", do_mount, self.machine, source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        self._sys("umount2", path_umount, self.machine, target, flags)

    # -- processes ----------------------------------------------------------------------------

    def getpid(self) -> int:
        return current().pid

    def geteuid(self) -> int:
        return 0

    def _kill(self, pid: int, sig: int) -> None:
        for t in self.sched.threads:
            if isinstance(t, Task) and t.pid == pid and not t.done and not t.is_kthread:
                if sig:
                    send_sig(t, sig)
                return
        raise err(errno.ESRCH, f"pid {pid}")

    def kill(self, pid: int, sig: int) -> None:
        s = _sched.maybe_scheduler()
        cur = s.current if s is not None else None
        if isinstance(cur, Task) and not cur.is_kthread:
            cur.syscall("kill", self._kill, pid, sig)
        else:
            self._kill(pid, sig)

    def _new_task(
        self, body: Callable[[], object], name: str, inherit: bool
    ) -> tuple[Task, SimProcess]:
        proc_box: list[SimProcess] = []

        def main() -> object:
            try:
                return body()
            except (OSError, LoopdevError) as e:
                proc_box[0].error = e
                proc_box[0].returncode_override = 1
                emit("fail", f"{name}: {type(e).__name__}", str(e))
                return None

        task = Task(name, main)
        s = _sched.maybe_scheduler()
        parent = s.current if s is not None else None
        if inherit and isinstance(parent, Task) and not parent.is_kthread:
            for fd, f in parent.files.items():  # fork: dup_fd
                if isinstance(f, File):
                    task.files[fd] = get_file(f)
        proc = SimProcess(self, task)
        proc_box.append(proc)
        self.sched.spawn(task)
        return task, proc

    def spawn(self, fn: Callable[[], object], name: str) -> SimProcess:
        """Run ``fn`` in a new user task (fork: it inherits the caller's open files)."""
        s = _sched.maybe_scheduler()
        cur = s.current if s is not None else None
        if isinstance(cur, Task) and not cur.is_kthread:
            proc: SimProcess = cur.syscall("clone", lambda: self._new_task(fn, name, True)[1])
            return proc
        return self._new_task(fn, name, False)[1]

    def _program(self, argv0: str) -> Executable:
        for key in (argv0, argv0.rsplit("/", 1)[-1]):
            if key in self.programs:
                return self.programs[key]
        raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {argv0!r}", argv0)

    def has_program(self, name: str) -> bool:
        """Whether :meth:`run`/:meth:`start` know `name` (a modelled program)."""
        try:
            self._program(name)
        except FileNotFoundError:
            return False
        return True

    def start(self, argv: Sequence[str], name: str | None = None) -> SimProcess:
        """fork + exec of a modelled program without waiting: the process *is* the program
        (killing it kills the program, as with a real child)."""
        prog = self._program(argv[0])
        args = list(argv)
        status: list[int] = []  # the program's exit status, read by the parent's SimProcess

        def body() -> object:
            out = prog(self, args, None)
            status.append(out.returncode if isinstance(out, RunResult) else int(out or 0))
            if status[0] and box:
                box[0].returncode_override = status[0]
            return None

        comm = (name or args[0].rsplit("/", 1)[-1])[:15]
        box: list[SimProcess] = []
        s = _sched.maybe_scheduler()
        cur = s.current if s is not None else None
        if isinstance(cur, Task) and not cur.is_kthread:
            made: tuple[Task, SimProcess] = cur.syscall("clone", self._new_task, body, comm, False)
        else:
            made = self._new_task(body, comm, False)
        proc = made[1]
        box.append(proc)
        if status and status[0]:
            proc.returncode_override = status[0]
        return proc

    def run(
        self, argv: Sequence[str], input: bytes | None = None, timeout: float | None = None
    ) -> RunResult:
        """fork + exec of a modelled program (a fresh fd table); waits for it."""
        if not argv:
            raise ValueError("empty argv")
        prog = self._program(argv[0])
        box: list[RunResult] = []
        args = list(argv)

        def body() -> None:
            out = prog(self, args, input)
            box.append(out if isinstance(out, RunResult) else RunResult(int(out or 0)))

        name = args[0].rsplit("/", 1)[-1][:15]
        s = _sched.maybe_scheduler()
        cur = s.current if s is not None else None
        if isinstance(cur, Task) and not cur.is_kthread:
            _task, proc = cur.syscall("clone", self._new_task, body, name, False)
        else:
            _task, proc = self._new_task(body, name, False)
        status = proc.wait(timeout)
        if status is None:
            proc.kill(SIGKILL)
            proc.wait()
            raise subprocess.TimeoutExpired(args, timeout or 0.0)
        if box and status >= 0 and proc.error is None:
            return box[0]
        stderr = f"{args[0]}: {proc.error}\n" if proc.error is not None else ""
        return RunResult(status, "", stderr)

    # -- sendfile, io_uring (sim.splice, sim.io_uring) ------------------------------------------

    def sendfile(self, out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        """``sendfile(2)`` (``os.sendfile``'s argument order)."""
        return int(self._sys("sendfile64", do_sendfile, out_fd, in_fd, offset, count))

    def io_uring_setup(self, entries: int) -> int:
        """Model-only: ``io_uring_setup(2)``; returns the ring fd."""
        return int(self._sys("io_uring_setup", sys_io_uring_setup, entries))

    def io_uring_enter(self, fd: int, to_submit: int, min_complete: int, flags: int) -> int:
        """Model-only: ``io_uring_enter(2)``; returns how many SQEs were consumed."""
        return int(
            self._sys("io_uring_enter", sys_io_uring_enter, fd, to_submit, min_complete, flags)
        )

    def io_uring_mmap(self, fd: int) -> IoRings:
        """Model-only: the ring's SQ/CQ as userspace maps them (``mmap`` of the ring fd)."""
        rings: IoRings = self._sys("mmap", sys_io_uring_mmap, fd)
        return rings

    # -- uevents --------------------------------------------------------------------------------

    def _uevent_open(self) -> int:
        m = self.machine
        bus: UeventBus = m.uevents
        inode = Inode(m.sockfs, abi.S_IFSOCK | 0o777)
        f = File(m.vfs, inode, None, f"socket:[{inode.ino}]", abi.O_RDWR, bus)
        f.private_data = bus.open_socket()
        return fd_install(current(), f)

    def uevent_open(self) -> int:
        return int(self._sys("socket", self._uevent_open))

    def _uevent_read(self, fd: int, timeout: float | None) -> Uevent | None:
        f = self._file(fd)
        sock = f.private_data
        if not isinstance(sock, UeventSocket):
            raise err(errno.EBADF, "not a uevent socket")
        return UeventBus.recv(sock, timeout)

    def uevent_read(self, fd: int, timeout: float | None) -> Uevent | None:
        ev: Uevent | None = self._sys("recvmsg", self._uevent_read, fd, timeout)
        return ev

    # -- the system ----------------------------------------------------------------------------

    def uname_release(self) -> str:
        """``uname -r`` of the modelled kernel: the release of its variant's upstream design
        (v5.19 → ``5.19.0``); a proposal answers with the release it applies to and its
        name (taskwork → ``5.17.0-rc1+taskwork``)."""
        return release_of(type(self.machine.loop))

    # -- time and chance -----------------------------------------------------------------------

    def monotonic(self) -> float:
        return self.sched.now()

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            self._sched_yield()
            return
        self._sys("nanosleep", sleep_killable, seconds)

    def _sched_yield(self) -> None:
        """``sched_yield(2)``: one scheduling point. Userspace models spend their CPU time as
        many of these, so the common case (no task_work, no signal pending) skips the full
        syscall path; it is otherwise the same: entry point, then return to user mode."""
        task = current()
        if task.task_works or task.fatal_signal_pending():
            task.syscall("sched_yield", lambda: None)
            return
        s = self.sched
        s.yield_point("sched_yield")
        if s.tracing:
            s.trace.emit("point", "sched_yield")
        if task.task_works or task.fatal_signal_pending():
            task.syscall("sched_yield", lambda: None)

    def exit_mm_cost(self, seconds: float) -> None:
        """Model only: the calling process's address space costs ``seconds`` to tear down
        when it exits (``exit_mm``, before its files are released): a program that maps
        much memory (fio) says so."""
        current().mm_teardown = max(0.0, seconds)

    def random(self) -> float:
        return self.sched.choose(1 << 16, "random") / float(1 << 16)


__all__ = ["Executable", "SimKernel", "SimProcess", "release_of"]
