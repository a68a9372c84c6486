"""Module builds without a guest: a patch that does not apply and a module that does not
compile fail clearly, and leave nothing behind."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import DATA

from loopdev.vm import build, debian, source
from loopdev.vm.cache import cache_dir
from loopdev.vm.variants import VARIANTS, module_source

pytestmark = pytest.mark.usefixtures("builds_available")


def _leftovers(release: str) -> tuple[set[str], set[str]]:
    return (
        set(os.listdir(cache_dir("loop", "build"))),
        set(os.listdir(cache_dir("loop", "modules", release))),
    )


def test_patch_that_does_not_apply_names_the_hunk_and_leaves_nothing() -> None:
    kernel = debian.guest_kernel()
    before = _leftovers(kernel.release)
    src = module_source(DATA / "does-not-apply.patch", "broken")
    with pytest.raises(build.PatchError) as info:
        build.build_module(src)
    msg = str(info.value)
    assert msg.startswith("broken: does not apply to Debian's loop.c: hunk #1 @@ -1753,6 +1753,8 @@")
    assert "static void lo_release" in msg
    assert _leftovers(kernel.release) == before


def test_patch_changing_another_file_is_refused() -> None:
    patch = "--- a/include/linux/blkdev.h\n+++ b/include/linux/blkdev.h\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(build.PatchError, match=r"changes files other than drivers/block/loop\.c"):
        build.apply_patch(patch, Path(cache_dir("loop", "build")), "other")


def test_module_that_does_not_compile_shows_the_compiler_error(tmp_path: Path) -> None:
    kernel = debian.guest_kernel()
    before = _leftovers(kernel.release)
    good = (DATA / "deadlock-on-last-close.patch").read_text()
    bad = good.replace("+\tmutex_lock(&lo->lo_mutex);", "+\tmutex_lock(&lo->no_such_mutex);")
    assert bad != good
    path = tmp_path / "typo.patch"
    path.write_text(bad)
    with pytest.raises(build.ModuleBuildError) as info:
        build.build_module(module_source(path))
    msg = str(info.value)
    assert msg.startswith("typo: loop.ko does not build:")
    assert "loop.c:" in msg and "no_such_mutex" in msg and "error:" in msg
    assert _leftovers(kernel.release) == before


def test_every_project_patch_applies_and_builds() -> None:
    for v in VARIANTS.values():
        if not v.buildable:
            assert "block-layer callbacks" in v.unavailable
            continue
        m = build.build_module(module_source(v.name))
        assert m.path.exists() and m.path.stat().st_size > 0
        assert m.release == debian.guest_kernel().release
        if v.patch is not None:  # the patch's header cites what it ports
            header = v.patch_text().split("\n--- a/", 1)[0]
            cited = re.findall(r"\b[0-9a-f]{12}\b", v.ports) or ["Tetsuo Handa"]
            assert all(c in header for c in cited), (v.name, cited)


def test_modules_are_cached_by_patch_and_kernel() -> None:
    a = build.build_module(module_source("v6.11"))
    b = build.build_module(module_source("v6.11"))
    assert b.cached and b.path == a.path
    assert a.key != build.build_module(module_source("v5.19")).key
    assert source.loop_c().read_text().count("static void lo_release(") == 1
