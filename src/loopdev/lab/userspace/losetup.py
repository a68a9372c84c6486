"""A minimal ``losetup(8)``: ``losetup -f --show [-r] [-P] FILE`` and ``losetup -d DEVICE...``,
with lib/loopdev.c's allocation (LOOP_CTL_GET_FREE, LOOP_CONFIGURE, EBUSY → next device)."""

from __future__ import annotations

import errno
from collections.abc import Sequence

from loopdev import abi
from loopdev.kernel import Kernel, RunResult
from loopdev.lab.userspace.libmount import UtilLinuxVersion
from loopdev.lab.userspace.loopcxt import LoopCxt, LoopError
from loopdev.lab.userspace.program import EX_FAILURE, fail, ok, strerror

#: util-linux's losetup gives up after this many "device stolen" retries (losetup.c).
SETUP_RETRIES = 64


def _attach(
    kernel: Kernel, ul: UtilLinuxVersion, path: str, readonly: bool, show: bool,
    partscan: bool = False,
) -> RunResult:
    try:
        backing = kernel.realpath(path)
    except OSError:
        backing = path
    lc = LoopCxt(kernel, overlap_errors_skip=ul.overlap_errors_skip)
    for _ in range(SETUP_RETRIES):
        try:
            lc.find_unused()
        except LoopError as e:
            return fail(
                EX_FAILURE, f"losetup: cannot find an unused loop device: {strerror(e.code)}"
            )
        lc.set_backing_file(backing)
        lc.set_flags(
            (abi.LO_FLAGS_READ_ONLY if readonly else 0)
            | (abi.LO_FLAGS_PARTSCAN if partscan else 0)
        )
        try:
            lc.setup_device(configure_fallback_enosys=ul.configure_fallback_enosys)
        except LoopError as e:
            if e.code == errno.EBUSY:
                continue
            lc.set_device(None)
            return fail(
                EX_FAILURE, f"losetup: {path}: failed to set up loop device: {strerror(e.code)}"
            )
        device = lc.device
        lc.set_device(None)
        return ok(device + "\n" if show else "")
    lc.set_device(None)
    return fail(
        EX_FAILURE, f"losetup: {path}: failed to set up loop device: {strerror(errno.EBUSY)}"
    )


def _detach(kernel: Kernel, devices: Sequence[str]) -> RunResult:
    for dev in devices:
        try:
            fd = kernel.open(dev, abi.O_RDONLY | abi.O_CLOEXEC)
        except OSError as e:
            return fail(
                EX_FAILURE, f"losetup: {dev}: detach failed: {strerror(e.errno or errno.EIO)}"
            )
        try:
            kernel.ioctl(fd, abi.LOOP_CLR_FD, 0)
        except OSError as e:
            return fail(
                EX_FAILURE, f"losetup: {dev}: detach failed: {strerror(e.errno or errno.EIO)}"
            )
        finally:
            kernel.close(fd)
    return ok()


def losetup_main(kernel: Kernel, argv: Sequence[str], ul: UtilLinuxVersion) -> RunResult:
    args = list(argv[1:])
    if args[:1] in (["-d"], ["--detach"]):
        if len(args) < 2:
            return fail(EX_FAILURE, "losetup: option requires an argument -- 'd'")
        return _detach(kernel, args[1:])
    flags = {a for a in args if a.startswith("-")}
    files = [a for a in args if not a.startswith("-")]
    if not flags & {"-f", "--find"} or len(files) != 1:
        return fail(
            EX_FAILURE, "losetup: only '-f [--show] [-r] [-P] FILE' and '-d DEVICE' are modelled"
        )
    readonly = bool(flags & {"-r", "--read-only"})
    partscan = bool(flags & {"-P", "--partscan"})
    return _attach(kernel, ul, files[0], readonly, "--show" in flags, partscan)
