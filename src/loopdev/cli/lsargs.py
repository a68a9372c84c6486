"""losetup's command line, parsed into a :class:`Plan` (what to do, with which values).

The rules follow util-linux 2.38 ``losetup``: which options exclude each other, which action
a bare ``losetup DEV`` or ``losetup DEV FILE`` means, which options only make sense when
setting a device up, and that ``-n`` and ``--output-all`` alone do not make a listing.
Differences, on purpose: ``--json`` and ``--raw`` imply ``--list`` (with a device too; losetup
lists only when they are the sole argument), and ``--json`` during setup prints the new
device as JSON; usage errors exit 2 (losetup: 1); ``--loop-ref`` also filters listings and
``-D`` (util-linux 2.40 only sets it at setup); ``--ref-prefix``, ``--remove``, ``--wait``,
``--no-wait``, ``--timeout``, ``--completion`` and ``--man`` are ours.
"""

from __future__ import annotations

from loopdev import abi
from loopdev.cli import listing
from loopdev.cli.getopt import UsageError, seconds
from loopdev.cli.getopt import parse as getopt_parse
from loopdev.cli.options import LOSETUP

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from loopdev.cli.getopt import Parsed

DEFAULT_TIMEOUT = 5.0

__all__ = ["Action", "Plan", "UsageError", "parse"]


class Action:
    """What a losetup command line asks for (the values compare with ``is``)."""

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
    COMPLETION = "completion"  # --completion SHELL
    MAN = "man"  # --man


class Plan:
    """A parsed losetup command line."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.devices: list[str] = []
        self.file: str | None = None
        self.offset = 0
        self.offset_given = False
        self.sizelimit = 0
        self.block_size: int | None = None
        self.lo_flags = 0
        self.direct_io = False
        self.show = False
        self.nooverlap = False
        self.loop_ref: str | None = None
        self.ref_prefix: str | None = None
        self.verbose = False
        # listing
        self.list = False
        self.columns: tuple[str, ...] = listing.DEFAULT_COLUMNS
        self.json = False
        self.raw = False
        self.headings = True
        # detach: None waits unless the device is held (losetup's deferred detach)
        self.wait: bool | None = None
        self.timeout = DEFAULT_TIMEOUT
        self.shell: str | None = None

    @property
    def read_only(self) -> bool:
        return bool(self.lo_flags & abi.LO_FLAGS_READ_ONLY)

    @property
    def partscan(self) -> bool:
        return bool(self.lo_flags & abi.LO_FLAGS_PARTSCAN)


# Options that exclude each other (losetup's excl[] table; --remove joins the first row).
_EXCLUSIVE = (
    ("detach_all", "all", "set_capacity", "detach", "find", "associated", "remove"),
    ("detach_all", "set_capacity", "detach", "find", "list"),
    ("detach_all", "set_capacity", "detach", "find", "output"),
    ("json", "raw"),
    ("loop_ref", "ref_prefix"),
)


def _flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _size(ns: Parsed, dest: str, option: str) -> int | None:
    text = ns.text(dest)
    if text is None:
        return None
    from loopdev.sizes import size_option

    return size_option(text, option)


def parse(argv: Sequence[str]) -> Plan:
    """The plan for a losetup-style command line (``argv`` without the program name)."""
    ns = getopt_parse(LOSETUP, argv)
    if ns.flag("help"):
        return Plan(Action.HELP)
    if ns.flag("version"):
        return Plan(Action.VERSION)
    if ns.flag("man"):
        return Plan(Action.MAN)
    if "completion" in ns:
        plan = Plan(Action.COMPLETION)
        plan.shell = ns.text("completion")
        return plan
    for row in _EXCLUSIVE:
        given = [d for d in row if d in ns]
        if len(given) > 1:
            raise UsageError(
                "mutually exclusive arguments: " + " ".join(_flag_name(d) for d in given)
            )
    pos: list[str] = list(ns.args)
    plan = Plan(Action.HELP)
    plan.verbose = ns.flag("verbose")
    plan.loop_ref = ns.text("loop_ref")
    plan.ref_prefix = ns.text("ref_prefix")
    plan.nooverlap = ns.flag("nooverlap")
    if "wait" in ns:
        plan.wait = ns.get("wait") is True
    plan.timeout = seconds(ns.text("timeout"), DEFAULT_TIMEOUT)
    offset = _size(ns, "offset", "--offset")
    if offset is not None:
        plan.offset, plan.offset_given = offset, True
    plan.sizelimit = _size(ns, "sizelimit", "--sizelimit") or 0
    plan.block_size = _size(ns, "sector_size", "--sector-size")
    plan.lo_flags = (abi.LO_FLAGS_READ_ONLY if ns.flag("read_only") else 0) | (
        abi.LO_FLAGS_PARTSCAN if ns.flag("partscan") else 0
    )
    direct_io = ns.text("direct_io")
    plan.direct_io = direct_io == "on"
    if plan.direct_io:
        plan.lo_flags |= abi.LO_FLAGS_DIRECT_IO
    plan.show = ns.flag("show")
    plan.json, plan.raw, plan.headings = ns.flag("json"), ns.flag("raw"), not ns.flag("noheadings")

    act: str | None = None
    if ns.flag("all"):
        act = Action.SHOW
    associated = ns.text("associated")
    if associated is not None:
        act, plan.file = Action.SHOW, associated
    for dest, action in (
        ("set_capacity", Action.SET_CAPACITY),
        ("detach", Action.DELETE),
        ("remove", Action.REMOVE),
    ):
        value = ns.text(dest)
        if value is not None:
            act, plan.devices = action, [value]
    if ns.flag("detach_all"):
        act = Action.DELETE_ALL
    if ns.flag("find"):
        act = Action.FIND_FREE

    # losetup: -l, -O (and, ours, -J and --raw) make a listing; -n and --output-all alone
    # only change one
    plan.list = ns.flag("list") or "output" in ns or plan.json or plan.raw
    if ns.flag("output_all"):
        plan.columns = listing.ALL_COLUMNS
    output = ns.text("output")
    if output is not None:
        plan.columns = listing.parse_columns(output, plan.columns)
    if not argv:
        act, plan.list = Action.SHOW, True

    if act in (Action.DELETE, Action.REMOVE):
        plan.devices += pos
        pos = []
    if act is Action.FIND_FREE and pos:
        act, plan.file = Action.CREATE, pos.pop(0)
        if plan.json:  # -J during setup: describe the new device (not a listing)
            plan.list = False
    if act is None and plan.list and not pos:
        act = Action.SHOW
    if act is None and len(pos) == 1:
        if direct_io is not None:
            act = Action.SET_DIRECT_IO
            plan.lo_flags &= ~abi.LO_FLAGS_DIRECT_IO
        elif plan.block_size is not None:
            act = Action.SET_BLOCKSIZE
        else:
            act = Action.SHOW_ONE
        plan.devices = [pos.pop(0)]
    if act is None:
        act = Action.CREATE
        if not pos:
            raise UsageError("no loop device specified", hint=_create_hint(ns, argv))
        plan.devices = [pos.pop(0)]
        if not pos:
            raise UsageError("no file specified")
        plan.file = pos.pop(0)
        plan.list = False
    if pos:
        raise UsageError(f"unexpected arguments: {' '.join(pos)}")
    plan.action = act

    if act is not Action.CREATE and (plan.sizelimit or plan.lo_flags or plan.show):
        raise UsageError(
            "the options --sizelimit, --partscan, --read-only, --direct-io and --show "
            "are allowed during loop device setup only",
            hint=_create_hint(ns, argv),
        )
    if plan.offset_given and act is not Action.CREATE and not (act is Action.SHOW and plan.file):
        raise UsageError("the option --offset is not allowed in this context")
    if plan.block_size is not None and act not in (Action.CREATE, Action.SET_BLOCKSIZE):
        raise UsageError("the option --sector-size is allowed during loop device setup only")
    return plan


def _create_hint(ns: Parsed, argv: Sequence[str]) -> str:
    """For a setup that forgot -f (``loopdev --show IMG``, ``loopdev IMG``): suggest it."""
    if not ns.flag("find") and ns.args and not ns.args[0].startswith("/dev/"):
        rest = " ".join(argv)
        return f"to attach {ns.args[0]} to a free device, add -f: loopdev -f {rest}"
    return "see `loopdev --help`"
