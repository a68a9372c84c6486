"""The plugin subcommands (lab, vm): dispatched by their first word, and a clear message when
a plugin's module is not part of the installation."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from loopdev.cli import main as cli_main


def test_missing_plugin_says_it_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli_main.PLUGINS, "vm", "loopdev.cli.no_such_plugin_module")
    code = cli_main.main(["vm", "--help"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("loopdev: `loopdev vm` is not available")
    assert "loopdev.cli.no_such_plugin_module" in err


def test_help_lists_the_plugins_and_no_bench() -> None:
    out = io.StringIO()
    assert cli_main.dispatch(["--help"], out, io.StringIO()) == 0
    text = out.getvalue()
    assert "loopdev lab" in text and "loopdev vm" in text
    assert "bench" not in text
    assert set(cli_main.PLUGINS) == {"lab", "vm"}


def test_bench_is_not_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    # `loopdev bench` is read as losetup's `loopdev DEVICE`: bench is no loop device
    code = cli_main.main(["bench"])
    assert code != 0
    assert "bench" in capsys.readouterr().err


def test_a_plugin_that_fails_to_import_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "broken_plugin_for_test.py").write_text("from loopdev.errors import NoSuchName\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli_main.PLUGINS, "vm", "broken_plugin_for_test")
    code = cli_main.main(["vm"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("loopdev: `loopdev vm` cannot start: ")
    assert "NoSuchName" in err and "Traceback" not in err
