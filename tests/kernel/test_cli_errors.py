"""Bad input to the ``loopdev`` command: the message users see, the exit code, and nothing
left attached or mounted afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings  # noqa: F401 - imported before dropping root, like the modules below
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rk import ImageMaker, Run, Tracker, bound_loops, mounts

# Imported before forking children that drop root: the interpreter and its standard
# library live below /root, which user nobody cannot read, and the CLI imports lazily.
import loopdev.cli.losetup
import loopdev.cli.lsargs
import loopdev.cli.mountcmd
import loopdev.cli.notices
import loopdev.control
import loopdev.device
import loopdev.linux
import loopdev.loopctl
import loopdev.mount
import loopdev.query
import loopdev.reuse
import loopdev.sizes
import loopdev.teardown  # noqa: F401
from loopdev.cli.main import main

LOOPDEV_BIN = str(Path(sys.executable).with_name("loopdev"))
NOBODY = 65534


def nothing_bound_to(img: Path) -> bool:
    st = img.stat()
    return not [
        b for b in bound_loops() if (b.backing_dev, b.backing_ino) == (st.st_dev, st.st_ino)
    ]


def failed(result: tuple[int, str, str], code: int, *words: str, prefix: str = "loopdev") -> None:
    """Exit ``code``, nothing on stdout, ``<prefix>: ...`` with ``words`` on stderr."""
    got, out, err = result
    assert got == code, (got, err)
    assert out == ""
    assert err.startswith(f"{prefix}: "), err
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
    failed(
        run("mount", "/dev/null", str(tmp_path)), 4, "a character device", prefix="loopdev mount"
    )


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
        # a device left on disk.img (a failed test) keeps the mount busy: detach it first
        for lp in tracker.our_loops():
            if lp.backing_ino == img.stat().st_ino:
                subprocess.run(["losetup", "-d", lp.path], check=False)
        tracker.wait_clean(1.0)
        subprocess.run(["umount", str(mnt)], check=True)


def test_read_write_on_read_only_image_falls_back_with_notice(
    run: Run, image_on_readonly_fs: Path
) -> None:
    code, out, err = run("-f", "--show", str(image_on_readonly_fs))
    assert code == 0
    dev = out.strip()
    assert err == (
        f"loopdev: {image_on_readonly_fs}: write-protected (Read-only file system (EROFS)): "
        f"{dev} is attached read-only\n"
    )
    code, out, _ = run("-l", "-n", "-O", "RO", dev)
    assert out.strip() == "1"
    assert run("-d", dev)[0] == 0
    assert nothing_bound_to(image_on_readonly_fs)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-o", "-512"], ["--offset -512: must not be negative"]),
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


@pytest.mark.parametrize(
    "argv",
    [
        ["-o", "100"],
        ["-o", "4MiB"],
        ["--sizelimit", "1000"],
        ["--sizelimit", "100"],
        ["--sizelimit", "8MiB"],
        ["-o", "3MiB", "--sizelimit", "2MiB"],
        [],
    ],
)
def test_ranges_losetup_accepts_give_its_warning(
    run: Run, make_image: ImageMaker, tmp_path: Path, tracker: Tracker, argv: list[str]
) -> None:
    """Unaligned, tiny or past the end: attached as losetup attaches them, with the same
    warning (or none), side by side with the real losetup."""
    img = make_image("raw", size_mib=4)
    empty = tmp_path / "empty.img"
    empty.touch()
    tracker.add_image(empty)
    for image in (img, empty) if not argv else (img,):
        ref = subprocess.run(
            ["losetup", "-f", "--show", *argv, str(image)], capture_output=True, text=True
        )
        assert ref.returncode == 0, ref.stderr
        subprocess.run(["losetup", "-d", ref.stdout.strip()], check=True)
        code, out, err = run("-f", "--show", *argv, str(image))
        assert code == 0, err
        assert err == ref.stderr.replace("losetup: ", "loopdev: ")
        assert run("-d", out.strip())[0] == 0
    assert tracker.leaks() == []


def test_offset_past_the_end_is_accepted_with_a_warning(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=4)
    code, out, err = run("-f", "--show", "-o", "8MiB", str(img))
    assert code == 0
    assert err == (
        f"loopdev: {img}: Warning: offset 8388608 is past the end of the file (4194304 bytes); "
        "the loop device is empty.\n"
    )
    assert run("-d", out.strip())[0] == 0


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


def test_detach_of_a_mounted_device_is_deferred_to_its_umount(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    """losetup's answer (exit 0, detached with the umount), one line naming the mount."""
    img = make_image("ext4")
    mnt = mount_dir("m")
    dev = run("-f", "--show", str(img))[1].strip()
    subprocess.run(["mount", dev, str(mnt)], check=True)
    deferred = f"loopdev: {dev}: detach deferred until {mnt} is unmounted\n"
    assert run("-d", dev) == (0, "", deferred)
    assert run("-D", "--ref-prefix", f"loopdev/attach/{os.getpid()}") == (0, "", deferred)
    code, _, err = run("-d", dev, "--wait", "--timeout", "0.2")
    assert code == 9
    assert err.count(f"mounted on {mnt}") == 1, err  # named once, and the hint says what to do
    assert f"hint: it is detached when {mnt} is unmounted (loopdev umount {mnt})" in err
    (mnt / "f").write_text("still mounted, untouched")
    subprocess.run(["umount", str(mnt)], check=True)  # util-linux's umount: no wait of its own
    assert tracker.wait_clean(2.0) == []  # the device went with the umount


# --- mount / umount -------------------------------------------------------------------------


def test_mount_target_missing_or_already_mounted(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    mnt = mount_dir("m")
    m = "loopdev mount"
    failed(run("mount", str(img), str(mnt / "missing")), 10, "does not exist", "mkdir -p", prefix=m)
    assert nothing_bound_to(img)
    assert run("mount", str(img), str(mnt), "-r")[0] == 0
    other = make_image("squashfs", files={"g": b"g"})
    failed(run("mount", str(other), str(mnt), "-r"), 10, "already a mount point", prefix=m)
    assert nothing_bound_to(other)
    assert run("umount", str(mnt))[0] == 0
    assert tracker.leaks() == []


def test_mount_target_is_a_file(
    run: Run, make_image: ImageMaker, tmp_path: Path, tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    target = tmp_path / "file"
    target.write_text("")
    failed(run("mount", str(img), str(target)), 10, "is not a directory", prefix="loopdev mount")
    assert nothing_bound_to(img)


def test_unknown_filesystem(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    raw = make_image("raw", size_mib=4)
    mnt = mount_dir("m")
    m = "loopdev mount"
    # the hint names the command line's option, not the library's parameter
    failed(run("mount", str(raw), str(mnt)), 10, "unknown filesystem", "with -t", prefix=m)
    assert "fstype=" not in run("mount", str(raw), str(mnt))[2]
    sq = make_image("squashfs", files={"f": b"f"})
    failed(
        run("mount", str(sq), str(mnt), "-t", "nosuchfs"),
        10,
        "unknown filesystem type 'nosuchfs'",
        prefix=m,
    )
    failed(
        run("mount", str(sq), str(mnt), "-t", "ext4", "-r"), 10, "wrong filesystem type", prefix=m
    )
    assert nothing_bound_to(raw) and nothing_bound_to(sq)
    assert tracker.leaks() == []


def test_umount_not_mounted_and_busy(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    mnt = mount_dir("m")
    u = "loopdev umount"
    failed(run("umount", str(mnt)), 11, "is not a mount point", prefix=u)
    failed(run("umount", str(mnt / "missing")), 11, "missing", prefix=u)
    img = make_image("squashfs", files={"f": b"f"})
    assert run("mount", str(img), str(mnt), "-r")[0] == 0
    sleeper = subprocess.Popen(["sleep", "60"], cwd=mnt)
    try:
        failed(run("umount", str(mnt)), 8, "in use", f"pid {sleeper.pid}", "sleep", prefix=u)
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
    code, out, err = _as_nobody("-f")  # like losetup: the first unbound device, by name
    theirs = subprocess.run(
        ["losetup", "-f"], capture_output=True, text=True, preexec_fn=_drop, cwd="/"
    )
    assert (code, out) == (0, theirs.stdout), err
    for argv in (
        ["-f", "--show", str(public_image)],
        ["mount", str(public_image), str(public_image.parent / "mnt")],
        ["umount", str(public_image.parent / "mnt")],
        ["-d", "/dev/loop0"],
    ):
        code, out, err = _as_nobody(*argv)
        assert code == 3, (argv, err)
        assert out == ""
        prefix = f"loopdev {argv[0]}: " if argv[0] in ("mount", "umount") else "loopdev: "
        assert err.startswith(prefix) and "root" in err, err
    assert nothing_bound_to(public_image)


def _drop() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _losetup_as_nobody(*argv: str) -> str:
    r = subprocess.run(
        ["losetup", *argv], capture_output=True, text=True, preexec_fn=_drop, cwd="/"
    )
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


def test_detach_all_as_nobody_fails_like_losetup(
    run: Run, public_image: Path, tracker: Tracker
) -> None:
    """Not root, -D cannot open the devices: an error naming one (losetup: "detach failed:
    Permission denied"), never a silent success, and nothing detached."""
    tracker.add_image(public_image)
    dev = run("-f", "--show", str(public_image))[1].strip()
    try:
        code, out, err = _as_nobody("-D")
        assert (code, out) == (3, ""), err
        assert err.startswith("loopdev: cannot open /dev/loop") and "permission denied" in err
        assert not nothing_bound_to(public_image)
    finally:
        assert run("-d", dev)[0] == 0


def test_a_file_where_a_device_is_expected_suggests_f(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=1)
    failed(run(str(img)), 6, f"{img} is not a loop device", f"add -f: loopdev -f {img}")
    failed(run("--show", str(img)), 2, f"add -f: loopdev -f --show {img}")
    assert nothing_bound_to(img)
