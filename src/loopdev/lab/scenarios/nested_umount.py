"""nested-umount: xfstests xfs/049's shape — an ext2 image on an xfs loop mount;
``umount inner; umount outer``.

If the inner loop device's backing file (on the xfs) is released asynchronously after the inner
umount returns, the outer umount finds the xfs still busy: EBUSY.
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
class NestedUmount:
    """Mount outer (xfs, loop), mount inner (ext2 image inside it, loop), unmount both."""

    udev: bool = True
    model_only: bool = False
    source: str = "xfstests tests/xfs/049"

    @property
    def name(self) -> str:
        return "nested-umount+udev" if self.udev else "nested-umount"

    @property
    def title(self) -> str:
        return (
            "ext2 image on an xfs loop mount: umount inner; umount outer "
            f"(udev {'on' if self.udev else 'off'})"
        )

    def _paths(self, env: Env) -> tuple[str, str, str, str]:
        outer_img, outer = env.path("xfs.img"), env.path("outer")
        inner = env.path("inner")
        return outer_img, outer, f"{outer}/ext2.img", inner

    def prepare(self, env: Env) -> None:
        outer_img, outer, inner_img, inner = self._paths(env)
        env.make_image("xfs", outer_img, size_mib=300)
        ensure_dir(env, outer)
        ensure_dir(env, inner)
        env.userspace.mount_loop(outer_img, outer, read_only=False, step="prepare: mount outer")
        try:
            env.make_image("ext2", inner_img, size_mib=8)
        finally:
            force_umount(env, outer)
            detach_backed_by(env, outer_img)

    def trial(self, env: Env) -> None:
        outer_img, outer, inner_img, inner = self._paths(env)
        env.userspace.mount_loop(outer_img, outer, read_only=False, step="mount outer")
        env.userspace.mount_loop(inner_img, inner, read_only=False, step="mount inner")
        timed_umount(env, inner, "umount inner")
        env.userspace.umount(outer, step="umount outer")

    def cleanup(self, env: Env) -> None:
        outer_img, outer, inner_img, inner = self._paths(env)
        force_umount(env, inner)
        detach_backed_by(env, inner_img)
        force_umount(env, outer)
        detach_backed_by(env, outer_img)
        remove(env, inner, outer, outer_img)
