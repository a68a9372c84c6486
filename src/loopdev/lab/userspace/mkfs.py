"""Image creators (``mkfs.ext2/3/4``, ``mkfs.xfs``, ``mkfs.erofs``, ``mksquashfs``) as port
programs: they size a file and write the filesystem's real superblock magic at its real offset
(:mod:`loopdev.lab.images`), so a probe or a modelled mount(2) recognises the type.

Command lines: ``mkfs.TYPE [-q] [-F] [-f] FILE [SIZE]`` (SIZE in bytes, suffix K/M/G allowed;
an existing file keeps its size unless SIZE is given), ``mksquashfs SRCDIR FILE [-noappend]``
and ``mkfs.erofs FILE SRCDIR`` (their images get :data:`DEFAULT_SIZE`).
"""

from __future__ import annotations

from collections.abc import Sequence

from loopdev import abi
from loopdev.kernel import Kernel, RunResult
from loopdev.lab import images
from loopdev.lab.userspace.program import EX_FAILURE, fail, ok, strerror, strtosize

DEFAULT_SIZE = 1 << 20


def parse_size(text: str) -> int:
    """A positive image size (``4096``, ``64K``, ``1M``); raises ValueError."""
    n = strtosize(text)
    if n <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return n


def make_image(kernel: Kernel, path: str, fstype: str, size: int | None) -> int:
    """Write ``fstype``'s superblock into ``path`` (created if missing); returns the size.
    A missing size keeps an existing file's size (at least one probe block)."""
    fd = kernel.open(path, abi.O_RDWR | abi.O_CREAT | abi.O_CLOEXEC, 0o644)
    try:
        if size is None:
            current = kernel.fstat(fd).size
            size = current if current >= images.PROBE_SIZE else DEFAULT_SIZE
        for offset, data in images.superblock(fstype, size):
            kernel.pwrite(fd, data, offset)
        if kernel.fstat(fd).size < size:
            kernel.pwrite(fd, b"\0", size - 1)
        kernel.fsync(fd)
    finally:
        kernel.close(fd)
    return size


def mkfs_main(kernel: Kernel, argv: Sequence[str], fstype: str) -> RunResult:
    """``mkfs.<fstype> [-q] [-F] [-f] FILE [SIZE]``."""
    prog = f"mkfs.{fstype}"
    positional = [a for a in argv[1:] if not a.startswith("-")]
    if fstype == "erofs" and len(positional) == 2:
        positional = positional[:1]  # mkfs.erofs IMAGE SOURCEDIR
    if not positional or len(positional) > 2:
        return fail(EX_FAILURE, f"Usage: {prog} [-q] [-F] device [size]")
    try:
        size = parse_size(positional[1]) if len(positional) == 2 else None
    except ValueError as e:
        return fail(EX_FAILURE, f"{prog}: invalid size - {e}")
    try:
        make_image(kernel, positional[0], fstype, size)
    except OSError as e:
        return fail(EX_FAILURE, f"{prog}: {strerror(e.errno or 5)} while setting up superblock")
    except ValueError as e:
        return fail(EX_FAILURE, f"{prog}: {e}")
    return ok()


def mksquashfs_main(kernel: Kernel, argv: Sequence[str]) -> RunResult:
    """``mksquashfs SOURCE IMAGE [-noappend] [-size SIZE]`` (``-size`` is the lab's)."""
    args = list(argv[1:])
    size: int | None = DEFAULT_SIZE
    if "-size" in args:
        i = args.index("-size")
        try:
            size = parse_size(args[i + 1])
        except (IndexError, ValueError):
            return fail(EX_FAILURE, "mksquashfs: -size: missing or bad size")
        del args[i : i + 2]
    positional = [a for a in args if not a.startswith("-")]
    if len(positional) != 2:
        return fail(EX_FAILURE, "SYNTAX:mksquashfs source1 source2 ...  dest [options]")
    try:
        make_image(kernel, positional[1], "squashfs", size)
    except OSError as e:
        return fail(EX_FAILURE, f"Could not create destination file: {strerror(e.errno or 5)}")
    return ok()
