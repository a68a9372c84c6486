"""``mount(8)`` and ``umount(8)`` of util-linux as port programs.

Only what loop mounts of images exercise: ``mount [-t TYPE] [-o OPTS] [-r] SOURCE DIR`` with
``-o loop[,ro][,offset=N][,sizelimit=N]`` (a regular file as SOURCE implies ``loop``, as in
libmount), and ``umount [-l] [-d] DIR``. Messages and exit statuses are libmount's
(``mnt_context_get_mount_excode`` / ``_umount_excode``; ``MNT_EX_FAIL`` = 32), printed as
``mount: DIR: MESSAGE.``. The fs type is probed like blkid when ``-t`` is missing, and when
the probe finds nothing each type of /proc/filesystems is tried until one fails with something
other than EINVAL/ENODEV (libmount's ``do_mount_by_pattern``).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

from loopdev import abi
from loopdev.kernel import Kernel, RunResult
from loopdev.lab import images
from loopdev.lab.userspace.libmount import (
    MNT_ERR_LOOPDEV,
    MNT_ERR_LOOPOVERLAP,
    LoopSetup,
    SetupError,
    UtilLinuxVersion,
    setup_loopdev,
)
from loopdev.lab.userspace.loopcxt import loopdev_delete
from loopdev.lab.userspace.program import (
    MNT_EX_FAIL,
    MNT_EX_SYSERR,
    MNT_EX_USAGE,
    fail,
    ok,
    strerror,
    strtosize,
)
from loopdev.mountinfo import mounts

#: Mount options that are mount(2) flags (set, clear).
_FLAG_OPTIONS: dict[str, tuple[int, int]] = {
    "ro": (abi.MS_RDONLY, 0),
    "rw": (0, abi.MS_RDONLY),
    "nosuid": (abi.MS_NOSUID, 0),
    "nodev": (abi.MS_NODEV, 0),
    "noexec": (abi.MS_NOEXEC, 0),
    "sync": (abi.MS_SYNCHRONOUS, 0),
    "noatime": (abi.MS_NOATIME, 0),
    "nodiratime": (abi.MS_NODIRATIME, 0),
    "relatime": (abi.MS_RELATIME, 0),
    "defaults": (0, 0),
}


class UsageError(ValueError):
    """Bad command line (exit status 1, like util-linux's MNT_EX_USAGE)."""


@dataclass(frozen=True)
class MountArgs:
    """A parsed ``mount`` command line."""

    source: str
    target: str
    fstype: str = ""
    flags: int = 0
    data: str = ""
    loop: bool = False
    loop_device: str = ""
    offset: int = 0
    sizelimit: int = 0

    @property
    def readonly(self) -> bool:
        return bool(self.flags & abi.MS_RDONLY)


def _size(name: str, value: str) -> int:
    try:
        return strtosize(value)
    except ValueError:
        raise UsageError(f"failed to parse mount options: bad {name}= value {value!r}") from None


def parse_mount_args(argv: Sequence[str]) -> MountArgs:
    """``mount [-t TYPE] [-o OPTS]... [-r|-w] SOURCE DIR``; raises UsageError."""
    args = list(argv[1:])
    fstype = ""
    opts: list[str] = []
    positional: list[str] = []
    while args:
        a = args.pop(0)
        if a in ("-t", "--types", "-o", "--options"):
            if not args:
                raise UsageError(f"option requires an argument -- '{a.lstrip('-')[0]}'")
            value = args.pop(0)
            if a in ("-t", "--types"):
                fstype = value
            else:
                opts.extend(o for o in value.split(",") if o)
        elif a in ("-r", "--read-only"):
            opts.append("ro")
        elif a in ("-w", "--rw", "--read-write"):
            opts.append("rw")
        elif a in ("-v", "--verbose"):
            continue
        elif a.startswith("-") and a != "-":
            raise UsageError(f"unrecognized option '{a}'")
        else:
            positional.append(a)
    if len(positional) != 2:
        raise UsageError("bad usage: mount SOURCE DIR")
    flags = 0
    data: list[str] = []
    loop = False
    loop_device = ""
    offset = sizelimit = 0
    for o in opts:
        name, _, value = o.partition("=")
        if name in _FLAG_OPTIONS and not value:
            set_, clear = _FLAG_OPTIONS[name]
            flags = (flags | set_) & ~clear
        elif name == "loop":
            loop, loop_device = True, value
        elif name == "offset":
            loop, offset = True, _size(name, value)
        elif name == "sizelimit":
            loop, sizelimit = True, _size(name, value)
        else:
            data.append(o)
    return MountArgs(
        positional[0],
        positional[1],
        fstype,
        flags,
        ",".join(data),
        loop,
        loop_device,
        offset,
        sizelimit,
    )


def mount_syscall_message(err: int, source: str, fstype: str, flags: int) -> str:
    """libmount's text for a failed mount(2) (``mnt_context_get_mount_excode``)."""
    if err == errno.EIO:
        return f"can't read superblock on {source}"
    if err == errno.EINVAL:
        return (
            f"wrong fs type, bad option, bad superblock on {source}, "
            "missing codepage or helper program, or other error"
        )
    if err == errno.EBUSY:
        return f"{source} already mounted or mount point busy"
    if err == errno.ENODEV:
        return f"unknown filesystem type '{fstype}'" if fstype else "unknown filesystem type"
    if err == errno.ENXIO:
        return f"{source} is not a valid block device"
    if err == errno.ENOTBLK:
        return f"{source} is not a block device"
    if err in (errno.EACCES, errno.EROFS) and flags & abi.MS_RDONLY:
        return f"cannot mount {source} read-only"
    if err == errno.EPERM:
        return "permission denied"
    return f"mount(2) system call failed: {strerror(err)}"


def setup_error(rc: int, source: str) -> tuple[int, str]:
    """libmount's exit status and text for a loop setup that failed before mount(2)
    (``mnt_context_get_mount_excode``, no syscall called): rc is -errno or -MNT_ERR_*."""
    if rc == -errno.EPERM:
        return MNT_EX_USAGE, "operation permitted for root only"
    if rc == -errno.EBUSY:
        return MNT_EX_USAGE, f"{source} is already mounted"
    if rc == -MNT_ERR_LOOPDEV:
        return MNT_EX_FAIL, f"failed to setup loop device for {source}"
    if rc == -MNT_ERR_LOOPOVERLAP:
        return MNT_EX_FAIL, f"overlapping loop device exists for {source}"
    # mnt_context_get_generic_excode: "mount failed: %m"
    err = -rc
    status = {errno.EINVAL: MNT_EX_USAGE, errno.ENOMEM: MNT_EX_SYSERR}.get(err, MNT_EX_FAIL)
    return status, f"mount failed: {strerror(err)}"


def setup_error_message(rc: int, source: str) -> str:
    """libmount's text for a failed loop setup (-MNT_ERR_* or -errno)."""
    return setup_error(rc, source)[1]


def blkid_fstype(kernel: Kernel, device: str) -> str | None:
    """blkid's superblock probe: open O_RDONLY|O_NONBLOCK, read the first block, close."""
    try:
        fd = kernel.open(device, abi.O_RDONLY | abi.O_CLOEXEC | abi.O_NONBLOCK)
    except OSError:
        return None
    try:
        head = kernel.pread(fd, images.PROBE_SIZE, 0)
    except OSError:
        return None
    finally:
        kernel.close(fd)
    return images.identify(head)


def proc_filesystems(kernel: Kernel) -> list[str]:
    """The block filesystems of /proc/filesystems (no ``nodev``), else the lab's types."""
    try:
        text = kernel.readfile("/proc/filesystems").decode()
    except OSError:
        return list(images.FSTYPES)
    out = [
        line.split()[-1]
        for line in text.splitlines()
        if line.strip() and not line.startswith("nodev")
    ]
    return out or list(images.FSTYPES)


def _do_mount(kernel: Kernel, source: str, a: MountArgs, flags: int) -> tuple[int, str]:
    """mount(2) with the given or probed type; returns (errno or 0, type tried last)."""
    types = [a.fstype] if a.fstype else []
    if not types:
        probed = blkid_fstype(kernel, source)
        types = [probed] if probed else proc_filesystems(kernel)
    err = 0
    for t in types:
        try:
            kernel.mount(source, a.target, t, flags, a.data)
            return 0, t
        except OSError as e:
            err = e.errno or errno.EIO
            if err not in (errno.EINVAL, errno.ENODEV):
                return err, t
    return err, types[-1] if types else ""


def _is_regular(kernel: Kernel, path: str) -> bool:
    try:
        return kernel.stat(path).is_reg
    except OSError:
        return False


def mount_main(kernel: Kernel, argv: Sequence[str], ul: UtilLinuxVersion) -> RunResult:
    """``mount`` as util-linux ``ul`` behaves."""
    try:
        a = parse_mount_args(argv)
    except UsageError as e:
        return fail(MNT_EX_USAGE, f"mount: {e}")
    try:
        target = kernel.realpath(a.target)
        if not kernel.stat(target).is_dir:
            return fail(MNT_EX_FAIL, f"mount: {a.target}: mount point is not a directory.")
    except OSError:
        return fail(MNT_EX_FAIL, f"mount: {a.target}: mount point does not exist.")
    a = MountArgs(**{**a.__dict__, "target": target})
    loop = a.loop or _is_regular(kernel, a.source)
    if not loop:
        err, t = _do_mount(kernel, a.source, a, a.flags)
        if err:
            return fail(
                MNT_EX_FAIL, f"mount: {target}: {mount_syscall_message(err, a.source, t, a.flags)}."
            )
        return ok()
    if a.loop_device:
        return fail(MNT_EX_USAGE, "mount: loop=DEVICE is not modelled")
    try:
        backing = kernel.realpath(a.source)
    except OSError:
        backing = a.source
    try:
        lo: LoopSetup = setup_loopdev(
            kernel, ul, backing, readonly=a.readonly, offset=a.offset, sizelimit=a.sizelimit
        )
    except SetupError as e:
        status, message = setup_error(e.rc, backing)
        return fail(status, f"mount: {target}: {message}.")
    flags = a.flags | (abi.MS_RDONLY if lo.readonly else 0)
    err, t = _do_mount(kernel, lo.device, a, flags)
    # mnt_context_clear_loopdev: on failure delete the device (close, LOOP_CLR_FD), else close
    kernel.close(lo.fd)
    if err:
        loopdev_delete(kernel, lo.device)
        return fail(
            MNT_EX_FAIL, f"mount: {target}: {mount_syscall_message(err, lo.device, t, flags)}."
        )
    return ok()


@dataclass(frozen=True)
class UmountArgs:
    target: str
    lazy: bool = False
    detach_loop: bool = False
    force: bool = False


def parse_umount_args(argv: Sequence[str]) -> UmountArgs:
    """``umount [-l] [-d] [-f] DIR``; raises UsageError."""
    lazy = detach = force = False
    positional: list[str] = []
    for a in argv[1:]:
        if a in ("-l", "--lazy"):
            lazy = True
        elif a in ("-d", "--detach-loop"):
            detach = True
        elif a in ("-f", "--force"):
            force = True
        elif a.startswith("-") and a != "-":
            raise UsageError(f"unrecognized option '{a}'")
        else:
            positional.append(a)
    if len(positional) != 1:
        raise UsageError("bad usage: umount DIR")
    return UmountArgs(positional[0], lazy, detach, force)


def umount_syscall_message(err: int) -> str:
    """libmount's text for a failed umount2(2) (``mnt_context_get_umount_excode``)."""
    if err == errno.EBUSY:
        return "target is busy"
    if err == errno.EINVAL:
        return "not mounted"
    if err == errno.EACCES:
        return "must be superuser to unmount"
    if err == errno.EIO:
        return "can't write superblock"
    return f"umount failed: {strerror(err)}"


def umount_main(kernel: Kernel, argv: Sequence[str]) -> RunResult:
    """``umount DIR``: look the mount up in mountinfo, umount2(2), ``-d`` then LOOP_CLR_FD."""
    try:
        a = parse_umount_args(argv)
    except UsageError as e:
        return fail(MNT_EX_USAGE, f"umount: {e}")
    try:
        target = kernel.realpath(a.target)
    except OSError:
        return fail(MNT_EX_FAIL, f"umount: {a.target}: no mount point specified.")
    source = ""
    try:
        found = [m for m in mounts(kernel) if m.target == target]
    except OSError:
        found = None  # no mountinfo: let umount2(2) decide
    if found is not None:
        if not found:
            return fail(MNT_EX_FAIL, f"umount: {target}: not mounted.")
        source = found[-1].source
    flags = (abi.MNT_DETACH if a.lazy else 0) | (abi.MNT_FORCE if a.force else 0)
    try:
        kernel.umount2(target, flags)
    except OSError as e:
        err = e.errno or errno.EIO
        return fail(MNT_EX_FAIL, f"umount: {target}: {umount_syscall_message(err)}.")
    if a.detach_loop and source.startswith("/dev/loop"):
        loopdev_delete(kernel, source)
    return ok()
