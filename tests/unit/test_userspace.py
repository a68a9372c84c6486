"""Pure parts of the modelled userspace: command lines, util-linux messages, image layouts."""

from __future__ import annotations

import errno
import struct

import pytest

from loopdev import abi
from loopdev.lab import images
from loopdev.lab.userspace.libmount import MNT_ERR_LOOPDEV, MNT_ERR_LOOPOVERLAP, UtilLinuxVersion
from loopdev.lab.userspace.mkfs import parse_size
from loopdev.lab.userspace.mount import (
    UsageError,
    mount_syscall_message,
    parse_mount_args,
    parse_umount_args,
    setup_error,
    setup_error_message,
    umount_syscall_message,
)


def test_mount_loop_ro_options() -> None:
    a = parse_mount_args(["mount", "-o", "loop,ro", "img.iso", "/mnt"])
    assert (a.source, a.target, a.loop, a.readonly, a.fstype) == ("img.iso", "/mnt", True, True, "")


def test_mount_type_offset_and_fs_data() -> None:
    a = parse_mount_args(
        [
            "mount",
            "-t",
            "ext4",
            "-o",
            "offset=4096,sizelimit=1M,noatime,errors=remount-ro",
            "i",
            "d",
        ]
    )
    assert a.fstype == "ext4" and a.loop and a.offset == 4096
    assert a.flags == abi.MS_NOATIME and a.data == "errors=remount-ro"


def test_mount_rw_after_ro_clears_rdonly() -> None:
    assert not parse_mount_args(["mount", "-r", "-o", "rw", "i", "d"]).readonly


@pytest.mark.parametrize("argv", [["mount", "i"], ["mount", "-x", "i", "d"], ["mount", "-t"]])
def test_mount_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_mount_args(argv)


def test_mount_messages_are_libmounts() -> None:
    assert mount_syscall_message(errno.EIO, "/dev/loop0", "squashfs", abi.MS_RDONLY) == (
        "can't read superblock on /dev/loop0"
    )
    assert mount_syscall_message(errno.EINVAL, "/dev/loop1", "", 0).startswith(
        "wrong fs type, bad option, bad superblock on /dev/loop1,"
    )
    assert mount_syscall_message(errno.ENODEV, "/dev/loop1", "iso9660", 0) == (
        "unknown filesystem type 'iso9660'"
    )
    assert setup_error_message(-MNT_ERR_LOOPDEV, "/i") == "failed to setup loop device for /i"
    assert setup_error_message(-MNT_ERR_LOOPOVERLAP, "/i").startswith("overlapping loop device")
    assert setup_error_message(-errno.ENOENT, "/i") == "mount failed: No such file or directory"
    # mnt_context_get_mount_excode before mount(2): -EPERM has its own text, EINVAL is usage
    assert setup_error(-errno.EPERM, "/i") == (1, "operation permitted for root only")
    assert setup_error(-errno.EINVAL, "/i") == (1, "mount failed: Invalid argument")
    assert setup_error(-errno.ENODEV, "/i") == (32, "mount failed: No such device")


def test_umount_args_and_messages() -> None:
    a = parse_umount_args(["umount", "-d", "/mnt"])
    assert a.target == "/mnt" and a.detach_loop and not a.lazy
    assert umount_syscall_message(errno.EBUSY) == "target is busy"
    assert umount_syscall_message(errno.EINVAL) == "not mounted"
    with pytest.raises(UsageError):
        parse_umount_args(["umount"])


def test_util_linux_versions() -> None:
    old, new = UtilLinuxVersion.of("2.37"), UtilLinuxVersion.of("2.38.1")
    assert not old.reuse_verifies_fd and not old.overlap_errors_skip
    assert new.reuse_verifies_fd and new.overlap_errors_skip
    assert not old.sysfs_errors_translated and new.sysfs_errors_translated


@pytest.mark.parametrize("fstype", images.FSTYPES)
def test_superblock_is_identified(fstype: str) -> None:
    disk = bytearray(images.PROBE_SIZE)
    for offset, data in images.superblock(fstype, 1 << 20):
        disk[offset : offset + len(data)] = data
    assert images.identify(bytes(disk)) == fstype


def test_superblock_magics_at_real_offsets() -> None:
    ext = dict(images.superblock("ext2", 1 << 20))[1024]
    assert struct.unpack_from("<H", ext, 56)[0] == 0xEF53  # byte 1080 of the device
    assert dict(images.superblock("xfs", 1 << 20))[0][:4] == b"XFSB"
    assert dict(images.superblock("squashfs", 1 << 20))[0][:4] == b"hsqs"
    assert (
        struct.unpack_from("<I", dict(images.superblock("erofs", 1 << 20))[1024])[0] == 0xE0F5E1E2
    )
    assert images.identify(bytes(images.PROBE_SIZE)) is None


def test_parse_size() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("64K") == 64 << 10
    assert parse_size("1MiB") == 1 << 20
    with pytest.raises(ValueError):
        parse_size("0")
