"""loopdev: Linux loop devices that stay correct under asynchronous teardown.

Every function takes an optional ``kernel`` (a :class:`loopdev.kernel.Kernel`); by default the
running Linux kernel is used, and the model kernel can be passed instead.

The names below are imported on first use (``loopdev.attach`` loads :mod:`loopdev.control`
then), so that ``import loopdev`` and the ``loopdev`` command start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.control import attach
    from loopdev.device import LoopDevice, detach, detach_all
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
    from loopdev.loopctl import find_free, remove
    from loopdev.mount import Mount, mount_image, mounted, umount
    from loopdev.notices import (
        DirectIOWarning,
        LoopdevWarning,
        ReadOnlyFallbackWarning,
        SizeWarning,
    )
    from loopdev.query import find, list_devices
    from loopdev.reuse import open_existing
    from loopdev.settle import device_holders, path_holders, wait_detached
    from loopdev.status import LoopStatus

#: public name → the module that defines it
_HOME = {
    "attach": "control",
    "LoopDevice": "device",
    "detach": "device",
    "detach_all": "device",
    "find_free": "loopctl",
    "remove": "loopctl",
    "DirectIOWarning": "notices",
    "LoopdevWarning": "notices",
    "ReadOnlyFallbackWarning": "notices",
    "SizeWarning": "notices",
    "BusyError": "errors",
    "Holder": "errors",
    "ImageError": "errors",
    "InvalidArgumentError": "errors",
    "LoopdevError": "errors",
    "MountError": "errors",
    "NoFreeDeviceError": "errors",
    "NotALoopDeviceError": "errors",
    "NotAttachedError": "errors",
    "NotMountedError": "errors",
    "NotPermittedError": "errors",
    "TeardownTimeoutError": "errors",
    "Mount": "mount",
    "mount_image": "mount",
    "mounted": "mount",
    "umount": "mount",
    "find": "query",
    "list_devices": "query",
    "open_existing": "reuse",
    "device_holders": "settle",
    "path_holders": "settle",
    "wait_detached": "settle",
    "LoopStatus": "status",
}

__all__ = [
    "BusyError",
    "DirectIOWarning",
    "Holder",
    "ImageError",
    "InvalidArgumentError",
    "LoopDevice",
    "LoopStatus",
    "LoopdevError",
    "LoopdevWarning",
    "Mount",
    "MountError",
    "NoFreeDeviceError",
    "NotALoopDeviceError",
    "NotAttachedError",
    "NotMountedError",
    "NotPermittedError",
    "ReadOnlyFallbackWarning",
    "SizeWarning",
    "TeardownTimeoutError",
    "attach",
    "detach",
    "detach_all",
    "device_holders",
    "find",
    "find_free",
    "list_devices",
    "mount_image",
    "mounted",
    "open_existing",
    "path_holders",
    "remove",
    "umount",
    "wait_detached",
]


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'loopdev' has no attribute {name!r}")
    module = __import__(f"loopdev.{home}", fromlist=[name])
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
