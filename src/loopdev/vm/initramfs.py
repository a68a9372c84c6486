"""The guest's initramfs, made at run time: busybox (static), the guest kernel's own 9p/virtio
modules (resolved with ``modprobe --show-depends``), the chosen ``loop.ko`` and ``/init``
(:mod:`loopdev.vm.init_script`), written as a ``newc`` cpio archive without a staging tree."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from loopdev.vm import debian
from loopdev.vm.debian import VmSetupError

#: what the initramfs loads itself (the rest is loaded from the host over 9p)
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
#: filesystems and helpers loaded before the first trial (none is auto-loaded mid-trial)
HOST_MODULES = ("ext4", "xfs", "squashfs", "isofs")
PT_INTERP = 3


def module_chain(kernel: debian.GuestKernel, names: tuple[str, ...]) -> list[Path]:
    """The ``.ko`` files to insmod for ``names``, dependencies first, each once."""
    if shutil.which("modprobe") is None:
        raise VmSetupError("modprobe is not installed (Debian package kmod)")
    root = debian.kernel_dir(kernel) / "root"
    out: list[Path] = []
    for name in names:
        r = subprocess.run(
            ["modprobe", "-d", str(root), "-S", kernel.release, "--show-depends", name],
            capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            raise VmSetupError(f"modprobe --show-depends {name}: {r.stderr.strip()}")
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                if path not in out:
                    out.append(path)
    return out


def is_static_elf(data: bytes) -> bool:
    """An ELF64 executable without a PT_INTERP program header (no dynamic loader)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    size = int.from_bytes(data[0x36:0x38], "little")
    count = int.from_bytes(data[0x38:0x3A], "little")
    types = (int.from_bytes(data[phoff + i * size : phoff + i * size + 4], "little")
             for i in range(count))  # fmt: skip
    return PT_INTERP not in types


def busybox() -> bytes:
    """The static busybox binary (Debian's busybox-static)."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            data = Path(candidate).read_bytes()
            if is_static_elf(data):
                return data
    raise VmSetupError("no static busybox (apt-get install busybox-static)")


@dataclass
class Cpio:
    """A ``newc`` cpio archive built in memory."""

    data: bytearray = field(default_factory=bytearray)
    _ino: int = 1

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(encoded), 0
        )  # fmt: skip
        self._ino += 1
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, body)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.data += b"\0" * (-len(self.data) % 512)
        return bytes(self.data)


def boot_modules(kernel: debian.GuestKernel) -> list[tuple[str, Path]]:
    """The modules the initramfs carries and loads, as (name in the archive, host path)."""
    return [(f"{i:02d}-{ko.name}", ko) for i, ko in enumerate(module_chain(kernel, BOOT_MODULES))]


def build(path: Path, modules: list[tuple[str, Path]], loop_ko: Path, init: str) -> None:
    """Write the initramfs to ``path``: busybox, ``modules`` (see :func:`boot_modules`) and
    ``loop_ko`` under /mod, and ``init`` as /init."""
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "job", "mod", "tmp"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox(), 0o755)
    for name, ko in modules:
        cpio.file(f"mod/{name}", ko.read_bytes())
    cpio.file("mod/loop.ko", loop_ko.read_bytes())
    cpio.file("init", init.encode(), 0o755)
    path.write_bytes(cpio.finish())
