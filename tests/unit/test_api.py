"""The Python API as a program meets it: errors that are also the builtin exceptions, one-line
messages with the hint apart, a silent logger, and paths typed for ``pathlib`` users."""

from __future__ import annotations

import errno
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import loopdev
from loopdev.errors import Holder


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (loopdev.ImageError("img: no such file", errno=errno.ENOENT), FileNotFoundError),
        (loopdev.ImageError("img: cannot read it", errno=errno.EACCES), PermissionError),
        (loopdev.ImageError("img is a directory", errno=errno.EISDIR), IsADirectoryError),
        (loopdev.MountError("dir is not a directory", errno=errno.ENOTDIR), NotADirectoryError),
        (loopdev.NotPermittedError("needs root"), PermissionError),
        (loopdev.TeardownTimeoutError("still attached"), TimeoutError),
        (loopdev.BusyError("busy"), OSError),
        (loopdev.NotAttachedError("not attached"), OSError),
        (loopdev.InvalidArgumentError("bad offset"), ValueError),
    ],
)
def test_errors_are_also_the_builtin(error: loopdev.LoopdevError, builtin: type) -> None:
    assert isinstance(error, loopdev.LoopdevError) and isinstance(error, builtin)
    assert str(error) == error.message  # one line, no hint in it
    again = pickle.loads(pickle.dumps(error))  # crosses process boundaries intact
    assert type(again) is type(error) and again.errno == error.errno


def test_errno_filename_device_and_hint_are_attributes() -> None:
    e = loopdev.ImageError(
        "/x.img: no such file", hint="check the image path", errno=errno.ENOENT, filename="/x.img"
    )
    assert (e.errno, e.filename, e.strerror) == (
        errno.ENOENT,
        "/x.img",
        "No such file or directory",
    )
    assert e.hint == "check the image path" and e.details() == ["hint: check the image path"]
    b = loopdev.BusyError(
        "/dev/loop3 is busy",
        holders=[Holder("mount", "/dev/loop3 is mounted on /mnt", target="/mnt")],
        device="/dev/loop3",
    )
    assert b.device == "/dev/loop3" and b.errno == errno.EBUSY
    assert b.details() == ["held by: /dev/loop3 is mounted on /mnt"]
    assert b.exit_code == 8 and str(b) == "/dev/loop3 is busy"


def test_errors_without_errno_are_not_os_errors() -> None:
    e = loopdev.NoFreeDeviceError("no free loop device")
    assert not isinstance(e, OSError) and e.errno is None


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True
    )


def test_the_logger_is_silent_unless_the_application_configures_logging() -> None:
    quiet = _python(
        """
        import warnings
        warnings.simplefilter("ignore")
        from loopdev.notices import SizeWarning, warn
        warn("image.img: Warning: file is smaller than 512 bytes", SizeWarning)
        """
    )
    assert (quiet.returncode, quiet.stderr) == (0, "")
    configured = _python(
        """
        import logging, warnings
        warnings.simplefilter("ignore")
        logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
        from loopdev.notices import SizeWarning, warn
        warn("image.img: Warning: file is smaller than 512 bytes", SizeWarning)
        import loopdev.notices
        print(any(type(h).__name__ == "NullHandler" for h in loopdev.notices.logger().handlers))
        """
    )
    assert configured.stdout == "True\n"
    assert (
        configured.stderr == "loopdev WARNING image.img: Warning: file is smaller than 512 bytes\n"
    )


def test_pathlib_paths_type_check_everywhere(tmp_path: Path) -> None:
    """mypy --strict accepts ``Path`` wherever the API takes a path; ``Mount.image`` and
    ``Mount.target`` are both ``str``."""
    mypy_api = pytest.importorskip("mypy.api")
    program = tmp_path / "uses_paths.py"
    program.write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            import loopdev

            img, mnt = Path("disk.img"), Path("/mnt")
            dev = loopdev.attach(img, device=Path("/dev/loop7"))
            again = loopdev.LoopDevice.open(Path(dev.path))
            loopdev.detach(Path("/dev/loop7"), lazy=True)
            found: list[loopdev.LoopStatus] = loopdev.find(img)
            reused = loopdev.open_existing(img)
            with loopdev.mount_image(img, mnt, loop_device=Path("/dev/loop7")) as m:
                both: tuple[str, str] = (m.image, m.target)
            with loopdev.mounted(img, mnt, partition=1) as m2:
                m2.umount()
            loopdev.umount(mnt, recursive=True)
            holders: list[loopdev.Holder] = loopdev.device_holders(Path("/dev/loop7"))
            users = loopdev.path_holders(mnt)
            gone: bool = loopdev.wait_detached(Path("/dev/loop7"), timeout=1.0)
            """
        )
    )
    out, err, status = mypy_api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(program)]
    )
    assert status == 0, out + err
