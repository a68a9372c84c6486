"""Attaching through the port on every model variant: LOOP_CONFIGURE / SET_FD + SET_STATUS64,
GET_STATUS64 round trip, sysfs while bound, block ioctls, errnos."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from simkit import VARIANTS, attach, errno_of, is_bound, make_image, run_model, status, u64_ioctl

from loopdev import abi
from loopdev.sim.kernel import SimKernel


@pytest.mark.parametrize("variant", VARIANTS)
def test_configure_then_get_status64_round_trips(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img", size=1 << 20)
        n, lfd = attach(
            k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR, offset=4096, sizelimit=512 << 10
        )
        info = status(k, lfd)
        st = k.stat("/tmp/a.img")
        notes["info"] = info
        notes["st"] = st
        notes["n"] = n
        notes["size"] = u64_ioctl(k, lfd, abi.BLKGETSIZE64)
        notes["sys"] = {
            name: k.readfile(f"/sys/block/loop{n}/loop/{name}").decode().strip()
            for name in ("backing_file", "offset", "sizelimit", "autoclear", "partscan", "dio")
        }
        notes["sys_size"] = k.readfile(f"/sys/block/loop{n}/size").decode().strip()
        k.close(lfd)

    run = run_model(variant, main)
    assert run.ok, run.outcome.describe()
    info, st, n = run.notes["info"], run.notes["st"], run.notes["n"]
    assert info.lo_number == n
    assert (info.lo_device, info.lo_inode) == (st.dev, st.ino)
    assert (info.lo_offset, info.lo_sizelimit) == (4096, 512 << 10)
    assert info.lo_flags == abi.LO_FLAGS_AUTOCLEAR
    assert info.lo_file_name == "/tmp/a.img"
    assert run.notes["size"] == 512 << 10
    assert run.notes["sys"] == {
        "backing_file": "/tmp/a.img", "offset": "4096", "sizelimit": str(512 << 10),
        "autoclear": "1", "partscan": "0", "dio": "0",
    }  # fmt: skip
    assert run.notes["sys_size"] == str((512 << 10) // 512)


@pytest.mark.parametrize("variant", ["v5.16", "v6.11"])
def test_set_fd_then_set_status64(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        lfd = k.open("/dev/loop1", abi.O_RDWR)
        ifd = k.open("/tmp/a.img", abi.O_RDONLY)
        k.ioctl(lfd, abi.LOOP_SET_FD, ifd)
        k.close(ifd)
        notes["ro_flags"] = status(k, lfd).lo_flags
        info = abi.LoopInfo64(lo_flags=abi.LO_FLAGS_AUTOCLEAR | abi.LO_FLAGS_DIRECT_IO)
        k.ioctl(lfd, abi.LOOP_SET_STATUS64, info.pack())
        notes["flags"] = status(k, lfd).lo_flags
        k.close(lfd)
        notes["bound_after_close"] = is_bound(k, 1)

    run = run_model(variant, main)
    assert run.ok, run.outcome.describe()
    # a read-only backing fd makes a read-only device; SET_STATUS64 may set AUTOCLEAR only
    assert run.notes["ro_flags"] == abi.LO_FLAGS_READ_ONLY
    assert run.notes["flags"] == abi.LO_FLAGS_READ_ONLY | abi.LO_FLAGS_AUTOCLEAR
    assert run.notes["bound_after_close"] is False


@pytest.mark.parametrize("variant", VARIANTS)
def test_errnos_like_linux(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        lfd = k.open("/dev/loop0", abi.O_RDWR)
        notes["get_unbound"] = errno_of(lambda: status(k, lfd))
        notes["clr_unbound"] = errno_of(lambda: k.ioctl(lfd, abi.LOOP_CLR_FD))
        ifd = k.open("/tmp/a.img", abi.O_RDWR)
        bad = abi.LoopConfig(fd=ifd, info=abi.LoopInfo64(lo_flags=0x1000)).pack()
        notes["bad_flags"] = errno_of(lambda: k.ioctl(lfd, abi.LOOP_CONFIGURE, bad))
        notes["bad_fd"] = errno_of(lambda: k.ioctl(lfd, abi.LOOP_SET_FD, 99))
        k.ioctl(lfd, abi.LOOP_CONFIGURE, abi.LoopConfig(fd=ifd).pack())
        notes["twice"] = errno_of(
            lambda: k.ioctl(lfd, abi.LOOP_CONFIGURE, abi.LoopConfig(fd=ifd).pack())
        )
        notes["bsize"] = errno_of(lambda: k.ioctl(lfd, abi.LOOP_SET_BLOCK_SIZE, 1000))
        k.ioctl(lfd, abi.LOOP_SET_BLOCK_SIZE, 4096)
        notes["ssz"] = bytearray(4)
        k.ioctl(lfd, abi.BLKSSZGET, notes["ssz"])
        notes["self"] = errno_of(
            lambda: k.ioctl(k.open("/dev/loop1", abi.O_RDWR), abi.LOOP_SET_FD, lfd)
        )
        ctl = k.open("/dev/loop-control", abi.O_RDWR)
        notes["remove_bound"] = errno_of(lambda: k.ioctl(ctl, abi.LOOP_CTL_REMOVE, 0))
        notes["add_existing"] = errno_of(lambda: k.ioctl(ctl, abi.LOOP_CTL_ADD, 0))
        notes["remove_missing"] = errno_of(lambda: k.ioctl(ctl, abi.LOOP_CTL_REMOVE, 42))
        notes["unknown"] = errno_of(lambda: k.ioctl(ifd, abi.LOOP_CLR_FD))

    run = run_model(variant, main)
    assert run.ok, run.outcome.describe()
    n = run.notes
    assert n["get_unbound"] == errno.ENXIO
    assert n["clr_unbound"] == errno.ENXIO
    assert n["bad_flags"] == errno.EINVAL
    assert n["bad_fd"] == errno.EBADF
    assert n["twice"] == errno.EBUSY
    assert n["bsize"] == errno.EINVAL
    assert int.from_bytes(n["ssz"], "little") == 4096
    assert n["self"] is None  # stacking loop1 on loop0 is allowed
    assert n["remove_bound"] == errno.EBUSY
    assert n["add_existing"] == errno.EEXIST
    assert n["remove_missing"] == errno.ENODEV
    assert n["unknown"] == errno.ENOTTY


@pytest.mark.parametrize("variant", VARIANTS)
def test_loop_control_add_get_free_remove(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        ctl = k.open("/dev/loop-control", abi.O_RDWR)
        notes["added"] = k.ioctl(ctl, abi.LOOP_CTL_ADD, 7)
        notes["node"] = k.stat("/dev/loop7").rdev
        k.ioctl(ctl, abi.LOOP_CTL_REMOVE, 7)
        notes["gone"] = errno_of(lambda: k.stat("/dev/loop7"))
        notes["sys_gone"] = errno_of(lambda: k.stat("/sys/block/loop7"))
        fd = k.open("/dev/loop2", abi.O_RDONLY)
        notes["remove_open"] = errno_of(lambda: k.ioctl(ctl, abi.LOOP_CTL_REMOVE, 2))
        k.close(fd)
        make_image(k, "/tmp/a.img")
        for _ in range(3):
            attach(k, "/tmp/a.img")
        notes["free"] = k.ioctl(ctl, abi.LOOP_CTL_GET_FREE)

    run = run_model(variant, main, nr_loop=4)
    assert run.ok, run.outcome.describe()
    n = run.notes
    assert n["added"] == 7
    assert n["node"] == abi.makedev(7, 7)
    assert n["gone"] == errno.ENOENT and n["sys_gone"] == errno.ENOENT
    assert n["remove_open"] == errno.EBUSY
    assert n["free"] == 3
