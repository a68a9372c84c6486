"""The ``loopdev`` command on real loop devices: every losetup option, compared with the real
util-linux losetup where both print something, and the mount/umount subcommands.

Most tests run the CLI in-process (``main(argv)``); a few run the installed console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rk import ImageMaker, Run, Tracker, bound_loops

from loopdev import abi

LOOPDEV_BIN = str(Path(sys.executable).with_name("loopdev"))


def losetup(*argv: str) -> str:
    r = subprocess.run(["losetup", *argv], capture_output=True, text=True, check=True)
    return r.stdout


def bound(img: Path) -> list[str]:
    """Paths of the devices bound to ``img`` (by inode, no library)."""
    st = img.stat()
    return [
        b.path for b in bound_loops() if (b.backing_dev, b.backing_ino) == (st.st_dev, st.st_ino)
    ]


def info(dev: str) -> dict[str, object]:
    """The real losetup's view of one device, every column."""
    rows = json.loads(losetup("-l", "-J", "--output-all", dev))["loopdevices"]
    assert len(rows) == 1
    row: dict[str, object] = rows[0]
    return row


def attach(run: Run, *argv: str) -> str:
    code, out, err = run(*argv, "--show")
    assert code == 0, err
    dev = out.strip()
    assert dev.startswith("/dev/loop"), out
    return dev


# --- setup and teardown --------------------------------------------------------------------


def test_find_show_then_detach(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    dev = attach(run, "-f", str(img))
    assert bound(img) == [dev]
    assert info(dev)["back-file"] == str(img)
    code, out, err = run("-d", dev)
    assert (code, out, err) == (0, "", "")
    assert bound(img) == []  # detach returned only once the device was really gone


def test_setup_options_reach_the_kernel(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=8)
    dev = attach(
        run, "-o", "1MiB", "--sizelimit", "2MiB", "-r", "-P", "-b", "4096", "--direct-io=on",
        "--loop-ref", "cli-test-ref", "-f", str(img),
    )  # fmt: skip
    row = info(dev)
    assert row["offset"] == 1 << 20 and row["sizelimit"] == 2 << 20
    assert row["ro"] is True and row["partscan"] is True and row["log-sec"] == 4096
    assert row["dio"] is True and row["autoclear"] is False
    code, out, _ = run("-l", "-n", "-O", "REF,DISKSEQ", dev)
    assert code == 0
    ref, diskseq = out.split()
    assert ref == "cli-test-ref"
    assert int(diskseq) == int(Path(f"/sys/block/{dev[5:]}/diskseq").read_text())
    assert run("-d", dev)[0] == 0


def test_named_device_and_busy_device(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    code, out, _ = run("-f")
    assert code == 0 and out.startswith("/dev/loop")
    free = out.strip()
    code, out, err = run(free, str(img))
    assert (code, out) == (0, "")
    assert bound(img) == [free]
    code, _, err = run(free, str(img))  # already bound: losetup says EBUSY
    assert code == 8 and err.startswith(f"loopdev: {free} is already in use")
    assert bound(img) == [free]
    assert run("-d", free)[0] == 0


def test_detach_several_and_missing_ones(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=4)
    a, b = attach(run, "-f", str(img)), attach(run, "-f", str(img))
    code, _, err = run("-d", a, b)
    assert code == 0 and bound(img) == []
    code, _, err = run("-d", a)
    assert code == 12 and f"{a} is not attached" in err


def test_set_capacity(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    dev = attach(run, "-f", str(img))
    os.truncate(img, 8 << 20)
    sysfs_size = Path(f"/sys/block/{dev[5:]}/size")
    assert int(sysfs_size.read_text()) == (4 << 20) // 512
    assert run("-c", dev)[0] == 0
    assert int(sysfs_size.read_text()) == (8 << 20) // 512
    assert run("-d", dev)[0] == 0


def test_change_direct_io_and_sector_size_of_bound_device(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=4)
    dev = attach(run, "-f", str(img))
    assert run("--direct-io", dev)[0] == 0
    assert info(dev)["dio"] is True
    assert run("--direct-io=off", dev)[0] == 0
    assert info(dev)["dio"] is False
    assert run("-b", "4096", dev)[0] == 0
    assert info(dev)["log-sec"] == 4096
    code, _, err = run("-b", "3000", dev)
    assert code == 5 and "block size 3000 is not supported" in err
    assert run("-d", dev)[0] == 0


def test_nooverlap_reuses_exact_match_and_refuses_overlap(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=8)
    dev = attach(run, "-L", "-f", "--sizelimit", "4MiB", str(img))
    assert attach(run, "-L", "-f", "--sizelimit", "4MiB", str(img)) == dev  # reused
    assert bound(img) == [dev]
    code, _, err = run("-L", "-f", "-o", "2MiB", str(img))  # overlaps [0, 4MiB)
    assert code == 8 and "overlapping loop device exists" in err
    other = attach(run, "-L", "-f", "-o", "4MiB", str(img))  # adjacent: fine
    assert sorted(bound(img)) == sorted([dev, other])
    assert run("-d", dev, other)[0] == 0


def test_detach_all_only_with_the_loop_ref(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=4)
    ref = f"cli-detach-all-{os.getpid()}"
    ours = [attach(run, "--loop-ref", ref, "-f", str(img)) for _ in range(2)]
    keep = attach(run, "-f", str(img))
    code, out, _ = run("-l", "-n", "-O", "NAME", "--loop-ref", ref)
    assert sorted(out.split()) == sorted(ours)
    code, _, err = run("-D", "--loop-ref", ref, "-v")
    assert code == 0 and all(f"detached {d}" in err for d in ours)
    assert bound(img) == [keep]
    assert run("-d", keep)[0] == 0


def test_remove_an_unused_node(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    numbers = [
        int(n[4:]) for n in os.listdir("/sys/block") if n[4:].isdigit() and n.startswith("loop")
    ]
    dev = f"/dev/loop{max(numbers) + 1}"  # does not exist yet: created with LOOP_CTL_ADD
    assert run(dev, str(img))[0] == 0
    assert run("--remove", dev)[0] == 8  # attached: refused
    assert run("-d", dev)[0] == 0
    assert run("--remove", dev)[0] == 0
    assert not os.path.exists(f"/sys/block/{dev[5:]}")
    code, _, err = run("--remove", dev)
    assert code == 6 and "does not exist" in err


def _hold(dev: str) -> subprocess.Popen[bytes]:
    """Another process that keeps ``dev`` open (as its stdin) until killed."""
    with open(dev, "rb") as f:
        return subprocess.Popen(["sleep", "60"], stdin=f)


def test_detach_of_a_held_device_is_deferred_like_losetup(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    """-d of a device another process holds: losetup's answer (exit 0, the teardown comes
    with the last close), plus one line saying so and naming the holder."""
    img = make_image("raw", size_mib=4)
    dev = attach(run, "-f", str(img))
    holder = _hold(dev)
    try:
        code, out, err = run("-d", dev)
        assert (code, out) == (0, "")
        assert err == f"loopdev: {dev}: detach deferred until pid {holder.pid} (sleep) closes it\n"
        assert bound(img) == [dev]
    finally:
        holder.kill()
        holder.wait()
    assert tracker.wait_clean(2.0) == []  # gone with the holder's close


def test_detach_wait_and_no_wait(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    dev = attach(run, "-f", str(img))
    holder = _hold(dev)
    try:
        code, _, err = run("-d", dev, "--wait", "--timeout", "0.3")
        assert code == 9, err
        assert "still attached 0.3 s after detach" in err
        assert f"held by: pid {holder.pid} (sleep) has {dev} open" in err
        assert bound(img) == [dev]  # the teardown waits for the holder's close
    finally:
        holder.kill()
        holder.wait()
    assert tracker.wait_clean(2.0) == []
    dev = attach(run, "-f", str(img))
    holder = _hold(dev)
    try:
        assert run("-d", dev, "--no-wait") == (0, "", "")
        assert bound(img) == [dev]
    finally:
        holder.kill()
        holder.wait()
    assert tracker.wait_clean(2.0) == []


# --- listings, compared with the real losetup -----------------------------------------------


def test_listings_are_identical_to_losetup(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=8)
    a = attach(run, "-f", "-P", "-o", "1024", str(img))
    b = attach(run, "-f", "-r", "--sizelimit", "1MiB", str(img))
    for argv in (
        ["-j", str(img)],
        ["-j", str(img), "-o", "1024"],
        ["-l", "-j", str(img)],
        ["-l", "-J", "-j", str(img)],
        ["-l", "--raw", "-j", str(img)],
        ["-l", "-n", "-O", "NAME,RO,OFFSET", "-j", str(img)],
        ["-l", "-O", "+MAJ:MIN", "-j", str(img)],
        [a],
        ["-l", a],
        ["-l", "-J", b],
        ["-l", "-J", "-O", "NAME,BACK-INO,BACK-MAJ:MIN,MAJ:MIN,PARTSCAN", a],
        ["-a"],
        [],
    ):
        code, out, err = run(*argv)
        assert code == 0, err
        assert out == losetup(*argv), argv
    assert run("-d", a, b)[0] == 0


def test_json_has_losetup_shape_plus_our_columns(
    run: Run, make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=4)
    dev = attach(run, "-f", str(img))
    code, out, _ = run("-l", "-J", "--output-all", dev)
    assert code == 0
    assert out == losetup("-l", "-J", "--output-all", dev)  # losetup's twelve columns
    code, out, _ = run("-l", "-J", "--output-all", "-O", "+REF,DISKSEQ", dev)
    ours = json.loads(out)["loopdevices"][0]
    theirs = info(dev)
    assert {k: v for k, v in ours.items() if k in theirs} == theirs
    assert set(ours) - set(theirs) == {"ref", "diskseq"}
    assert ours["ref"] == f"loopdev/attach/{os.getpid()}"  # names the tool that attached it
    assert isinstance(ours["diskseq"], int)
    assert [type(ours[k]) for k in theirs] == [type(v) for v in theirs.values()]
    assert run("-d", dev)[0] == 0


def test_associated_by_inode_and_offset(
    run: Run, make_image: ImageMaker, tracker: Tracker, tmp_path: Path
) -> None:
    img = make_image("raw", size_mib=4)
    link = tmp_path / "link.img"
    link.symlink_to(img)
    dev = attach(run, "-f", str(img))
    for argv in (["-j", str(link)], ["-j", str(img), "-o", "0"]):
        assert run(*argv)[1].startswith(f"{dev}: [")
    assert run("-j", str(img), "-o", "512") == (0, "", "")
    assert run("-d", dev)[0] == 0
    assert run("-j", str(img)) == (0, "", "")


# --- mount / umount -------------------------------------------------------------------------


def test_mount_and_umount_squashfs(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"hello.txt": b"hello\n"})
    mnt = mount_dir("m")
    code, out, err = run("mount", str(img), str(mnt), "-r", "-v")
    assert code == 0, err
    assert f"mounted on {mnt} (squashfs, ro) via /dev/loop" in out
    assert (mnt / "hello.txt").read_bytes() == b"hello\n"
    assert len(bound(img)) == 1
    assert run("umount", str(mnt)) == (0, "", "")
    assert tracker.leaks() == []


def test_mount_ext4_with_type_and_options(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4", size_mib=16)
    mnt = mount_dir("m")
    code, _, err = run("mount", str(img), str(mnt), "-t", "ext4", "-o", "noatime,nodev")
    assert code == 0, err
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    opts = next(line.split()[5] for line in lines if line.split()[4] == str(mnt))
    assert "noatime" in opts and "nodev" in opts and opts.startswith("rw")
    (mnt / "x").write_text("x")
    assert run("umount", str(mnt), "--timeout", "2")[0] == 0
    assert tracker.leaks() == []


def test_mount_with_loop_offset_option(
    run: Run,
    make_image: ImageMaker,
    mount_dir: Callable[[str], Path],
    tracker: Tracker,
    tmp_path: Path,
) -> None:
    fs = make_image("squashfs", files={"a": b"A"})
    img = tmp_path / "padded.img"
    img.write_bytes(b"\0" * (1 << 20) + fs.read_bytes())
    tracker.add_image(img)
    mnt = mount_dir("m")
    assert run("mount", str(img), str(mnt), "-o", "ro,offset=1MiB")[0] == 0
    assert (mnt / "a").read_bytes() == b"A"
    assert run("umount", str(mnt))[0] == 0
    assert tracker.leaks() == []


def test_subcommand_help_and_usage_errors(run: Run) -> None:
    code, out, _ = run("mount", "--help")
    assert code == 0 and "loopdev mount" in out and "Examples:" in out
    code, _, err = run("mount", "only-one-arg")
    assert code == 2 and err.startswith("loopdev mount: missing <dir>")
    code, _, err = run("umount")
    assert code == 2 and err.startswith("loopdev umount: missing <target>")
    code, out, _ = run("lab", "--help")  # the lab's own parser, reached through ours
    assert code == 0 and "usage: loopdev lab" in out


# --- the console script --------------------------------------------------------------------


def test_console_script(make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    r = subprocess.run([LOOPDEV_BIN, "-f", "--show", str(img)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dev = r.stdout.strip()
    lsj = subprocess.run([LOOPDEV_BIN, "-l", "-J", dev], capture_output=True, text=True)
    assert lsj.stdout == losetup("-l", "-J", dev)
    assert subprocess.run([LOOPDEV_BIN, "-d", dev]).returncode == 0
    assert bound(img) == []
    bad = subprocess.run([LOOPDEV_BIN, "--no-such-option"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("loopdev: unrecognized option '--no-such-option'")
    helped = subprocess.run([LOOPDEV_BIN, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "Exit status:" in helped.stdout
    ver = subprocess.run([LOOPDEV_BIN, "-V"], capture_output=True, text=True)
    assert ver.returncode == 0 and ver.stdout.startswith("loopdev ")


def test_alias_losetup_in_a_shell(make_image: ImageMaker, tracker: Tracker) -> None:
    """A script written for losetup, run with `alias losetup=loopdev`."""
    img = make_image("raw", size_mib=4)
    script = f"""
        shopt -s expand_aliases
        alias losetup={LOOPDEV_BIN}
        dev=$(losetup -f --show -r {img})
        losetup -j {img} | grep -q "^$dev: "
        [ "$(losetup -l -n -O RO "$dev" | tr -d ' ')" = 1 ]
        losetup -d "$dev"
        [ -z "$(losetup -j {img})" ]
    """
    r = subprocess.run(["bash", "-euc", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert bound(img) == []


def _flags(dev: str) -> int:
    return next(b.flags for b in bound_loops() if b.path == dev)


def test_read_only_flag_in_kernel(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    dev = attach(run, "-f", "-r", str(img))
    assert _flags(dev) & abi.LO_FLAGS_READ_ONLY
    assert run("-d", dev)[0] == 0


NAMES = ["back\\xslash", "back\\slash", "sp ace", "tab\tx", "new\nline", "\u00fc", "bad\udcff"]


@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_listings_escape_file_names_like_losetup(
    make_image: ImageMaker, tmp_path: Path, tracker: Tracker, locale: str
) -> None:
    """Backslashes, blanks, control characters, non-ASCII and undecodable bytes in file names
    are shown (or escaped) exactly as losetup shows them, in the C and in a UTF-8 locale."""
    devs = []
    for name in NAMES:
        img = make_image("raw", size_mib=1)
        path = tmp_path / f"{name}.img"
        os.rename(img, path)
        tracker.add_image(path)
        devs.append(
            subprocess.run(
                ["losetup", "-f", "--show", os.fsencode(path)],
                capture_output=True,
                check=True,
            ).stdout.strip()
        )
    env = {**os.environ, "LC_ALL": locale}
    try:
        for argv in (["-l"], ["--raw"], ["-J"], ["-a"], ["-l", "-O", "NAME,BACK-FILE"]):
            ours = subprocess.run([LOOPDEV_BIN, *argv], capture_output=True, env=env)
            theirs = subprocess.run(["losetup", *argv], capture_output=True, env=env)
            mine = [
                ln
                for ln in ours.stdout.split(b"\n")
                if b"/dev/loop" not in ln or any(d in ln for d in devs)
            ]
            ref = [
                ln
                for ln in theirs.stdout.split(b"\n")
                if b"/dev/loop" not in ln or any(d in ln for d in devs)
            ]
            assert mine == ref, (argv, locale)
    finally:
        for d in devs:
            subprocess.run(["losetup", "-d", d], check=True)
