"""util-linux ``lib/loopdev.c`` (the loop context libmount and losetup use), on the port.

The behaviour follows util-linux v2.37.4 and v2.38, step for step where the order of system
calls matters for races with an autoclear teardown:

* information comes from sysfs first (``/sys/block/loopN/loop/{backing_file,offset,...}``);
  ``loopcxt_init`` sets ``LOOPDEV_FL_NOIOCTL`` on any kernel with sysfs, so the
  ``LOOP_GET_STATUS64`` fallbacks of offset/sizelimit/backing file are off;
* ``loopcxt_get_backing_inode``/``_devno`` (used by the overlap scan when the backing file can
  be stat()ed) always go through ``loopcxt_get_info``: open the device ``O_RDONLY|O_CLOEXEC``
  (the fd stays in the context until the next device), ``LOOP_GET_STATUS64``; a failure is
  cached (``info_failed``) and the scan falls back to comparing the sysfs backing file name;
* moving the iterator to the next device closes the previous device's fd.

``overlap_errors_skip`` is util-linux 562990b5520e (2.38): errors while scanning for an overlap
skip that device instead of failing the scan. ``sysfs_errors_translated`` is fb4b6b115 (2.38):
an offset or sizelimit that sysfs cannot give is -EINVAL; before, it was ``ul_path_read_u64``'s
-1, i.e. -EPERM, whatever open(2) or read(2) said (on a real kernel: ENOENT once the ``loop``
attribute group is gone, ENODEV from kernfs while ``sysfs_remove_group`` deactivates it).
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass

from loopdev import abi
from loopdev.kernel import Kernel, Stat

SYS_BLOCK = "/sys/block"
DEV = "/dev"
LOOP_CONTROL = "/dev/loop-control"
#: loopcxt_setup_device: retries of opening a fresh /dev/loopN udev has not chown()ed yet.
OPEN_RETRIES = 16
OPEN_RETRY_DELAY = 0.025
#: LOOP_SET_STATUS64 EAGAIN retry delay (util-linux sleeps 250 ms, unbounded).
EAGAIN_DELAY = 0.25


class LoopError(Exception):
    """A negative return of a lib/loopdev.c function: ``-errno``."""

    def __init__(self, code: int, where: str) -> None:
        super().__init__(f"{where}: {errno.errorcode.get(code, code)}")
        self.code = code
        self.where = where


@dataclass(frozen=True)
class Overlap:
    """``loopcxt_find_overlap``'s result: 0 none, 1 overlap, 2 full match (reuse)."""

    kind: int


class LoopCxt:
    """``struct loopdev_cxt`` with the functions libmount's loop setup calls."""

    def __init__(
        self, kernel: Kernel, *, overlap_errors_skip: bool, sysfs_errors_translated: bool = True
    ) -> None:
        self.k = kernel
        self.overlap_errors_skip = overlap_errors_skip
        self.sysfs_errors_translated = sysfs_errors_translated
        self.device = ""
        self.fd = -1
        self.mode = abi.O_RDONLY
        self.rdwr = False  # LOOPDEV_FL_RDWR
        self.info: abi.LoopInfo64 | None = None  # has_info
        self.info_failed = False
        self.info_errno = 0
        self.control_ok = False
        self.config = abi.LoopInfo64()
        self.filename = ""

    # -- device and fd ---------------------------------------------------------------------

    def set_device(self, device: str | None) -> None:
        """``loopcxt_set_device``: close the old fd, forget cached info, set the new name."""
        if self.fd >= 0:
            self.k.close(self.fd)
        self.fd = -1
        self.mode = abi.O_RDONLY
        self.info = None
        self.info_failed = False
        self.info_errno = 0
        self.config = abi.LoopInfo64()
        self.device = ""
        if device:
            self.device = device if device.startswith("/") else f"{DEV}/{device}"

    @property
    def name(self) -> str:
        """``loopN`` (the sysfs name)."""
        return self.device.rsplit("/", 1)[-1]

    def get_fd(self) -> int:
        """``loopcxt_get_fd``: the open device (opened on first use); raises on failure."""
        if not self.device:
            raise LoopError(errno.EINVAL, "get_fd")
        if self.fd < 0:
            self.mode = abi.O_RDWR if self.rdwr else abi.O_RDONLY
            self.fd = self.k.open(self.device, self.mode | abi.O_CLOEXEC)
        return self.fd

    def get_info(self) -> abi.LoopInfo64 | None:
        """``loopcxt_get_info``: LOOP_GET_STATUS64 on the context's fd; failures are cached."""
        if self.info_failed:
            self.info_errno = errno.EINVAL
            return None
        if self.info is not None:
            return self.info
        try:
            fd = self.get_fd()
        except OSError as e:
            self.info_errno = e.errno or errno.EIO
            return None
        buf = abi.LoopInfo64.buffer()
        try:
            self.k.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
        except OSError as e:
            self.info_failed = True
            self.info_errno = e.errno or errno.EIO
            return None
        self.info = abi.LoopInfo64.unpack(buf)
        return self.info

    # -- sysfs -----------------------------------------------------------------------------

    def _sysfs(self, attr: str) -> str:
        """``ul_path_read_*`` of ``/sys/block/loopN/<attr>``; raises LoopError(-errno)."""
        try:
            raw = self.k.readfile(f"{SYS_BLOCK}/{self.name}/{attr}", 4096)
        except OSError as e:
            raise LoopError(e.errno or errno.EIO, f"read {attr}") from e
        return raw.decode("utf-8", "surrogateescape").rstrip("\n")

    def _sysfs_u64(self, attr: str) -> int:
        """``ul_path_read_u64`` as ``loopcxt_get_offset``/``_sizelimit`` return it: any failure
        is -EINVAL (2.38) or ul_path_read_u64's untranslated -1, i.e. -EPERM (2.37)."""
        code = errno.EINVAL if self.sysfs_errors_translated else errno.EPERM
        try:
            text = self._sysfs(attr)
        except LoopError as e:
            raise LoopError(code, e.where) from e
        try:
            return int(text)
        except ValueError as e:
            raise LoopError(code, f"parse {attr}") from e

    def get_offset(self) -> int:
        """``loopcxt_get_offset`` (sysfs only: NOIOCTL)."""
        return self._sysfs_u64("loop/offset")

    def get_sizelimit(self) -> int:
        return self._sysfs_u64("loop/sizelimit")

    def get_backing_file(self) -> str | None:
        try:
            return self._sysfs("loop/backing_file")
        except LoopError:
            return None

    def is_readonly(self) -> bool:
        try:
            return self._sysfs_u64("ro") != 0
        except LoopError:
            return False

    def is_autoclear(self) -> bool:
        try:
            return self._sysfs_u64("loop/autoclear") != 0
        except LoopError:
            return False

    def get_encrypt_type(self) -> int | None:
        info = self.get_info()
        return None if info is None else info.lo_encrypt_type

    # -- iteration -------------------------------------------------------------------------

    def _is_loopdev(self) -> bool:
        try:
            st = self.k.stat(self.device)
        except OSError:
            return False
        return st.is_blk and abi.major(st.rdev) == abi.LOOP_MAJOR

    def used_devices(self) -> list[str]:
        """The names ``loopcxt_next_from_sysfs`` (LOOPITER_FL_USED) would visit, lazily
        re-checked by :meth:`next_used` (the scan is a readdir: later devices are read late)."""
        try:
            names = self.k.listdir(SYS_BLOCK)
        except OSError:
            return []
        return [n for n in names if n.startswith("loop")]

    def next_used(self, name: str) -> bool:
        """One step of the USED iterator on ``name``: fstatat(loop/backing_file), then
        ``loopiter_set_device`` (is a loop device, offset readable)."""
        try:
            self.k.stat(f"{SYS_BLOCK}/{name}/loop/backing_file")
        except OSError:
            return False
        self.set_device(name)
        if not self._is_loopdev():
            self.set_device(None)
            return False
        try:
            self.get_offset()
        except LoopError:
            self.set_device(None)
            return False
        return True

    def is_used(self, st: Stat | None, filename: str) -> bool:
        """``loopcxt_is_used`` with flags 0: backing (dev, ino) from LOOP_GET_STATUS64 when
        the file could be stat()ed, else (or when that fails) the sysfs backing file name."""
        if st is not None:
            info = self.get_info()
            if info is not None:
                return info.lo_inode == st.ino and info.lo_device == st.dev
        name = self.get_backing_file()
        return name is not None and name == filename

    def find_overlap(self, filename: str, offset: int, sizelimit: int) -> Overlap:
        """``loopcxt_find_overlap``. On 2 (full match) the context keeps the device (and the
        fd the scan opened, if any)."""
        try:
            st: Stat | None = self.k.stat(filename)
        except OSError:
            st = None
        for name in self.used_devices():
            if not self.next_used(name):
                continue
            if not self.is_used(st, filename):
                continue
            try:
                lc_offset = self.get_offset()
                lc_sizelimit = self.get_sizelimit()
            except LoopError:
                if self.overlap_errors_skip:
                    continue
                raise
            if lc_sizelimit == sizelimit and lc_offset == offset:
                return Overlap(2)
            if lc_sizelimit != 0 and offset >= lc_offset + lc_sizelimit:
                continue
            if sizelimit != 0 and offset + sizelimit <= lc_offset:
                continue
            return Overlap(1)
        self.set_device(None)
        return Overlap(0)

    # -- allocation and setup --------------------------------------------------------------

    def find_unused(self) -> None:
        """``loopcxt_find_unused`` through /dev/loop-control (LOOP_CTL_GET_FREE)."""
        try:
            ctl = self.k.open(LOOP_CONTROL, abi.O_RDWR | abi.O_CLOEXEC)
        except OSError as e:
            self.control_ok = False
            raise LoopError(e.errno or errno.EIO, "open loop-control") from e
        try:
            n = self.k.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
        except OSError as e:
            self.control_ok = False
            raise LoopError(e.errno or errno.EIO, "LOOP_CTL_GET_FREE") from e
        finally:
            self.k.close(ctl)
        self.set_device(f"loop{n}")
        self.control_ok = True

    def set_backing_file(self, filename: str, *, offset: int = 0, sizelimit: int = 0) -> None:
        self.filename = filename
        self.config.lo_file_name = filename[: abi.LO_NAME_SIZE - 1]
        self.config.lo_offset = offset
        self.config.lo_sizelimit = sizelimit

    def set_flags(self, flags: int) -> None:
        self.config.lo_flags = flags

    def _open_device_for_setup(self) -> int:
        for attempt in range(OPEN_RETRIES + 1):
            try:
                return self.get_fd()
            except OSError as e:
                if not self.control_ok or e.errno not in (errno.EACCES, errno.ENOENT):
                    raise
                if attempt == OPEN_RETRIES:
                    raise
                self.k.sleep(OPEN_RETRY_DELAY)
        raise AssertionError("unreachable")

    def setup_device(self, *, configure_fallback_enosys: bool) -> None:
        """``loopcxt_setup_device``: open the backing file and the device, LOOP_CONFIGURE
        (fallback LOOP_SET_FD + LOOP_SET_STATUS64); on failure other than EBUSY the device is
        cleared with LOOP_CLR_FD. Raises LoopError(-errno)."""
        mode = abi.O_RDONLY if self.config.lo_flags & abi.LO_FLAGS_READ_ONLY else abi.O_RDWR
        try:
            file_fd = self.k.open(self.filename, mode | abi.O_CLOEXEC)
        except OSError as e:
            if mode == abi.O_RDONLY or e.errno not in (errno.EROFS, errno.EACCES):
                raise LoopError(e.errno or errno.EIO, "open backing file") from e
            mode = abi.O_RDONLY
            try:
                file_fd = self.k.open(self.filename, mode | abi.O_CLOEXEC)
            except OSError as e2:
                raise LoopError(e2.errno or errno.EIO, "open backing file") from e2
        if self.fd >= 0 and self.mode != mode:
            self.k.close(self.fd)
            self.fd = -1
        if mode == abi.O_RDONLY:
            self.rdwr = False
            self.config.lo_flags |= abi.LO_FLAGS_READ_ONLY
        else:
            self.rdwr = True
            self.config.lo_flags &= ~abi.LO_FLAGS_READ_ONLY
        dev_fd = -1
        code = 0
        try:
            dev_fd = self._open_device_for_setup()
            fallback_errnos = {errno.EINVAL, errno.ENOTTY}
            if configure_fallback_enosys:
                fallback_errnos.add(errno.ENOSYS)
            try:
                self.k.ioctl(
                    dev_fd, abi.LOOP_CONFIGURE, abi.LoopConfig(file_fd, 0, self.config).pack()
                )
            except OSError as e:
                if e.errno not in fallback_errnos:
                    raise
                self.k.ioctl(dev_fd, abi.LOOP_SET_FD, file_fd)
                while True:
                    try:
                        self.k.ioctl(dev_fd, abi.LOOP_SET_STATUS64, self.config.pack())
                        break
                    except OSError as e3:
                        if e3.errno != errno.EAGAIN:
                            raise
                        self.k.sleep(EAGAIN_DELAY)
        except OSError as e:
            code = e.errno or errno.EIO
        self.k.close(file_fd)
        if code:
            if dev_fd >= 0 and code != errno.EBUSY:
                with contextlib.suppress(OSError):
                    self.k.ioctl(dev_fd, abi.LOOP_CLR_FD, 0)
            raise LoopError(code, "setup device")
        self.config = abi.LoopInfo64()
        self.info = None
        self.info_failed = False


def loopdev_delete(kernel: Kernel, device: str) -> int:
    """``loopdev_delete``: open the device, LOOP_CLR_FD, close. Returns 0 or -errno."""
    try:
        fd = kernel.open(device, abi.O_RDONLY | abi.O_CLOEXEC)
    except OSError as e:
        return -(e.errno or errno.EIO)
    try:
        kernel.ioctl(fd, abi.LOOP_CLR_FD, 0)
        return 0
    except OSError as e:
        return -(e.errno or errno.EIO)
    finally:
        kernel.close(fd)
