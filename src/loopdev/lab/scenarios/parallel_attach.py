"""parallel-attach: N allocators racing for free loop devices (parallel image builds).

Each allocator attaches its own image to a free device, checks that the device it got is
bound to its image (by backing inode), and detaches it. A user sees failures as "Device or
resource busy", a device bound to someone else's image, or a device that stays attached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from loopdev import abi
from loopdev.lab.scenarios.base import Env, ScenarioFailure
from loopdev.lab.scenarios.common import detach_backed_by, remove, run_children, wait_unbound


def _allocate(env: Env, image: str) -> None:
    k = env.kernel
    dev = env.userspace.attach(image, step="attach")
    fd = k.open(dev, abi.O_RDONLY)
    try:
        buf = abi.LoopInfo64.buffer()
        k.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
        info = abi.LoopInfo64.unpack(buf)
        st = k.stat(image)
        if (info.lo_device, info.lo_inode) != (st.dev, st.ino):
            raise ScenarioFailure(
                "attach", "wrong device", f"{dev} is bound to {info.lo_file_name}, not {image}"
            )
    except OSError as e:
        raise ScenarioFailure("verify", "ENXIO" if e.errno == 6 else str(e.errno), str(e)) from e
    finally:
        k.close(fd)
    env.userspace.detach(dev, step="detach")
    if wait_unbound(env, dev, 2.0) is None:
        raise ScenarioFailure("after detach", "still bound", f"{dev} still attached")


@dataclass
class ParallelAttach:
    """N allocators attach, verify and detach at the same time."""

    allocators: int = 3
    udev: bool = True
    model_only: bool = False
    name: str = "parallel-attach"
    title: str = "N allocators racing for free devices"
    source: str = "util-linux/systemd/containerd attach retry loops (LOOP_CTL_GET_FREE races)"

    def _images(self, env: Env) -> list[str]:
        return [env.path(f"par{i}.img") for i in range(self.allocators)]

    def prepare(self, env: Env) -> None:
        for img in self._images(env):
            env.make_image("ext2", img, size_mib=4)

    def trial(self, env: Env) -> None:
        children: dict[str, Callable[[], None]] = {
            f"allocator{i}": functools.partial(_allocate, env, img)
            for i, img in enumerate(self._images(env))
        }
        for failure in run_children(env, children):
            raise failure

    def cleanup(self, env: Env) -> None:
        for img in self._images(env):
            detach_backed_by(env, img)
            remove(env, img)
