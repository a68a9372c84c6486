"""Real-kernel test fixtures: the machine lock, real filesystem images and leak-proof cleanup.

* Every test here is skipped unless we are root and ``/dev/loop-control`` exists.
* The whole session holds ``flock(LOCK_EX)`` on :data:`LOCK_PATH` (others wait on it).
* ``make_image(kind, ...)`` builds a real image with the real mkfs tool in the test's tmp dir.
* ``tracker`` remembers every image (by st_dev/st_ino) and every mount directory a test uses;
  in ``finally`` it unmounts and detaches exactly the loop devices backed by those inodes
  (checked with LOOP_GET_STATUS64 on an open fd, never by name alone) and fails the test if it
  had to clean anything up that was not expected to remain.

This file deliberately does not use the loopdev library for cleanup: cleanup must work even
when the library under test is broken.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rk import ImageMaker, Run, Tracker, build_image

LOCK_PATH = "/run/loopdev-realkernel.lock"

_KERNEL_DIR = Path(__file__).resolve().parent


def _realkernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "real-kernel tests need root"
    if not os.path.exists("/dev/loop-control"):
        return "real-kernel tests need /dev/loop-control (loop driver)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_leftovers: the tracker may clean up leftovers without failing"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/kernel as ``kernel``; skip it all when unavailable."""
    reason = _realkernel_unavailable()
    for item in items:
        if _KERNEL_DIR not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.kernel)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def realkernel_lock() -> Iterator[None]:
    """Hold the machine-wide real-kernel lock for the whole session."""
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@pytest.fixture
def tracker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Tracker]:
    """Leak-proof bookkeeping; fails the test if it left a device or mount behind."""
    t = Tracker(base=tmp_path)
    leaked: list[str] = []
    try:
        yield t
    finally:
        leaked = t.wait_clean(2.0)
        if leaked:
            t.cleanup()
    remaining = t.leaks()
    assert not remaining, f"could not clean up: {remaining}"
    if leaked and not request.node.get_closest_marker("allow_leftovers"):
        pytest.fail(f"test left behind: {leaked}")


@pytest.fixture
def make_image(tmp_path: Path, tracker: Tracker) -> ImageMaker:
    """``make_image(kind, name=None, size_mib=16, files=None) -> Path``: a real image,
    registered with the tracker so any loop device backed by it is detached at the end."""
    counter = iter(range(1_000_000))

    def make(
        kind: str,
        name: str | None = None,
        *,
        size_mib: int = 16,
        files: dict[str, bytes] | None = None,
        directory: Path | None = None,
    ) -> Path:
        path = (directory or tmp_path) / (name or f"{kind}-{next(counter)}.img")
        build_image(kind, path, size_mib=size_mib, files=files, tmpdir=tmp_path)
        tracker.add_image(path)
        return path

    return make


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``run(*argv) -> (exit code, stdout, stderr)`` of the ``loopdev`` command, in this
    process."""
    from loopdev.cli.main import main

    def go(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return go


@pytest.fixture
def mount_dir(tmp_path: Path, tracker: Tracker) -> Callable[[str], Path]:
    """``mount_dir(name) -> Path``: a fresh directory to mount on, unmounted at the end."""

    def make(name: str = "mnt") -> Path:
        d = tmp_path / name
        d.mkdir(parents=True, exist_ok=True)
        tracker.add_mount_dir(d)
        return d

    return make
