"""The lab's and the guests' help texts and the README are written for users: plain text, no
reStructuredText markup, and nothing that points at files users do not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loopdev.cli.main import main

README = Path(__file__).resolve().parents[2] / "README.md"
#: reST roles and literals, and the team's notes outside the project
UNWANTED = re.compile(r"(?<!`)``(?!`)|:(?:func|class|mod|meth|data|attr):`|\.\./shared|RESEARCH")


@pytest.mark.parametrize("command", [["lab"], ["vm"], ["vm", "run"]])
def test_help_is_plain_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = main([*command, "--help"])
    except SystemExit as done:
        rc = done.code
    assert rc == 0
    text = capsys.readouterr().out
    assert "usage: loopdev" in text
    assert not UNWANTED.search(text), UNWANTED.search(text)


def test_the_readme_does_not_point_outside_the_project() -> None:
    text = README.read_text()
    assert not UNWANTED.search(text), UNWANTED.search(text)
    assert "docs/lab.md" in text
