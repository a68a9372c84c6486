"""/proc of the model: ``self``, ``<pid>/{fd/,comm,cwd,root,maps,mountinfo,mounts}``,
``mounts``. Entries are computed at lookup, as procfs does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loopdev import abi
from loopdev.sim.sched import maybe_scheduler
from loopdev.sim.task import Task
from loopdev.sim.vfs import DynDir, File, Inode, Mount

if TYPE_CHECKING:
    from loopdev.sim.machine import Machine


def _current_pid() -> int:
    s = maybe_scheduler()
    cur = s.current if s is not None else None
    return cur.pid if isinstance(cur, Task) else 1


def _mounts_text(machine: Machine) -> bytes:
    lines = []
    for line in machine.vfs.mountinfo().splitlines():
        left, _, right = line.partition(" - ")
        parts, rparts = left.split(), right.split()
        lines.append(f"{rparts[1]} {parts[4]} {rparts[0]} {parts[5]} 0 0\n")
    return "".join(lines).encode()


class ProcRoot(DynDir):
    """``/proc``."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def tasks(self) -> dict[int, Task]:
        s = self.machine.sched
        return {t.pid: t for t in s.threads if isinstance(t, Task) and not t.done}

    def _node(self, dir: Inode, name: str, mode: int) -> Inode:
        node = Inode(dir.i_sb, mode, name, dir)
        return node

    def lookup(self, dir: Inode, name: str) -> Inode | None:
        if name == "self":
            node = self._node(dir, name, abi.S_IFLNK | 0o777)
            node.link_fn = lambda: str(_current_pid())
            return node
        if name == "mounts":
            node = self._node(dir, name, abi.S_IFLNK | 0o777)
            node.target = "self/mounts"
            return node
        if name.isdigit():
            task = self.tasks().get(int(name))
            if task is None:
                return None
            node = self._node(dir, name, abi.S_IFDIR | 0o555)
            node.dyn = ProcPidDir(self.machine, task)
            return node
        return None

    def names(self, dir: Inode) -> list[str]:
        return ["self", "mounts", *(str(p) for p in sorted(self.tasks()))]


class ProcPidDir(DynDir):
    """``/proc/<pid>``."""

    ENTRIES = ("fd", "comm", "cwd", "root", "maps", "mountinfo", "mounts")

    def __init__(self, machine: Machine, task: Task) -> None:
        self.machine = machine
        self.task = task

    def lookup(self, dir: Inode, name: str) -> Inode | None:
        sb = dir.i_sb
        m = self.machine
        if name == "fd":
            node = Inode(sb, abi.S_IFDIR | 0o500, name, dir)
            node.dyn = ProcFdDir(m, self.task)
            return node
        if name in ("cwd", "root"):
            node = Inode(sb, abi.S_IFLNK | 0o777, name, dir)
            node.target = "/"
            return node
        node = Inode(sb, abi.S_IFREG | 0o444, name, dir)
        if name == "comm":
            comm = self.task.comm
            node.read_fn = lambda: f"{comm}\n".encode()
        elif name == "maps":
            node.read_fn = lambda: b""
        elif name == "mountinfo":
            node.read_fn = lambda: m.vfs.mountinfo().encode()
        elif name == "mounts":
            node.read_fn = lambda: _mounts_text(m)
        else:
            return None
        return node

    def names(self, dir: Inode) -> list[str]:
        return list(self.ENTRIES)


class ProcFdDir(DynDir):
    """``/proc/<pid>/fd``: magic links to the open files."""

    def __init__(self, machine: Machine, task: Task) -> None:
        self.machine = machine
        self.task = task

    def lookup(self, dir: Inode, name: str) -> Inode | None:
        if not name.isdigit():
            return None
        f = self.task.files.get(int(name))
        if not isinstance(f, File):
            return None
        node = Inode(dir.i_sb, abi.S_IFLNK | 0o700, name, dir)
        node.target = f.f_path
        root = self.machine.vfs.root_mnt

        def jump(f: File = f) -> tuple[Mount, Inode, str]:
            return (f.f_mnt or root), f.f_inode, f.f_path

        node.jump_fn = jump
        return node

    def names(self, dir: Inode) -> list[str]:
        return [str(fd) for fd in sorted(self.task.files)]


__all__ = ["ProcFdDir", "ProcPidDir", "ProcRoot"]
