"""Choosing the kernel: the one passed in, else the running Linux kernel."""

from __future__ import annotations

from loopdev.kernel import Kernel


def resolve(kernel: Kernel | None) -> Kernel:
    if kernel is not None:
        return kernel
    from loopdev.linux import default_kernel

    return default_kernel()


def why(e: OSError) -> str:
    """``'Device or resource busy (EBUSY)'`` for an OSError."""
    import errno as _errno

    name = _errno.errorcode.get(e.errno or 0, str(e.errno))
    return f"{e.strerror or name} ({name})"
