"""--help, the man page and the bash/zsh completions come from one option table: every option
of every command appears in each, the scripts parse, and bash really completes with them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from loopdev.cli import completion, helptext, listing, manpage
from loopdev.cli.options import COMMANDS, LOSETUP, Command

SPELLINGS = [
    (c, s)
    for c in COMMANDS
    for o in c.options
    for s in ([f"-{o.short}"] if o.short else []) + [f"--{o.long}"]
]


def _help(command: Command) -> str:
    return helptext.main_help() if command is LOSETUP else helptext.command_help(command)


@pytest.mark.parametrize(("command", "spelling"), SPELLINGS, ids=lambda x: getattr(x, "name", x))
def test_every_option_is_in_help_man_and_completions(command: Command, spelling: str) -> None:
    assert f" {spelling}" in _help(command)
    roff = spelling.replace("-", "\\-")
    assert f"\\fB{roff}\\fR" in manpage.render()
    assert spelling in completion.script("bash")
    assert f"'{spelling}" in completion.script("zsh")


def test_the_bash_script_parses() -> None:
    r = subprocess.run(["bash", "-n"], input=completion.script("bash"), text=True)
    assert r.returncode == 0


def test_the_zsh_script_parses() -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed here")
    r = subprocess.run([zsh, "-n"], input=completion.script("zsh"), text=True)
    assert r.returncode == 0


def _complete(*words: str) -> list[str]:
    """What bash offers after ``loopdev <words>`` (the last word being completed)."""
    line = " ".join(["loopdev", *words])
    script = (
        completion.script("bash")
        + f"COMP_WORDS=(loopdev {' '.join(repr(w) for w in words)}); COMP_CWORD={len(words)}\n"
        + f"COMP_LINE={line!r}; _loopdev; printf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completes_options_columns_and_subcommands() -> None:
    assert {"--output", "--output-all"} <= set(_complete("--outp"))
    assert set(_complete("-O", "")) == set(listing.KNOWN_COLUMNS)
    assert "mount" in _complete("mo")
    assert {"--partition", "--types"} <= set(_complete("mount", "--"))
    assert set(_complete("--completion", "")) == {"bash", "zsh"}
    assert "--rmdir" in _complete("umount", "--r")


def test_man_page_renders_without_warnings() -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed here")
    r = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww"], input=manpage.render(), capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = re.sub(".\b", "", r.stdout)  # bold and underline are overstruck characters
    for command in COMMANDS:
        for opt in command.options:
            assert f"--{opt.long}" in text.replace("\u2010", "-")


def test_help_lists_columns_examples_and_exit_codes() -> None:
    text = helptext.main_help()
    assert "Available output columns:" in text and "Exit status:" in text
    assert "Examples:" in text and "loopdev run" in text
    for c in listing.COLUMNS:
        assert f" {c.name}  " in text
