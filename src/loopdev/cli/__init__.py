"""The ``loopdev`` command line (entry point: :func:`loopdev.cli.main.main`)."""

from __future__ import annotations


def version() -> str:
    """``loopdev --version``."""
    from loopdev import __version__

    return f"loopdev {__version__} (losetup-compatible command line of util-linux 2.38)\n"


def default_ref(command: str) -> str:
    """The loop-ref of a device ``loopdev <command>`` attaches when none is given: it names
    the tool, the command and the process, so ``loopdev -D --ref-prefix loopdev/`` finds the
    ones that were left behind."""
    import os

    return f"loopdev/{command}/{os.getpid()}"
