"""Debian's ``drivers/block/loop.c``, taken once out of the installed ``linux-source-6.1``
tarball into the cache (keyed by the source package's version)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loopdev.vm import debian
from loopdev.vm.cache import cache_dir

#: the file every patch changes, as patches name it (``a/drivers/block/loop.c``)
LOOP_C = "drivers/block/loop.c"


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive flock on ``<cache>/locks/<name>``: one process at a time fills an entry."""
    fd = os.open(cache_dir("locks") / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def source_version() -> str:
    """The installed linux-source package's version (e.g. ``6.1.192-3``)."""
    version = debian.package_version(debian.SOURCE_PACKAGE)
    if version is None:
        debian.source_tarball()  # raises with the install hint when the tarball is missing
        return "unknown"
    return version


def loop_c() -> Path:
    """The cached pristine ``loop.c`` (extracted on first use, ~10 s for the tarball)."""
    version = source_version()
    base = cache_dir("loop", f"src-{version}")
    final = base / LOOP_C
    if final.exists():
        return final
    tarball = debian.source_tarball()
    with cache_lock(f"src-{version}"):
        if final.exists():
            return final
        with tempfile.TemporaryDirectory(prefix="extract-", dir=base) as tmp:
            r = subprocess.run(
                ["tar", "-xJf", str(tarball), "-C", tmp, "--wildcards", f"*/{LOOP_C}"],
                capture_output=True,
                text=True,
            )
            found = list(Path(tmp).glob(f"*/{LOOP_C}"))
            if r.returncode != 0 or not found:
                raise debian.VmSetupError(
                    f"cannot extract {LOOP_C} from {tarball}: {r.stderr.strip()}"
                )
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found[0], str(final) + ".tmp")
            os.replace(str(final) + ".tmp", final)
    return final
