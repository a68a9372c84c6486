"""mount-loop: LTP isofs.sh's shape — ``mount -o loop,ro IMAGE DIR; umount DIR``, repeated.

With udev on, an asynchronous opener (udevd probing the device) can make the last close of the
loop device its own; mount(8) before 2.38 may then reuse a device that is being torn down and
read a dead device ("can't read superblock"). The image is squashfs on the real kernel (no
iso9660 there).
"""

from __future__ import annotations

from dataclasses import dataclass

from loopdev.lab.scenarios.base import Env
from loopdev.lab.scenarios.common import (
    detach_backed_by,
    ensure_dir,
    force_umount,
    remove,
    timed_umount,
)


@dataclass
class MountLoop:
    """Repeated read-only loop mounts of one image onto one directory."""

    udev: bool = True
    iterations_model: int = 3
    model_only: bool = False
    source: str = "LTP testcases/kernel/fs/iso9660/isofs.sh"

    @property
    def name(self) -> str:
        return "mount-loop+udev" if self.udev else "mount-loop"

    @property
    def title(self) -> str:
        return f"mount -o loop,ro; umount (udev {'on' if self.udev else 'off'})"

    def _paths(self, env: Env) -> tuple[str, str]:
        return env.path("isofs.img"), env.path("isofs")

    def prepare(self, env: Env) -> None:
        image, mnt = self._paths(env)
        env.make_image("squashfs", image, files={"hello.txt": b"hello from isofs\n"})
        ensure_dir(env, mnt)

    def trial(self, env: Env) -> None:
        image, mnt = self._paths(env)
        repeat = env.repeats_back_to_back
        for _ in range(self.iterations_model if repeat else 1):
            env.userspace.mount_loop(image, mnt, read_only=True, step="mount")
            timed_umount(env, mnt, "umount", wait_detach=not repeat)

    def cleanup(self, env: Env) -> None:
        image, mnt = self._paths(env)
        force_umount(env, mnt)
        detach_backed_by(env, image)
        remove(env, mnt, image)
