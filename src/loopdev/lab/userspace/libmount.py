"""libmount's loop device setup (``libmount/src/context_loopdev.c``) for ``mount -o loop``.

:class:`UtilLinuxVersion` says which version's logic runs. Each behaviour flag is one upstream
commit:

* ``reuse_verifies_fd`` — 3e1fc3bbee99 "mount: Fix race in loop device reuse code" (Jan Kara,
  2.38): after deciding to reuse a device, open it (which blocks autoclear) and re-check it with
  LOOP_GET_STATUS64 on that fd; if that fails ("lost race with teardown") set up a fresh device.
* ``overlap_errors_skip`` — 562990b5520e "loopdev: Do not treat errors when detecting overlap
  as fatal" (2.38): a device whose properties cannot be read while scanning is skipped.
* ``configure_fallback_enosys`` — 2.38 also falls back from LOOP_CONFIGURE on ENOSYS.
* ``sysfs_errors_translated`` — fb4b6b115 "loopdev: Properly translate errors from
  ul_path_read_*()" (Jan Kara, 2.38): a sysfs attribute that cannot be read makes
  ``loopcxt_get_offset``/``_sizelimit`` return -EINVAL. Before, they returned
  ``ul_path_read_u64``'s -1 as it was, which libmount reads as -EPERM ("confusing EPERM
  errors", the commit says): mount(8) 2.37 whose overlap scan loses its device's sysfs
  attributes to a teardown prints "operation permitted for root only" and exits with 1.

Before 2.38 the reuse decision came from sysfs (and a LOOP_GET_STATUS64 whose failure only
sent the scan to the sysfs backing file name), and the device found was then used as it was.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from loopdev import abi
from loopdev.kernel import Kernel
from loopdev.lab.userspace.loopcxt import LoopCxt, LoopError

#: libmount's private error codes (libmount.h MNT_ERR_*).
MNT_ERR_LOOPDEV = 5009
MNT_ERR_LOOPOVERLAP = 5011


@dataclass(frozen=True)
class UtilLinuxVersion:
    """A util-linux version's loop setup behaviour (see the module docstring)."""

    version: str
    reuse_verifies_fd: bool
    overlap_errors_skip: bool
    configure_fallback_enosys: bool
    sysfs_errors_translated: bool = True

    @classmethod
    def of(cls, version: str) -> UtilLinuxVersion:
        """``"2.37"`` (before Jan Kara's fixes) or ``"2.38"`` (and later)."""
        parts = tuple(int(p) for p in version.split(".")[:2])
        fixed = parts >= (2, 38)
        return cls(version, fixed, fixed, fixed, fixed)


@dataclass
class LoopSetup:
    """A loop device ready for mount(2): its path and the fd held until mount(2) is done."""

    device: str
    fd: int
    reused: bool
    readonly: bool


class SetupError(Exception):
    """``mnt_context_setup_loopdev`` failed with ``rc`` (-errno or -MNT_ERR_*)."""

    def __init__(self, rc: int) -> None:
        super().__init__(rc)
        self.rc = rc


def setup_loopdev(
    kernel: Kernel,
    ul: UtilLinuxVersion,
    backing_file: str,
    *,
    readonly: bool,
    offset: int = 0,
    sizelimit: int = 0,
) -> LoopSetup:
    """``mnt_context_setup_loopdev``: reuse a device bound to the same file/offset/sizelimit,
    else allocate (LOOP_CTL_GET_FREE) and configure one with AUTOCLEAR. The returned fd must
    stay open until mount(2) is done ("otherwise it will be auto-cleared by kernel")."""
    lo_flags = abi.LO_FLAGS_READ_ONLY if readonly else 0
    lc = LoopCxt(
        kernel,
        overlap_errors_skip=ul.overlap_errors_skip,
        sysfs_errors_translated=ul.sysfs_errors_translated,
    )
    try:
        found = lc.find_overlap(backing_file, offset, sizelimit).kind
    except LoopError as e:
        lc.set_device(None)
        raise SetupError(-e.code) from e
    if found == 1:
        lc.set_device(None)
        raise SetupError(-MNT_ERR_LOOPOVERLAP)
    if found == 2:
        reused = _reuse(kernel, ul, lc, lo_flags)
        if reused is not None:
            return reused
    return _fresh(ul, lc, backing_file, lo_flags | abi.LO_FLAGS_AUTOCLEAR, offset, sizelimit)


def _reuse(kernel: Kernel, ul: UtilLinuxVersion, lc: LoopCxt, lo_flags: int) -> LoopSetup | None:
    """The ``case 2`` branch: None means "lost the race, set up a fresh device" (2.38)."""
    if ul.reuse_verifies_fd:
        try:
            lc.get_fd()
        except OSError as e:
            lc.set_device(None)
            raise SetupError(-(e.errno or errno.EIO)) from e
        if lc.get_info() is None:
            lc.set_device(None)  # "lost race with teardown": loopcxt_deinit, fresh device
            return None
    if lc.is_readonly() and not lo_flags & abi.LO_FLAGS_READ_ONLY:
        lc.set_device(None)
        raise SetupError(-errno.EROFS)
    enc = lc.get_encrypt_type()
    if enc is not None and enc != 0:
        lc.set_device(None)
        raise SetupError(-MNT_ERR_LOOPOVERLAP)
    return _ready(lc, reused=True, want_ro=bool(lo_flags & abi.LO_FLAGS_READ_ONLY))


def _fresh(
    ul: UtilLinuxVersion, lc: LoopCxt, backing_file: str, lo_flags: int, offset: int, sizelimit: int
) -> LoopSetup:
    """Allocate and configure a new device; EBUSY from configure ("device stolen") retries
    with the next free device, as libmount does (its loop is unbounded; this one too)."""
    lc.set_device(None)
    while True:
        try:
            lc.find_unused()
        except LoopError as e:
            lc.set_device(None)
            raise SetupError(-e.code) from e
        lc.set_backing_file(backing_file, offset=offset, sizelimit=sizelimit)
        lc.set_flags(lo_flags)
        try:
            lc.setup_device(configure_fallback_enosys=ul.configure_fallback_enosys)
            break
        except LoopError as e:
            if e.code != errno.EBUSY:
                lc.set_device(None)
                raise SetupError(-MNT_ERR_LOOPDEV) from e
    return _ready(lc, reused=False, want_ro=bool(lo_flags & abi.LO_FLAGS_READ_ONLY))


def _ready(lc: LoopCxt, *, reused: bool, want_ro: bool) -> LoopSetup:
    """``success:`` — read the flags back from sysfs (in libmount's order and conditions)
    and take the fd for mount(2)."""
    if not reused:
        lc.is_autoclear()  # "autoclear flag accepted by the kernel"
    readonly = want_ro or lc.is_readonly()  # rw mount on a read-only device becomes ro
    try:
        fd = lc.get_fd()
    except OSError as e:
        lc.set_device(None)
        raise SetupError(-(e.errno or errno.EIO)) from e
    setup = LoopSetup(lc.device, fd, reused, readonly)
    lc.fd = -1  # loopcxt_set_fd(&lc, -1, 0): the mount context owns it now
    lc.set_device(None)
    return setup
