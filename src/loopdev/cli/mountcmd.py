"""``loopdev mount IMAGE DIR`` and ``loopdev umount DIR``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn, TextIO

from loopdev._port import resolve
from loopdev.cli.lsargs import UsageError
from loopdev.cli.sizes import size_option
from loopdev.errors import NotPermittedError
from loopdev.kernel import Kernel
from loopdev.mount import DEFAULT_UMOUNT_TIMEOUT, mount_image, umount

CAP_SYS_ADMIN = 21

MOUNT_EPILOG = """\
Examples:
  loopdev mount disk.img /mnt              detect the filesystem, mount read-write
  loopdev mount root.squashfs /mnt -r      read-only
  loopdev mount disk.img /mnt -t ext4 -o noatime,offset=1MiB
A device already attached to the same image (same offset, size limit and read-only mode) is
reused safely; a new one is attached with autoclear, so umount detaches it.
"""

UMOUNT_EPILOG = """\
umount returns only once the loop device of the mount is really detached, so
`loopdev umount inner; loopdev umount outer` works. When the mount is busy the processes
using it are named; kernel-only references (io_uring after kill -9) are waited out up to
--timeout seconds.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def _mount_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="loopdev mount",
        description="Mount a filesystem image on a directory through a loop device.",
        epilog=MOUNT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="the filesystem image")
    p.add_argument("target", metavar="dir", help="the (empty, unmounted) directory to mount on")
    p.add_argument("-t", "--types", metavar="TYPE", help="filesystem type (default: detect)")
    p.add_argument(
        "-o",
        "--options",
        metavar="OPTS",
        default="",
        help="mount options, comma separated (ro, noatime, ..., offset=N, sizelimit=N)",
    )
    p.add_argument("-r", "--read-only", action="store_true", help="mount read-only")
    p.add_argument(
        "--no-reuse", action="store_true", help="always attach a new loop device"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="say what was mounted")
    return p


def _umount_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="loopdev umount",
        description="Unmount a directory and wait until its loop device is gone.",
        epilog=UMOUNT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="dir", help="the mount point")
    p.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=DEFAULT_UMOUNT_TIMEOUT,
        help=f"wait at most S seconds for a busy mount or device (default {DEFAULT_UMOUNT_TIMEOUT:g})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="say what was unmounted")
    return p


def require_sys_admin(k: Kernel, what: str) -> None:
    """NotPermittedError unless we hold CAP_SYS_ADMIN (mount(2) and umount(2) need it)."""
    try:
        status = k.readfile("/proc/self/status").decode()
    except OSError:
        return  # cannot tell: let the system call decide
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            if not int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1:
                raise NotPermittedError(
                    f"{what} needs root (CAP_SYS_ADMIN); you are uid {k.geteuid()}",
                    hint="run it with sudo",
                )
            return


def _split_loop_options(options: str) -> tuple[str, int, int]:
    """mount(8)'s loop options offset=N and sizelimit=N, taken out of ``options``."""
    rest: list[str] = []
    offset = sizelimit = 0
    for opt in filter(None, options.split(",")):
        key, eq, value = opt.partition("=")
        if eq and key == "offset":
            offset = size_option(value, "offset=")
        elif eq and key == "sizelimit":
            sizelimit = size_option(value, "sizelimit=")
        elif opt != "loop":
            rest.append(opt)
    return ",".join(rest), offset, sizelimit


def run_mount(argv: Sequence[str], out: TextIO) -> int:
    ns = _mount_parser().parse_args(argv)
    k = resolve(None)
    require_sys_admin(k, "mounting")
    options, offset, sizelimit = _split_loop_options(ns.options)
    m = mount_image(
        ns.image,
        ns.target,
        fstype=ns.types,
        read_only=ns.read_only,
        options=options,
        reuse=not ns.no_reuse,
        offset=offset,
        sizelimit=sizelimit,
        kernel=k,
    )
    if ns.verbose:
        how = "reused" if m.reused else "attached"
        mode = "ro" if m.read_only else "rw"
        out.write(f"{m.image} mounted on {m.target} ({m.fstype}, {mode}) via {m.device} ({how})\n")
    return 0


def run_umount(argv: Sequence[str], out: TextIO) -> int:
    ns = _umount_parser().parse_args(argv)
    if not ns.timeout >= 0:
        raise UsageError("--timeout must not be negative")
    k = resolve(None)
    require_sys_admin(k, "unmounting")
    umount(ns.target, timeout=ns.timeout, kernel=k)
    if ns.verbose:
        out.write(f"{ns.target} unmounted\n")
    return 0
