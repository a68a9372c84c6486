"""resume-chain: claim 6's lockdep chain, from four ordinary programs around an autoclear loop
device whose image lives on a loop-mounted ext4 (the 2022 thread's claim 6, docs/lab.md).

* ``writer`` — one block written to the inner loop device: the loop worker writes the backing
  file on the host filesystem (``sb_start_write``, inside the loop workqueue's work);
* ``sendfile`` — ``sendfile`` from ``/sys/power/resume`` into a file on the host filesystem
  (``sb_writers`` held while the kernfs file's ``of->mutex`` is taken);
* ``resume`` — the inner device's ``MAJ:MIN`` written to ``/sys/power/resume`` (``of->mutex``
  held while ``swsusp_check`` opens the device: ``open_mutex``);
* ``freezer`` — FIFREEZE then FITHAW on the host filesystem.

Each program opens what it uses itself (lockdep's chain is one of lock classes, so nothing
needs to be shared; a shared open file of /sys/power/resume adds a deadlock of its own that
every loop version has, see tests/sim/test_lab_resume_chain.py). The programs inherit the inner device's fd; when they are done the scenario closes it (the last close:
autoclear tears the device down) and waits (bounded) for the device to be unbound. Which
dependency chain lockdep sees, whether the programs deadlock and when the device goes is up to
the loop driver of the kernel under test; the scenario asserts only what a user sees: every
program finishes, none fails with an unexpected error, the device is detached afterwards.

``ResumeChain(detach="clr-fd")`` (``resume-chain[clr-fd]``, run when named) tears the device
down with the ``LOOP_CLR_FD`` ioctl instead (``losetup -d`` by the only opener) and then closes
it: the other path claim 6's "the async variant keeps the dependency" could mean, since 5.17-rc1
made only the autoclear teardown asynchronous and ``LOOP_CLR_FD`` still tears down inside the
ioctl.

Model only: writing /sys/power/resume or freezing a filesystem is not something the lab does
to the machine it runs on. Needs the model's sendfile, FIFREEZE and /sys/power/resume; without
them the scenario reports itself unsupported.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from loopdev import abi
from loopdev.lab.scenarios.base import CAPABILITY_ERRNOS, Env, ScenarioFailure, Unsupported
from loopdev.lab.scenarios.common import (
    detach_backed_by,
    ensure_dir,
    force_umount,
    remove,
    run_children,
    wait_unbound,
)
from loopdev.lab.userspace import resume as R

#: errnos a program may see because the device went away under it: a race, not a failure
GONE = frozenset({errno.ENXIO, errno.ENODEV, errno.EIO})


def _capability(e: OSError, what: str) -> None:
    if e.errno in CAPABILITY_ERRNOS | {errno.ENOENT}:
        raise Unsupported(f"{what}: {e.strerror or e.errno} (not modelled yet)") from e


def _program(step: str, fn: Callable[[], object], tolerated: frozenset[int]) -> Callable[[], None]:
    """A child's body: `fn`, with an unexpected errno reported as the user would see it."""

    def body() -> None:
        try:
            fn()
        except OSError as e:
            _capability(e, step)
            if e.errno in tolerated:
                return
            name = errno.errorcode.get(e.errno or 0, f"errno {e.errno}")
            raise ScenarioFailure(step, name, e.strerror or name) from e

    return body


@dataclass
class ResumeChain:
    """Writer, sendfile, resume write and freezer around an autoclear loop device."""

    udev: bool = False
    model_only: bool = True
    #: the chain is the kernel's; which userspace mounts the host image does not matter
    userspaces: tuple[str, ...] = ("loopdev",)
    #: how the device goes: "autoclear" (its last close) or "clr-fd" (LOOP_CLR_FD, then close)
    detach: str = "autoclear"
    source: str = "claim 6 of the 2022 linux-block thread (its lockdep report; docs/lab.md)"

    @property
    def name(self) -> str:
        return "resume-chain" + ("" if self.detach == "autoclear" else f"[{self.detach}]")

    @property
    def title(self) -> str:
        how = "" if self.detach == "autoclear" else "; LOOP_CLR_FD"
        return f"write to a loop device + sendfile(/sys/power/resume) + freeze + resume write{how}"

    def _paths(self, env: Env) -> tuple[str, str, str]:
        host_img, host = env.path("host.img"), env.path("host")
        return host_img, host, f"{host}/inner.img"

    def prepare(self, env: Env) -> None:
        host_img, host, image = self._paths(env)
        k = env.kernel
        try:
            k.stat(R.RESUME)
        except OSError as e:
            _capability(e, R.RESUME)
            raise
        env.make_image("ext4", host_img, size_mib=64)
        ensure_dir(env, host)
        env.userspace.mount_loop(host_img, host, read_only=False, step="prepare: mount host")
        env.make_image("ext2", image, size_mib=8)

    def trial(self, env: Env) -> None:
        _img, host, image = self._paths(env)
        k = env.kernel
        flags = abi.LO_FLAGS_AUTOCLEAR if self.detach == "autoclear" else 0
        try:
            n, fd = R.attach(k, image, flags)
        except OSError as e:
            _capability(e, "attach")
            raise ScenarioFailure("attach", errno.errorcode.get(e.errno or 0, "?"), str(e)) from e
        dev = f"/dev/loop{n}"
        rdev = k.fstat(fd).rdev
        children = {
            "writer": _program("write to the loop device", lambda: R.backing_writer(k, fd), GONE),
            "sendfile": _program(
                "sendfile /sys/power/resume",
                lambda: R.sendfile_resume(k, f"{host}/resume.copy"),
                frozenset(),
            ),
            # swsusp_check finds no image (EINVAL) or a device going away: both are answers
            "resume": _program(
                "write /sys/power/resume",
                lambda: R.resume_writer(k, rdev),
                GONE | {errno.EINVAL},
            ),
            "freezer": _program("freeze the host", lambda: R.freezer(k, host), frozenset()),
        }
        try:
            failures = run_children(env, children, timeout=60.0)
        finally:
            try:
                if self.detach == "clr-fd":
                    k.ioctl(fd, abi.LOOP_CLR_FD)  # the only opener: torn down in the ioctl
            finally:
                k.close(fd)  # the last close: autoclear tears the device down
        for failure in failures:
            raise failure
        if wait_unbound(env, dev, 5.0) is None:
            raise ScenarioFailure(
                "autoclear", "still bound", f"{dev} still bound 5s after its last close"
            )

    def cleanup(self, env: Env) -> None:
        host_img, host, image = self._paths(env)
        detach_backed_by(env, image)
        force_umount(env, host)
        detach_backed_by(env, host_img)
        remove(env, host, host_img)
