"""A frozen copy of the ``loopdev`` package for the guests.

Guests import loopdev from the host's root over 9p. Reading the live source tree would let an
edit made while the lab runs reach half of the guests; instead every run copies the package
once into the cache (keyed by its content), compiled to bytecode, and the guests import that
copy (``PYTHONPATH``)."""

from __future__ import annotations

import compileall
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import loopdev
from loopdev.vm.cache import cache_dir

#: snapshots not used for this long are removed when a new one is made
KEEP_SECONDS = 7 * 24 * 3600


def _files(package: Path) -> list[Path]:
    return sorted(
        p
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    )


def content_key(package: Path) -> str:
    """A hash of every file's relative path and bytes."""
    h = hashlib.sha256()
    for p in _files(package):
        h.update(str(p.relative_to(package)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def code_snapshot(package: Path | None = None) -> Path:
    """The directory to put on the guest's ``PYTHONPATH`` (it holds ``loopdev/``)."""
    package = package or Path(loopdev.__file__).parent
    base = cache_dir("vm-code")
    key = content_key(package)
    final = base / key
    if (final / "loopdev" / "__init__.py").exists():
        os.utime(final)
        return final
    staged = Path(tempfile.mkdtemp(prefix="staging-", dir=base))
    try:
        for p in _files(package):
            dest = staged / "loopdev" / p.relative_to(package)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
        # bytecode made here: the guest's emulated CPU would compile every import again
        compileall.compile_dir(str(staged), quiet=2, workers=1)
        try:
            os.rename(staged, final)
        except OSError:  # another run made the same snapshot meanwhile
            shutil.rmtree(staged, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    _prune(base, keep=final)
    return final


def _prune(base: Path, keep: Path) -> None:
    now = time.time()
    for entry in base.iterdir():
        if entry == keep:
            continue
        try:
            old = now - entry.stat().st_mtime > KEEP_SECONDS
        except OSError:
            continue
        if old or (entry.name.startswith("staging-") and now - entry.stat().st_mtime > 3600):
            shutil.rmtree(entry, ignore_errors=True)
