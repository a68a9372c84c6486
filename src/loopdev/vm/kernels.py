"""The kernels a guest can boot.

* ``debian``: Debian 12's packaged 6.1 kernel (``linux-image-<release>-unsigned``, unpacked
  into the cache). Its 9p/virtio modules ride in the initramfs, its filesystem modules are
  loaded from its own tree; modules build against the installed ``linux-headers``. No lockdep.
* ``lockdep``: Debian's ``linux-source-6.1`` built with ``CONFIG_PROVE_LOCKING``
  (:mod:`loopdev.vm.kbuild`, ``loopdev vm build-kernel --lockdep``). 9p, virtio and the
  filesystems are built in, so the initramfs carries no module but ``loop.ko``; modules build
  against its build tree. The console runs at ``loglevel=5`` so lockdep's reports (printed at
  ``KERN_WARNING``) reach it.

A variant's ``loop.ko`` must be built against the kernel that boots it (vermagic and
``Module.symvers`` differ): :attr:`BootKernel.target` is what :func:`loopdev.vm.build.build_module`
takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loopdev.vm import debian, initramfs, kbuild
from loopdev.vm.debian import VmSetupError

#: kernel name -> what it is (for --help and reports)
KERNELS: dict[str, str] = {
    "debian": "Debian 12's packaged 6.1 kernel (no lockdep)",
    "lockdep": "Debian's 6.1 source built with lockdep (loopdev vm build-kernel --lockdep)",
}
DEFAULT = "debian"


@dataclass(frozen=True)
class BootKernel:
    """One bootable guest kernel and what a guest needs to use it."""

    name: str  # a key of KERNELS
    target: debian.GuestKernel  # release + the tree modules build against
    image: Path  # the kernel image QEMU boots
    boot_modules: tuple[tuple[str, Path], ...]  # (name in the initramfs, host path), in order
    host_modules: tuple[Path, ...]  # loaded from the host's root before the first trial
    modules_dir: Path | None  # the kernel's module tree, bound on /lib/modules/<release>
    loglevel: int  # the console log level
    lockdep: bool

    @property
    def release(self) -> str:
        return self.target.release


def boot_kernel(name: str = DEFAULT) -> BootKernel:
    """The kernel called ``name``, ready to boot (Debian's is downloaded into the cache on
    first use). VmSetupError when it is not there and cannot be had now; KeyError for an
    unknown name."""
    if name == "debian":
        k = debian.guest_kernel()
        debian.fetch_image(k)
        return BootKernel(
            name="debian",
            target=k,
            image=debian.vmlinuz(k),
            boot_modules=tuple(initramfs.boot_modules(k)),
            host_modules=tuple(initramfs.module_chain(k, initramfs.HOST_MODULES)),
            modules_dir=debian.modules_dir(k),
            loglevel=4,
            lockdep=False,
        )
    if name == "lockdep":
        built = kbuild.find_lockdep_kernel()
        if built is None:
            raise VmSetupError(
                "the lockdep kernel is not built on this machine: run `loopdev vm build-kernel "
                "--lockdep` (about 10 CPU-minutes; scripts/setup.sh builds it once as root)"
            )
        return BootKernel(
            name="lockdep",
            target=debian.GuestKernel(built.release, built.build_dir),
            image=built.bzimage,
            boot_modules=(),
            host_modules=(),
            modules_dir=None,
            loglevel=5,
            lockdep=True,
        )
    raise KeyError(f"unknown guest kernel {name!r}; known: {', '.join(KERNELS)}")


def build_target(name: str = DEFAULT) -> debian.GuestKernel:
    """What modules for kernel ``name`` build against, without fetching its image."""
    if name == "lockdep":
        return boot_kernel(name).target
    if name == "debian":
        return debian.guest_kernel()
    raise KeyError(f"unknown guest kernel {name!r}; known: {', '.join(KERNELS)}")
