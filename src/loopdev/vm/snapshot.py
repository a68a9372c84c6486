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

#: snapshots kept besides the newest ones (each is the whole package, ~1 MB + bytecode)
KEEP = 4
#: a snapshot used this recently is never removed (another run's guests may be reading it)
IN_USE_SECONDS = 3600

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
    """Remove snapshots beyond the :data:`KEEP` most recently used, and abandoned staging
    directories, but nothing used within :data:`IN_USE_SECONDS`."""
    now = time.time()
    entries = []
    for entry in base.iterdir():
        try:
            entries.append((entry.stat().st_mtime, entry))
        except OSError:
            continue
    entries.sort(reverse=True)
    for rank, (mtime, entry) in enumerate(entries):
        if entry == keep or now - mtime < IN_USE_SECONDS:
            continue
        if rank >= KEEP or entry.name.startswith("staging-"):
            shutil.rmtree(entry, ignore_errors=True)
