"""losetup's listings: the columns, the table, ``--raw``, ``--json`` and the ``-a`` lines.

Output is byte-compatible with util-linux 2.38's losetup (libsmartcols): the same default
columns, the same alignment, the same JSON layout and value types (MAJ:MIN columns keep
losetup's padded ``%3u:%-3u`` form, also in JSON). ``--output-all`` shows losetup's 12
columns; our two more, REF (util-linux 2.40) and DISKSEQ, only when asked for with ``-O``.
"""

from __future__ import annotations

from loopdev import abi
from loopdev.errors import InvalidArgumentError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from loopdev.device import LoopDevice
    from loopdev.mount import Mount


class Row:
    """One bound loop device as the listings show it."""

    __slots__ = (
        "backing_dev",
        "backing_file",
        "backing_ino",
        "diskseq",
        "flags",
        "name",
        "offset",
        "rdev",
        "ref",
        "sector_size",
        "sizelimit",
    )

    def __init__(
        self,
        name: str,
        rdev: int | None,
        backing_file: str | None,
        backing_dev: int,
        backing_ino: int,
        offset: int,
        sizelimit: int,
        flags: int,
        sector_size: int | None,
        ref: str | None,
        diskseq: int | None,
    ) -> None:
        self.name = name  # /dev/loopN
        self.rdev = rdev  # the loop device's dev_t
        self.backing_file = backing_file
        self.backing_dev = backing_dev
        self.backing_ino = backing_ino
        self.offset = offset
        self.sizelimit = sizelimit
        self.flags = flags
        self.sector_size = sector_size
        self.ref = ref
        self.diskseq = diskseq


def _flag(bit: int) -> Callable[[Row], str]:
    return lambda r: "1" if r.flags & bit else "0"


def _majmin(dev: int | None, fmt: str) -> str | None:
    return fmt % (abi.major(dev), abi.minor(dev)) if dev else None


def _num(v: int | None) -> str | None:
    return None if v is None else str(v)


class Column:
    """A listing column: its name, alignment, JSON type ("string", "number", "boolean"),
    help text and how a row gives its value."""

    __slots__ = ("help", "json_type", "name", "right", "value")

    def __init__(
        self,
        name: str,
        right: bool,
        json_type: str,
        help: str,
        value: Callable[[Row], str | None],
    ) -> None:
        self.name = name
        self.right = right
        self.json_type = json_type
        self.help = help
        self.value = value


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
#: ours, shown only when asked for (-O): --output-all is losetup's twelve
EXTRA_COLUMNS = ("REF", "DISKSEQ")
ALL_COLUMNS = tuple(c.name for c in COLUMNS if c.name not in EXTRA_COLUMNS)
KNOWN_COLUMNS = tuple(c.name for c in COLUMNS)


def parse_columns(spec: str, current: Sequence[str] = DEFAULT_COLUMNS) -> tuple[str, ...]:
    """``-O`` syntax: ``NAME,RO`` replaces the columns, ``+REF`` appends; names ignore case."""
    append = spec.startswith("+")
    names = [n.strip() for n in spec.lstrip("+").split(",")]
    out: list[str] = list(current) if append else []
    for n in names:
        col = _BY_NAME.get(n.upper())
        if col is None:
            raise InvalidArgumentError(
                f"unknown column: {n}", hint=f"columns are: {', '.join(KNOWN_COLUMNS)}"
            )
        out.append(col.name)
    return tuple(out)


def _hex(text: str) -> str:
    """Each byte of ``text`` (UTF-8; undecodable bytes as they were) as ``\\xNN``."""
    return "".join(f"\\x{b:02x}" for b in text.encode("utf-8", "surrogateescape"))


def _escape_raw(text: str) -> str:
    """``--raw`` cells as libsmartcols writes them (fputs_nonblank): blanks, backslashes and
    every byte that is not printable ASCII as ``\\xNN``."""
    out = []
    for ch in text:
        o = ord(ch)
        out.append(ch if 0x20 < o < 0x7F and ch != "\\" else _hex(ch))
    return "".join(out)


def _escape(text: str, utf8: bool) -> str:
    """Table cells as libsmartcols writes them (mbs_safe_encode): control characters, a
    backslash before an ``x``, and characters the locale cannot print (in a UTF-8 locale the
    unprintable ones, in the C locale everything beyond ASCII) as ``\\xNN``."""
    out = []
    for i, ch in enumerate(text):
        o = ord(ch)
        if o < 0x20 or o == 0x7F or (ch == "\\" and text[i + 1 : i + 2] == "x"):
            out.append(f"\\x{o:02x}")
        elif o < 0x80 or (utf8 and not 0xD800 <= o < 0xE000 and ch.isprintable()):
            out.append(ch)
        else:
            out.append(_hex(ch))
    return "".join(out)


def utf8_locale() -> bool:
    """Whether the user's locale (LC_ALL, else LC_CTYPE, else LANG) is a UTF-8 one, as the
    C library sees it: libsmartcols prints non-ASCII names only then."""
    import os

    for var in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = os.environ.get(var)
        if value:
            return value.lower().replace("-", "").endswith("utf8") or ".utf8@" in value.lower()
    return False


def table(
    rows: Sequence[Row], columns: Sequence[str], *, headings: bool = True, raw: bool = False
) -> str:
    """The ``--list`` table (or ``--raw``); empty string when there are no rows."""
    if not rows:
        return ""
    cols = [_BY_NAME[c] for c in columns]
    utf8 = utf8_locale()
    cells = [
        [_escape_raw(v) if raw else _escape(v, utf8) for v in (c.value(r) or "" for c in cols)]
        for r in rows
    ]
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


def _json_string(text: str) -> str:
    """A JSON string literal (json.dumps(text, ensure_ascii=False), without importing json).
    Undecodable bytes of a file name stay the bytes they are, as libsmartcols writes them."""
    out = ['"']
    for ch in text:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif o < 0x20:
            out.append(
                {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}.get(
                    ch, f"\\u{o:04x}"
                )
            )
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json_value(col: Column, value: str | None) -> str:
    if col.json_type == "boolean":
        return "true" if value and value[0] not in "0Nn" else "false"
    if not value:
        return "null"
    if col.json_type == "number":
        return value
    return _json_string(value)


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


def _json_object(fields: Sequence[tuple[str, object]]) -> str:
    """A one-level JSON object, pretty-printed as ``json.dumps(..., indent=2)`` would."""
    parts = []
    for key, value in fields:
        if value is None:
            text = "null"
        elif value is True or value is False:
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = _json_string(str(value))
        parts.append(f"  {_json_string(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def setup_json(dev: LoopDevice, *, reused: bool) -> str:
    """``loopdev -f -J IMG``: the device set up, as a JSON object."""
    return _json_object(
        (
            ("device", dev.path),
            ("diskseq", dev.diskseq),
            ("backing-file", dev.backing_file),
            ("read-only", dev.read_only),
            ("ref", dev.loop_ref or None),
            ("reused", reused),
        )
    )


def mount_json(m: Mount) -> str:
    """``loopdev mount -J IMG DIR``: the mount made, as a JSON object."""
    return _json_object(
        (
            ("image", m.image),
            ("target", m.target),
            ("device", m.device),
            ("diskseq", m.diskseq),
            ("fstype", m.fstype),
            ("read-only", m.read_only),
            ("partition", m.partition),
            ("reused", m.reused),
        )
    )


def columns_help() -> str:
    """The "Available output columns" block of ``--help``."""
    return "".join(f" {c.name:>12}  {c.help}\n" for c in COLUMNS)
