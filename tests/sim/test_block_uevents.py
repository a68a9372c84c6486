"""Block layer through the port: uevents with DISKSEQ on attach/detach (RESEARCH §6: attach
sends one ``change``; detach two, both with the old DISKSEQ), claims, read-only devices."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from simkit import VARIANTS, attach, errno_of, make_image, run_model, u64_ioctl

from loopdev import abi
from loopdev.kernel import Uevent
from loopdev.sim.kernel import SimKernel


def drain(k: SimKernel, sock: int) -> list[Uevent]:
    out = []
    while (ev := k.uevent_read(sock, 0)) is not None:
        out.append(ev)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_attach_one_change_detach_two_with_old_diskseq(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        sock = k.uevent_open()
        n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)
        notes["seq"] = u64_ioctl(k, lfd, abi.BLKGETDISKSEQ)
        notes["sys_seq"] = int(k.readfile(f"/sys/block/loop{n}/diskseq"))
        notes["attach"] = drain(k, sock)
        k.close(lfd)
        k.sleep(0.05)  # an asynchronous teardown freezes the queue: an RCU grace period
        notes["detach"] = drain(k, sock)
        fd = k.open(f"/dev/loop{n}", abi.O_RDONLY)
        notes["seq_after"] = u64_ioctl(k, fd, abi.BLKGETDISKSEQ)
        k.close(fd)
        k.close(sock)

    run = run_model(variant, main)
    assert run.ok, run.outcome.describe()
    seq = run.notes["seq"]
    assert run.notes["sys_seq"] == seq
    attach_ev = run.notes["attach"]
    assert [(e.action, e.subsystem, e.devname, e.diskseq) for e in attach_ev] == [
        ("change", "block", "loop0", seq)
    ]
    detach_ev = run.notes["detach"]
    assert [(e.action, e.diskseq) for e in detach_ev] == [("change", seq), ("change", seq)]
    assert run.notes["seq_after"] > seq


def test_uevent_read_times_out_on_the_virtual_clock() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        sock = k.uevent_open()
        t0 = k.monotonic()
        notes["ev"] = k.uevent_read(sock, 2.5)
        notes["dt"] = k.monotonic() - t0
        notes["bad"] = errno_of(lambda: k.uevent_read(sock + 5, 0))

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["ev"] is None
    assert run.notes["dt"] == pytest.approx(2.5)
    assert run.notes["bad"] == errno.EBADF


def test_exclusive_open_excludes_mount_and_other_exclusive_opens() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img")
        excl = k.open(f"/dev/loop{n}", abi.O_RDONLY | abi.O_EXCL)
        notes["second_excl"] = errno_of(lambda: k.open(f"/dev/loop{n}", abi.O_RDONLY | abi.O_EXCL))
        k.mkdir("/mnt/x")
        notes["mount"] = errno_of(lambda: k.mount(f"/dev/loop{n}", "/mnt/x", "ext2"))
        notes["plain_open"] = errno_of(lambda: k.close(k.open(f"/dev/loop{n}", abi.O_RDONLY)))
        k.close(excl)
        k.mount(f"/dev/loop{n}", "/mnt/x", "ext2")
        notes["excl_mounted"] = errno_of(lambda: k.open(f"/dev/loop{n}", abi.O_RDONLY | abi.O_EXCL))
        k.umount2("/mnt/x")
        k.close(lfd)

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["second_excl"] == errno.EBUSY
    assert run.notes["mount"] == errno.EBUSY
    assert run.notes["plain_open"] is None
    assert run.notes["excl_mounted"] == errno.EBUSY


def test_read_only_device() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img", readonly=True)
        ro = bytearray(4)
        k.ioctl(lfd, abi.BLKROGET, ro)
        notes["ro"] = int.from_bytes(ro, "little")
        notes["sys_ro"] = k.readfile(f"/sys/block/loop{n}/ro").strip()
        wfd = k.open(f"/dev/loop{n}", abi.O_RDWR)
        notes["write"] = errno_of(lambda: k.pwrite(wfd, b"x", 0))
        k.mkdir("/mnt/x")
        notes["mount_rw"] = errno_of(lambda: k.mount(f"/dev/loop{n}", "/mnt/x", "ext2"))
        k.mount(f"/dev/loop{n}", "/mnt/x", "ext2", abi.MS_RDONLY)
        notes["create"] = errno_of(lambda: k.open("/mnt/x/f", abi.O_RDWR | abi.O_CREAT))
        k.umount2("/mnt/x")
        k.close(wfd)
        k.close(lfd)

    run = run_model("v5.19", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["ro"] == 1 and run.notes["sys_ro"] == b"1"
    assert run.notes["write"] == errno.EPERM
    assert run.notes["mount_rw"] == errno.EACCES
    assert run.notes["create"] == errno.EROFS
