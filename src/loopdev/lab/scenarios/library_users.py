"""library-users: the loopdev library itself, called by two user processes at once while the
modelled systemd-udevd probes every device they bind (model only, loopdev row only).

* ``attacher``: attach an ext4 image, write a block through the device, detach; the device
  must really be unbound when detach returns, and the block must be in the image file.
* ``mounter``: mount_image an xfs image read-write, write a file into it, umount; mount it
  again read-only, read the file back, umount. After each umount the loop device must be gone
  (mount_image makes AUTOCLEAR devices and umount waits for their teardown).

A run fails when a library call raises, when one of those observations does not hold, or when
a loop device is still bound or anything is still loop-mounted once both have finished.
Deadlocks, step limits and lockdep reports are the run's own outcomes, as in every scenario.
The scenario is not in the default matrix (``loopdev lab --scenario library-users`` runs it);
benchmarks/bench_model.py explores it 10,000 times.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from loopdev import abi, settle
from loopdev.control import attach
from loopdev.lab.scenarios.base import Env, ScenarioFailure
from loopdev.lab.scenarios.common import (
    detach_backed_by,
    ensure_dir,
    force_umount,
    library_step,
    loop_bound,
    mounts,
    remove,
    run_children,
)
from loopdev.mount import mount_image, umount

BLOCK = bytes(range(256)) * 16  # 4 KiB the attacher writes through the device
BLOCK_AT = 8192
FILE_DATA = b"written through the loop mount\n"


def _images(env: Env) -> tuple[str, str]:
    """The attacher's ext4 image and the mounter's xfs image."""
    return env.path("attacher.img"), env.path("mounter.img")


def _mountpoint(env: Env) -> str:
    return env.path("mounter")


def attacher(env: Env) -> None:
    """attach + write + detach; the binding must be gone and the data in the image."""
    k = env.kernel
    image = _images(env)[0]
    with library_step("attacher"):
        dev = attach(image, kernel=k)
        number, seq = dev.number, dev.diskseq
        k.pwrite(dev.fileno(), BLOCK, BLOCK_AT)
        dev.detach()
        if not settle.is_detached(k, number, seq):
            raise ScenarioFailure(
                "detach", "still bound", f"/dev/loop{number} (diskseq {seq}) still bound"
            )
        fd = k.open(image, abi.O_RDONLY)
        try:
            if k.pread(fd, len(BLOCK), BLOCK_AT) != BLOCK:
                raise ScenarioFailure(
                    "read image", "lost write", "the block written through the device is lost"
                )
        finally:
            k.close(fd)


def mounter(env: Env) -> None:
    """mount_image rw + write + umount, mount_image ro + read + umount."""
    k = env.kernel
    image, mnt = _images(env)[1], _mountpoint(env)
    with library_step("mounter"):
        m = mount_image(image, mnt, kernel=k)
        fd = k.open(f"{mnt}/hello", abi.O_WRONLY | abi.O_CREAT, 0o644)
        try:
            k.write(fd, FILE_DATA)
        finally:
            k.close(fd)
        umount(mnt, kernel=k)
        if not settle.is_detached(k, m.loop_number, m.diskseq):
            raise ScenarioFailure("umount rw", "still bound", f"{m.device} still bound")
        m = mount_image(image, mnt, read_only=True, kernel=k)
        if not m.read_only:
            raise ScenarioFailure("mount ro", "read-write", "the read-only mount is read-write")
        data = k.readfile(f"{mnt}/hello")
        if data != FILE_DATA:
            raise ScenarioFailure("read back", "wrong data", f"read {data!r}, not the file written")
        umount(mnt, kernel=k)
        if not settle.is_detached(k, m.loop_number, m.diskseq):
            raise ScenarioFailure("umount ro", "still bound", f"{m.device} still bound")


User = Callable[[Env], None]
#: the user processes of the scenario
USERS: tuple[tuple[str, User], ...] = (("attacher", attacher), ("mounter", mounter))


def leftovers(env: Env) -> list[str]:
    """What a user would find left behind: bound loop devices, loop-backed mounts."""
    found = [
        f"{name} still bound"
        for name in sorted(env.kernel.listdir("/sys/block"))
        if name.startswith("loop") and loop_bound(env, f"/dev/{name}")
    ]
    found += [
        f"{source} still mounted on {mountpoint}"
        for source, mountpoint in mounts(env)
        if source.startswith("/dev/loop")
    ]
    return found


@dataclass
class LibraryUsers:
    """Concurrent users of the loopdev library, with udevd."""

    users: tuple[tuple[str, User], ...] = USERS
    udev: bool = True
    model_only: bool = True
    userspaces: tuple[str, ...] = ("loopdev",)
    name: str = "library-users"
    title: str = "the library's attach/detach and mount_image/umount at once, with udevd"
    source: str = "the library's own guarantees (README: attach, detach, mount_image, umount)"

    def prepare(self, env: Env) -> None:
        attacher_img, mounter_img = _images(env)
        env.make_image("ext4", attacher_img, size_mib=1)
        env.make_image("xfs", mounter_img, size_mib=1)
        ensure_dir(env, _mountpoint(env))

    def trial(self, env: Env) -> None:
        children = {name: functools.partial(user, env) for name, user in self.users}
        for failure in run_children(env, children):
            raise failure
        left = leftovers(env)
        if left:
            raise ScenarioFailure("after the users", "leftovers", "; ".join(left))

    def cleanup(self, env: Env) -> None:
        force_umount(env, _mountpoint(env))
        for image in _images(env):
            detach_backed_by(env, image)
        remove(env, _mountpoint(env), *_images(env))
