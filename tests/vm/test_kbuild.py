"""The lockdep kernel build: the config fragment, the cache key, what counts as built, make's
failure report, and (when the kernel is built here) the kernel's config and an out-of-tree
loop.ko built against its tree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from loopdev.vm import kbuild


def test_fragment_asks_for_lockdep_and_loop_as_a_module() -> None:
    options = kbuild.fragment_options(kbuild.fragment_text())
    for name in ("PROVE_LOCKING", "DEBUG_LOCK_ALLOC", "LOCKDEP", "DEBUG_MUTEXES", "HIBERNATION",
                 "NET_9P_VIRTIO", "9P_FS", "MODULE_UNLOAD", "MSDOS_PARTITION"):
        assert options[f"CONFIG_{name}"] == "y", name
    assert options["CONFIG_BLK_DEV_LOOP"] == "m"
    assert options["CONFIG_MODULE_SIG"] == "n"
    assert options["CONFIG_DEBUG_LOCKING_API_SELFTESTS"] == "n"


def test_every_fragment_line_is_an_option_or_a_comment() -> None:
    for line in kbuild.fragment_text().splitlines():
        line = line.strip()
        if not line or (line.startswith("#") and not line.startswith("# CONFIG_")):
            continue
        assert kbuild.fragment_options(line), f"not an option: {line!r}"


def test_cache_key_follows_options_not_comments() -> None:
    text = kbuild.fragment_text()
    options = kbuild.fragment_options(text)
    recommented = kbuild.fragment_options("# another comment\n" + text.replace("# ---", "# ==="))
    assert kbuild.config_key("6.1.1-1", options) == kbuild.config_key("6.1.1-1", recommented)
    assert kbuild.config_key("6.1.1-1", options) != kbuild.config_key("6.1.1-2", options)
    changed = {**options, "CONFIG_LOCK_STAT": "y"}
    assert kbuild.config_key("6.1.1-1", options) != kbuild.config_key("6.1.1-1", changed)


def test_dropped_options_are_named() -> None:
    wanted = {"CONFIG_9P_FS": "y", "CONFIG_BLK_DEV_LOOP": "m", "CONFIG_MODULE_SIG": "n"}
    config = "CONFIG_BLK_DEV_LOOP=m\n# CONFIG_9P_FS is not set\nCONFIG_MODULE_SIG=y\n"
    assert kbuild.config_mismatches(wanted, config) == [
        "CONFIG_9P_FS: wanted y, .config has n",
        "CONFIG_MODULE_SIG: wanted n, .config has y",
    ]
    assert kbuild.config_mismatches({"CONFIG_X": "n"}, "") == []  # absent means not set


def _fake_build(build_dir: Path) -> None:
    (build_dir / "arch/x86/boot").mkdir(parents=True)
    (build_dir / "arch/x86/boot/bzImage").write_bytes(b"kernel")
    (build_dir / "Module.symvers").write_text("")


def _stamp(build_dir: Path) -> None:
    (build_dir / kbuild.STAMP).write_text(json.dumps({
        "source_dir": "/src", "source_version": "6.1.1-1", "release": "6.1.1",
        "seconds": 1.0, "steps": 3,
    }))  # fmt: skip


def test_a_build_without_its_stamp_is_not_taken_as_done(tmp_path: Path) -> None:
    _fake_build(tmp_path)
    assert kbuild._read_stamp(tmp_path) is None
    _stamp(tmp_path)
    build = kbuild._read_stamp(tmp_path)
    assert build is not None and build.release == "6.1.1"
    assert build.module_make_command(Path("/m")) == [
        "make", "-C", str(tmp_path), "M=/m", "modules"]  # fmt: skip


def test_a_stamp_without_the_image_is_not_taken_as_done(tmp_path: Path) -> None:
    _fake_build(tmp_path)
    _stamp(tmp_path)
    (tmp_path / "arch/x86/boot/bzImage").unlink()
    assert kbuild._read_stamp(tmp_path) is None


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_failure_reports_the_output_tail_and_progress_counts_steps(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "Makefile").write_text(
        "all:\n"
        "\t@echo '  CC      kernel/fork.o'\n"
        "\t@echo '  LD [M]  drivers/block/loop.ko'\n"
        "\t@echo 'kernel/oops.c:1:1: error: expected identifier'\n"
        "\t@false\n"
    )
    seen: list[kbuild.Progress] = []
    with pytest.raises(kbuild.KernelBuildError) as err:
        kbuild.run_make(source, tmp_path / "build", 1, 10, seen.append)
    assert "make exit 2" in str(err.value)
    assert "error: expected identifier" in str(err.value)
    assert [p.steps for p in seen] == [1, 2]
    assert seen[-1].last.strip().startswith("LD [M]")


# -- the real kernel, when it has been built on this machine ------------------------------------

def _built() -> kbuild.KernelBuild:
    build = kbuild.find_lockdep_kernel()
    if build is None:
        pytest.skip("the lockdep kernel is not built here (loopdev vm build-kernel --lockdep)")
    return build


def test_built_kernel_kept_every_option_of_the_fragment() -> None:
    build = _built()
    wanted = kbuild.fragment_options(kbuild.fragment_text())
    assert kbuild.config_mismatches(wanted, build.config.read_text()) == []
    assert build.loop_module.is_file()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_debian_loop_c_builds_out_of_tree_against_the_kernel(tmp_path: Path) -> None:
    build = _built()
    shutil.copy(build.source_dir / "drivers/block/loop.c", tmp_path / "loop.c")  # 6.1: no loop.h
    (tmp_path / "Makefile").write_text("obj-m := loop.o\n")
    r = subprocess.run(build.module_make_command(tmp_path), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    info = subprocess.run(["modinfo", "-F", "vermagic", str(tmp_path / "loop.ko")],
                          capture_output=True, text=True, check=True).stdout
    assert re.match(rf"{re.escape(build.release)} SMP .*mod_unload", info), info
