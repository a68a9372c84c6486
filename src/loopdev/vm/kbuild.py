"""Build the lockdep guest kernel: Debian's ``linux-source-6.1`` with ``CONFIG_PROVE_LOCKING``,
from ``make tinyconfig`` plus the project's config fragment (``config/lockdep.config``), out of
tree into the cache, once per machine.

The cache holds the unpacked source (``kernels/source-<debian version>``) and one build
directory per source version and fragment (``kernels/lockdep-<debian version>-<hash>``). A build
directory counts as built only when its stamp file exists, written after ``make`` succeeded;
a failed or interrupted build is resumed (``make`` is incremental) or, with ``clean``,
started over. Variant ``loop.ko`` modules build against the result with
``make -C <build_dir> M=<module dir> modules`` (:meth:`KernelBuild.module_make_command`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TextIO

from loopdev.vm.cache import cache_dir

SOURCE_PACKAGE = "linux-source-6.1"
SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
FRAGMENT = "lockdep.config"
STAMP = "loopdev-kernel.json"
JOBS = 2
# Steps (CC/LD/AR/... lines) of a clean build of this config, measured here; the stamp of a
# finished build records the real count, which later builds use instead.
ESTIMATED_STEPS = 2000
TAIL_LINES = 40

_OPTION = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")
# Kbuild's quiet output: "  CC      fs/ext4/inode.o" (two spaces, a verb, spaces, a target).
_STEP = re.compile(r"^  ([A-Z][A-Z0-9_\[\]]*(?: \[M\])?)\s+(\S.*)$")


class KernelBuildError(RuntimeError):
    """The kernel could not be configured or built; the message ends with make's output tail."""


@dataclass(frozen=True)
class KernelBuild:
    """A finished lockdep kernel build in the cache."""

    build_dir: Path
    source_dir: Path
    source_version: str
    release: str
    seconds: float
    steps: int

    @property
    def bzimage(self) -> Path:
        """The bootable kernel image (``qemu -kernel``)."""
        return self.build_dir / "arch/x86/boot/bzImage"

    @property
    def module_symvers(self) -> Path:
        """The exported symbols out-of-tree modules link against."""
        return self.build_dir / "Module.symvers"

    @property
    def config(self) -> Path:
        """The kernel's full ``.config``."""
        return self.build_dir / ".config"

    @property
    def loop_module(self) -> Path:
        """The stock (Debian 6.1, the 5.19 design) ``loop.ko`` built with the kernel."""
        return self.build_dir / "drivers/block/loop.ko"

    def module_make_command(self, module_dir: Path, *targets: str) -> list[str]:
        """``make`` building the out-of-tree module in ``module_dir`` against this kernel."""
        return ["make", "-C", str(self.build_dir), f"M={module_dir}", *(targets or ("modules",))]


@dataclass(frozen=True)
class Progress:
    """One step of a running build, for a progress display."""

    phase: str
    steps: int
    estimate: int
    elapsed: float
    last: str


ProgressCallback = Callable[[Progress], None]


def source_version() -> str:
    """The Debian version of the installed ``linux-source-6.1`` (e.g. ``6.1.192-3``)."""
    if not SOURCE_TARBALL.exists():
        raise KernelBuildError(
            f"{SOURCE_TARBALL} is missing: install the Debian package {SOURCE_PACKAGE} "
            "(apt-get install linux-source-6.1)"
        )
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", SOURCE_PACKAGE],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    if out:
        return out
    st = SOURCE_TARBALL.stat()
    return f"tarball-{st.st_size}-{int(st.st_mtime)}"


def fragment_text() -> str:
    """The config fragment shipped with the package."""
    return resources.files("loopdev.vm").joinpath("config", FRAGMENT).read_text()


def fragment_options(text: str) -> dict[str, str]:
    """The fragment's options: name -> value, ``"n"`` for ``# CONFIG_X is not set``."""
    options: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _OPTION.match(line):
            options[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            options[m.group(1)] = "n"
    return options


def config_key(version: str, options: dict[str, str]) -> str:
    """Cache key of a build: the source version and the fragment's options (not its comments)."""
    text = version + "\n" + "\n".join(f"{k}={v}" for k, v in sorted(options.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def config_mismatches(wanted: dict[str, str], config_text: str) -> list[str]:
    """Options of ``wanted`` whose value in a full ``.config`` differs, as readable lines."""
    have = fragment_options(config_text)
    wrong = []
    for name, value in sorted(wanted.items()):
        got = have.get(name, "n")
        if got != value:
            wrong.append(f"{name}: wanted {value}, .config has {got}")
    return wrong


def build_dir_for(version: str, options: dict[str, str]) -> Path:
    """The cache directory of the build of ``options`` on source ``version``."""
    return cache_dir("kernels", f"lockdep-{version}-{config_key(version, options)}")


def find_lockdep_kernel() -> KernelBuild | None:
    """The finished lockdep kernel of the installed source and shipped fragment, if built."""
    try:
        version = source_version()
    except KernelBuildError:
        return None
    return _read_stamp(build_dir_for(version, fragment_options(fragment_text())))


def _read_stamp(build_dir: Path) -> KernelBuild | None:
    stamp = build_dir / STAMP
    try:
        data = json.loads(stamp.read_text())
        build = KernelBuild(
            build_dir=build_dir,
            source_dir=Path(data["source_dir"]),
            source_version=str(data["source_version"]),
            release=str(data["release"]),
            seconds=float(data["seconds"]),
            steps=int(data["steps"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (build.bzimage.is_file() and build.module_symvers.is_file()):
        return None
    return build


def unpack_source(version: str) -> Path:
    """Unpack the source tarball into the cache once; returns the tree's top directory."""
    top = cache_dir("kernels") / f"source-{version}"
    if (top / "Makefile").is_file():
        return top
    with _locked(cache_dir("kernels") / f".source-{version}.lock"):
        if (top / "Makefile").is_file():
            return top
        tmp = cache_dir("kernels") / f".unpacking-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _run_quiet(["nice", "tar", "-xJf", str(SOURCE_TARBALL), "-C", str(tmp)],
                       f"unpacking {SOURCE_TARBALL}")
            (inner,) = list(tmp.iterdir())
            inner.rename(top)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return top


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _make_base(source: Path, build_dir: Path, jobs: int) -> list[str]:
    return ["nice", "make", "-C", str(source), f"O={build_dir}", "ARCH=x86_64", f"-j{jobs}"]


def configure(source: Path, build_dir: Path, options: dict[str, str]) -> None:
    """``tinyconfig``, the fragment merged on top, ``olddefconfig``; fails if Kconfig dropped
    any option of the fragment."""
    build_dir.mkdir(parents=True, exist_ok=True)
    fragment = build_dir / FRAGMENT
    fragment.write_text(fragment_text())
    base = _make_base(source, build_dir, 1)
    _run_quiet([*base, "tinyconfig"], "make tinyconfig")
    _run_quiet(
        [str(source / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build_dir),
         str(build_dir / ".config"), str(fragment)],
        "merge_config.sh", cwd=source,
    )
    _run_quiet([*base, "olddefconfig"], "make olddefconfig")
    wrong = config_mismatches(options, (build_dir / ".config").read_text())
    if wrong:
        raise KernelBuildError(
            "Kconfig did not keep these options of the fragment (a dependency is missing):\n  "
            + "\n  ".join(wrong)
        )


def _run_quiet(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-TAIL_LINES:])
        raise KernelBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def run_make(
    source: Path, build_dir: Path, jobs: int, estimate: int,
    progress: ProgressCallback | None = None,
) -> int:
    """``make`` the kernel and its modules; returns the number of steps (CC/LD/... lines)."""
    cmd = [*_make_base(source, build_dir, jobs), "all"]
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    steps = 0
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if _STEP.match(line):
                steps += 1
                if progress:
                    progress(Progress("build", steps, estimate, time.monotonic() - start, line))
        rc = proc.wait()
    if rc != 0:
        raise KernelBuildError(
            f"kernel build failed (make exit {rc}) in {build_dir}; last lines:\n"
            + "\n".join(tail)
        )
    return steps


def kernel_release(source: Path, build_dir: Path) -> str:
    """``make kernelrelease`` of the build (the modules' vermagic)."""
    return _run_quiet(
        ["make", "-s", "-C", str(source), f"O={build_dir}", "ARCH=x86_64", "kernelrelease"],
        "make kernelrelease",
    ).strip().splitlines()[-1]


def build_lockdep_kernel(
    progress: ProgressCallback | None = None, jobs: int = JOBS, clean: bool = False,
) -> KernelBuild:
    """The lockdep kernel, built now unless the cache has it. ``clean`` starts from scratch."""
    version = source_version()
    options = fragment_options(fragment_text())
    build_dir = build_dir_for(version, options)
    with _locked(build_dir.parent / f".{build_dir.name}.lock"):
        if not clean and (done := _read_stamp(build_dir)):
            return done
        (build_dir / STAMP).unlink(missing_ok=True)
        if clean:
            shutil.rmtree(build_dir, ignore_errors=True)
        start = time.monotonic()
        if progress:
            progress(Progress("unpack", 0, 0, 0.0, str(SOURCE_TARBALL)))
        source = unpack_source(version)
        if progress:
            progress(Progress("configure", 0, 0, time.monotonic() - start, "tinyconfig"))
        configure(source, build_dir, options)
        steps = run_make(source, build_dir, jobs, ESTIMATED_STEPS, progress)
        build = KernelBuild(
            build_dir=build_dir, source_dir=source, source_version=version,
            release=kernel_release(source, build_dir),
            seconds=round(time.monotonic() - start, 1), steps=steps,
        )
        for needed in (build.bzimage, build.module_symvers, build.loop_module):
            if not needed.is_file():
                raise KernelBuildError(f"make succeeded but {needed} is missing")
        stamp_tmp = build_dir / f".{STAMP}.tmp"
        stamp_tmp.write_text(json.dumps({
            "source_dir": str(source), "source_version": version, "release": build.release,
            "seconds": build.seconds, "steps": steps,
            "loadavg": os.getloadavg(), "jobs": jobs,
        }, indent=2))
        stamp_tmp.rename(build_dir / STAMP)
        return build


def _progress_line(p: Progress) -> str:
    mins, secs = divmod(int(p.elapsed), 60)
    if p.phase != "build":
        return f"lockdep kernel: {p.phase} ({p.last})"
    pct = min(99, 100 * p.steps // max(1, p.estimate))
    return f"lockdep kernel: {p.steps}/~{p.estimate} steps {pct:2d}% {mins}m{secs:02d}s {p.last.strip()}"


def terminal_progress(stream: TextIO | None = None) -> ProgressCallback:
    """A progress display: one rewritten line on a terminal, a line every 100 steps otherwise."""
    out = stream if stream is not None else sys.stderr
    tty = out.isatty()
    width = shutil.get_terminal_size().columns - 1

    def show(p: Progress) -> None:
        line = _progress_line(p)
        if tty:
            print("\r" + line[:width].ljust(width), end="", file=out, flush=True)
        elif p.phase != "build" or p.steps % 100 == 0:
            print(line, file=out, flush=True)

    return show
