"""Sizes as losetup and mount(8) read them (util-linux ``parse_size``): command-line values
and the ``offset=``/``sizelimit=`` mount options.

``512``, ``0x200``, ``1K``/``1k``/``1KiB`` (1024), ``1KB`` (1000), ``1.5M``, up to ``Y``.
Like ``strtoumax(..., 0)`` a leading ``0x`` means hexadecimal and a leading ``0`` octal.
Negative numbers are refused.
"""

from __future__ import annotations

import re
from fractions import Fraction

from loopdev.errors import InvalidArgumentError

_SUFFIXES = "KMGTPEZY"
_SIZE = re.compile(
    r"\s*(?P<int>0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)"
    r"(?:\.(?P<frac>[0-9]*))?"
    r"(?P<suffix>[KMGTPEZYkmgtpezy](?P<kind>i[Bb]|[Bb])?)?\Z"
)


def parse_size(text: str) -> int:
    """The byte count ``text`` means; ValueError if it is not a size."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size: {text!r}")
    raw = m.group("int")
    value = Fraction(_c_int(raw))
    frac = m.group("frac")
    suffix = m.group("suffix")
    if frac is not None:
        if not suffix or raw.lower().startswith("0x"):
            raise ValueError(f"a fraction needs a unit suffix: {text!r}")
        if frac:
            value += Fraction(int(frac), 10 ** len(frac))
    if suffix:
        kind = m.group("kind") or ""
        base = 1000 if kind in ("B", "b") else 1024
        value *= base ** (_SUFFIXES.index(suffix[0].upper()) + 1)
    return int(value)


def _c_int(raw: str) -> int:
    """A C integer literal: ``0x..`` hexadecimal, ``0..`` octal, else decimal."""
    if raw[:2] in ("0x", "0X"):
        return int(raw[2:], 16)
    return int(raw, 8) if raw.startswith("0") else int(raw)


def size_option(text: str, option: str) -> int:
    """:func:`parse_size` for option ``option`` (named in the error, e.g. ``--offset`` or
    ``offset=``); a wrong value is an InvalidArgumentError."""
    try:
        return parse_size(text)
    except ValueError:
        hint = "use a non-negative byte count, optionally with a unit: 512, 4KiB, 1MiB, 1GB"
        if text.strip().startswith("-"):
            raise InvalidArgumentError(
                f"{option} {text}: must not be negative", hint=hint
            ) from None
        raise InvalidArgumentError(f"{option} {text!r}: not a size", hint=hint) from None
