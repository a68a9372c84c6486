"""Choosing the kernel: the one passed in, else the running Linux kernel."""

from __future__ import annotations

from loopdev.kernel import Kernel

_default: Kernel | None = None


def resolve(kernel: Kernel | None) -> Kernel:
    global _default
    if kernel is not None:
        return kernel
    if _default is None:
        from loopdev.linux import default_kernel

        _default = default_kernel()
    return _default


def why(e: OSError) -> str:
    """``'Device or resource busy (EBUSY)'`` for an OSError."""
    import errno as _errno

    name = _errno.errorcode.get(e.errno or 0, str(e.errno))
    return f"{e.strerror or name} ({name})"
