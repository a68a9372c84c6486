"""loopdev: Linux loop devices that stay correct under asynchronous teardown.

Every function takes an optional ``kernel`` (a :class:`loopdev.kernel.Kernel`); by default the
running Linux kernel is used, and the model kernel can be passed instead.
"""

from loopdev.control import ReadOnlyFallbackWarning, attach
from loopdev.device import LoopDevice, detach
from loopdev.errors import (
    BusyError,
    Holder,
    ImageError,
    InvalidArgumentError,
    LoopdevError,
    MountError,
    NoFreeDeviceError,
    NotALoopDeviceError,
    NotAttachedError,
    NotMountedError,
    NotPermittedError,
    TeardownTimeoutError,
)
from loopdev.mount import Mount, mount_image, mounted, umount
from loopdev.query import detach_all, find, list_devices, open_existing, remove
from loopdev.settle import device_holders, path_holders, wait_detached
from loopdev.status import LoopStatus

__version__ = "0.1.0"

__all__ = [
    "BusyError",
    "Holder",
    "ImageError",
    "InvalidArgumentError",
    "LoopDevice",
    "LoopStatus",
    "LoopdevError",
    "Mount",
    "MountError",
    "NoFreeDeviceError",
    "NotALoopDeviceError",
    "NotAttachedError",
    "NotMountedError",
    "NotPermittedError",
    "ReadOnlyFallbackWarning",
    "TeardownTimeoutError",
    "attach",
    "detach",
    "detach_all",
    "device_holders",
    "find",
    "list_devices",
    "mount_image",
    "mounted",
    "open_existing",
    "path_holders",
    "remove",
    "umount",
    "wait_detached",
]
