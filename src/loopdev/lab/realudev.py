"""Run the real ``systemd-udevd`` as a child process, and undo what it did to /dev afterwards.

The real-kernel lab and the stress benchmark need a real asynchronous opener of loop devices:
udevd probes every changed block device (blkid) from its worker processes, which is what makes
the last close of a loop device someone else's. Usage::

    with RealUdevd() as udevd:      # starts it, waits until its control socket answers
        ...                         # udevd.pid, udevd.settle()
    # stopped by its PID; /dev and /run/udev are back as they were before start

udevd is started in the foreground (not ``--daemon``) so that we own its PID. Before starting,
the entries of /dev (not crossing into other mounts) and of /run/udev are snapshotted; after
stopping we remove the symlinks and directories udevd created (``/dev/disk``, ``/dev/block``...),
restore the mode, ownership and timestamps of nodes it changed, put back symlinks it removed, give block
nodes created meanwhile the devtmpfs default (0600 root:root) and remove /run/udev if it did not
exist before. Device nodes themselves belong to devtmpfs (the kernel) and are never removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

UDEVD = "/lib/systemd/systemd-udevd"
CONTROL_SOCKET = "/run/udev/control"
RUN_UDEV = "/run/udev"
DEV = "/dev"
#: devtmpfs creates block nodes 0600 root:root unless the driver says otherwise.
_DEVTMPFS_BLOCK_MODE = 0o600


class UdevdError(RuntimeError):
    """udevd could not be started, did not become ready, or another one is running."""


@dataclass(frozen=True)
class Entry:
    """What we restore of one /dev entry."""

    mode: int  # full st_mode (type + permission bits)
    uid: int
    gid: int
    rdev: int
    target: str | None  # symlink target
    times_ns: tuple[int, int] = (0, 0)  # atime, mtime

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)


def _entry(path: str) -> Entry | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    target = None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            return None
    return Entry(
        st.st_mode, st.st_uid, st.st_gid, st.st_rdev, target, (st.st_atime_ns, st.st_mtime_ns)
    )


def snapshot_tree(root: str) -> dict[str, Entry]:
    """Every entry below ``root`` (included), without crossing into other filesystems."""
    out: dict[str, Entry] = {}
    top = _entry(root)
    if top is None:
        return out
    out[root] = top
    root_dev = os.lstat(root).st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        keep: list[str] = []
        for name in dirnames:
            p = os.path.join(dirpath, name)
            e = _entry(p)
            if e is None:
                continue
            out[p] = e
            with contextlib.suppress(OSError):
                if os.lstat(p).st_dev == root_dev:
                    keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            p = os.path.join(dirpath, name)
            e = _entry(p)
            if e is not None:
                out[p] = e
    return out


@dataclass
class RestoreReport:
    """What :func:`restore_tree` changed back (for logs and tests)."""

    removed: list[str]
    restored: list[str]
    recreated: list[str]

    def __bool__(self) -> bool:
        return bool(self.removed or self.restored or self.recreated)


def restore_tree(root: str, before: dict[str, Entry]) -> RestoreReport:
    """Bring ``root`` back to ``before``: see the module docstring for what that means."""
    report = RestoreReport([], [], [])
    now = snapshot_tree(root)
    # New entries, deepest first: directories go if empty, new block nodes get the devtmpfs
    # default, char nodes (the kernel's) stay as they are, anything else (symlinks, sockets,
    # files) goes.
    for path in sorted(set(now) - set(before), key=lambda p: -p.count("/")):
        e = now[path]
        try:
            if e.kind == stat.S_IFDIR:
                os.rmdir(path)
                report.removed.append(path)
            elif e.kind == stat.S_IFBLK and (
                stat.S_IMODE(e.mode) != _DEVTMPFS_BLOCK_MODE or e.uid != 0 or e.gid != 0
            ):
                os.chown(path, 0, 0, follow_symlinks=False)
                os.chmod(path, _DEVTMPFS_BLOCK_MODE)
                report.restored.append(path)
            elif e.kind not in (stat.S_IFBLK, stat.S_IFCHR):
                os.unlink(path)  # symlinks, sockets, files: udevd's
                report.removed.append(path)
        except OSError:
            continue  # gone meanwhile, or a directory holding kernel nodes
    # Entries that existed before: permissions, ownership and symlink targets back.
    for path, old in sorted(before.items()):
        cur = _entry(path)
        try:
            if cur is None:
                if old.kind == stat.S_IFLNK and old.target is not None:
                    os.symlink(old.target, path)
                    report.recreated.append(path)
                continue
            is_node = cur.kind in (stat.S_IFBLK, stat.S_IFCHR)
            if cur.kind != old.kind or (is_node and cur.rdev != old.rdev):
                continue  # a different object now (the kernel recreated it): not ours to touch
            if cur.kind == stat.S_IFLNK:
                if cur.target != old.target and old.target is not None:
                    os.unlink(path)
                    os.symlink(old.target, path)
                    report.restored.append(path)
                continue
            changed = False
            if (cur.uid, cur.gid) != (old.uid, old.gid):
                os.chown(path, old.uid, old.gid, follow_symlinks=False)
                changed = True
            if stat.S_IMODE(cur.mode) != stat.S_IMODE(old.mode):
                os.chmod(path, stat.S_IMODE(old.mode))
                changed = True
            if cur.times_ns[1] != old.times_ns[1] and cur.kind != stat.S_IFDIR:
                os.utime(path, ns=old.times_ns, follow_symlinks=False)
            if changed:
                report.restored.append(path)
        except OSError:
            continue
    return report


def running_udevd_pids() -> list[int]:
    """PIDs of every systemd-udevd process on the machine (by /proc/PID/comm)."""
    pids: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{name}/comm").read_text().strip()
        except OSError:
            continue
        if comm in ("systemd-udevd", "(udev-worker)") or comm.startswith("systemd-udevd"):
            pids.append(int(name))
    return sorted(pids)


def _control_answers(path: str = CONTROL_SOCKET) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class RealUdevd:
    """The real systemd-udevd as our child: :meth:`start`, :meth:`stop`, or ``with``."""

    def __init__(
        self,
        binary: str = UDEVD,
        *,
        ready_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        log_path: str | None = None,
        debug: bool = False,
    ) -> None:
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.log_path = log_path
        self.debug = debug
        self._proc: subprocess.Popen[bytes] | None = None
        self._dev_before: dict[str, Entry] = {}
        self._run_before: dict[str, Entry] | None = None
        self.last_restore: RestoreReport | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RealUdevd:
        """Snapshot /dev and /run/udev, start udevd, wait until its control socket answers."""
        if self._proc is not None:
            raise UdevdError("udevd already started by this object")
        if not os.access(self.binary, os.X_OK):
            raise UdevdError(f"{self.binary} not found (install Debian's 'udev' package)")
        others = running_udevd_pids()
        if others:
            raise UdevdError(
                f"systemd-udevd is already running (pid {', '.join(map(str, others))}); "
                "not starting a second one"
            )
        self._dev_before = snapshot_tree(DEV)
        self._run_before = snapshot_tree(RUN_UDEV) if os.path.isdir(RUN_UDEV) else None
        argv = [self.binary, *(["--debug"] if self.debug else [])]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True
            )
        finally:
            if not isinstance(log, int):
                log.close()
        deadline = time.monotonic() + self.ready_timeout
        while not _control_answers():
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup_after_exit()
                raise UdevdError(f"{self.binary} exited with status {code} while starting")
            if time.monotonic() >= deadline:
                self.stop()
                raise UdevdError(f"{self.binary} not ready within {self.ready_timeout:g} s")
            time.sleep(0.01)
        return self

    def settle(self, timeout: float = 10.0) -> bool:
        """``udevadm settle``: True once udevd's event queue is empty."""
        if not self.running:
            return True
        r = subprocess.run(
            ["udevadm", "settle", f"--timeout={max(1, int(timeout))}"], capture_output=True
        )
        return r.returncode == 0

    def stop(self) -> RestoreReport | None:
        """SIGTERM our udevd (SIGKILL after ``stop_timeout``), reap it, restore /dev."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self._wait_workers_gone()
        return self._cleanup_after_exit()

    def _wait_workers_gone(self, timeout: float = 5.0) -> None:
        """udevd's workers are its children; they exit with it. Wait for that (bounded)."""
        deadline = time.monotonic() + timeout
        while running_udevd_pids() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _cleanup_after_exit(self) -> RestoreReport:
        self._proc = None
        report = restore_tree(DEV, self._dev_before)
        if self._run_before is None:
            shutil.rmtree(RUN_UDEV, ignore_errors=True)
        else:
            sub = restore_tree(RUN_UDEV, self._run_before)
            report.removed.extend(sub.removed)
        self.last_restore = report
        return report

    def __enter__(self) -> RealUdevd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
