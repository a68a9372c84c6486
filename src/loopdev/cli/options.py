"""Every option of every ``loopdev`` command, defined once.

The parser (:mod:`loopdev.cli.getopt`), ``--help`` (:mod:`loopdev.cli.helptext`), the man page
(:mod:`loopdev.cli.manpage`) and the shell completions (:mod:`loopdev.cli.completion`) are all
made from these tables, so they cannot disagree.
"""

from __future__ import annotations


class Opt:
    """One option: ``-s``/``--long``, its argument (a metavar like ``<num>``; optional when
    ``optional``), the value a flag stores, the help line, the help group it is listed in
    (a blank line between groups) and what its argument completes to ("file", "dir",
    "loopdev", "column", "shell" or a tuple of words)."""

    __slots__ = (
        "arg",
        "choices",
        "complete",
        "dest",
        "group",
        "help",
        "long",
        "optional",
        "short",
        "value",
    )

    def __init__(
        self,
        long: str,
        short: str | None = None,
        *,
        arg: str | None = None,
        help: str,
        dest: str | None = None,
        value: object = True,
        optional: bool = False,
        choices: tuple[str, ...] | None = None,
        group: int = 0,
        complete: str | tuple[str, ...] | None = None,
    ) -> None:
        self.long = long
        self.short = short
        self.arg = arg
        self.help = help
        self.dest = dest or long.replace("-", "_")
        self.value = value
        self.optional = optional
        self.choices = choices
        self.group = group
        self.complete = choices if choices and complete is None else complete

    @property
    def takes_arg(self) -> bool:
        return self.arg is not None

    def spelling(self) -> str:
        """``-o, --offset <num>`` / ``    --direct-io[=<on|off>]``, as help lists it."""
        head = f"-{self.short}, " if self.short else "    "
        tail = ""
        if self.arg is not None:
            tail = f"[={self.arg}]" if self.optional else f" {self.arg}"
        return f"{head}--{self.long}{tail}"


class Positional:
    """A positional argument: its metavar, help text and what it completes to."""

    __slots__ = ("complete", "help", "name")

    def __init__(self, name: str, help: str, complete: str | None = None) -> None:
        self.name = name
        self.help = help
        self.complete = complete


class Command:
    """A command line: ``loopdev`` itself (losetup's options) or a subcommand."""

    __slots__ = (
        "description",
        "examples",
        "name",
        "notes",
        "options",
        "positionals",
        "rest",
        "summary",
        "usage",
    )

    def __init__(
        self,
        name: str,
        *,
        usage: tuple[str, ...],
        summary: str,
        description: str = "",
        options: tuple[Opt, ...],
        positionals: tuple[Positional, ...] = (),
        rest: int | None = None,
        examples: tuple[tuple[str, str], ...] = (),
        notes: str = "",
    ) -> None:
        self.name = name
        self.usage = usage
        self.summary = summary
        self.description = description
        self.options = options
        self.positionals = positionals
        #: option parsing stops after this many positional arguments (the rest, e.g. the
        #: command of ``loopdev run``, is left as it is); None: options anywhere
        self.rest = rest
        self.examples = examples
        self.notes = notes

    @property
    def word(self) -> str:
        """The subcommand word (``mount``), or "" for ``loopdev`` itself."""
        return self.name.partition(" ")[2]


_HELP = Opt("help", "h", help="display this help", group=9)

LOSETUP = Command(
    "loopdev",
    usage=(
        "loopdev [options] [<loopdev>]",
        "loopdev [options] -f | <loopdev> <file>",
        "loopdev mount [options] <image> <dir>",
        "loopdev umount [options] <dir>|<image>|<loopdev>",
        "loopdev run [options] <image> [--mount <dir>] -- <command>...",
        "loopdev lab ...            (race lab; see `loopdev lab --help`)",
        "loopdev vm ...             (real kernels in QEMU; see `loopdev vm --help`)",
    ),
    summary="set up and control loop devices, safely",
    description=(
        "Set up and control loop devices. The command line is losetup's (util-linux 2.38), so "
        "`alias losetup=loopdev` works; detach waits until the device is really gone, or says "
        "who holds it."
    ),
    options=(
        Opt("all", "a", help="list all used devices"),
        Opt(
            "detach", "d", arg="<loopdev>...", help="detach one or more devices", complete="loopdev"
        ),
        Opt(
            "detach-all", "D", help="detach all used devices (--loop-ref/--ref-prefix: only those)"
        ),
        Opt("find", "f", help="find first unused device"),
        Opt("set-capacity", "c", arg="<loopdev>", help="resize the device", complete="loopdev"),
        Opt(
            "associated",
            "j",
            arg="<file>",
            help="list all devices associated with <file>",
            complete="file",
        ),
        Opt("nooverlap", "L", help="avoid possible conflict between devices"),
        Opt(
            "remove",
            None,
            arg="<loopdev>...",
            help="remove unused device nodes",
            complete="loopdev",
        ),
        Opt("offset", "o", arg="<num>", help="start at offset <num> into file", group=1),
        Opt(
            "sizelimit",
            None,
            arg="<num>",
            help="device is limited to <num> bytes of the file",
            group=1,
        ),
        Opt(
            "sector-size",
            "b",
            arg="<num>",
            help="set the logical sector size to <num>",
            group=1,
            complete=("512", "1024", "2048", "4096"),
        ),
        Opt(
            "partscan",
            "P",
            help="create a partitioned loop device (waits for its partitions)",
            group=1,
        ),
        Opt("read-only", "r", help="set up a read-only loop device", group=1),
        Opt(
            "direct-io",
            None,
            arg="<on|off>",
            optional=True,
            choices=("on", "off"),
            help="open backing file with O_DIRECT",
            group=1,
        ),
        Opt(
            "loop-ref",
            None,
            arg="<string>",
            help="loop device reference (also filters -a/-l/-D)",
            group=1,
        ),
        Opt(
            "ref-prefix",
            None,
            arg="<prefix>",
            help="-a/-l/-D: only devices whose reference starts so",
            group=1,
        ),
        Opt("show", None, help="print device name after setup (with -f)", group=1),
        Opt("verbose", "v", help="verbose mode", group=1),
        Opt("wait", None, help="detach: always wait until the device is really unbound", group=2),
        Opt(
            "no-wait",
            None,
            dest="wait",
            value=False,
            help="detach: return at once, even if held",
            group=2,
        ),
        Opt(
            "timeout",
            None,
            arg="<seconds>",
            help="detach: give up waiting after this long (default 5)",
            group=2,
        ),
        Opt(
            "json",
            "J",
            help="use JSON --list output format (with setup: the device as JSON)",
            group=3,
        ),
        Opt("list", "l", help="list info about all or specified (default)", group=3),
        Opt("noheadings", "n", help="don't print headings for --list output", group=3),
        Opt(
            "output",
            "O",
            arg="<cols>",
            help="specify columns to output for --list (+COLS appends)",
            group=3,
            complete="column",
        ),
        Opt("output-all", None, help="output all columns", group=3),
        Opt("raw", None, help="use raw --list output format", group=3),
        Opt(
            "completion",
            None,
            arg="<shell>",
            help="print the bash or zsh completion script",
            group=8,
            choices=("bash", "zsh"),
        ),
        Opt("man", None, help="print the man page (roff)", group=8),
        _HELP,
        Opt("version", "V", help="display version", group=9),
    ),
    positionals=(
        Positional("<loopdev>", "the loop device (/dev/loopN)", "loopdev"),
        Positional("<file>", "the image file", "file"),
    ),
    examples=(
        ("loopdev -f --show disk.img", "attach to the first free device, print its name"),
        ("loopdev -r -P -f --show disk.img", "read-only, with partitions (/dev/loopNp1 ...)"),
        ("loopdev -o 1MiB --sizelimit 64MiB -f --show disk.img", ""),
        ("loopdev -f -J disk.img", "attach, describe the device as JSON"),
        ("loopdev -l -J", "list attached devices as JSON"),
        ("loopdev -j disk.img", "which devices use disk.img"),
        ("loopdev -d /dev/loop3", "detach; returns once loop3 is really unbound"),
        ("loopdev -d /dev/loop3 --wait --timeout 30", "... waiting up to 30 s even if mounted"),
        (
            "loopdev -D --ref-prefix loopdev/run/",
            "clean up devices leaked by killed `loopdev run`s",
        ),
        ("loopdev mount disk.img /mnt -r", "attach + mount (reuses a matching device safely)"),
        ("loopdev umount /mnt", "unmount; returns once the loop device is gone"),
        ("loopdev run -r root.squashfs --mount /mnt -- ls /mnt", "mount, run, always clean up"),
    ),
    notes=(
        "Sizes (<num>) take losetup's suffixes: KiB, MiB, GiB... (K, M, G too) and KB, MB, GB.\n"
        "Detaching a device that is mounted or held open marks it to be detached when its "
        "holders let go, as losetup does, and says who holds it; --wait waits for that.\n"
        "Every device loopdev attaches carries a loop reference (--loop-ref, default "
        "loopdev/<command>/<pid>), so that leaked ones can be found and detached."
    ),
)

MOUNT = Command(
    "loopdev mount",
    usage=("loopdev mount [options] <image> <dir>",),
    summary="mount a filesystem image on a directory through a loop device",
    description=(
        "Mount a filesystem image on a directory through a loop device. A device already "
        "attached to the same image (same offset, size limit and read-only mode) is reused "
        "safely; a new one is attached with autoclear, so umount detaches it. squashfs and "
        "erofs images are attached and mounted read-only."
    ),
    options=(
        Opt(
            "types", "t", arg="<type>", help="filesystem type (default: detect)", complete="fstype"
        ),
        Opt(
            "options",
            "o",
            arg="<opts>",
            help="mount options, comma separated (ro, noatime, ..., loop=/dev/loopN, offset=N, sizelimit=N)",
        ),
        Opt("read-only", "r", help="mount read-only"),
        Opt("partition", None, arg="<n>", help="mount partition <n> of a partitioned image"),
        Opt("no-reuse", None, help="always attach a new loop device"),
        Opt(
            "loop-ref",
            None,
            arg="<string>",
            help="reference of a new loop device (default loopdev/mount/<pid>)",
        ),
        Opt("json", "J", help="describe the mount as JSON"),
        Opt("verbose", "v", help="say what was mounted"),
        _HELP,
    ),
    positionals=(
        Positional("<image>", "the filesystem image", "file"),
        Positional("<dir>", "the (empty, unmounted) directory to mount on", "dir"),
    ),
    examples=(
        ("loopdev mount disk.img /mnt", "detect the filesystem, mount read-write"),
        ("loopdev mount root.squashfs /mnt", "read-only (squashfs always is)"),
        ("loopdev mount disk.img /mnt -t ext4 -o noatime,offset=1MiB", ""),
        ("loopdev mount --partition 2 disk.img /mnt", "the second partition"),
        ("loopdev mount -o loop=/dev/loop7 disk.img /mnt", "on that loop device"),
    ),
)

UMOUNT = Command(
    "loopdev umount",
    usage=("loopdev umount [options] <dir>|<image>|<loopdev>",),
    summary="unmount, and wait until its loop device is gone",
    description=(
        "Unmount a directory (or the last mount of an image or a loop device) and return only "
        "once its loop device is really detached, so `loopdev umount inner; loopdev umount "
        "outer` works. When the mount is busy the processes using it are named; kernel-only "
        "references (io_uring after kill -9) are waited out up to --timeout seconds."
    ),
    options=(
        Opt("recursive", "R", help="unmount the mounts below it first"),
        Opt("lazy", "l", help="detach it from the tree now, clean up when no longer busy"),
        Opt("rmdir", None, help="remove the directory after unmounting it"),
        Opt(
            "timeout",
            None,
            arg="<seconds>",
            help="wait at most this long for a busy mount or device (default 5)",
        ),
        Opt("verbose", "v", help="say what was unmounted"),
        _HELP,
    ),
    positionals=(
        Positional("<target>", "the mount point, or an image or loop device mounted", "file"),
    ),
    examples=(
        ("loopdev umount /mnt", ""),
        ("loopdev umount disk.img", "wherever disk.img is mounted (last mount)"),
        ("loopdev umount -R /mnt", "with everything mounted below /mnt"),
    ),
)

RUN = Command(
    "loopdev run",
    usage=("loopdev run [options] <image> [--mount <dir>] -- <command> [<arg>...]",),
    summary="attach (and mount) an image, run a command, always clean up",
    description=(
        "Attach <image> (and with --mount, mount it on <dir>), run <command> with "
        "LOOPDEV_DEVICE (and LOOPDEV_MOUNT) in its environment, then unmount, detach and wait "
        "until the device is gone, also when the command fails or on Ctrl-C. The exit status "
        "is the command's (128+N if a signal N killed it)."
    ),
    options=(
        Opt("read-only", "r", help="attach (and mount) read-only"),
        Opt(
            "mount",
            "m",
            arg="<dir>",
            help="mount the image on <dir> while the command runs",
            complete="dir",
        ),
        Opt(
            "types",
            "t",
            arg="<type>",
            help="with --mount: filesystem type (default: detect)",
            complete="fstype",
        ),
        Opt("options", "o", arg="<opts>", help="with --mount: mount options"),
        Opt("partition", None, arg="<n>", help="with --mount: mount partition <n>"),
        Opt("partscan", "P", help="attach with partitions (waits for their nodes)"),
        Opt(
            "loop-ref",
            None,
            arg="<string>",
            help="the device's reference (default loopdev/run/<pid>)",
        ),
        Opt(
            "timeout",
            None,
            arg="<seconds>",
            help="wait at most this long for the cleanup (default 5)",
        ),
        Opt("verbose", "v", help="say what is set up and torn down"),
        _HELP,
    ),
    positionals=(
        Positional("<image>", "the image", "file"),
        Positional("<command>", "the command to run, and its arguments", "command"),
    ),
    rest=1,
    examples=(
        ("loopdev run -r root.squashfs --mount /mnt -- ls -l /mnt", ""),
        ("loopdev run disk.img -- sh -c 'mkfs.ext4 -q \"$LOOPDEV_DEVICE\"'", ""),
    ),
)

SUBCOMMANDS: dict[str, Command] = {"mount": MOUNT, "umount": UMOUNT, "run": RUN}
COMMANDS: tuple[Command, ...] = (LOSETUP, MOUNT, UMOUNT, RUN)
