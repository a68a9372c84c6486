"""The Debian pieces a guest is made of: which 6.1 kernel (from the installed headers), its
``linux-image-*-unsigned`` package (downloaded with ``apt-get download`` into the cache and
unpacked there, never installed), and the ``linux-source-6.1`` tarball.

Versions are never hard-coded: the kernel release (``6.1.0-57-amd64``) comes from the installed
``/usr/src/linux-headers-*-amd64`` directories, the package versions from ``dpkg-query``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loopdev.vm.cache import cache_dir

#: the kernel series whose loop.c the patches port onto (Debian 12's kernel)
SERIES = "6.1"
SOURCE_PACKAGE = f"linux-source-{SERIES}"
SOURCE_TARBALL = f"/usr/src/linux-source-{SERIES}.tar.xz"
_RELEASE = re.compile(r"^(\d+)\.(\d+)\.(\d+)-(\d+)-amd64$")


class VmSetupError(RuntimeError):
    """Something the guest needs is missing; the message says what and how to get it."""


@dataclass(frozen=True)
class GuestKernel:
    """One Debian kernel release: ``release`` as ``uname -r`` prints it."""

    release: str  # e.g. "6.1.0-57-amd64"
    headers: Path  # /usr/src/linux-headers-<release>

    @property
    def image_package(self) -> str:
        return f"linux-image-{self.release}-unsigned"

    @property
    def headers_package(self) -> str:
        return f"linux-headers-{self.release}"


def _release_key(release: str) -> tuple[int, ...]:
    m = _RELEASE.match(release)
    return tuple(int(g) for g in m.groups()) if m else ()


def installed_kernels() -> list[GuestKernel]:
    """Every ``linux-headers-<SERIES>.*-amd64`` tree installed, newest first."""
    found: list[GuestKernel] = []
    for path in glob.glob("/usr/src/linux-headers-*-amd64"):
        release = os.path.basename(path).removeprefix("linux-headers-")
        usable = os.path.exists(os.path.join(path, "Module.symvers"))
        if _RELEASE.match(release) and release.startswith(SERIES + ".") and usable:
            found.append(GuestKernel(release, Path(path)))
    return sorted(found, key=lambda k: _release_key(k.release), reverse=True)


def guest_kernel() -> GuestKernel:
    """The newest installed 6.1 headers; VmSetupError naming the package to install."""
    kernels = installed_kernels()
    if not kernels:
        raise VmSetupError(
            f"no linux-headers-{SERIES}.*-amd64 installed (scripts/setup.sh installs the one "
            "apt offers: apt-get install linux-headers-amd64 on Debian 12)"
        )
    return kernels[0]


def package_version(name: str) -> str | None:
    """The installed version of Debian package ``name``, or None."""
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\t${Version}", name], capture_output=True, text=True
    )
    if r.returncode != 0 or "install ok installed" not in r.stdout:
        return None
    return r.stdout.split("\t", 1)[1].strip()


def source_tarball() -> Path:
    """The installed linux-source tarball; VmSetupError if missing."""
    if not os.path.exists(SOURCE_TARBALL):
        raise VmSetupError(
            f"{SOURCE_TARBALL} is missing (apt-get install {SOURCE_PACKAGE}; scripts/setup.sh)"
        )
    return Path(SOURCE_TARBALL)


def kernel_dir(kernel: GuestKernel) -> Path:
    """Where the unpacked image package of ``kernel`` lives in the cache."""
    return cache_dir("kernels", kernel.release)


def vmlinuz(kernel: GuestKernel) -> Path:
    return kernel_dir(kernel) / "root" / "boot" / f"vmlinuz-{kernel.release}"


def modules_dir(kernel: GuestKernel) -> Path:
    """``lib/modules/<release>`` of the unpacked image (depmod'ed)."""
    return kernel_dir(kernel) / "root" / "lib" / "modules" / kernel.release


def image_ready(kernel: GuestKernel) -> bool:
    return vmlinuz(kernel).exists() and (modules_dir(kernel) / "modules.dep").exists()


def fetch_image(kernel: GuestKernel) -> Path:
    """Download ``linux-image-<release>-unsigned`` with ``apt-get download`` into the cache,
    unpack it there with ``dpkg-deb -x`` and run ``depmod -b``; returns the kernel dir.
    Nothing outside the cache is touched (not /boot, not the package database)."""
    if image_ready(kernel):
        return kernel_dir(kernel)
    for tool in ("apt-get", "dpkg-deb", "depmod"):
        if shutil.which(tool) is None:
            raise VmSetupError(f"{tool} is not installed")
    base = kernel_dir(kernel)
    with tempfile.TemporaryDirectory(prefix="download-", dir=base) as tmp:
        r = subprocess.run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
             kernel.image_package],
            cwd=tmp, capture_output=True, text=True,
        )  # fmt: skip
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if r.returncode != 0 or not debs:
            raise VmSetupError(
                f"apt-get download {kernel.image_package} failed: "
                f"{(r.stderr or r.stdout).strip() or 'no .deb'} (apt-get update first?)"
            )
        root = os.path.join(tmp, "root")
        r = subprocess.run(["dpkg-deb", "-x", debs[0], root], capture_output=True, text=True)
        if r.returncode != 0:
            raise VmSetupError(f"dpkg-deb -x {debs[0]} failed: {r.stderr.strip()}")
        r = subprocess.run(
            ["depmod", "-b", root, kernel.release], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise VmSetupError(f"depmod -b failed: {r.stderr.strip()}")
        final = base / "root"
        shutil.rmtree(final, ignore_errors=True)
        os.rename(root, final)
    return base
