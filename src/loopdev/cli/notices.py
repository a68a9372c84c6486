"""How the command line shows what the library reports: errors as ``loopdev: <message>``
with the holders and the hint below, and the library's warnings as one ``loopdev:`` line
each (never as Python's ``file:line: UserWarning`` text)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import warnings
    from types import TracebackType
    from typing import TextIO

    from loopdev.errors import LoopdevError


def report(err: TextIO, e: LoopdevError, prefix: str = "loopdev") -> None:
    """Print ``e``: ``<prefix>: <message>``, then its holders and its hint (in the command
    line's terms) on lines of their own."""
    lines = [f"{prefix}: {e}"]
    for line in e.details():
        if line.startswith("hint: ") and e.cli_hint:
            line = f"hint: {e.cli_hint}"
        lines.append(f"  {line}")
    err.write("\n".join(lines) + "\n")


class Notices:
    """``with Notices(err):`` catches the library's warnings in the block and prints each
    different one once, as ``<prefix>: <message>``, when the block ends (also when it
    raises)."""

    def __init__(self, err: TextIO, prefix: str = "loopdev") -> None:
        import warnings

        self.err = err
        self.prefix = prefix
        self._catcher = warnings.catch_warnings(record=True)
        self._caught: list[warnings.WarningMessage] | None = None

    def __enter__(self) -> Notices:
        import warnings

        from loopdev.notices import LoopdevWarning

        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always", LoopdevWarning)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from loopdev.notices import LoopdevWarning

        caught = self._caught or []
        self._catcher.__exit__(exc_type, exc, tb)
        seen: set[str] = set()
        for w in caught:
            text = str(w.message)
            if not issubclass(w.category, LoopdevWarning) or text in seen:
                continue
            seen.add(text)
            self.err.write(f"{self.prefix}: {text}\n")
