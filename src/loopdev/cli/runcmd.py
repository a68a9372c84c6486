"""``loopdev run [-r] IMAGE [--mount DIR] -- COMMAND...``: attach (and mount), run COMMAND,
then always unmount, detach and wait until the device is gone (systemd-dissect's ``--with``).

COMMAND sees ``LOOPDEV_DEVICE`` (and ``LOOPDEV_MOUNT``). Ctrl-C reaches COMMAND (it is in the
terminal's process group) while loopdev waits for it and then cleans up; SIGTERM and SIGHUP
sent to loopdev are passed on to COMMAND. The exit status is COMMAND's (128+N when signal N
ended it, 127 when it cannot be started). If loopdev itself is killed, the device it leaves
carries the loop-ref ``loopdev/run/<pid>``: ``loopdev -D --ref-prefix loopdev/run/`` finds it.
"""

from __future__ import annotations

from loopdev.cli import default_ref
from loopdev.cli.getopt import UsageError, parse, seconds
from loopdev.cli.mountcmd import partition, require_sys_admin
from loopdev.cli.notices import Notices, report
from loopdev.cli.options import RUN
from loopdev.errors import LoopdevError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TextIO

    from loopdev.cli.getopt import Parsed

PREFIX = "loopdev run"


def main(word: str, argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    ns = parse(RUN, argv)
    if ns.flag("help"):
        from loopdev.cli.helptext import command_help

        out.write(command_help(RUN))
        return 0
    if not ns.args:
        raise UsageError("missing <image>", hint="see `loopdev run --help`")
    if not ns.rest:
        raise UsageError(
            "missing <command>",
            hint="give the command after --: loopdev run IMAGE -- COMMAND "
            "(see `loopdev run --help`)",
        )
    mount_dir = ns.text("mount")
    if mount_dir is None and any(d in ns for d in ("types", "options", "partition")):
        raise UsageError(
            "-t, -o and --partition need --mount <dir>", hint="see `loopdev run --help`"
        )
    require_sys_admin("attaching an image")
    return Run(ns, err).go()


class Run:
    """One ``loopdev run``: set up, run the command, clean up."""

    def __init__(self, ns: Parsed, err: TextIO) -> None:
        self.ns = ns
        self.err = err
        self.image = ns.args[0]
        self.verbose = ns.flag("verbose")
        self.timeout = seconds(ns.text("timeout"), 5.0)
        self.env: dict[str, str] = {}

    def say(self, text: str) -> None:
        if self.verbose:
            self.err.write(f"{PREFIX}: {text}\n")

    def go(self) -> int:
        cleanup = self.set_up()
        try:
            status = self.command()
        finally:
            failed = self.tear_down(cleanup)
        if failed is not None and status == 0:
            return failed
        return status

    def set_up(self) -> Callable[[], None]:
        """Attach (and mount); returns what undoes it."""
        ns = self.ns
        ref = ns.text("loop_ref")
        ref = ref if ref is not None else default_ref("run")
        mount_dir = ns.text("mount")
        with Notices(self.err, PREFIX):
            if mount_dir is not None:
                from loopdev.mount import mount_image, umount

                m = mount_image(
                    self.image,
                    mount_dir,
                    fstype=ns.text("types"),
                    read_only=ns.flag("read_only"),
                    options=ns.text("options") or "",
                    reuse=False,
                    partition=partition(ns.text("partition")),
                    loop_ref=ref,
                )
                self.env = {"LOOPDEV_DEVICE": m.device, "LOOPDEV_MOUNT": m.target}
                self.say(f"{self.image} mounted on {m.target} via {m.device}")
                return lambda: umount(m.target, timeout=self.timeout)
            from loopdev.control import attach

            dev = attach(
                self.image,
                read_only=ns.flag("read_only"),
                partscan=ns.flag("partscan"),
                loop_ref=ref,
            )
        self.env = {"LOOPDEV_DEVICE": dev.path}
        self.say(f"{self.image} attached to {dev.path}")

        def detach() -> None:
            dev.detach(timeout=self.timeout)

        return detach

    def command(self) -> int:
        """Run the command to its end; its exit status as a shell reports it."""
        import os
        import signal
        import subprocess

        argv = self.ns.rest
        try:
            proc = subprocess.Popen(argv, env={**os.environ, **self.env})
        except OSError as e:
            self.err.write(f"{PREFIX}: {argv[0]}: {e.strerror}\n")
            return 127 if isinstance(e, FileNotFoundError) else 126

        def forward(signum: int, _frame: object) -> None:
            if signum != signal.SIGINT:  # Ctrl-C reaches the command from the terminal
                proc.send_signal(signum)

        previous = {
            s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            code = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 128 - code if code < 0 else code

    def tear_down(self, cleanup: Callable[[], None]) -> int | None:
        """Undo the set-up (unmount, detach, wait); the exit code of a failure, else None."""
        try:
            with Notices(self.err, PREFIX):
                cleanup()
        except LoopdevError as e:
            report(self.err, e, PREFIX)
            return e.exit_code
        self.say("cleaned up: unmounted, detached and gone")
        return None
