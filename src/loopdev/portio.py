"""Reading a whole file through the port's own system calls: the one implementation of
:meth:`loopdev.kernel.Kernel.readfile` (LinuxKernel and SimKernel both use it)."""

from __future__ import annotations

from loopdev import abi

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.kernel import Kernel


def read_whole(kernel: Kernel, path: str, limit: int = 1 << 20) -> bytes:
    """open + read until end of file (at most ``limit`` bytes) + close, through ``kernel``."""
    fd = kernel.open(path, abi.O_RDONLY | abi.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        total = 0
        while total < limit:
            chunk = kernel.read(fd, min(65536, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        kernel.close(fd)
