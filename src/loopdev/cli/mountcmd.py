"""``loopdev mount IMAGE DIR`` and ``loopdev umount TARGET``."""

from __future__ import annotations

from loopdev.cli import default_ref
from loopdev.cli.getopt import UsageError, parse, seconds
from loopdev.cli.notices import Notices
from loopdev.cli.options import MOUNT, UMOUNT
from loopdev.errors import InvalidArgumentError, NotPermittedError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO

    from loopdev.cli.getopt import Parsed
    from loopdev.cli.options import Command

CAP_SYS_ADMIN = 21


def require_sys_admin(what: str) -> None:
    """NotPermittedError unless we hold CAP_SYS_ADMIN (mount(2) and umount(2) need it)."""
    import os

    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            status = f.read()
    except OSError:
        return  # cannot tell: let the system call decide
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            if not int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1:
                raise NotPermittedError(
                    f"{what} needs root (CAP_SYS_ADMIN); you are uid {os.geteuid()}",
                    hint="run it with sudo",
                )
            return


def positionals(ns: Parsed, command: Command) -> list[str]:
    """Exactly as many positional arguments as ``command`` takes, or a UsageError."""
    want = [p.name for p in command.positionals]
    if len(ns.args) < len(want):
        missing = " ".join(want[len(ns.args) :])
        raise UsageError(f"missing {missing}", hint=f"see `{command.name} --help`")
    if len(ns.args) > len(want):
        extra = " ".join(ns.args[len(want) :])
        raise UsageError(f"unexpected arguments: {extra}", hint=f"see `{command.name} --help`")
    return list(ns.args)


def partition(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgumentError(
            f"--partition {text!r}: not a partition number", hint="partitions count from 1"
        )
    return int(text)


def main(word: str, argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    command = MOUNT if word == "mount" else UMOUNT
    ns = parse(command, argv)
    if ns.flag("help"):
        from loopdev.cli.helptext import command_help

        out.write(command_help(command))
        return 0
    if word == "mount":
        return run_mount(ns, out, err)
    return run_umount(ns, out)


def run_mount(ns: Parsed, out: TextIO, err: TextIO) -> int:
    from loopdev.mount import mount_image

    image, target = positionals(ns, MOUNT)
    part = partition(ns.text("partition"))
    require_sys_admin("mounting")
    ref = ns.text("loop_ref")
    with Notices(err, "loopdev mount"):
        m = mount_image(
            image,
            target,
            fstype=ns.text("types"),
            read_only=ns.flag("read_only"),
            options=ns.text("options") or "",
            reuse=not ns.flag("no_reuse"),
            partition=part,
            loop_ref=ref if ref is not None else default_ref("mount"),
        )
    if ns.flag("json"):
        from loopdev.cli.listing import mount_json

        out.write(mount_json(m))
    elif ns.flag("verbose"):
        how = "reused" if m.reused else "new"
        mode = "ro" if m.read_only else "rw"
        out.write(f"{m.image} mounted on {m.target} ({m.fstype}, {mode}) via {m.device} ({how})\n")
    return 0


def run_umount(ns: Parsed, out: TextIO) -> int:
    from loopdev.mount import DEFAULT_UMOUNT_TIMEOUT, umount

    (target,) = positionals(ns, UMOUNT)
    timeout = seconds(ns.text("timeout"), DEFAULT_UMOUNT_TIMEOUT)
    require_sys_admin("unmounting")
    umount(
        target,
        timeout=timeout,
        lazy=ns.flag("lazy"),
        recursive=ns.flag("recursive"),
        rmdir=ns.flag("rmdir"),
    )
    if ns.flag("verbose"):
        out.write(f"{target} unmounted\n")
    return 0
