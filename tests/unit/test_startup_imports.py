"""What the ``loopdev`` command imports for its quick commands (start-up time is most of
what they cost): none of the lab, the model, logging, dataclasses, typing, argparse or re,
and no library module the command does not use. Measured by the modules loaded, in a fresh
interpreter: not a timing test."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: never on the path of a quick command
HEAVY = ("dataclasses", "typing", "argparse", "logging", "re", "subprocess", "ctypes", "json")
OURS_NEVER = ("loopdev.lab", "loopdev.sim", "loopdev.vm")


def modules_after(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter has loaded after ``loopdev <argv>`` ran."""
    prog = (
        "import io, sys\n"
        "from loopdev.cli.main import main\n"
        "out = io.StringIO(); sys.stdout, real = out, sys.stdout\n"
        f"main({argv!r})\n"
        "sys.stdout = real\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.splitlines()[-1].split())


@pytest.mark.parametrize("argv", [["-V"], ["-a"], ["-l"], ["-j", "/nonexistent"]])
def test_quick_commands_import_little(argv: list[str]) -> None:
    loaded = modules_after(argv)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert not [m for m in loaded if m.startswith(OURS_NEVER)]
    # a listing needs neither the attach, detach nor mount code
    assert not loaded & {"loopdev.control", "loopdev.device", "loopdev.mount", "loopdev.teardown"}


def test_version_imports_almost_nothing() -> None:
    ours = {m for m in modules_after(["-V"]) if m.startswith("loopdev")}
    assert ours == {"loopdev", "loopdev.cli", "loopdev.cli.main", "loopdev.errors"}


def test_import_loopdev_is_lazy() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, loopdev; print(sorted(m for m in sys.modules if m.startswith('loopdev')))",
        ],
        capture_output=True,
        text=True,
    )
    assert r.stdout.strip() == "['loopdev']"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import loopdev; print(loopdev.attach.__module__, len(loopdev.__all__))",
        ],
        capture_output=True,
        text=True,
    )
    assert r.stdout.split()[0] == "loopdev.control"
