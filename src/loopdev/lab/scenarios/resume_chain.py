"""resume-chain: claim 6's lockdep chain — sendfile from /sys/power/resume into a file on the
backing filesystem, a freeze of that filesystem, a loop teardown (with I/O to the backing
file in flight), and a write to /sys/power/resume (which opens the loop device).

Model only: writing /sys/power/resume or freezing a filesystem is not something the lab does
to the machine it runs on. Needs the model's sendfile, FIFREEZE and sysfs machinery; without
them the scenario reports itself unsupported.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from loopdev import abi
from loopdev.lab.scenarios.base import CAPABILITY_ERRNOS, Env, Unsupported
from loopdev.lab.scenarios.common import (
    detach_backed_by,
    ensure_dir,
    force_umount,
    mount_source,
    remove,
    run_children,
)

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
RESUME = "/sys/power/resume"


def _capability(e: OSError, what: str) -> None:
    if e.errno in CAPABILITY_ERRNOS | {errno.ENOENT}:
        raise Unsupported(f"{what}: {e.strerror or e.errno} (not modelled yet)") from e


@dataclass
class ResumeChain:
    """Four tasks that together close the open_mutex → … → open_mutex chain."""

    udev: bool = False
    model_only: bool = True
    #: the chain is the kernel's; which userspace mounts the image does not matter
    userspaces: tuple[str, ...] = ("loopdev",)
    name: str = "resume-chain"
    title: str = "sendfile(/sys/power/resume) + freeze + loop teardown + resume write"
    source: str = "RESEARCH §3 claim 6 (lockdep report in the 2022 thread)"

    def _paths(self, env: Env) -> tuple[str, str, str, str]:
        host_img, host = env.path("host.img"), env.path("host")
        return host_img, host, f"{host}/loop.img", env.path("mnt")

    def prepare(self, env: Env) -> None:
        host_img, host, image, mnt = self._paths(env)
        k = env.kernel
        if getattr(k, "sendfile", None) is None:
            raise Unsupported("the port has no sendfile (sendfile machinery not landed)")
        try:
            k.stat(RESUME)
        except OSError as e:
            _capability(e, RESUME)
            raise
        env.make_image("ext4", host_img, size_mib=64)
        ensure_dir(env, host)
        ensure_dir(env, mnt)
        env.userspace.mount_loop(host_img, host, read_only=False, step="prepare: mount host")
        env.make_image("ext2", image, size_mib=8)

    def trial(self, env: Env) -> None:
        _img, host, image, mnt = self._paths(env)
        k = env.kernel
        sendfile = getattr(k, "sendfile", None)
        assert sendfile is not None
        env.userspace.mount_loop(image, mnt, read_only=False, step="mount")
        dev = mount_source(env, mnt) or "/dev/loop0"
        st = k.stat(dev)

        def reader() -> None:
            out = k.open(f"{host}/resume.copy", abi.O_WRONLY | abi.O_CREAT | abi.O_TRUNC)
            try:
                src = k.open(RESUME, abi.O_RDONLY)
                try:
                    sendfile(out, src, 0, 64)
                finally:
                    k.close(src)
            finally:
                k.close(out)

        def freezer() -> None:
            fd = k.open(host, abi.O_RDONLY | abi.O_DIRECTORY)
            try:
                try:
                    k.ioctl(fd, FIFREEZE)
                except OSError as e:
                    _capability(e, "FIFREEZE")
                    raise
                k.ioctl(fd, FITHAW)
            finally:
                k.close(fd)

        def teardown() -> None:
            fd = k.open(f"{mnt}/file", abi.O_WRONLY | abi.O_CREAT)
            try:
                k.write(fd, b"x" * 4096)
            finally:
                k.close(fd)
            env.userspace.umount(mnt, step="umount")

        def resume_writer() -> None:
            fd = k.open(RESUME, abi.O_WRONLY)
            try:
                k.write(fd, f"{abi.major(st.rdev)}:{abi.minor(st.rdev)}\n".encode())
            except OSError as e:
                _capability(e, "write /sys/power/resume")
            finally:
                k.close(fd)

        children = {
            "sendfile": reader,
            "freezer": freezer,
            "umount": teardown,
            "resume": resume_writer,
        }
        for failure in run_children(env, children, timeout=60.0):
            raise failure

    def cleanup(self, env: Env) -> None:
        host_img, host, image, mnt = self._paths(env)
        force_umount(env, mnt)
        detach_backed_by(env, image)
        force_umount(env, host)
        detach_backed_by(env, host_img)
        remove(env, mnt, host, host_img)
