"""Bad input to the ``loopdev`` command: the message users see, the exit code, and nothing
left attached or mounted afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rk import ImageMaker, Tracker, bound_loops, mounts

import loopdev.linux  # noqa: F401 - imported before forking children that drop root
from loopdev.cli.main import main

LOOPDEV_BIN = str(Path(sys.executable).with_name("loopdev"))
NOBODY = 65534

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def go(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return go


def nothing_bound_to(img: Path) -> bool:
    st = img.stat()
    return not [
        b for b in bound_loops() if (b.backing_dev, b.backing_ino) == (st.st_dev, st.st_ino)
    ]


def failed(result: tuple[int, str, str], code: int, *words: str) -> None:
    """Exit ``code``, nothing on stdout, ``loopdev: ...`` with ``words`` on stderr."""
    got, out, err = result
    assert got == code, (got, err)
    assert out == ""
    assert err.startswith("loopdev: "), err
    for w in words:
        assert w in err, (w, err)


# --- images ---------------------------------------------------------------------------------


def test_missing_image(run: Run, tmp_path: Path, tracker: Tracker) -> None:
    failed(run("-f", "--show", str(tmp_path / "nope.img")), 4, "nope.img: no such file", "hint:")


def test_directory_fifo_and_char_device_as_image(
    run: Run, tmp_path: Path, tracker: Tracker
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, what in (
        (tmp_path, "a directory"),
        (fifo, "a FIFO"),
        (Path("/dev/null"), "a character device"),
    ):
        failed(run("-f", "--show", str(path)), 4, str(path), what)
    failed(run("mount", "/dev/null", str(tmp_path)), 4, "a character device")


@pytest.fixture
def image_on_readonly_fs(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> Iterator[Path]:
    """A raw image file inside a read-only (squashfs) mount: O_RDWR fails with EROFS."""
    sq = make_image("squashfs", files={"disk.img": b"\0" * (1 << 20)})
    mnt = mount_dir("ro")
    subprocess.run(["mount", "-o", "loop,ro", str(sq), str(mnt)], check=True)
    img = mnt / "disk.img"
    tracker.add_image(img)
    try:
        yield img
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_read_write_on_read_only_image_falls_back_with_notice(
    run: Run, image_on_readonly_fs: Path
) -> None:
    code, out, err = run("-f", "--show", str(image_on_readonly_fs))
    assert code == 0
    dev = out.strip()
    assert (
        "write-protected" in err and "attaching read-only" in err and f"{dev} is read-only" in err
    )
    code, out, _ = run("-l", "-n", "-O", "RO", dev)
    assert out.strip() == "1"
    assert run("-d", dev)[0] == 0
    assert nothing_bound_to(image_on_readonly_fs)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-o", "8MiB"], ["offset 8388608 is past the end", "4194304 bytes"]),
        (["-o", "-512"], ["--offset -512: must not be negative"]),
        (["-o", "100"], ["offset 100 is not a multiple of 512"]),
        (["--sizelimit", "8MiB"], ["goes past the end"]),
        (["--sizelimit", "1000"], ["sizelimit 1000 is not a multiple of 512"]),
        (["--sizelimit", "many"], ["not a size"]),
        (["-b", "1000"], ["block size 1000 is not supported"]),
    ],
)
def test_bad_offsets_and_sizes(
    run: Run, make_image: ImageMaker, tracker: Tracker, argv: list[str], words: list[str]
) -> None:
    img = make_image("raw", size_mib=4)
    failed(run(*argv, "-f", "--show", str(img)), 5, *words)
    assert nothing_bound_to(img)


# --- devices --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["-d", "/dev/null"], ["-c", "/dev/null"], ["/dev/null"], ["--direct-io", "/dev/null"]],
)
def test_not_a_loop_device(run: Run, argv: list[str], tracker: Tracker) -> None:
    failed(run(*argv), 6, "/dev/null is not a loop device", "character device")


def test_not_a_loop_device_for_setup(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    failed(run("/dev/null", str(img)), 6, "/dev/null is not a loop device")
    failed(run("-d", "/dev/nonexistent-loop"), 6, "no such device")
    assert nothing_bound_to(img)


def test_show_and_detach_an_unbound_device(run: Run, tracker: Tracker) -> None:
    code, out, _ = run("-f")
    assert code == 0
    free = out.strip()
    failed(run(free), 12, f"{free} is not attached")
    failed(run("-d", free), 12, f"{free} is not attached")
    failed(run("-c", free), 12, "not attached")


def test_detach_a_mounted_device_is_refused(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    mnt = mount_dir("m")
    assert run("mount", str(img), str(mnt), "-r")[0] == 0
    dev = next(b.path for b in bound_loops() if b.backing_ino == img.stat().st_ino)
    failed(run("-d", dev), 8, f"{dev} cannot be detached", str(mnt), "hint:")
    assert (mnt / "f").read_bytes() == b"f"  # still mounted, untouched
    assert run("umount", str(mnt))[0] == 0
    assert tracker.leaks() == []


# --- mount / umount -------------------------------------------------------------------------


def test_mount_target_missing_or_already_mounted(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    mnt = mount_dir("m")
    failed(run("mount", str(img), str(mnt / "missing")), 10, "does not exist", "mkdir -p")
    assert nothing_bound_to(img)
    assert run("mount", str(img), str(mnt), "-r")[0] == 0
    other = make_image("squashfs", files={"g": b"g"})
    failed(run("mount", str(other), str(mnt), "-r"), 10, "already a mount point")
    assert nothing_bound_to(other)
    assert run("umount", str(mnt))[0] == 0
    assert tracker.leaks() == []


def test_mount_target_is_a_file(
    run: Run, make_image: ImageMaker, tmp_path: Path, tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    target = tmp_path / "file"
    target.write_text("")
    failed(run("mount", str(img), str(target)), 10, "is not a directory")
    assert nothing_bound_to(img)


def test_unknown_filesystem(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    raw = make_image("raw", size_mib=4)
    mnt = mount_dir("m")
    failed(run("mount", str(raw), str(mnt)), 10, "unknown filesystem")
    sq = make_image("squashfs", files={"f": b"f"})
    failed(
        run("mount", str(sq), str(mnt), "-t", "nosuchfs"), 10, "unknown filesystem type 'nosuchfs'"
    )
    failed(run("mount", str(sq), str(mnt), "-t", "ext4", "-r"), 10, "wrong filesystem type")
    assert nothing_bound_to(raw) and nothing_bound_to(sq)
    assert tracker.leaks() == []


def test_umount_not_mounted_and_busy(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    mnt = mount_dir("m")
    failed(run("umount", str(mnt)), 11, "is not a mount point")
    failed(run("umount", str(mnt / "missing")), 11, "missing")
    img = make_image("squashfs", files={"f": b"f"})
    assert run("mount", str(img), str(mnt), "-r")[0] == 0
    sleeper = subprocess.Popen(["sleep", "60"], cwd=mnt)
    try:
        failed(run("umount", str(mnt)), 8, "in use", f"pid {sleeper.pid}", "sleep")
        assert any(m.target == str(mnt) for m in mounts())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run("umount", str(mnt))[0] == 0
    assert tracker.leaks() == []


# --- command line and privileges ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["-a", "-D"],
        ["-r", "/dev/loop0"],
        ["/dev/loop0", "img", "extra"],
        ["-J", "--raw"],
    ],
)
def test_usage_errors_exit_2(run: Run, argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert code == 2 and out == "" and err.startswith("loopdev: ") and "--help" in err


@pytest.fixture
def public_image() -> Iterator[Path]:
    """An image that user nobody may read (pytest's tmp dirs are root-only)."""
    d = Path(tempfile.mkdtemp(prefix="loopdev-cli-nobody-"))
    os.chmod(d, 0o755)
    img = d / "disk.img"
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    os.chmod(img, 0o644)
    (d / "mnt").mkdir()
    try:
        yield img
    finally:
        shutil.rmtree(d)


def _as_nobody(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in a forked child that dropped to user nobody; (code, stdout, stderr).

    Forked rather than exec'd: the interpreter lives below /root, which nobody cannot read.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 70
        try:
            os.close(out_r)
            os.close(err_r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.chdir("/")
            sys.stdout = open(out_w, "w")  # noqa: SIM115
            sys.stderr = open(err_w, "w")  # noqa: SIM115
            code = main(list(argv))
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with open(out_r) as out, open(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, stderr


def test_not_root(public_image: Path, tracker: Tracker) -> None:
    tracker.add_image(public_image)
    for argv in (
        ["-f", "--show", str(public_image)],
        ["mount", str(public_image), str(public_image.parent / "mnt")],
        ["umount", str(public_image.parent / "mnt")],
        ["-d", "/dev/loop0"],
    ):
        code, out, err = _as_nobody(*argv)
        assert code == 3, (argv, err)
        assert out == ""
        assert err.startswith("loopdev: ") and "root" in err, err
    assert nothing_bound_to(public_image)


def _losetup_as_nobody(*argv: str) -> str:
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    r = subprocess.run(["losetup", *argv], capture_output=True, text=True, preexec_fn=drop, cwd="/")
    return r.stdout


def test_listings_without_root_match_losetup(
    run: Run, public_image: Path, tracker: Tracker
) -> None:
    """Not root: loop devices cannot be opened, so both tools show what sysfs tells."""
    tracker.add_image(public_image)
    code, out, _ = run("-f", "--show", "-o", "512", str(public_image))
    dev = out.strip()
    try:
        for argv in (["-a"], ["-j", str(public_image)], [dev], ["-l", dev], ["-l", "-J", dev]):
            code, out, err = _as_nobody(*argv)
            assert code == 0, (argv, err)
            assert out == _losetup_as_nobody(*argv), argv
        assert f"{dev}: []: ({public_image}), offset 512\n" in _as_nobody("-a")[1]
    finally:
        assert run("-d", dev)[0] == 0
