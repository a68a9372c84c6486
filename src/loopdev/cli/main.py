"""The ``loopdev`` command: losetup's command line, plus mount/umount/lab/vm subcommands.

The first word decides: ``mount``, ``umount`` and the plugins (``lab``, ``vm``) are
subcommands; anything else is parsed as a losetup command line. Errors are printed as
``loopdev: <message>`` (with hints and holders on following lines) on stderr, and the exit
code tells the kind of failure (``loopdev --help`` lists them).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TextIO

from loopdev.cli import helptext, lsargs, mountcmd
from loopdev.cli.losetup import Losetup
from loopdev.errors import LoopdevError, NotPermittedError

#: Subcommands provided by modules of their own: ``add_parser(subparsers)`` and ``run(args)``.
PLUGINS = {"lab": "loopdev.cli.lab", "vm": "loopdev.cli.vm"}


def _plugin(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(PLUGINS[name])
    except ModuleNotFoundError as e:
        if e.name == PLUGINS[name]:
            return None
        raise


def run_plugin(name: str, argv: Sequence[str]) -> int:
    module = _plugin(name)
    if module is None:
        raise LoopdevError(
            f"`loopdev {name}` is not available: this installation has no {PLUGINS[name]} "
            "module",
            hint="install a loopdev that includes it; the other commands work without it",
        )
    parser = argparse.ArgumentParser(prog="loopdev")
    sub = parser.add_subparsers(dest="command", required=True)
    module.add_parser(sub)
    args = parser.parse_args([name, *argv])
    result = module.run(args)
    return int(result or 0)


def dispatch(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    first = argv[0] if argv else ""
    if first == "mount":
        return mountcmd.run_mount(argv[1:], out)
    if first == "umount":
        return mountcmd.run_umount(argv[1:], out)
    if first in PLUGINS:
        return run_plugin(first, argv[1:])
    plan = lsargs.parse(argv)
    if plan.action is lsargs.Action.HELP:
        out.write(helptext.main_help())
        return 0
    if plan.action is lsargs.Action.VERSION:
        out.write(helptext.version())
        return 0
    return Losetup(out, err).run(plan)


def _os_error(e: OSError) -> LoopdevError:
    """An OSError the library did not translate: keep the system's words."""
    where = f"{e.filename}: " if e.filename else ""
    text = f"{where}{e.strerror or e}"
    if e.errno in (errno.EPERM, errno.EACCES):
        return NotPermittedError(text, hint="run as root (loop devices need CAP_SYS_ADMIN)")
    return LoopdevError(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loopdev`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    out, err = sys.stdout, sys.stderr
    try:
        return dispatch(args, out, err)
    except LoopdevError as e:
        err.write(f"loopdev: {e}\n")
        return e.exit_code
    except BrokenPipeError:  # `loopdev -a | head -1`: the reader went away
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - flushed at exit, never closed
        return 1
    except OSError as e:
        failure = _os_error(e)
        err.write(f"loopdev: {failure}\n")
        return failure.exit_code
    except SystemExit as e:  # argparse --help in subcommands
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        err.write("loopdev: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
