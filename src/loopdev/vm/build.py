"""Build a variant's ``loop.ko``: Debian's 6.1 ``loop.c`` + a patch, compiled out of tree
against the guest kernel's headers, cached by (kernel release, source version, patch).

A patch that does not apply raises :class:`PatchError` naming the hunk (its number and its
``@@`` line); a module that does not compile raises :class:`ModuleBuildError` with the
compiler's messages. Either way the temporary build directory is removed: nothing is left
behind, and nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loopdev.vm import debian, source
from loopdev.vm.cache import cache_dir
from loopdev.vm.variants import ModuleSource

_FAILED = re.compile(r"Hunk #(\d+) FAILED at (\d+)")
_NO_FILE = re.compile(r"^\|?\+\+\+ (?:b/)?(\S+)", re.M)


class PatchError(RuntimeError):
    """The patch does not apply to Debian's loop.c."""


class ModuleBuildError(RuntimeError):
    """The patched loop.c does not compile; the message carries the compiler's errors."""


@dataclass(frozen=True)
class BuiltModule:
    """A ``loop.ko`` in the cache."""

    source: ModuleSource
    path: Path
    key: str
    release: str
    seconds: float  # build time; 0.0 when it came from the cache
    cached: bool

    @property
    def label(self) -> str:
        return self.source.label


#: bump when the way modules are built changes (cached modules are then rebuilt)
BUILD_REVISION = "3"


def module_key(src: ModuleSource, kernel: debian.GuestKernel, source_version: str) -> str:
    """The cache key: the kernel (release and the tree built against: the lockdep kernel's
    directory names its configuration), loop.c's source version, the patch, the build rules."""
    text = f"{BUILD_REVISION}\0{kernel.release}\0{kernel.headers}\0{source_version}\0{src.patch}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _hunks(patch: str) -> list[str]:
    """The ``@@`` lines of the hunks that change loop.c, in order."""
    out: list[str] = []
    in_loop = False
    for line in patch.splitlines():
        if line.startswith("+++ "):
            in_loop = line.split()[1].removeprefix("b/") == source.LOOP_C
        elif line.startswith("@@") and in_loop:
            out.append(line.strip())
    return out


def _patch_failure(patch: str, output: str) -> str:
    """A one-paragraph reason from patch(1)'s output."""
    if "can't find file to patch" in output or "No file to patch" in output:
        files = sorted(set(_NO_FILE.findall(output)) - {source.LOOP_C})
        other = f" ({', '.join(files)})" if files else ""
        return (
            f"the patch changes files other than {source.LOOP_C}{other}: a module build "
            f"can only change {source.LOOP_C} (paths as in git diffs: a/{source.LOOP_C})"
        )
    if "Reversed (or previously applied) patch detected" in output:
        return "the patch is already applied to (or reverses) Debian's loop.c"
    failed = _FAILED.findall(output)
    if failed:
        hunks = _hunks(patch)
        parts = []
        for num, line in failed:
            at = hunks[int(num) - 1] if int(num) <= len(hunks) else ""
            parts.append(f"hunk #{num} {at} (expected near line {line})".replace("  ", " "))
        return "does not apply to Debian's loop.c: " + "; ".join(parts)
    if "Only garbage was found" in output or not _hunks(patch):
        return f"no hunk for {source.LOOP_C} found in the patch"
    return output.strip().splitlines()[-1] if output.strip() else "patch failed"


def apply_patch(patch: str, tree: Path, label: str) -> None:
    """Apply ``patch`` (``-p1``, no fuzz: context must match exactly, offsets may differ) to
    ``tree``; PatchError otherwise. No .orig/.rej files."""
    if not patch.strip():
        return
    patch_file = tree / ".loopdev.patch"
    patch_file.write_text(patch)
    r = subprocess.run(
        ["patch", "-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-",
         "-d", str(tree), "-i", str(patch_file)],
        capture_output=True, text=True,
    )  # fmt: skip
    patch_file.unlink()
    if r.returncode != 0:
        raise PatchError(f"{label}: {_patch_failure(patch, r.stdout + r.stderr)}")


def compiler_args(headers: Path) -> list[str]:
    """``CC=gcc-N`` when the headers were configured with gcc-N and it is installed."""
    try:
        text = (headers / ".config").read_text()
    except OSError:
        return []
    m = re.search(r'^CONFIG_CC_VERSION_TEXT="gcc-(\d+)', text, re.M)
    if m and shutil.which(f"gcc-{m.group(1)}"):
        return [f"CC=gcc-{m.group(1)}"]
    return []


def compiler_errors(output: str, tree: Path) -> str:
    """The compiler's error lines (with the line after each), paths relative to the tree."""
    text = output.replace(str(tree) + "/", "")
    lines = text.splitlines()
    keep: list[str] = []
    for i, line in enumerate(lines):
        if "error:" in line or "Error " in line or "undefined!" in line:
            keep.extend(lines[i : i + 2])
    return "\n".join(dict.fromkeys(keep)) or "\n".join(lines[-15:])


def compile_module(tree: Path, headers: Path, label: str) -> Path:
    """``make -C headers M=tree/drivers/block modules`` (niced); the built loop.ko."""
    mdir = tree / "drivers" / "block"
    (mdir / "Kbuild").write_text("obj-m := loop.o\n")
    r = subprocess.run(
        ["nice", "-n", "10", "make", "-C", str(headers), f"M={mdir}", *compiler_args(headers),
         "modules"],
        capture_output=True, text=True,
    )  # fmt: skip
    ko = mdir / "loop.ko"
    if r.returncode != 0 or not ko.exists():
        raise ModuleBuildError(
            f"{label}: loop.ko does not build:\n{compiler_errors(r.stdout + r.stderr, mdir)}"
        )
    return ko


def build_module(
    src: ModuleSource, kernel: debian.GuestKernel | None = None, *, force: bool = False
) -> BuiltModule:
    """The cached ``loop.ko`` for ``src`` built against ``kernel`` (default: the installed
    Debian 6.1 headers; :attr:`loopdev.vm.kernels.BootKernel.target` for another guest
    kernel), building it first if needed (or ``force``)."""
    kernel = kernel or debian.guest_kernel()
    version = source.source_version()
    key = module_key(src, kernel, version)
    final = cache_dir("loop", "modules", kernel.release) / key
    ko = final / "loop.ko"
    if ko.exists() and not force:
        return BuiltModule(src, ko, key, kernel.release, 0.0, True)
    pristine = source.loop_c()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache_dir("loop", "build")))
    try:
        tree = work / "tree"
        (tree / "drivers" / "block").mkdir(parents=True)
        shutil.copyfile(pristine, tree / source.LOOP_C)
        apply_patch(src.patch, tree, src.label)
        built = compile_module(tree, kernel.headers, src.label)
        staged = work / "out"
        staged.mkdir()
        shutil.copyfile(built, staged / "loop.ko")
        (staged / "loop.patch").write_text(src.patch)
        meta = {
            "label": src.label,
            "origin": src.origin,
            "variant": src.variant,
            "release": kernel.release,
            "source_version": version,
            "seconds": round(time.monotonic() - t0, 2),
        }
        (staged / "build.json").write_text(json.dumps(meta, indent=1))
        with source.cache_lock(f"module-{key}"):
            if final.exists():
                shutil.rmtree(final)
            os.rename(staged, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuiltModule(src, ko, key, kernel.release, time.monotonic() - t0, False)
