"""Pure parts of the library: superblock magics, mount options, mountinfo, uevent parsing."""

from __future__ import annotations

import struct

from loopdev.fsdetect import detect_bytes
from loopdev.linux import parse_uevent
from loopdev.mount import parse_options
from loopdev.mountinfo import parse_mountinfo


def _ext(compat: int, incompat: int, ro_compat: int) -> bytes:
    sb = bytearray(4096)
    sb[1024 + 56 : 1024 + 58] = b"\x53\xef"
    struct.pack_into("<III", sb, 1024 + 92, compat, incompat, ro_compat)
    return bytes(sb)


def test_superblock_magics() -> None:
    assert detect_bytes(b"XFSB" + bytes(4092)) == "xfs"
    assert detect_bytes(b"hsqs" + bytes(4092)) == "squashfs"
    erofs = bytearray(4096)
    struct.pack_into("<I", erofs, 1024, 0xE0F5E1E2)
    assert detect_bytes(bytes(erofs)) == "erofs"
    assert detect_bytes(_ext(0, 0x2, 0)) == "ext2"
    assert detect_bytes(_ext(0x4, 0x2, 0)) == "ext3"
    assert detect_bytes(_ext(0x4, 0x2 | 0x40, 0)) == "ext4"
    assert detect_bytes(bytes(4096), b"_BHRfS_M") == "btrfs"
    assert detect_bytes(bytes(4096)) is None


def test_mount_options_split_into_flags_and_data() -> None:
    flags, data = parse_options("ro,noatime,errors=remount-ro,nosuid")
    assert flags == 1 | 1024 | 2
    assert data == "errors=remount-ro"
    assert parse_options("") == (0, "")


def test_mountinfo_lines() -> None:
    text = (
        "36 35 7:3 / /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/loop3 rw\n"
        "37 35 0:5 / /dev rw - devtmpfs udev rw\n"
    )
    a, b = parse_mountinfo(text)
    assert a.target == "/mnt/with space" and a.fstype == "ext4" and a.source == "/dev/loop3"
    assert (a.dev >> 8, a.dev & 0xFF) == (7, 3)
    assert b.fstype == "devtmpfs"


def test_uevent_parsing() -> None:
    raw = b"change@/devices/virtual/block/loop0\0ACTION=change\0DEVPATH=/devices/virtual/block/loop0\0SUBSYSTEM=block\0DEVNAME=loop0\0DISKSEQ=12\0"
    ev = parse_uevent(raw)
    assert ev is not None
    assert (ev.action, ev.subsystem, ev.devname, ev.diskseq) == ("change", "block", "loop0", 12)
    assert parse_uevent(b"libudev\0junk") is None


def test_one_pack_loop_config_matches_the_abi_struct() -> None:
    from loopdev import abi
    from loopdev.control import _LOOP_CONFIG, _file_name

    long_name = "/very/long/" + "x" * 80
    for fd, bs, off, limit, flags, name in (
        (3, 0, 0, 0, 0, "/tmp/a.img"),
        (9, 4096, 1 << 20, 8 << 20, abi.LO_FLAGS_READ_ONLY | abi.LO_FLAGS_AUTOCLEAR, long_name),
    ):
        want = abi.LoopConfig(
            fd=fd,
            block_size=bs,
            info=abi.LoopInfo64(
                lo_offset=off, lo_sizelimit=limit, lo_flags=flags, lo_file_name=name
            ),
        ).pack()
        got = _LOOP_CONFIG.pack(
            fd, bs, 0, 0, 0, off, limit, 0, 0, 0, flags, _file_name(name), b"", b"", 0, 0
        )
        assert got == bytes(want)
        assert len(got) == abi.LoopConfig.SIZE
