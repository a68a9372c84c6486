"""Models of userspace programs: the one place for them. Each is written against the
:class:`~loopdev.kernel.Kernel` port only, so it runs inside the model and on the real kernel.

* util-linux: ``mount``/``umount`` (:mod:`.mount` over libmount's loop setup, :mod:`.libmount`
  and :mod:`.loopcxt`), ``losetup`` (:mod:`.losetup`), in the version a row names;
* image creators ``mkfs.*``/``mksquashfs`` (:mod:`.mkfs`), fio (:mod:`.fio`, io_uring readers:
  model only), the processes of the resume chain (:mod:`.resume`);
* systemd-udevd (:mod:`.udevd`), the daemon that opens every block device it is told about.

:func:`util_linux_programs` gives ``name -> Program`` for one util-linux version;
:func:`register_util_linux` installs them in a model kernel's program registry, so that
``kernel.run(["mount", "-o", "loop,ro", img, dir])`` runs the modelled mount(8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from loopdev.kernel import Kernel, RunResult
from loopdev.lab import images
from loopdev.lab.userspace.libmount import UtilLinuxVersion
from loopdev.lab.userspace.losetup import losetup_main
from loopdev.lab.userspace.mkfs import mkfs_main, mksquashfs_main
from loopdev.lab.userspace.mount import mount_main, umount_main
from loopdev.lab.userspace.program import Program, exec_time
from loopdev.sim.kernel import Executable, SimKernel

__all__ = ["Program", "UtilLinuxVersion", "register_util_linux", "util_linux_programs"]


def util_linux_programs(version: str = "2.38") -> dict[str, Program]:
    """The modelled programs, with util-linux ``version``'s loop logic (see UtilLinuxVersion)."""
    ul = UtilLinuxVersion.of(version)

    def bind(fn: Callable[[Kernel, Sequence[str], UtilLinuxVersion], RunResult]) -> Program:
        def prog(kernel: Kernel, argv: Sequence[str]) -> RunResult:
            return fn(kernel, argv, ul)

        return prog

    progs: dict[str, Program] = {
        "mount": bind(mount_main),
        "umount": umount_main,
        "losetup": bind(losetup_main),
        "mksquashfs": mksquashfs_main,
    }
    for fstype in images.FSTYPES:
        if fstype != "squashfs":
            progs[f"mkfs.{fstype}"] = _mkfs(fstype)
    return progs


def _mkfs(fstype: str) -> Program:
    def prog(kernel: Kernel, argv: Sequence[str]) -> RunResult:
        return mkfs_main(kernel, argv, fstype)

    return prog


def register_util_linux(kernel: SimKernel, version: str = "2.38") -> dict[str, Program]:
    r"""Register the programs with the model kernel (as :data:`~loopdev.sim.kernel.Executable`\ s,
    called ``(kernel, argv, stdin)``); each run starts with the program's start-up time
    (:func:`~loopdev.lab.userspace.program.exec_time`)."""
    progs = util_linux_programs(version)
    for name, prog in progs.items():
        kernel.register_program(name, _with_stdin(prog))
    return progs


def _with_stdin(prog: Program) -> Executable:
    def run(kernel: Kernel, argv: Sequence[str], stdin: bytes | None) -> RunResult:
        exec_time(kernel)
        return prog(kernel, argv)

    return run
