"""losetup's listings: the columns, the table, ``--raw``, ``--json`` and the ``-a`` lines.

Output is byte-compatible with util-linux 2.38's losetup (libsmartcols): the same default
columns, the same alignment, the same JSON layout and value types (MAJ:MIN columns keep
losetup's padded ``%3u:%-3u`` form, also in JSON). We add two columns: REF (util-linux 2.40)
and DISKSEQ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loopdev import abi
from loopdev.errors import InvalidArgumentError


@dataclass(frozen=True)
class Row:
    """One bound loop device as the listings show it."""

    name: str  # /dev/loopN
    rdev: int | None  # the loop device's dev_t
    backing_file: str | None
    backing_dev: int
    backing_ino: int
    offset: int
    sizelimit: int
    flags: int
    sector_size: int | None
    ref: str | None
    diskseq: int | None


def _flag(bit: int) -> Callable[[Row], str]:
    return lambda r: "1" if r.flags & bit else "0"


def _majmin(dev: int | None, fmt: str) -> str | None:
    return fmt % (abi.major(dev), abi.minor(dev)) if dev else None


def _num(v: int | None) -> str | None:
    return None if v is None else str(v)


@dataclass(frozen=True)
class Column:
    name: str
    right: bool
    json_type: str  # "string", "number", "boolean"
    help: str
    value: Callable[[Row], str | None]


COLUMNS: tuple[Column, ...] = (
    Column("NAME", False, "string", "loop device name", lambda r: r.name),
    Column("AUTOCLEAR", True, "boolean", "autoclear flag set", _flag(abi.LO_FLAGS_AUTOCLEAR)),
    Column("BACK-FILE", False, "string", "device backing file", lambda r: r.backing_file),
    Column(
        "BACK-INO", True, "number", "backing file inode number",
        lambda r: str(r.backing_ino) if r.backing_ino else None,
    ),
    Column(
        "BACK-MAJ:MIN", False, "string", "backing file major:minor device number",
        lambda r: _majmin(r.backing_dev, "%8u:%-3u"),
    ),
    Column(
        "MAJ:MIN", False, "string", "loop device major:minor number",
        lambda r: _majmin(r.rdev, "%3u:%-3u"),
    ),
    Column("OFFSET", True, "number", "offset from the beginning", lambda r: str(r.offset)),
    Column("PARTSCAN", True, "boolean", "partscan flag set", _flag(abi.LO_FLAGS_PARTSCAN)),
    Column("RO", True, "boolean", "read-only device", _flag(abi.LO_FLAGS_READ_ONLY)),
    Column(
        "SIZELIMIT", True, "number", "size limit of the file in bytes",
        lambda r: str(r.sizelimit),
    ),
    Column(
        "DIO", True, "boolean", "access backing file with direct-io",
        _flag(abi.LO_FLAGS_DIRECT_IO),
    ),
    Column(
        "LOG-SEC", True, "number", "logical sector size in bytes",
        lambda r: _num(r.sector_size),
    ),
    Column("REF", False, "string", "loop device reference string", lambda r: r.ref),
    Column(
        "DISKSEQ", True, "number", "disk sequence number (identifies this attachment)",
        lambda r: _num(r.diskseq),
    ),
)  # fmt: skip

_BY_NAME = {c.name: c for c in COLUMNS}
DEFAULT_COLUMNS = ("NAME", "SIZELIMIT", "OFFSET", "AUTOCLEAR", "RO", "BACK-FILE", "DIO", "LOG-SEC")
ALL_COLUMNS = tuple(c.name for c in COLUMNS)


def parse_columns(spec: str, current: Sequence[str] = DEFAULT_COLUMNS) -> tuple[str, ...]:
    """``-O`` syntax: ``NAME,RO`` replaces the columns, ``+REF`` appends; names ignore case."""
    append = spec.startswith("+")
    names = [n.strip() for n in spec.lstrip("+").split(",")]
    out: list[str] = list(current) if append else []
    for n in names:
        col = _BY_NAME.get(n.upper())
        if col is None:
            raise InvalidArgumentError(
                f"unknown column: {n}", hint=f"columns are: {', '.join(ALL_COLUMNS)}"
            )
        out.append(col.name)
    return tuple(out)


def _escape(text: str, raw: bool) -> str:
    """libsmartcols' safe encoding: control characters (and in raw mode spaces and
    backslashes) as ``\\xNN``."""
    out = []
    for ch in text:
        o = ord(ch)
        if o < 0x20 or o == 0x7F or (raw and ch in " \\"):
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    return "".join(out)


def table(
    rows: Sequence[Row], columns: Sequence[str], *, headings: bool = True, raw: bool = False
) -> str:
    """The ``--list`` table (or ``--raw``); empty string when there are no rows."""
    if not rows:
        return ""
    cols = [_BY_NAME[c] for c in columns]
    cells = [[_escape(c.value(r) or "", raw) for c in cols] for r in rows]
    lines: list[list[str]] = ([[c.name for c in cols]] if headings else []) + cells
    if raw:
        return "".join(" ".join(line) + "\n" for line in lines)
    widths = [max(len(c.name), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = []
    for line in lines:
        parts = []
        for i, (c, text) in enumerate(zip(cols, line, strict=True)):
            last = i == len(cols) - 1
            if c.right:
                parts.append(text.rjust(widths[i]))
            else:
                parts.append(text if last else text.ljust(widths[i]))
        out.append(" ".join(parts) + "\n")
    return "".join(out)


def _json_value(col: Column, value: str | None) -> str:
    if col.json_type == "boolean":
        return "true" if value and value[0] not in "0Nn" else "false"
    if not value:
        return "null"
    if col.json_type == "number":
        return value
    return json.dumps(value, ensure_ascii=False)


def json_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """``--json``: libsmartcols' layout under the ``loopdevices`` key."""
    cols = [_BY_NAME[c] for c in columns]
    objects = []
    for r in rows:
        fields = [f'         "{c.name.lower()}": {_json_value(c, c.value(r))}' for c in cols]
        objects.append("{\n" + ",\n".join(fields) + "\n      }")
    body = "      " + ",".join(objects) if objects else ""
    return '{\n   "loopdevices": [\n' + body + "\n   ]\n}\n"


def short_line(r: Row) -> str:
    """The ``losetup -a`` / ``losetup DEV`` line: ``/dev/loop0: [65024]:12 (/img)``."""
    head = f"{r.name}: [{r.backing_dev:04d}]:{r.backing_ino} ({r.backing_file or ''})"
    if not r.backing_dev and not r.backing_ino:
        head = f"{r.name}: []: ({r.backing_file or ''})"
    if r.offset:
        head += f", offset {r.offset}"
    if r.sizelimit:
        head += f", sizelimit {r.sizelimit}"
    return head + "\n"


def columns_help() -> str:
    """The "Available output columns" block of ``--help``."""
    return "".join(f" {c.name:>12}  {c.help}\n" for c in COLUMNS)
