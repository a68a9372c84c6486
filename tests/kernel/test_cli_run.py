"""``loopdev run``: attach (and mount), run a command, always clean up, pass its exit status
through; the loop-ref names the tool, and ``-D --ref-prefix`` cleans up what a killed run left.

Run as the installed command in a process of its own: what is tested is what a user (or
systemd, or a shell script) sees, signals included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rk import ImageMaker, Tracker, bound_loops, mounts

LOOPDEV_BIN = str(Path(sys.executable).with_name("loopdev"))


def loopdev(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOOPDEV_BIN, *argv], capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def _ours(img: Path) -> list[str]:
    st = img.stat()
    return [
        b.path for b in bound_loops() if (b.backing_dev, b.backing_ino) == (st.st_dev, st.st_ino)
    ]


def test_runs_in_the_mount_and_passes_the_exit_status(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"hello": b"hi\n"})
    mnt = mount_dir("m")
    r = loopdev(
        "run",
        "-r",
        str(img),
        "--mount",
        str(mnt),
        "--",
        "sh",
        "-c",
        'cat "$LOOPDEV_MOUNT/hello"; echo "$LOOPDEV_DEVICE"; exit 7',
    )
    assert r.returncode == 7, r.stderr
    out = r.stdout.split()
    assert out[0] == "hi" and out[1].startswith("/dev/loop")
    assert r.stderr == ""
    assert tracker.leaks() == []  # unmounted, detached and gone before loopdev returned


def test_without_mount_the_command_gets_the_device(
    make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=2)
    r = loopdev("run", str(img), "--", "sh", "-c", 'test -b "$LOOPDEV_DEVICE" && echo ok')
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert tracker.leaks() == []


def test_command_not_found_is_127_and_still_cleans_up(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4")
    r = loopdev("run", str(img), "--mount", str(mount_dir("m")), "--", "no-such-command-here")
    assert r.returncode == 127
    assert "loopdev run: no-such-command-here: No such file or directory" in r.stderr
    assert tracker.leaks() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run"], "missing <image>"),
        (["run", "x.img"], "missing <command>"),
        (["run", "-t", "ext4", "x.img", "--", "true"], "-t, -o and --partition need --mount"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    r = loopdev(*argv)
    assert r.returncode == 2 and r.stderr.startswith(f"loopdev run: {message}"), r.stderr
    assert "loopdev run --help" in r.stderr


def _started(argv: list[str], until: Callable[[], bool]) -> subprocess.Popen[str]:
    """``loopdev`` started in a session of its own (like a terminal's foreground job),
    returned once ``until()`` holds."""
    proc = subprocess.Popen(
        [LOOPDEV_BIN, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a terminal's foreground job has Ctrl-C's default action, even when this test runs
        # from a background job whose shell set SIGINT to be ignored (children inherit that)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 10
    while not until():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "loopdev run did not set up in 10 s"
        time.sleep(0.01)
    return proc


def test_ctrl_c_ends_the_command_and_cleans_up(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    mnt = mount_dir("m")
    proc = _started(
        ["run", str(img), "--mount", str(mnt), "--", "sleep", "30"],
        lambda: any(m.target == str(mnt) for m in mounts()),
    )
    time.sleep(0.2)  # let sleep start
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert tracker.leaks() == []


def test_sigterm_is_passed_to_the_command(make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=2)
    proc = _started(["run", str(img), "--", "sleep", "30"], lambda: bool(_ours(img)))
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # to loopdev only
    proc.communicate(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM
    assert tracker.leaks() == []


def test_a_killed_run_leaves_a_device_named_for_cleanup(
    make_image: ImageMaker, tracker: Tracker
) -> None:
    """kill -9 of loopdev itself: nothing can clean up, but the device says who left it,
    and ``loopdev -D --ref-prefix`` finds it."""
    img = make_image("raw", size_mib=2)
    proc = _started(["run", str(img), "--", "sleep", "30"], lambda: bool(_ours(img)))
    try:
        ref = f"loopdev/run/{proc.pid}"
        listed = loopdev("-l", "-n", "-O", "NAME,REF", "--ref-prefix", "loopdev/run/")
        assert ref in listed.stdout
        os.killpg(proc.pid, signal.SIGKILL)  # loopdev and its command
        proc.communicate(timeout=15)
        assert _ours(img)  # left behind
        r = loopdev("-D", "--ref-prefix", ref, "-v")
        assert r.returncode == 0 and "detached /dev/loop" in r.stderr, r.stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert tracker.wait_clean(2.0) == []
