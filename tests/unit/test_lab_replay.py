"""``loopdev lab replay`` takes the short, seed-based handle the terminal prints and the full
token of --json and the HTML, and both rerun the same model run."""

from __future__ import annotations

import pytest

from loopdev.cli.main import main
from loopdev.lab.cells import run_cells
from loopdev.lab.outcome import CellKey
from loopdev.lab.replayref import ReplayRef, parse, replay, short_handle

KEY = CellKey("mount-loop", "util-linux-2.37", "v5.17-rc1")


def test_a_handle_reruns_the_run_its_token_recorded() -> None:
    keys = [KEY, CellKey("detach-open", "util-linux-2.37", "taskwork")]
    for key, cell in run_cells(keys, budget=4, workers=1).items():
        for label, ex in cell.examples.items():
            handle = short_handle(ex.token)
            assert ":" in handle and len(handle) < 12 and ex.token.startswith(handle + ":")
            rec, _ = replay(ReplayRef(key.scenario, key.userspace, key.column, handle))
            assert rec.outcome.label == label and rec.token == ex.token


def test_the_cli_replays_a_handle_and_the_token_it_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["lab", "replay", "mount-loop/util-linux-2.37/v5.17-rc1/random:0"]) == 0
    out = capsys.readouterr().out
    assert "outcome: fail: mount: EIO" in out
    token = next(line for line in out.splitlines() if line.startswith("token: ")).split()[1]
    assert main(["lab", "replay", f"mount-loop/util-linux-2.37/v5.17-rc1/{token}"]) == 0
    assert "outcome: fail: mount: EIO" in capsys.readouterr().out


def test_what_is_not_a_reference_is_said_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "replay", "mount-loop/random:0"]) == 2
    assert "SCENARIO/USERSPACE/VARIANT/TOKEN" in capsys.readouterr().err
    with pytest.raises(ValueError):
        parse("a/b/c/")
    assert main(["lab", "replay", "mount-loop/util-linux-2.37/v5.17-rc1/random:x"]) == 2
