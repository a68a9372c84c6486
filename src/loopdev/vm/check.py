"""``loopdev vm check``: what the real-kernel guests need, what of it is here, what is cached,
and for anything missing, why and how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from loopdev.vm import build, debian, initramfs, kbuild, qemu, source
from loopdev.vm.cache import cache_dir
from loopdev.vm.variants import VARIANTS, module_source


@dataclass(frozen=True)
class Item:
    """One line of the check: ``ok`` False means guests cannot run without it."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def _tool(name: str, package: str) -> Item:
    path = shutil.which(name)
    return Item(name, path is not None, path or f"missing (apt-get install {package})")


def _apt_offers(package: str) -> str | None:
    r = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.strip().startswith("Candidate:"):
            cand = line.split(":", 1)[1].strip()
            return None if cand == "(none)" else cand
    return None


def environment() -> list[Item]:
    """Everything a guest needs, checked without downloading or building anything."""
    items = [
        _tool(qemu.QEMU, "qemu-system-x86"),
        _tool("make", "make"),
        _tool("patch", "patch"),
        _tool("modprobe", "kmod"),
        _tool("depmod", "kmod"),
        _tool("dpkg-deb", "dpkg"),
    ]
    try:
        initramfs.busybox()
        items.append(Item("busybox (static)", True, "found"))
    except debian.VmSetupError as e:
        items.append(Item("busybox (static)", False, str(e)))
    kvm = os.path.exists("/dev/kvm")
    items.append(Item(
        "accelerator", True,
        "TCG emulation (default); /dev/kvm exists: try --accel kvm (it hangs where nested "
        "virtualisation does not work)" if kvm else "TCG emulation (no /dev/kvm)",
        required=False,
    ))  # fmt: skip
    try:
        kernel = debian.guest_kernel()
    except debian.VmSetupError as e:
        items.append(Item("guest kernel headers", False, str(e)))
        return items
    items.append(Item("guest kernel headers", True, f"{kernel.headers} ({kernel.release})"))
    items.append(_compiler(kernel))
    hv = debian.package_version(kernel.headers_package)
    sv = debian.package_version(debian.SOURCE_PACKAGE)
    if sv is None:
        items.append(Item("loop.c source", False,
                          f"{debian.SOURCE_PACKAGE} not installed (apt-get install "
                          f"{debian.SOURCE_PACKAGE})"))  # fmt: skip
    else:
        same = hv == sv
        items.append(Item(
            "loop.c source", True,
            f"{debian.SOURCE_PACKAGE} {sv}"
            + ("" if same else f" (headers are {hv}: modules still build; loop.c is {sv}'s)"),
        ))  # fmt: skip
    if debian.image_ready(kernel):
        items.append(Item("guest kernel image", True, f"cached: {debian.kernel_dir(kernel)}"))
    else:
        offer = _apt_offers(kernel.image_package)
        items.append(Item(
            "guest kernel image", offer is not None,
            f"not cached; apt offers {kernel.image_package} {offer} (downloaded into the cache "
            "on first use)" if offer else f"apt does not offer {kernel.image_package} "
            "(apt-get update?)",
        ))  # fmt: skip
    items.extend(_modules(kernel))
    items.append(_lockdep_kernel())
    return items


#: what building the lockdep kernel needs besides make and the source: (tool, package)
KERNEL_BUILD_TOOLS = (("gcc", "gcc"), ("flex", "flex"), ("bison", "bison"), ("bc", "bc"),
                      ("cpio", "cpio"))  # fmt: skip
KERNEL_BUILD_HEADERS = (("/usr/include/libelf.h", "libelf-dev"),
                        ("/usr/include/openssl/ssl.h", "libssl-dev"))  # fmt: skip


def _lockdep_kernel() -> Item:
    """Whether the lockdep kernel (``--kernel lockdep``) is built, or what building it needs."""
    built = kbuild.find_lockdep_kernel()
    if built is not None:
        return Item("lockdep kernel", True, f"built: {built.build_dir}", required=False)
    missing = [pkg for tool, pkg in KERNEL_BUILD_TOOLS if shutil.which(tool) is None]
    missing += [pkg for path, pkg in KERNEL_BUILD_HEADERS if not os.path.exists(path)]
    how = (f"cannot be built: apt-get install {' '.join(missing)}" if missing
           else "loopdev vm build-kernel --lockdep")  # fmt: skip
    return Item("lockdep kernel", True, f"not built ({how})", required=False)


def _compiler(kernel: debian.GuestKernel) -> Item:
    cc = build.compiler_args(kernel.headers)
    name = cc[0].split("=", 1)[1] if cc else "gcc"
    path = shutil.which(name)
    return Item("compiler", path is not None, path or f"{name} missing (apt-get install {name})")


def _modules(kernel: debian.GuestKernel) -> list[Item]:
    out: list[Item] = []
    try:
        version = source.source_version()
    except debian.VmSetupError:
        return out
    for v in VARIANTS.values():
        if not v.buildable:
            out.append(Item(f"module {v.name}", True, f"n/a: {v.unavailable}", required=False))
            continue
        src = module_source(v.name)
        key = build.module_key(src, kernel, version)
        cached = (cache_dir("loop", "modules", kernel.release) / key / "loop.ko").exists()
        out.append(Item(f"module {v.name}", True,
                        "built (cached)" if cached else "not built yet (built on first use, "
                        "~3 s)", required=False))  # fmt: skip
    return out


def ready() -> tuple[bool, list[Item]]:
    """Whether guests can run, and the items."""
    items = environment()
    return all(i.ok for i in items if i.required), items
