"""``loopdev --man``: the man page (roff, section 8), made from the same option tables as
``--help`` (:mod:`loopdev.cli.options`). Install it with
``loopdev --man > /usr/local/share/man/man8/loopdev.8``."""

from __future__ import annotations

from loopdev.cli import listing
from loopdev.cli.options import COMMANDS, LOSETUP, Command, Opt
from loopdev.errors import EXIT_CODES


def _roff(text: str) -> str:
    """Text safe in roff: backslashes doubled, leading dots and quotes protected."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _option(opt: Opt) -> str:
    names = [f"\\fB\\-{opt.short}\\fR"] if opt.short else []
    long = f"\\fB\\-\\-{_roff(opt.long)}\\fR"
    if opt.arg is not None:
        arg = f"\\fI{_roff(opt.arg)}\\fR"
        long += f"[=\\fI{_roff(opt.arg)}\\fR]" if opt.optional else f" {arg}"
        if names:
            names[0] += f" {arg}"
    names.append(long)
    return f".TP\n{', '.join(names)}\n{_roff(opt.help)}\n"


def _section(command: Command) -> str:
    out = []
    if command is not LOSETUP:
        out.append(f'.SH "{command.name.upper()}"\n')
        out.append("".join(f".B {_roff(u)}\n.br\n" for u in command.usage))
        out.append(f".PP\n{_roff(command.description)}\n")
        if command.positionals:
            for p in command.positionals:
                out.append(f".TP\n\\fI{_roff(p.name)}\\fR\n{_roff(p.help)}\n")
    out.append("".join(_option(o) for o in command.options))
    if command.examples:
        out.append(".PP\nExamples:\n")
        for cmd, what in command.examples:
            out.append(f".TP\n\\fB{_roff(cmd)}\\fR\n{_roff(what) if what else ''}\n")
    return "".join(out)


def render() -> str:
    """The whole page."""
    from loopdev import __version__

    head = (
        f'.TH LOOPDEV 8 "" "loopdev {__version__}" "System Administration"\n'
        ".SH NAME\n"
        f"loopdev \\- {_roff(LOSETUP.summary)}\n"
        ".SH SYNOPSIS\n"
        + "".join(f".B {_roff(u)}\n.br\n" for u in LOSETUP.usage)
        + ".SH DESCRIPTION\n"
        + f"{_roff(LOSETUP.description)}\n"
        + "".join(f".PP\n{_roff(line)}\n" for line in LOSETUP.notes.split("\n"))
        + ".SH OPTIONS\n"
    )
    columns = ".SH OUTPUT COLUMNS\n" + "".join(
        f".TP\n\\fB{_roff(c.name)}\\fR\n{_roff(c.help)}\n" for c in listing.COLUMNS
    )
    status = ".SH EXIT STATUS\n" + "".join(
        f".TP\n\\fB{code}\\fR\n{_roff(text)}\n" for code, text in sorted(EXIT_CODES.items())
    )
    see = ".SH SEE ALSO\n.BR losetup (8),\n.BR mount (8),\n.BR umount (8)\n"
    body = _section(LOSETUP) + columns
    subcommands = "".join(_section(c) for c in COMMANDS if c is not LOSETUP)
    return head + body + subcommands + status + see
