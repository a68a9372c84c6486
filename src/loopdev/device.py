"""LoopDevice: the fd-holding handle of an attached loop device, and detach()."""

from __future__ import annotations

import dataclasses
import errno
from types import TracebackType

from loopdev import abi, settle, sysfs
from loopdev._port import resolve, why
from loopdev.errors import (
    BusyError,
    InvalidArgumentError,
    LoopdevError,
    NotALoopDeviceError,
    NotAttachedError,
    NotPermittedError,
    TeardownTimeoutError,
)
from loopdev.kernel import Kernel
from loopdev.status import (
    LoopFlags,
    LoopStatus,
    decode_name,
    get_block_size,
    get_diskseq,
    new_status,
    read_status,
)

DEFAULT_DETACH_TIMEOUT = 5.0


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

    kernel: Kernel
    _fd: int | None
    number: int
    path: str
    backing_dev: int
    backing_ino: int
    offset: int
    sizelimit: int
    flags: int
    backing_file: str
    diskseq: int | None
    read_only_fallback: bool
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
            )
        return st

    @property
    def loop_ref(self) -> str:
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
        return self._fd is None

    def fileno(self) -> int:
        if self._fd is None:
            raise LoopdevError(f"{self.path}: this handle was already closed")
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
                ) from None
            raise LoopdevError(f"{self.path}: cannot read its status: {why(e)}") from None

    def set_capacity(self) -> int:
        """Re-read the backing file size (LOOP_SET_CAPACITY); returns the new size in bytes."""
        fd = self.fileno()
        try:
            self.kernel.ioctl(fd, abi.LOOP_SET_CAPACITY)
            buf = abi.u64_buffer()
            self.kernel.ioctl(fd, abi.BLKGETSIZE64, buf)
        except OSError as e:
            raise LoopdevError(f"{self.path}: set capacity failed: {why(e)}") from None
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
                ) from None
            if e.errno == errno.EPERM:
                raise NotPermittedError(
                    f"{self.path}: set {what}: {why(e)}", hint="run as root"
                ) from None
            raise LoopdevError(f"{self.path}: set {what} failed: {why(e)}") from None

    def relinquish(self) -> None:
        """Close the handle and leave the device attached (AUTOCLEAR devices then go away)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self.kernel.close(fd)

    def detach(self, *, wait: bool = True, timeout: float = DEFAULT_DETACH_TIMEOUT) -> None:
        """Flush, detach and (``wait``) return only once the device is really unbound.

        One straight line for the usual case; every error branch leaves it for a helper.
        """
        fd = self._fd
        if fd is None:
            raise LoopdevError(f"{self.path}: this handle was already closed")
        kernel = self.kernel
        number = self.number
        paths = sysfs.loop_paths(number)
        try:
            # Refuse if someone holds the device exclusively (a mount, dm, md, a stacked
            # loop): an O_EXCL open fails with EBUSY exactly then. LOOP_CLR_FD cannot tell:
            # on 6.11+ it succeeds on a mounted device too (it only marks it AUTOCLEAR).
            try:
                probe = kernel.open(self.path, _EXCL_PROBE)
            except OSError as e:
                if e.errno == errno.EBUSY:
                    _raise_claimed(kernel, self.path, number)
            else:
                kernel.close(probe)
            if not self.flags & abi.LO_FLAGS_READ_ONLY:
                _flush(kernel, fd, paths[1], self.write_baseline)
            try:
                kernel.ioctl(fd, abi.LOOP_CLR_FD)
            except OSError as e:
                _clear_failed(kernel, self.path, number, e)
        finally:
            self._fd = None
            kernel.close(fd)
        # On 6.11+ the teardown runs in the last close: usually the close above, so the
        # first check (one access(2)) already sees the device unbound.
        if wait and kernel.access(paths[2], 0):
            wait_until_detached(kernel, number, self.diskseq, timeout)

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


_EXCL_PROBE = abi.O_RDONLY | abi.O_EXCL | abi.O_NONBLOCK


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


def _clear_failed(kernel: Kernel, path: str, number: int, e: OSError) -> None:
    """LOOP_CLR_FD failed with ``e``: raise what the user can act on (ENXIO: already unbound
    or in teardown, which is what detach wanted)."""
    if e.errno == errno.EPERM:
        raise NotPermittedError(f"{path}: detach not permitted", hint="run as root") from None
    if e.errno == errno.EBUSY:
        raise BusyError(
            f"{path} is busy and cannot be detached",
            holders=settle.device_holders(kernel, number),
        ) from None
    if e.errno != errno.ENXIO:
        raise LoopdevError(f"{path}: detach failed: {why(e)}") from None


def _flush(kernel: Kernel, fd: int, stat_path: str, baseline: bytes | None) -> None:
    """fsync a read-write device (T20) unless it provably wrote nothing since ``baseline``.

    Dirty page cache that was never submitted is written to the backing file by the final
    close anyway; the fsync adds durability for what the device wrote. Skipping it when
    nothing was written saves a round trip through the loop worker and an fsync of the
    backing file (a disk cache flush on ext4: ~50 us idle, milliseconds on a busy disk).
    A read-only device needs none (the caller skips it): write(2) to it fails (EPERM), the
    image under a device we attached read-only is open read-only too, and its queue has no
    write cache to flush.
    """
    if baseline is not None and sysfs.write_mark(kernel, stat_path) == baseline:
        return
    try:
        kernel.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.ENXIO, errno.EIO, errno.EROFS, errno.EINVAL):
            raise


def _raise_claimed(kernel: Kernel, path: str, number: int) -> None:
    """BusyError naming who claims the device exclusively (its O_EXCL probe said EBUSY)."""
    holders = [h for h in settle.device_holders(kernel, number) if h.kind != "process"]
    what = holders[0].description if holders else f"{path} is claimed exclusively"
    raise BusyError(
        f"{path} cannot be detached: {what}",
        holders=holders,
        hint="unmount it (loopdev umount DIR) or stop its user, then detach",
    )


def wait_until_detached(kernel: Kernel, number: int, diskseq: int | None, timeout: float) -> None:
    """Return once loopN's binding ``diskseq`` is gone; TeardownTimeoutError naming the
    holders otherwise."""
    if settle.wait_detached(kernel, number, diskseq, timeout):
        return
    path = f"/dev/loop{number}"
    raise TeardownTimeoutError(
        f"{path} is still attached {timeout:g} s after detach (teardown waits for the last close)",
        holders=settle.device_holders(kernel, number),
        hint="the device goes away when the holders close it; stop them or wait longer",
    )


def open_loop_device(
    kernel: Kernel, device: str | int, flags: int = abi.O_RDONLY
) -> tuple[int, int, int]:
    """Open an existing loop device node; returns (fd, number, rdev).

    Raises NotALoopDeviceError unless it is a block device of the loop major (T26).
    """
    path = device if isinstance(device, str) else f"/dev/loop{device}"
    try:
        st = kernel.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise NotALoopDeviceError(
                f"{path}: no such device", hint="list loop devices with `loopdev -a`"
            ) from None
        raise NotALoopDeviceError(f"{path}: {why(e)}") from None
    _require_loop(kernel, path, st.mode, st.rdev)
    try:
        fd = kernel.open(path, flags)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise NotPermittedError(f"{path}: permission denied", hint="run as root") from None
        if e.errno == errno.ENXIO:
            raise NotAttachedError(
                f"{path} is being torn down or removed", hint="it is going away already"
            ) from None
        raise LoopdevError(f"{path}: cannot open: {why(e)}") from None
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
            f"{path} is not a loop device: it is {what}", hint="give /dev/loopN"
        )
    if abi.major(rdev) != abi.LOOP_MAJOR:
        name = sysfs.block_name(kernel, rdev) or f"{abi.major(rdev)}:{abi.minor(rdev)}"
        raise NotALoopDeviceError(
            f"{path} is not a loop device: it is block device {name} "
            f"(major {abi.major(rdev)}, loop devices have major {abi.LOOP_MAJOR})",
            hint="give /dev/loopN",
        )


def loop_number(kernel: Kernel, path: str, rdev: int) -> int:
    name = sysfs.block_name(kernel, rdev)
    if name and name.startswith("loop") and name[4:].isdigit():
        return int(name[4:])
    raise NotALoopDeviceError(f"{path} is a partition or unknown loop node, not a loop device")


def detach(
    device: LoopDevice | str | int,
    *,
    wait: bool = True,
    timeout: float = DEFAULT_DETACH_TIMEOUT,
    kernel: Kernel | None = None,
) -> None:
    """Detach a loop device (handle, path or number) and, with ``wait``, return only once it
    is really unbound (6.11+ defers the teardown to the last close).

    Raises BusyError naming the mount if it is mounted, NotAttachedError if it is not bound,
    TeardownTimeoutError naming the holders if it outlives ``timeout``.
    """
    if isinstance(device, LoopDevice):
        device.detach(wait=wait, timeout=timeout)
        return
    k = resolve(kernel)
    fd, number, _rdev = open_loop_device(k, device)
    try:
        status = read_status(k, fd, number, extras=False)
    except OSError as e:
        k.close(fd)
        if e.errno == errno.ENXIO:
            raise NotAttachedError(
                f"/dev/loop{number} is not attached", hint="nothing to detach"
            ) from None
        raise LoopdevError(f"/dev/loop{number}: cannot read its status: {why(e)}") from None
    status = dataclasses.replace(status, diskseq=get_diskseq(k, fd))
    LoopDevice(k, fd, status).detach(wait=wait, timeout=timeout)
