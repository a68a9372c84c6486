"""``--help`` texts, made from the option tables in :mod:`loopdev.cli.options`: usage, options
(grouped as losetup groups them), columns, examples and exit codes."""

from __future__ import annotations

from loopdev.cli import listing
from loopdev.cli.options import LOSETUP, Command
from loopdev.errors import EXIT_CODES

#: the column where option help starts (losetup's)
_HELP_COLUMN = 31


def options_block(command: Command) -> str:
    """The option lines, one blank line between groups."""
    lines: list[str] = []
    group: int | None = None
    for opt in command.options:
        if group is not None and opt.group != group:
            lines.append("")
        group = opt.group
        spelling = f" {opt.spelling()}"
        pad = max(_HELP_COLUMN - len(spelling), 2)
        lines.append(f"{spelling}{' ' * pad}{opt.help}")
    return "Options:\n" + "\n".join(lines) + "\n"


def examples_block(command: Command) -> str:
    if not command.examples:
        return ""
    width = max((len(cmd) for cmd, what in command.examples if what), default=0) + 2
    lines = []
    for cmd, what in command.examples:
        lines.append(f" {cmd:<{width}}{what}".rstrip() if what else f" {cmd}")
    return "Examples:\n" + "\n".join(lines) + "\n"


def exit_codes() -> str:
    lines = "".join(f" {code:>3}  {text}\n" for code, text in sorted(EXIT_CODES.items()))
    return "Exit status:\n" + lines


def usage_block(command: Command) -> str:
    return "Usage:\n" + "".join(f" {u}\n" for u in command.usage)


def main_help() -> str:
    """``loopdev --help``."""
    return "\n".join(
        [
            usage_block(LOSETUP) + "\n" + _wrap(LOSETUP.description) + "\n",
            options_block(LOSETUP),
            "Available output columns:\n" + listing.columns_help(),
            examples_block(LOSETUP),
            _wrap(LOSETUP.notes) + "\n",
            exit_codes(),
        ]
    )


def command_help(command: Command) -> str:
    """``loopdev mount --help`` and the like."""
    parts = [usage_block(command) + "\n" + _wrap(command.description) + "\n"]
    if command.positionals:
        width = max(len(p.name) for p in command.positionals) + 2
        parts.append(
            "Arguments:\n" + "".join(f" {p.name:<{width}}{p.help}\n" for p in command.positionals)
        )
    parts.append(options_block(command))
    if command.examples:
        parts.append(examples_block(command))
    parts.append(exit_codes())
    return "\n".join(parts)


def _wrap(text: str, width: int = 90) -> str:
    """Fill each paragraph (line) of ``text`` to ``width`` columns."""
    out = []
    for para in text.split("\n"):
        line = ""
        for word in para.split():
            if line and len(line) + 1 + len(word) > width:
                out.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        out.append(line)
    return "\n".join(out)
