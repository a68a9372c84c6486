"""The ``loopdev`` command: losetup's command line, plus the mount/umount/run subcommands and
the lab/vm plugins.

The first word decides: ``mount``, ``umount``, ``run`` and the plugins (``lab``, ``vm``) are
subcommands; anything else is parsed as a losetup command line. Errors are printed as
``loopdev: <message>`` (``loopdev mount: <message>`` for a subcommand), with the holders and
a hint on following lines, on stderr, and the exit code tells the kind of failure
(``loopdev --help`` lists them).

Start-up time matters (a boot mounting fifty images, scripts calling it in a loop): this
module imports only what the command asked for.
"""

from __future__ import annotations

import sys

from loopdev.errors import LoopdevError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import TextIO

#: Subcommands provided by modules of their own: ``add_parser(subparsers)`` and ``run(args)``.
PLUGINS = {"lab": "loopdev.cli.lab", "vm": "loopdev.cli.vm"}
#: Subcommands of this package: word → module with ``main(argv, out, err) -> int``.
SUBCOMMANDS = {"mount": "mountcmd", "umount": "mountcmd", "run": "runcmd"}


def _plugin(name: str) -> ModuleType | None:
    import importlib

    try:
        return importlib.import_module(PLUGINS[name])
    except ModuleNotFoundError as e:
        if e.name == PLUGINS[name]:
            return None
        raise _broken(name, e) from e
    except ImportError as e:
        raise _broken(name, e) from e


def _broken(name: str, e: ImportError) -> LoopdevError:
    """A plugin that is there but cannot be imported: say so in one line, not a traceback."""
    return LoopdevError(
        f"`loopdev {name}` cannot start: {PLUGINS[name]} fails to import ({e})",
        hint="the other commands work without it; reinstall loopdev or report the error",
    )


def run_plugin(name: str, argv: Sequence[str]) -> int:
    module = _plugin(name)
    if module is None:
        raise LoopdevError(
            f"`loopdev {name}` is not available: this installation has no {PLUGINS[name]} module",
            hint="install a loopdev that includes it; the other commands work without it",
        )
    import argparse

    parser = argparse.ArgumentParser(prog="loopdev")
    sub = parser.add_subparsers(dest="command", required=True)
    module.add_parser(sub)
    args = parser.parse_args([name, *argv])
    result = module.run(args)
    return int(result or 0)


def dispatch(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    first = argv[0] if argv else ""
    if first in ("-V", "--version") and len(argv) == 1:
        from loopdev.cli import version

        out.write(version())
        return 0
    if first in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(f"loopdev.cli.{SUBCOMMANDS[first]}")
        code: int = module.main(first, argv[1:], out, err)
        return code
    if first in PLUGINS:
        return run_plugin(first, argv[1:])
    from loopdev.cli.losetup import Losetup
    from loopdev.cli.lsargs import parse

    return Losetup(out, err).run(parse(argv))


def _os_error(e: OSError) -> LoopdevError:
    """An OSError the library did not translate: keep the system's words."""
    import errno

    from loopdev.errors import NotPermittedError

    where = f"{e.filename}: " if e.filename else ""
    text = f"{where}{e.strerror or e}"
    if e.errno in (errno.EPERM, errno.EACCES):
        return NotPermittedError(text, hint="run as root (loop devices need CAP_SYS_ADMIN)")
    return LoopdevError(text)


def _prefix(argv: Sequence[str]) -> str:
    """``loopdev``, or ``loopdev mount`` for a subcommand's errors."""
    return f"loopdev {argv[0]}" if argv and argv[0] in SUBCOMMANDS else "loopdev"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loopdev`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        # file names that are not valid UTF-8 are printed as the bytes they are
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="surrogateescape")
    out, err = sys.stdout, sys.stderr
    try:
        return dispatch(args, out, err)
    except LoopdevError as e:
        from loopdev.cli.notices import report

        report(err, e, _prefix(args))
        return e.exit_code
    except BrokenPipeError:  # `loopdev -a | head -1`: the reader went away
        import os

        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - flushed at exit, never closed
        return 1
    except OSError as e:
        from loopdev.cli.notices import report

        failure = _os_error(e)
        report(err, failure, _prefix(args))
        return failure.exit_code
    except SystemExit as e:  # argparse --help in plugins
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        err.write(f"{_prefix(args)}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
