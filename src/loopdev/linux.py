"""LinuxKernel: the :class:`loopdev.kernel.Kernel` port on the running kernel.

The only module of the library that touches ``os``, ``fcntl``, ``ctypes`` and sockets for kernel
work. Every method is a thin wrapper of one system call; errors stay :class:`OSError` with the
kernel's errno.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time

from loopdev import abi
from loopdev.kstat import Stat
from loopdev.portio import read_whole

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    import socket
    from collections.abc import Callable, Sequence

    from loopdev.kernel import RunResult, Uevent

# ctypes, socket, select, signal and subprocess are imported where they are needed (mount,
# statx, uevents, spawn, run): a listing or an attach needs none of them, and importing them
# would cost more than the command itself.

_NETLINK_KOBJECT_UEVENT = 15
_UEVENT_KERNEL_GROUP = 1
_UEVENT_BUFSIZE = 1 << 16

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_ATTR_MOUNT_ROOT = 0x2000
# struct statx (256 bytes): stx_attributes is the u64 at offset 8, stx_attributes_mask the
# u64 at offset 56
_STATX_ATTRS = struct.Struct("=Q")
_STATX_SIZE = 256


def _blkpg_arg(op: int, payload: ctypes.Array[ctypes.c_char]) -> bytearray:
    """``struct blkpg_ioctl_arg`` (op, flags, datalen, data pointer): the C form of
    :class:`loopdev.abi.BlkpgRequest`."""
    import ctypes

    class BlkpgIoctlArg(ctypes.Structure):
        _fields_ = [
            ("op", ctypes.c_int),
            ("flags", ctypes.c_int),
            ("datalen", ctypes.c_int),
            ("data", ctypes.c_void_p),
        ]

    arg = BlkpgIoctlArg(
        op=op,
        flags=0,
        datalen=abi.BlkpgPartition.SIZE,
        data=ctypes.cast(payload, ctypes.c_void_p),
    )
    return bytearray(bytes(arg))


def _libc() -> ctypes.CDLL:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _to_stat(st: os.stat_result, mount_root: bool | None = None) -> Stat:
    """A :class:`Stat` from ``st``, built without the frozen dataclass's per-field
    ``object.__setattr__`` (several times cheaper; the hot paths stat several times per
    call): its ``__dict__`` is set in one go."""
    out = _new_stat(Stat)
    _set_dict(
        out,
        "__dict__",
        {
            "mode": st.st_mode,
            "ino": st.st_ino,
            "dev": st.st_dev,
            "rdev": st.st_rdev,
            "size": st.st_size,
            "nlink": st.st_nlink,
            "uid": st.st_uid,
            "mount_root": mount_root,
        },
    )
    return out


_TWO_POW_MINUS_53 = 2.0**-53
_new_stat = object.__new__
_set_dict = object.__setattr__
_O_CLOEXEC = os.O_CLOEXEC
_S_IFMT = abi.S_IFMT
_S_IFDIR = abi.S_IFDIR
_BLKPG = abi.BLKPG


class LinuxProcess:
    """A forked child process."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._status: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    def _reap(self, options: int) -> int | None:
        if self._status is not None:
            return self._status
        try:
            pid, status = os.waitpid(self._pid, options)
        except ChildProcessError:
            self._status = -1
            return self._status
        if pid == 0:
            return None
        self._status = (
            -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)
        )
        return self._status

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit status (negative signal number if killed), or None if still running."""
        if timeout is None:
            return self._reap(0)
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            status = self._reap(os.WNOHANG)
            if status is not None or time.monotonic() >= deadline:
                return status
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

    def kill(self, sig: int) -> None:
        if self._status is None:
            try:
                os.kill(self._pid, sig)
            except ProcessLookupError:
                return  # already gone


def _pread_direct(fd: int, size: int, offset: int) -> bytes:
    """``pread`` on an ``O_DIRECT`` file: into a page-aligned buffer (an anonymous mapping),
    as direct I/O requires; ``size`` is rounded up to whole pages and the result cut back."""
    import mmap

    length = max(mmap.PAGESIZE, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE)
    with mmap.mmap(-1, length) as buf:
        n = os.preadv(fd, [buf], offset)
        return bytes(buf[: min(n, size)])


class LinuxKernel:
    """The running Linux kernel."""

    name = "linux"

    def __init__(self) -> None:
        self._libc_handle: ctypes.CDLL | None = None
        # statx(2) when libc has it (glibc 2.28+), for STATX_ATTR_MOUNT_ROOT: looked up on
        # the first directory stat.
        self._statx: Callable[..., int] | None = None
        self._no_statx = False
        self._sockets: dict[int, socket.socket] = {}

    @property
    def _libc(self) -> ctypes.CDLL:
        lib = self._libc_handle
        if lib is None:
            lib = self._libc_handle = _libc()
        return lib

    # -- files ---------------------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        return os.open(path, flags | _O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        if self._sockets:
            sock = self._sockets.pop(fd, None)
            if sock is not None:
                sock.close()
                return
        os.close(fd)

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError as e:
            if e.errno != errno.EINVAL or not fcntl.fcntl(fd, fcntl.F_GETFL) & abi.O_DIRECT:
                raise
        return _pread_direct(fd, size, offset)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def sendfile(self, out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        return os.sendfile(out_fd, in_fd, offset, count)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Issue ``request``; a bytearray is passed by pointer and updated in place."""
        if type(arg) is int:
            # Without an argument CPython's ioctl skips its two buffer-protocol attempts on the
            # int (each raises and clears a formatted TypeError): 0 is what it passes anyway.
            return fcntl.ioctl(fd, request, arg) if arg else fcntl.ioctl(fd, request)
        if request == _BLKPG:
            return self._blkpg(fd, arg)  # type: ignore[arg-type]
        return fcntl.ioctl(fd, request, arg, True)

    def _blkpg(self, fd: int, raw: bytearray) -> int:
        import ctypes

        req = abi.BlkpgRequest.unpack(raw)
        payload = ctypes.create_string_buffer(req.partition.pack(), abi.BlkpgPartition.SIZE)
        return int(fcntl.ioctl(fd, abi.BLKPG, _blkpg_arg(req.op, payload), True))

    def flock(self, fd: int, operation: int) -> None:
        fcntl.flock(fd, operation)

    def fstat(self, fd: int) -> Stat:
        return _to_stat(os.fstat(fd))

    def stat(self, path: str, follow_symlinks: bool = True) -> Stat:
        """stat(2); for a directory also statx(2)'s STATX_ATTR_MOUNT_ROOT
        (:attr:`Stat.mount_root`), which saves callers a read of the mount table. statx goes
        through ctypes (Python 3.11 has no os.statx), 2-3x the cost of os.stat, so only
        directories (the mount points) pay it."""
        st = os.stat(path) if follow_symlinks else os.lstat(path)
        mount_root = None
        if st.st_mode & _S_IFMT == _S_IFDIR and not self._no_statx:
            mount_root = self._mount_root(path, follow_symlinks)
        return _to_stat(st, mount_root)

    def _mount_root(self, path: str, follow_symlinks: bool) -> bool | None:
        """STATX_ATTR_MOUNT_ROOT of ``path`` (Linux 5.8+), None if statx cannot tell."""
        import ctypes

        statx = self._statx
        if statx is None:
            # A handle without use_errno: a failure only means "cannot tell", and errno
            # swapping costs.
            statx = self._statx = getattr(ctypes.CDLL(None), "statx", None)
            if statx is None:
                self._no_statx = True
                return None
        buf = (ctypes.c_char * _STATX_SIZE)()
        raw = path.encode("utf-8", "surrogateescape") if type(path) is str else os.fsencode(path)
        flags = 0 if follow_symlinks else _AT_SYMLINK_NOFOLLOW
        if statx(_AT_FDCWD, raw, flags, 0, buf):
            return None
        if not _STATX_ATTRS.unpack_from(buf, 56)[0] & _STATX_ATTR_MOUNT_ROOT:
            return None  # attributes_mask: the kernel does not report it
        return bool(_STATX_ATTRS.unpack_from(buf, 8)[0] & _STATX_ATTR_MOUNT_ROOT)

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def realpath(self, path: str) -> str:
        """The canonical path. For an existing path: open(O_PATH) + readlink of
        /proc/self/fd/N (three system calls whatever the depth); otherwise, or without /proc,
        os.path.realpath (one lstat per component)."""
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return os.path.realpath(path)
        try:
            found = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            found = ""
        finally:
            os.close(fd)
        if found.startswith("/") and not found.endswith(" (deleted)"):
            return found
        return os.path.realpath(path)

    def access(self, path: str, mode: int) -> bool:
        return os.access(path, mode, effective_ids=True)

    def readfile(self, path: str, limit: int = 1 << 20) -> bytes:
        return read_whole(self, path, limit)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        os.mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    # -- mounts --------------------------------------------------------------------------
    def mount(self, source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
        import ctypes

        rc = self._libc.mount(
            os.fsencode(source),
            os.fsencode(target),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        if rc != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"mount {source} on {target}: {os.strerror(e)}")

    def umount2(self, target: str, flags: int = 0) -> None:
        import ctypes

        if self._libc.umount2(os.fsencode(target), ctypes.c_int(flags)) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"umount {target}: {os.strerror(e)}")

    # -- processes -----------------------------------------------------------------------
    def getpid(self) -> int:
        return os.getpid()

    def geteuid(self) -> int:
        return os.geteuid()

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def spawn(self, fn: Callable[[], object], name: str) -> LinuxProcess:
        """Fork; the child runs ``fn`` and exits (0 on return, 1 on an exception)."""
        import signal

        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                fn()
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        return LinuxProcess(pid)

    def run(
        self, argv: Sequence[str], input: bytes | None = None, timeout: float | None = None
    ) -> RunResult:
        import subprocess

        from loopdev.kernel import RunResult

        r = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout)
        return RunResult(
            r.returncode,
            r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"),
        )

    # -- uevents -------------------------------------------------------------------------
    def uevent_open(self) -> int:
        import socket

        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_KOBJECT_UEVENT
        )
        try:
            sock.bind((0, _UEVENT_KERNEL_GROUP))
        except OSError:
            sock.close()
            raise
        fd = sock.fileno()
        self._sockets[fd] = sock
        return fd

    def uevent_read(self, fd: int, timeout: float | None) -> Uevent | None:
        sock = self._sockets.get(fd)
        if sock is None:
            raise OSError(errno.EBADF, "not a uevent socket")
        import select

        ready, _, _ = select.select([sock], [], [], timeout)
        if not ready:
            return None
        return parse_uevent(sock.recv(_UEVENT_BUFSIZE))

    # -- the system ----------------------------------------------------------------------
    def uname_release(self) -> str:
        return os.uname().release

    # -- time and chance -----------------------------------------------------------------
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def random(self) -> float:
        """A float in [0, 1) from the kernel's random pool (53 random bits, as
        random.SystemRandom makes them, without importing the random module)."""
        return (int.from_bytes(os.urandom(7), "big") >> 3) * _TWO_POW_MINUS_53


def parse_uevent(raw: bytes) -> Uevent | None:
    """Decode ``action@devpath\\0KEY=VALUE\\0...``; None for anything else (udev's messages)."""
    from loopdev.kernel import Uevent

    parts = raw.split(b"\0")
    head = parts[0].decode("utf-8", "replace")
    action, at, devpath = head.partition("@")
    if not at:
        return None
    env: dict[str, str] = {}
    for item in parts[1:]:
        key, eq, value = item.decode("utf-8", "replace").partition("=")
        if eq:
            env[key] = value
    return Uevent(action=env.get("ACTION", action), devpath=env.get("DEVPATH", devpath), env=env)


_DEFAULT: LinuxKernel | None = None


def default_kernel() -> LinuxKernel:
    """The process-wide LinuxKernel the library uses when no ``kernel`` is passed."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LinuxKernel()
    return _DEFAULT
