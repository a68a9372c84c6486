"""losetup's command line → Plan, and sizes with losetup's suffixes (no kernel needed)."""

from __future__ import annotations

import pytest

from loopdev import abi
from loopdev.cli import listing
from loopdev.cli.lsargs import Action, UsageError, parse
from loopdev.errors import InvalidArgumentError
from loopdev.sizes import parse_size


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512", 512),
        ("0x200", 512),
        ("010", 8),  # strtoumax base 0: octal, like losetup
        ("1K", 1024),
        ("1k", 1024),
        ("1KiB", 1024),
        ("1KB", 1000),
        ("2MiB", 2 << 20),
        ("1.5M", 3 << 19),
        ("1G", 1 << 30),
        ("3GB", 3 * 10**9),
        ("0", 0),
    ],
)
def test_sizes_like_losetup(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["-1", "1.5", "abc", "1X", "08", "", "1KiBx"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_no_arguments_lists_all() -> None:
    plan = parse([])
    assert plan.action is Action.SHOW and plan.list
    assert plan.columns == listing.DEFAULT_COLUMNS


@pytest.mark.parametrize(
    ("argv", "action"),
    [
        (["-a"], Action.SHOW),
        (["-l"], Action.SHOW),
        (["-J"], Action.SHOW),
        (["--raw"], Action.SHOW),
        (["-j", "img"], Action.SHOW),
        (["-f"], Action.FIND_FREE),
        (["-f", "img"], Action.CREATE),
        (["/dev/loop0", "img"], Action.CREATE),
        (["/dev/loop0"], Action.SHOW_ONE),
        (["-l", "/dev/loop0"], Action.SHOW_ONE),
        (["-d", "/dev/loop0"], Action.DELETE),
        (["-D"], Action.DELETE_ALL),
        (["-c", "/dev/loop0"], Action.SET_CAPACITY),
        (["--direct-io", "/dev/loop0"], Action.SET_DIRECT_IO),
        (["--direct-io=off", "/dev/loop0"], Action.SET_DIRECT_IO),
        (["-b", "4096", "/dev/loop0"], Action.SET_BLOCKSIZE),
        (["--remove", "/dev/loop9"], Action.REMOVE),
        (["-h"], Action.HELP),
        (["-V"], Action.VERSION),
    ],
)
def test_actions_like_losetup(argv: list[str], action: Action) -> None:
    assert parse(argv).action is action


def test_setup_options() -> None:
    plan = parse(
        ["-r", "-P", "-o", "1MiB", "--sizelimit", "4MiB", "-b", "4096", "--direct-io",
         "--loop-ref", "ci", "--show", "-f", "disk.img"]
    )  # fmt: skip
    assert plan.action is Action.CREATE and plan.file == "disk.img" and plan.devices == []
    assert plan.read_only and plan.partscan and plan.direct_io and plan.show
    assert (plan.offset, plan.sizelimit, plan.block_size) == (1 << 20, 4 << 20, 4096)
    assert plan.lo_flags & abi.LO_FLAGS_DIRECT_IO
    assert plan.loop_ref == "ci"


def test_grouped_short_options_and_intermixing() -> None:
    plan = parse(["-rPf", "--show", "disk.img"])
    assert plan.action is Action.CREATE and plan.read_only and plan.partscan and plan.show
    plan = parse(["-d", "/dev/loop1", "-v", "/dev/loop2", "/dev/loop3"])
    assert plan.devices == ["/dev/loop1", "/dev/loop2", "/dev/loop3"] and plan.verbose


def test_direct_io_alone_never_eats_the_device() -> None:
    plan = parse(["--direct-io", "/dev/loop0"])
    assert plan.devices == ["/dev/loop0"] and plan.direct_io
    assert not plan.lo_flags  # a change to a bound device, not a setup flag


def test_detach_wait_and_timeout() -> None:
    plan = parse(["-d", "/dev/loop0", "--no-wait", "--timeout", "2.5"])
    assert plan.wait is False and plan.timeout == 2.5
    assert parse(["-d", "/dev/loop0", "--wait"]).wait is True
    # neither: wait unless the device is held (then losetup's deferred detach)
    assert parse(["-d", "/dev/loop0"]).wait is None


def test_output_columns() -> None:
    assert parse(["-l", "-O", "name,ro"]).columns == ("NAME", "RO")
    assert parse(["-O", "+DISKSEQ"]).columns == (*listing.DEFAULT_COLUMNS, "DISKSEQ")
    assert parse(["-l", "--output-all"]).columns == listing.ALL_COLUMNS
    # losetup's twelve columns; REF and DISKSEQ only when asked for
    assert len(listing.ALL_COLUMNS) == 12 and "REF" not in listing.ALL_COLUMNS
    assert parse(["-l", "-O", "REF,DISKSEQ"]).columns == ("REF", "DISKSEQ")
    with pytest.raises(InvalidArgumentError, match="unknown column: BOGUS"):
        parse(["-l", "-O", "NAME,BOGUS"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-a", "-d", "/dev/loop0"], "mutually exclusive"),
        (["-D", "-l"], "mutually exclusive"),
        (["-J", "--raw"], "mutually exclusive"),
        (["-r", "/dev/loop0"], "allowed during loop device setup only"),
        (["--show", "-a"], "allowed during loop device setup only"),
        (["-o", "512", "-a"], "--offset is not allowed"),
        (["-f", "a.img", "b.img"], "unexpected arguments"),
        (["--bogus"], "unrecognized option '--bogus'"),
        (["-x"], "invalid option -- 'x'"),
        (["-o"], "option requires an argument -- 'o'"),
        (["--offset"], "option '--offset' requires an argument"),
        (["--show=yes", "-f", "x"], "option '--show' doesn't allow an argument"),
        (["--s", "-f", "x"], "option '--s' is ambiguous"),
        (["--direct-io=maybe", "/dev/loop0"], "invalid argument 'maybe'"),
        # losetup: -n and --output-all alone do not make a listing
        (["-n"], "no loop device specified"),
        (["--output-all"], "no loop device specified"),
        (["-D", "--loop-ref", "a", "--ref-prefix", "b"], "mutually exclusive"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse(argv)
    assert info.value.exit_code == 2


def test_bad_numbers_are_invalid_arguments() -> None:
    for argv in (["-o", "-512", "-f", "x"], ["--sizelimit", "lots", "-f", "x"]):
        with pytest.raises(InvalidArgumentError) as info:
            parse(argv)
        assert info.value.exit_code == 5
    with pytest.raises(InvalidArgumentError, match="negative"):
        parse(["-o", "-512", "-f", "x"])


def test_abbreviated_long_options_like_getopt_long() -> None:
    plan = parse(["--sh", "--rea", "--fin", "disk.img"])
    assert plan.action is Action.CREATE and plan.show and plan.read_only


def test_noheadings_and_output_all_with_a_device_print_the_short_line() -> None:
    for argv in (["-n", "/dev/loop0"], ["--output-all", "/dev/loop0"]):
        plan = parse(argv)
        assert plan.action is Action.SHOW_ONE and not plan.list


def test_forgotten_find_is_suggested() -> None:
    with pytest.raises(UsageError) as info:
        parse(["--show", "disk.img"])
    assert info.value.hint is not None and "-f" in info.value.hint
    assert "loopdev -f --show disk.img" in info.value.hint


def test_json_during_setup_describes_the_device() -> None:
    plan = parse(["-f", "-J", "disk.img"])
    assert plan.action is Action.CREATE and plan.json and not plan.list


def test_detach_all_by_reference_prefix() -> None:
    plan = parse(["-D", "--ref-prefix", "loopdev/run/"])
    assert plan.action is Action.DELETE_ALL and plan.ref_prefix == "loopdev/run/"
