"""Listing formats against output captured from util-linux 2.38.1's losetup.

The expected strings below were produced by the real ``losetup`` for the same devices
(``/dev/loop0`` at offset 1024 with partscan, ``/dev/loop1`` read-only with a 1 MiB size
limit, both on ``/tmp/cliexp/img`` = inode 2163586 on 254:0).
"""

from __future__ import annotations

import json

from loopdev import abi
from loopdev.cli import listing
from loopdev.cli.helptext import main_help
from loopdev.errors import EXIT_CODES

LOOP0 = listing.Row(
    name="/dev/loop0",
    rdev=abi.makedev(7, 0),
    backing_file="/tmp/cliexp/img",
    backing_dev=abi.makedev(254, 0),
    backing_ino=2163586,
    offset=1024,
    sizelimit=0,
    flags=abi.LO_FLAGS_PARTSCAN,
    sector_size=512,
    ref="/tmp/cliexp/img",
    diskseq=72951,
)
LOOP1 = listing.Row(
    name="/dev/loop1",
    rdev=abi.makedev(7, 1),
    backing_file="/tmp/cliexp/img",
    backing_dev=abi.makedev(254, 0),
    backing_ino=2163586,
    offset=0,
    sizelimit=1048576,
    flags=abi.LO_FLAGS_READ_ONLY,
    sector_size=512,
    ref="/tmp/cliexp/img",
    diskseq=72952,
)

LOSETUP_TABLE = """\
NAME       SIZELIMIT OFFSET AUTOCLEAR RO BACK-FILE       DIO LOG-SEC
/dev/loop0         0   1024         0  0 /tmp/cliexp/img   0     512
/dev/loop1   1048576      0         0  1 /tmp/cliexp/img   0     512
"""

LOSETUP_ALL = """\
NAME       AUTOCLEAR BACK-FILE       BACK-INO BACK-MAJ:MIN MAJ:MIN OFFSET PARTSCAN RO SIZELIMIT DIO LOG-SEC
/dev/loop0         0 /tmp/cliexp/img  2163586      254:0     7:0     1024        1  0         0   0     512
"""

LOSETUP_RAW = (
    "NAME AUTOCLEAR BACK-FILE BACK-INO BACK-MAJ:MIN MAJ:MIN OFFSET PARTSCAN RO SIZELIMIT DIO LOG-SEC\n"
    "/dev/loop0 0 /tmp/cliexp/img 2163586 \\x20\\x20\\x20\\x20\\x20254:0\\x20\\x20 "
    "\\x20\\x207:0\\x20\\x20 1024 1 0 0 0 512\n"
)

LOSETUP_JSON = """\
{
   "loopdevices": [
      {
         "name": "/dev/loop0",
         "sizelimit": 0,
         "offset": 1024,
         "autoclear": false,
         "ro": false,
         "back-file": "/tmp/cliexp/img",
         "dio": false,
         "log-sec": 512
      },{
         "name": "/dev/loop1",
         "sizelimit": 1048576,
         "offset": 0,
         "autoclear": false,
         "ro": true,
         "back-file": "/tmp/cliexp/img",
         "dio": false,
         "log-sec": 512
      }
   ]
}
"""

UTIL_LINUX_COLUMNS = listing.ALL_COLUMNS[:12]


def test_default_table_matches_losetup() -> None:
    assert listing.table([LOOP0, LOOP1], listing.DEFAULT_COLUMNS) == LOSETUP_TABLE


def test_all_columns_table_matches_losetup() -> None:
    assert listing.table([LOOP0], UTIL_LINUX_COLUMNS) == LOSETUP_ALL


def test_raw_matches_losetup() -> None:
    assert listing.table([LOOP0], UTIL_LINUX_COLUMNS, raw=True) == LOSETUP_RAW


def test_json_matches_losetup_byte_for_byte() -> None:
    text = listing.json_table([LOOP0, LOOP1], listing.DEFAULT_COLUMNS)
    assert text == LOSETUP_JSON
    assert json.loads(text)["loopdevices"][1]["ro"] is True


def test_empty_listings_like_losetup() -> None:
    assert listing.table([], listing.DEFAULT_COLUMNS) == ""
    assert listing.json_table([], listing.DEFAULT_COLUMNS) == '{\n   "loopdevices": [\n\n   ]\n}\n'


def test_noheadings_keeps_header_widths() -> None:
    # losetup -l -n -O RO,NAME prints " 0 /dev/loop0": RO is as wide as its header
    assert listing.table([LOOP0], ("RO", "NAME"), headings=False) == " 0 /dev/loop0\n"


def test_short_lines_like_losetup_a() -> None:
    assert listing.short_line(LOOP0) == "/dev/loop0: [65024]:2163586 (/tmp/cliexp/img), offset 1024\n"
    assert listing.short_line(LOOP1) == (
        "/dev/loop1: [65024]:2163586 (/tmp/cliexp/img), sizelimit 1048576\n"
    )


def test_our_columns_in_json() -> None:
    data = json.loads(listing.json_table([LOOP0], ("NAME", "REF", "DISKSEQ")))
    assert data == {
        "loopdevices": [{"name": "/dev/loop0", "ref": "/tmp/cliexp/img", "diskseq": 72951}]
    }


def test_unknown_values_are_null_in_json() -> None:
    row = listing.Row("/dev/loop5", None, None, 0, 0, 0, 0, 0, None, None, None)
    data = json.loads(listing.json_table([row], listing.ALL_COLUMNS))["loopdevices"][0]
    assert data["back-file"] is None and data["log-sec"] is None and data["maj:min"] is None


def test_control_characters_are_escaped() -> None:
    row = listing.Row("/dev/loop0", None, "/tmp/a\nb c", 1, 1, 0, 0, 0, 512, None, None)
    assert "/tmp/a\\x0ab c" in listing.table([row], ("BACK-FILE",))
    assert "/tmp/a\\x0ab\\x20c" in listing.table([row], ("BACK-FILE",), raw=True)
    assert json.loads(listing.json_table([row], ("BACK-FILE",)))["loopdevices"][0] == {
        "back-file": "/tmp/a\nb c"
    }


def test_help_documents_every_exit_code_and_column() -> None:
    text = main_help()
    for code, meaning in EXIT_CODES.items():
        assert f" {code:>3}  {meaning}" in text
    for col in listing.ALL_COLUMNS:
        assert col in text
    assert "loopdev mount" in text and "Examples:" in text
