"""Command lines parsed the way GNU ``getopt_long`` parses them (losetup and mount(8) use it):
options and arguments in any order, grouped short options (``-rPf``), ``-o512`` and
``-o 512``, ``--offset=512`` and ``--offset 512``, unambiguous abbreviations (``--off``), an
optional argument only as ``--direct-io=off``, and ``--`` ending the options.

Written here rather than with argparse or getopt: both import enough of the standard library
to double the start-up time of ``loopdev -a``.
"""

from __future__ import annotations

from loopdev.errors import LoopdevError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from loopdev.cli.options import Command, Opt


class UsageError(LoopdevError):
    """The command line itself is wrong (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = "see `loopdev --help`") -> None:
        super().__init__(message, hint=hint)


class Parsed:
    """The result: ``values`` by option dest (last one given wins), ``given`` the dests in
    the order they were given, ``args`` the positional arguments, ``rest`` the words from
    the first positional beyond the command's limit, or after ``--`` (``loopdev run``'s
    command)."""

    __slots__ = ("args", "given", "rest", "values")

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.given: list[str] = []
        self.args: list[str] = []
        self.rest: list[str] = []

    def get(self, dest: str, default: object = None) -> object:
        return self.values.get(dest, default)

    def text(self, dest: str) -> str | None:
        """The argument of a string option, None if not given."""
        v = self.values.get(dest)
        return v if isinstance(v, str) else None

    def flag(self, dest: str) -> bool:
        return self.values.get(dest) is True

    def __contains__(self, dest: str) -> bool:
        return dest in self.values


def seconds(text: str | None, default: float, option: str = "--timeout") -> float:
    """An option's argument as a non-negative number of seconds (``default`` if not given);
    InvalidArgumentError otherwise."""
    from loopdev.errors import InvalidArgumentError

    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgumentError(f"{option} {text!r}: not a number") from None
    if not value >= 0:
        raise InvalidArgumentError(f"{option} {text}: must not be negative")
    return value


def _find_long(command: Command, name: str) -> Opt:
    exact = [o for o in command.options if o.long == name]
    if exact:
        return exact[0]
    matches = [o for o in command.options if o.long.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"unrecognized option '--{name}'", hint=_see(command))
    names = " ".join(f"'--{o.long}'" for o in matches)
    raise UsageError(f"option '--{name}' is ambiguous; possibilities: {names}", hint=_see(command))


def _see(command: Command) -> str:
    return f"see `{command.name} --help`"


def _store(parsed: Parsed, opt: Opt, value: object) -> None:
    if opt.choices is not None and value not in opt.choices:
        choices = ", ".join(opt.choices)
        raise UsageError(f"--{opt.long}: invalid argument {value!r} (choose from {choices})")
    parsed.values[opt.dest] = value
    parsed.given.append(opt.dest)


def parse(command: Command, argv: Sequence[str]) -> Parsed:
    """Parse ``argv`` (without the program and subcommand words) for ``command``."""
    parsed = Parsed()
    shorts = {o.short: o for o in command.options if o.short}
    i = 0
    n = len(argv)
    while i < n:
        word = argv[i]
        i += 1
        if word == "--":
            take = list(argv[i:])
            if command.rest is not None:
                room = command.rest - len(parsed.args)
                parsed.args += take[:room]
                parsed.rest = take[room:]
            else:
                parsed.args += take
            return parsed
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            opt = _find_long(command, name)
            if not opt.takes_arg:
                if eq:
                    raise UsageError(
                        f"option '--{opt.long}' doesn't allow an argument", hint=_see(command)
                    )
                _store(parsed, opt, opt.value)
            elif eq:
                _store(parsed, opt, value)
            elif opt.optional:
                _store(parsed, opt, opt.choices[0] if opt.choices else "")
            elif i < n:
                _store(parsed, opt, argv[i])
                i += 1
            else:
                raise UsageError(f"option '--{opt.long}' requires an argument", hint=_see(command))
            continue
        if word.startswith("-") and len(word) > 1:
            j = 1
            while j < len(word):
                ch = word[j]
                j += 1
                sopt = shorts.get(ch)
                if sopt is None:
                    raise UsageError(f"invalid option -- '{ch}'", hint=_see(command))
                if not sopt.takes_arg:
                    _store(parsed, sopt, sopt.value)
                    continue
                if j < len(word):
                    _store(parsed, sopt, word[j:])
                elif i < n:
                    _store(parsed, sopt, argv[i])
                    i += 1
                else:
                    raise UsageError(f"option requires an argument -- '{ch}'", hint=_see(command))
                break
            continue
        if command.rest is not None and len(parsed.args) >= command.rest:
            parsed.rest = list(argv[i - 1 :])
            return parsed
        parsed.args.append(word)
    return parsed
