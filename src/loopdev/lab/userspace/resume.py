"""Userspace of claim 6 (the 2022 thread's lockdep chain, docs/lab.md): a nested loop setup on a
freezable filesystem, and the programs that each take one link of the chain.

``open_mutex``/``lo_mutex`` → (wait for loop I/O) → ``sb_writers`` of the backing filesystem →
``&of->mutex`` of ``/sys/power/resume`` → ``system_transition_mutex`` → ``open_mutex``.

* :func:`backing_writer` — a write to the inner loop device: the loop worker writes the
  backing file on the host filesystem (``sb_start_write``).
* :func:`sendfile_resume` — ``sendfile`` from ``/sys/power/resume`` into a file on the host
  filesystem: ``sb_writers`` (output) held while reading the kernfs file (``of->mutex``).
* :func:`resume_writer` — writing the inner device's ``MAJ:MIN`` to ``/sys/power/resume``:
  ``of->mutex`` held while ``swsusp_check`` opens the device (``open_mutex``, ``lo_open``).
* :func:`freezer` — FIFREEZE then FITHAW on the host filesystem.
* :func:`clear_fd` — ``LOOP_CLR_FD`` on the inner device (v5.16 tears down holding
  ``lo_mutex`` and waits for in-flight I/O).

Everything goes through the port; the model provides ``sendfile`` and FIFREEZE. The real
kernel is never asked to do this (writing ``/sys/power/resume`` is not for a shared machine).
"""

from __future__ import annotations

from dataclasses import dataclass

from loopdev import abi
from loopdev.kernel import Kernel

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
RESUME = "/sys/power/resume"

#: ext4 and ext2 superblock magic (offset 1080), what mkfs would leave
EXT_MAGIC = (1080, b"\x53\xef")


@dataclass
class ChainSetup:
    """The nested loop devices: host image on /tmp → loop ``host_n`` mounted (ext4) at
    ``host``; inner image on the host filesystem → loop ``inner_n`` (``inner_fd`` open)."""

    host: str
    inner_image: str
    host_n: int
    inner_n: int
    inner_fd: int
    inner_rdev: int


def write_image(k: Kernel, path: str, size: int) -> None:
    """An image with the ext2/3/4 superblock magic."""
    data = bytearray(size)
    off, magic = EXT_MAGIC
    data[off : off + len(magic)] = magic
    fd = k.open(path, abi.O_RDWR | abi.O_CREAT | abi.O_TRUNC, 0o644)
    try:
        k.pwrite(fd, bytes(data), 0)
    finally:
        k.close(fd)


def attach(k: Kernel, image: str, flags: int = 0) -> tuple[int, int]:
    """LOOP_CTL_GET_FREE + LOOP_CONFIGURE; (number, open O_RDWR fd of the device)."""
    ctl = k.open("/dev/loop-control", abi.O_RDWR)
    try:
        n = k.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
    finally:
        k.close(ctl)
    lfd = k.open(f"/dev/loop{n}", abi.O_RDWR)
    ifd = k.open(image, abi.O_RDWR)
    try:
        info = abi.LoopInfo64(lo_flags=flags, lo_file_name=image)
        k.ioctl(lfd, abi.LOOP_CONFIGURE, abi.LoopConfig(fd=ifd, info=info).pack())
    except OSError:
        k.close(lfd)
        raise
    finally:
        k.close(ifd)
    return n, lfd


def setup_chain(k: Kernel, workdir: str = "/tmp", inner_flags: int = 0) -> ChainSetup:
    """Host ext4 image → loop, mounted; an ext2 image on it → a second loop device."""
    host_img, host = f"{workdir}/host.img", f"{workdir}/host"
    write_image(k, host_img, 256 << 10)
    k.mkdir(host)
    host_n, hfd = attach(k, host_img)
    k.mount(f"/dev/loop{host_n}", host, "ext4")
    k.close(hfd)
    inner = f"{host}/inner.img"
    write_image(k, inner, 64 << 10)
    inner_n, ifd = attach(k, inner, inner_flags)
    return ChainSetup(host, inner, host_n, inner_n, ifd, k.fstat(ifd).rdev)


def backing_writer(k: Kernel, fd: int, offset: int = 4096) -> None:
    """One block written to the inner loop device and synced, so that the loop worker writes
    the backing file now (a real kernel would otherwise keep the block in the device's page
    cache until the last close's ``sync_blockdev``, after a LOOP_CLR_FD teardown)."""
    k.pwrite(fd, b"\x5a" * 512, offset)
    k.fsync(fd)


def sendfile_resume(k: Kernel, out_path: str, resume_fd: int | None = None) -> int:
    """``sendfile(out, /sys/power/resume)``; ``resume_fd`` shares an already open file."""
    out = k.open(out_path, abi.O_WRONLY | abi.O_CREAT | abi.O_TRUNC, 0o644)
    src = resume_fd if resume_fd is not None else k.open(RESUME, abi.O_RDONLY)
    try:
        return k.sendfile(out, src, None, 64)
    finally:
        if resume_fd is None:
            k.close(src)
        k.close(out)


def resume_writer(k: Kernel, rdev: int, resume_fd: int | None = None) -> None:
    """Write ``MAJ:MIN`` of a device to ``/sys/power/resume``."""
    fd = resume_fd if resume_fd is not None else k.open(RESUME, abi.O_WRONLY)
    try:
        k.write(fd, f"{abi.major(rdev)}:{abi.minor(rdev)}\n".encode())
    finally:
        if resume_fd is None:
            k.close(fd)


def freezer(k: Kernel, mountpoint: str) -> None:
    """FIFREEZE, then FITHAW, on the filesystem mounted at `mountpoint`."""
    fd = k.open(mountpoint, abi.O_RDONLY | abi.O_DIRECTORY)
    try:
        k.ioctl(fd, FIFREEZE)
        k.ioctl(fd, FITHAW)
    finally:
        k.close(fd)


def clear_fd(k: Kernel, fd: int) -> None:
    """``LOOP_CLR_FD`` on an open loop device."""
    k.ioctl(fd, abi.LOOP_CLR_FD)


__all__ = [
    "FIFREEZE", "FITHAW", "RESUME", "ChainSetup", "attach", "backing_writer", "clear_fd",
    "freezer", "resume_writer", "sendfile_resume", "setup_chain", "write_image",
]  # fmt: skip
