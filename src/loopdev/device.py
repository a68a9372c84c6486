"""LoopDevice: the fd-holding handle of an attached loop device; detach() and detach_all()."""

from __future__ import annotations

import errno

from loopdev import abi, settle, sysfs, teardown
from loopdev._port import fspath, resolve
from loopdev.errors import (
    InvalidArgumentError,
    LoopdevError,
    NotALoopDeviceError,
    NotAttachedError,
    NotPermittedError,
    why,
)
from loopdev.status import (
    LoopFlags,
    LoopStatus,
    decode_name,
    get_block_size,
    get_diskseq,
    new_status,
    read_status,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from types import TracebackType

    from loopdev.kernel import Kernel

DEFAULT_DETACH_TIMEOUT = teardown.DEFAULT_DETACH_TIMEOUT


class LoopDevice(LoopFlags):
    """An attached loop device, identified by the open fd this handle holds.

    While the handle is open the device cannot be torn down under you (an AUTOCLEAR device
    lives at least until :meth:`relinquish` or :meth:`detach`). Use as a context manager to
    detach on exit.

    The identity fields are plain slots; :attr:`status`, :attr:`loop_ref` and
    :attr:`block_size` are derived on first use (attach does not pay for what nobody reads).
    """

    __slots__ = (
        "_block_size",
        "_fd",
        "_raw_name",
        "_status",
        "backing_dev",
        "backing_file",
        "backing_ino",
        "diskseq",
        "flags",
        "kernel",
        "number",
        "offset",
        "path",
        "read_only_fallback",
        "reused",
        "sizelimit",
        "write_baseline",
    )

    #: the kernel (port) the device lives in
    kernel: Kernel
    _fd: int | None
    #: N of /dev/loopN
    number: int
    #: /dev/loopN
    path: str
    #: st_dev and st_ino of the backing file (what identifies it, not its name)
    backing_dev: int
    backing_ino: int
    #: where the device starts in the backing file, and its size limit (0: to the end)
    offset: int
    sizelimit: int
    #: LO_FLAGS_* as the kernel applied them (read back after attach)
    flags: int
    #: the backing file's path (sysfs, else lo_file_name)
    backing_file: str
    #: the disk sequence number of this binding (5.15+), None if the kernel lacks it
    diskseq: int | None
    #: the image was write-protected and the read-write attach fell back to read-only
    read_only_fallback: bool
    #: the handle is on a device someone else attached (mount_image's reuse)
    reused: bool
    #: bytes 7 (sectors written) and 9 (in flight) of loopN/stat when the handle was made
    #: (None: unknown, detach fsyncs).
    write_baseline: bytes | None
    _raw_name: bytes  # lo_file_name as the kernel holds it (NUL-padded)
    _block_size: int | None  # 0: not read yet
    _status: LoopStatus | None

    def __init__(
        self,
        kernel: Kernel,
        fd: int,
        status: LoopStatus,
        *,
        read_only_fallback: bool = False,
        reused: bool = False,
        write_baseline: bytes | None = None,
    ) -> None:
        self.kernel = kernel
        self._fd = fd
        self.number = status.number
        self.path = status.path
        self.backing_dev = status.backing_dev
        self.backing_ino = status.backing_ino
        self.offset = status.offset
        self.sizelimit = status.sizelimit
        self.flags = status.flags
        self.backing_file = status.backing_file
        self.diskseq = status.diskseq
        self.read_only_fallback = read_only_fallback
        self.reused = reused
        self.write_baseline = write_baseline
        self._raw_name = b""
        self._block_size = status.block_size
        self._status = status

    @classmethod
    def open(
        cls,
        device: str | os.PathLike[str] | int,
        *,
        kernel: Kernel | None = None,
    ) -> LoopDevice:
        """A handle on an existing, bound loop device (``/dev/loopN``, a path to one, or N).

        The handle holds the device open (an AUTOCLEAR device stays until the handle is
        closed); :meth:`relinquish` leaves it attached, :meth:`detach` detaches it.
        NotALoopDeviceError if it is no loop device, NotAttachedError if it is not bound.
        """
        k = resolve(kernel)
        fd, number, _rdev = open_loop_device(k, device)
        try:
            status = read_status(k, fd, number)
        except OSError as e:
            k.close(fd)
            path = f"/dev/loop{number}"
            if e.errno == errno.ENXIO:
                raise NotAttachedError(
                    f"{path} is not attached",
                    hint="list attached devices with `loopdev -a`",
                    device=path,
                ) from None
            raise LoopdevError(
                f"{path}: cannot read its status: {why(e)}", errno=e.errno, device=path
            ) from None
        return cls(k, fd, status)

    # -- identity ------------------------------------------------------------------------
    @property
    def status(self) -> LoopStatus:
        """The device's status as of attach (a :class:`LoopStatus`)."""
        st = self._status
        if st is None:
            st = self._status = new_status(
                self.number,
                self.backing_dev,
                self.backing_ino,
                self.offset,
                self.sizelimit,
                self.flags,
                self.loop_ref,
                self.backing_file,
                self.diskseq,
                self.block_size,
                sysfs.rdev(self.kernel, self.number),
            )
        return st

    @property
    def loop_ref(self) -> str:
        """lo_file_name: the loop-ref given at attach, else the backing path (truncated to
        63 bytes)."""
        st = self._status
        if st is not None:
            return st.ref
        return decode_name(self._raw_name)

    @property
    def block_size(self) -> int | None:
        """The logical block size (BLKSSZGET through the handle's fd, read once)."""
        bs = self._block_size
        if bs == 0:
            bs = None if self._fd is None else get_block_size(self.kernel, self._fd)
            if bs is not None:
                self._block_size = bs
        return bs

    @property
    def closed(self) -> bool:
        """The handle no longer holds the device (after relinquish or detach)."""
        return self._fd is None

    def fileno(self) -> int:
        """The fd holding the device open (LoopdevError once the handle is closed)."""
        if self._fd is None:
            raise LoopdevError(f"{self.path}: this handle was already closed", device=self.path)
        return self._fd

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<LoopDevice {self.path} diskseq={self.diskseq} {self.backing_file!r} {state}>"

    # -- operations ----------------------------------------------------------------------
    def info(self) -> LoopStatus:
        """A fresh LOOP_GET_STATUS64 (plus sysfs) through this handle's fd."""
        try:
            return read_status(self.kernel, self.fileno(), self.number)
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise NotAttachedError(
                    f"{self.path} is no longer attached (it was detached)",
                    hint="attach the image again",
                    device=self.path,
                ) from None
            raise LoopdevError(
                f"{self.path}: cannot read its status: {why(e)}", errno=e.errno, device=self.path
            ) from None

    def set_capacity(self) -> int:
        """Re-read the backing file size (LOOP_SET_CAPACITY); returns the new size in bytes."""
        fd = self.fileno()
        try:
            self.kernel.ioctl(fd, abi.LOOP_SET_CAPACITY)
            buf = abi.u64_buffer()
            self.kernel.ioctl(fd, abi.BLKGETSIZE64, buf)
        except OSError as e:
            raise LoopdevError(
                f"{self.path}: set capacity failed: {why(e)}", errno=e.errno, device=self.path
            ) from None
        return abi.read_u64(buf)

    def set_direct_io(self, enabled: bool = True) -> None:
        """Switch direct I/O to the backing file on or off (LOOP_SET_DIRECT_IO), then read
        the flags back: :attr:`flags` shows what the kernel applied."""
        self._set(abi.LOOP_SET_DIRECT_IO, int(enabled), "direct io")
        self.flags = self.info().flags

    def set_block_size(self, size: int) -> None:
        """Set the logical block size (LOOP_SET_BLOCK_SIZE: 512, 1024, 2048 or 4096),
        retrying EAGAIN (T5), then read it back."""
        check_block_size(size)
        self._set(abi.LOOP_SET_BLOCK_SIZE, size, "logical block size")
        self._block_size = get_block_size(self.kernel, self.fileno())

    def _set(self, request: int, value: int, what: str) -> None:
        fd = self.fileno()
        try:
            settle.retry_eagain(self.kernel, lambda: self.kernel.ioctl(fd, request, value))
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise InvalidArgumentError(
                    f"{self.path}: set {what} failed: {why(e)}",
                    hint="the backing file or its filesystem does not allow it",
                    device=self.path,
                ) from None
            if e.errno in (errno.EPERM, errno.EACCES):
                raise NotPermittedError(
                    f"{self.path}: set {what}: {why(e)}",
                    hint="run as root",
                    errno=e.errno,
                    device=self.path,
                ) from None
            raise LoopdevError(
                f"{self.path}: set {what} failed: {why(e)}", errno=e.errno, device=self.path
            ) from None

    def relinquish(self) -> None:
        """Close the handle and leave the device attached (AUTOCLEAR devices then go away)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self.kernel.close(fd)

    def detach(
        self,
        *,
        wait: bool = True,
        timeout: float = DEFAULT_DETACH_TIMEOUT,
        lazy: bool = False,
    ) -> bool:
        """Flush, detach and close the handle; True once the device is unbound.

        The teardown is asked for in the way that is safe on this kernel's design (see
        :mod:`loopdev.teardown`). It happens at the device's last close, so while someone
        else holds the device (a mount, a process) it is deferred until they let go:

        * ``wait`` (default): return only once the device is really unbound, at most
          ``timeout`` seconds (then TeardownTimeoutError naming the holders);
        * ``lazy``: like ``losetup -d``: do not wait for a mount, and for other openers only
          briefly (udev probes); returns False when the teardown is deferred;
        * ``wait=False``: return at once (False when it is not gone yet).
        """
        fd = self._fd
        if fd is None:
            raise LoopdevError(f"{self.path}: this handle was already closed", device=self.path)
        self._fd = None
        return teardown.release(
            self.kernel,
            fd,
            self.number,
            self.flags,
            self.write_baseline,
            self.diskseq,
            wait=wait,
            timeout=timeout,
            lazy=lazy,
        )

    def __enter__(self) -> LoopDevice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            self.detach()


#: the logical block sizes LOOP_SET_BLOCK_SIZE / LOOP_CONFIGURE accept
BLOCK_SIZES = (512, 1024, 2048, 4096)


def check_block_size(size: int) -> None:
    """InvalidArgumentError unless ``size`` is a block size the loop driver accepts."""
    if size not in BLOCK_SIZES:
        raise InvalidArgumentError(
            f"block size {size} is not supported",
            hint=f"use one of {', '.join(map(str, BLOCK_SIZES))}",
        )


def new_handle(
    kernel: Kernel,
    fd: int,
    number: int,
    path: str,
    backing_dev: int,
    backing_ino: int,
    offset: int,
    sizelimit: int,
    flags: int,
    raw_name: bytes,
    backing_file: str,
    diskseq: int | None,
    block_size: int,
    read_only_fallback: bool,
    write_baseline: bytes | None,
) -> LoopDevice:
    """A :class:`LoopDevice` straight from attach's fields, without a LoopStatus
    (``block_size`` 0: read on first use; ``raw_name``: lo_file_name, decoded on first use)."""
    h = _new_device(LoopDevice)
    h.kernel = kernel
    h._fd = fd
    h.number = number
    h.path = path
    h.backing_dev = backing_dev
    h.backing_ino = backing_ino
    h.offset = offset
    h.sizelimit = sizelimit
    h.flags = flags
    h._raw_name = raw_name
    h.backing_file = backing_file
    h.diskseq = diskseq
    h._block_size = block_size
    h.read_only_fallback = read_only_fallback
    h.reused = False
    h.write_baseline = write_baseline
    h._status = None
    return h


_new_device = object.__new__


def open_loop_device(
    kernel: Kernel, device: str | os.PathLike[str] | int, flags: int = abi.O_RDONLY
) -> tuple[int, int, int]:
    """Open an existing loop device node; returns (fd, number, rdev).

    Raises NotALoopDeviceError unless it is a block device of the loop major (T26).
    """
    path = f"/dev/loop{device}" if isinstance(device, int) else fspath(device)
    try:
        st = kernel.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise NotALoopDeviceError(
                f"{path}: no such device",
                hint="list loop devices with `loopdev -a`",
                errno=e.errno,
                device=path,
            ) from None
        raise NotALoopDeviceError(f"{path}: {why(e)}", errno=e.errno, device=path) from None
    _require_loop(kernel, path, st.mode, st.rdev)
    try:
        fd = kernel.open(path, flags)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise NotPermittedError(
                f"{path}: permission denied", hint="run as root", errno=e.errno, device=path
            ) from None
        if e.errno == errno.ENXIO:
            raise NotAttachedError(
                f"{path} is being torn down or removed",
                hint="it is going away already",
                device=path,
            ) from None
        raise LoopdevError(f"{path}: cannot open: {why(e)}", errno=e.errno, device=path) from None
    try:
        fst = kernel.fstat(fd)
        _require_loop(kernel, path, fst.mode, fst.rdev)
        number = loop_number(kernel, path, fst.rdev)
    except BaseException:
        kernel.close(fd)
        raise
    return fd, number, fst.rdev


def _require_loop(kernel: Kernel, path: str, mode: int, rdev: int) -> None:
    kind = mode & abi.S_IFMT
    if kind != abi.S_IFBLK:
        what = {
            abi.S_IFCHR: "a character device",
            abi.S_IFDIR: "a directory",
            abi.S_IFREG: "a regular file",
            abi.S_IFIFO: "a FIFO",
        }.get(kind, "not a block device")
        raise NotALoopDeviceError(
            f"{path} is not a loop device: it is {what}", hint="give /dev/loopN", device=path
        )
    if abi.major(rdev) != abi.LOOP_MAJOR:
        name = sysfs.block_name(kernel, rdev) or f"{abi.major(rdev)}:{abi.minor(rdev)}"
        raise NotALoopDeviceError(
            f"{path} is not a loop device: it is block device {name} "
            f"(major {abi.major(rdev)}, loop devices have major {abi.LOOP_MAJOR})",
            hint="give /dev/loopN",
            device=path,
        )


def loop_number(kernel: Kernel, path: str, rdev: int) -> int:
    """N of the loop device ``path`` (device number ``rdev``), from sysfs."""
    name = sysfs.block_name(kernel, rdev)
    if name and name.startswith("loop") and name[4:].isdigit():
        return int(name[4:])
    raise NotALoopDeviceError(
        f"{path} is a partition or unknown loop node, not a loop device",
        hint="give the whole device, /dev/loopN",
        device=path,
    )


def detach(
    device: LoopDevice | str | os.PathLike[str] | int,
    *,
    wait: bool = True,
    timeout: float = DEFAULT_DETACH_TIMEOUT,
    lazy: bool = False,
    kernel: Kernel | None = None,
) -> bool:
    """Detach a loop device (handle, path or number); True once it is unbound.

    With ``wait`` (default) return only once it is really unbound (the kernel tears it down
    at its last close): TeardownTimeoutError naming the holders (a mount, a process) if that
    takes longer than ``timeout``. ``lazy=True`` is ``losetup -d``: the teardown is left to
    the holders and False returned when they still hold it. NotAttachedError if it is not
    bound. See :meth:`LoopDevice.detach`.
    """
    if isinstance(device, LoopDevice):
        return device.detach(wait=wait, timeout=timeout, lazy=lazy)
    k = resolve(kernel)
    fd, number, _rdev = open_loop_device(k, device)
    path = f"/dev/loop{number}"
    try:
        status = read_status(k, fd, number, extras=False)
    except OSError as e:
        k.close(fd)
        if e.errno == errno.ENXIO:
            raise NotAttachedError(
                f"{path} is not attached", hint="nothing to detach", device=path
            ) from None
        raise LoopdevError(
            f"{path}: cannot read its status: {why(e)}", errno=e.errno, device=path
        ) from None
    status = status.replace(diskseq=get_diskseq(k, fd))
    return LoopDevice(k, fd, status).detach(wait=wait, timeout=timeout, lazy=lazy)


def detach_all(
    loop_ref: str | None = None,
    *,
    ref_prefix: str | None = None,
    wait: bool = True,
    timeout: float = DEFAULT_DETACH_TIMEOUT,
    lazy: bool = False,
    kernel: Kernel | None = None,
) -> list[str]:
    """Detach every device whose loop-ref (lo_file_name) is ``loop_ref``, or starts with
    ``ref_prefix``, or every device when both are None (``losetup -D``). Returns the paths
    detached (with ``lazy``, also those whose teardown is deferred to their holders); raises
    the first failure after trying them all."""
    from loopdev.query import list_devices

    k = resolve(kernel)
    done: list[str] = []
    failures: list[LoopdevError] = []
    for s in list_devices(kernel=k):
        if loop_ref is not None and s.ref != loop_ref:
            continue
        if ref_prefix is not None and not s.ref.startswith(ref_prefix):
            continue
        try:
            detach(s.path, wait=wait, timeout=timeout, lazy=lazy, kernel=k)
            done.append(s.path)
        except NotAttachedError:
            continue  # detached by someone else meanwhile
        except LoopdevError as e:
            failures.append(e)
    if failures:
        first = failures[0]
        if len(failures) > 1:
            first.message += f" (and {len(failures) - 1} more devices failed)"
        raise first
    return done
