"""losetup's command line, parsed into a :class:`Plan` (what to do, with which values).

The rules follow util-linux 2.38 ``losetup``: which options exclude each other, which action
a bare ``losetup DEV`` or ``losetup DEV FILE`` means, which options only make sense when
setting a device up. Differences, on purpose: ``--json``, ``--raw``, ``--noheadings`` and
``--output-all`` imply ``--list``; usage errors exit 2 (losetup: 1); ``--loop-ref`` also
filters listings and ``-D`` (util-linux 2.40 only sets it at setup); ``--remove``, ``--wait``,
``--no-wait`` and ``--timeout`` are ours.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from loopdev import abi
from loopdev.cli import listing
from loopdev.cli.sizes import size_option
from loopdev.errors import InvalidArgumentError, LoopdevError

DEFAULT_TIMEOUT = 5.0


class UsageError(LoopdevError):
    """The command line itself is wrong (exit 2, like argparse)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = "see `loopdev --help`") -> None:
        super().__init__(message, hint=hint)


class Action(enum.Enum):
    CREATE = "create"  # losetup [-f] [DEV] FILE
    DELETE = "delete"  # -d DEV...
    DELETE_ALL = "delete-all"  # -D
    SHOW = "show"  # -a, -j FILE, -l
    SHOW_ONE = "show-one"  # losetup DEV
    FIND_FREE = "find-free"  # -f
    SET_CAPACITY = "set-capacity"  # -c DEV
    SET_DIRECT_IO = "set-direct-io"  # --direct-io[=on|off] DEV
    SET_BLOCKSIZE = "set-blocksize"  # -b SIZE DEV
    REMOVE = "remove"  # --remove DEV...
    HELP = "help"
    VERSION = "version"


@dataclass
class Plan:
    """A parsed losetup command line."""

    action: Action
    devices: list[str] = field(default_factory=list)
    file: str | None = None
    offset: int = 0
    offset_given: bool = False
    sizelimit: int = 0
    block_size: int | None = None
    lo_flags: int = 0
    direct_io: bool = False
    show: bool = False
    nooverlap: bool = False
    loop_ref: str | None = None
    verbose: bool = False
    # listing
    list: bool = False
    columns: tuple[str, ...] = listing.DEFAULT_COLUMNS
    json: bool = False
    raw: bool = False
    headings: bool = True
    # detach
    wait: bool = True
    timeout: float = DEFAULT_TIMEOUT

    @property
    def read_only(self) -> bool:
        return bool(self.lo_flags & abi.LO_FLAGS_READ_ONLY)

    @property
    def partscan(self) -> bool:
        return bool(self.lo_flags & abi.LO_FLAGS_PARTSCAN)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="loopdev", add_help=False)
    add = p.add_argument
    add("-a", "--all", action="store_true")
    add("-b", "--sector-size", metavar="SIZE")
    add("-c", "--set-capacity", metavar="LOOPDEV")
    add("-d", "--detach", metavar="LOOPDEV")
    add("-D", "--detach-all", action="store_true")
    add("-f", "--find", action="store_true")
    add("-h", "--help", action="store_true")
    add("-j", "--associated", metavar="FILE")
    add("-J", "--json", action="store_true")
    add("-l", "--list", action="store_true")
    add("-L", "--nooverlap", action="store_true")
    add("-n", "--noheadings", action="store_true")
    add("-o", "--offset", metavar="NUM")
    add("-O", "--output", metavar="COLS")
    add("--output-all", action="store_true")
    add("--sizelimit", metavar="NUM")
    add("-P", "--partscan", action="store_true")
    add("-r", "--read-only", action="store_true")
    add("--direct-io", choices=("on", "off"))
    add("--raw", action="store_true")
    add("--show", action="store_true")
    add("-v", "--verbose", action="store_true")
    add("-V", "--version", action="store_true")
    add("--loop-ref", metavar="REF")
    add("--remove", metavar="LOOPDEV")
    add("--wait", dest="wait", action="store_true", default=True)
    add("--no-wait", dest="wait", action="store_false")
    add("--timeout", metavar="SECONDS")
    add("args", nargs="*")
    return p


def _normalize(argv: Sequence[str]) -> list[str]:
    """getopt's optional argument: ``--direct-io`` alone means ``--direct-io=on`` and never
    takes the next word (argparse would)."""
    out: list[str] = []
    for i, a in enumerate(argv):
        if a == "--":
            return out + list(argv[i:])
        if len(a) >= 5 and "=" not in a and "--direct-io".startswith(a):
            a = "--direct-io=on"
        out.append(a)
    return out


# Options that exclude each other (losetup's excl[] table; --remove joins the first row).
_EXCLUSIVE = (
    ("detach_all", "all", "set_capacity", "detach", "find", "associated", "remove"),
    ("detach_all", "set_capacity", "detach", "find", "list"),
    ("detach_all", "set_capacity", "detach", "find", "output"),
    ("json", "raw"),
)


def _flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given(ns: argparse.Namespace, dest: str) -> bool:
    v = getattr(ns, dest)
    return v not in (None, False)


def parse(argv: Sequence[str]) -> Plan:
    """The plan for a losetup-style command line (``argv`` without the program name)."""
    ns = build_parser().parse_intermixed_args(_normalize(argv))
    if ns.help:
        return Plan(Action.HELP)
    if ns.version:
        return Plan(Action.VERSION)
    for row in _EXCLUSIVE:
        given = [d for d in row if _given(ns, d)]
        if len(given) > 1:
            raise UsageError(
                "mutually exclusive arguments: " + " ".join(_flag_name(d) for d in given)
            )
    pos: list[str] = list(ns.args)
    plan = Plan(Action.HELP, verbose=ns.verbose, loop_ref=ns.loop_ref, nooverlap=ns.nooverlap)
    plan.wait = ns.wait
    if ns.timeout is not None:
        try:
            plan.timeout = float(ns.timeout)
        except ValueError:
            raise InvalidArgumentError(f"--timeout {ns.timeout!r}: not a number") from None
        if not plan.timeout >= 0:
            raise InvalidArgumentError(f"--timeout {ns.timeout}: must not be negative")
    if ns.offset is not None:
        plan.offset, plan.offset_given = size_option(ns.offset, "--offset"), True
    if ns.sizelimit is not None:
        plan.sizelimit = size_option(ns.sizelimit, "--sizelimit")
    if ns.sector_size is not None:
        plan.block_size = size_option(ns.sector_size, "--sector-size")
    plan.lo_flags = (abi.LO_FLAGS_READ_ONLY if ns.read_only else 0) | (
        abi.LO_FLAGS_PARTSCAN if ns.partscan else 0
    )
    plan.direct_io = ns.direct_io == "on"
    if plan.direct_io:
        plan.lo_flags |= abi.LO_FLAGS_DIRECT_IO
    plan.show = ns.show
    plan.json, plan.raw, plan.headings = ns.json, ns.raw, not ns.noheadings

    act: Action | None = None
    if ns.all:
        act = Action.SHOW
    if ns.associated is not None:
        act, plan.file = Action.SHOW, ns.associated
    if ns.set_capacity is not None:
        act, plan.devices = Action.SET_CAPACITY, [ns.set_capacity]
    if ns.detach is not None:
        act, plan.devices = Action.DELETE, [ns.detach]
    if ns.remove is not None:
        act, plan.devices = Action.REMOVE, [ns.remove]
    if ns.detach_all:
        act = Action.DELETE_ALL
    if ns.find:
        act = Action.FIND_FREE

    plan.list = bool(ns.list or ns.output or ns.output_all or ns.json or ns.raw or ns.noheadings)
    if ns.output_all:
        plan.columns = listing.ALL_COLUMNS
    if ns.output:
        plan.columns = listing.parse_columns(ns.output, plan.columns)
    if not argv:
        act, plan.list = Action.SHOW, True

    if act in (Action.DELETE, Action.REMOVE):
        plan.devices += pos
        pos = []
    if act is Action.FIND_FREE and pos:
        act, plan.file = Action.CREATE, pos.pop(0)
    if act is None and plan.list and not pos:
        act = Action.SHOW
    if act is None and len(pos) == 1:
        if ns.direct_io is not None:
            act = Action.SET_DIRECT_IO
            plan.lo_flags &= ~abi.LO_FLAGS_DIRECT_IO
        elif ns.sector_size is not None:
            act = Action.SET_BLOCKSIZE
        else:
            act = Action.SHOW_ONE
        plan.devices = [pos.pop(0)]
    if act is None:
        act = Action.CREATE
        if not pos:
            raise UsageError("no loop device specified")
        plan.devices = [pos.pop(0)]
        if not pos:
            raise UsageError("no file specified")
        plan.file = pos.pop(0)
    if pos:
        raise UsageError(f"unexpected arguments: {' '.join(pos)}")
    plan.action = act

    if act is not Action.CREATE and (plan.sizelimit or plan.lo_flags or plan.show):
        raise UsageError(
            "the options --sizelimit, --partscan, --read-only, --direct-io and --show "
            "are allowed during loop device setup only"
        )
    if plan.offset_given and act is not Action.CREATE and not (
        act is Action.SHOW and plan.file
    ):
        raise UsageError("the option --offset is not allowed in this context")
    if ns.sector_size is not None and act not in (Action.CREATE, Action.SET_BLOCKSIZE):
        raise UsageError("the option --sector-size is allowed during loop device setup only")
    return plan
