#!/usr/bin/env bash
# Installs what loopdev's main job and tests need: Debian packages (when root and missing),
# a virtual environment in .venv with loopdev and its dev tools. Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(util-linux fdisk e2fsprogs squashfs-tools xfsprogs erofs-utils fio udev)
# what only the tests use (scripts/test.sh sets LOOPDEV_FOR_TESTS=1): the HTML report in a real
# browser, the zsh completion script parsed by zsh
if [ "${LOOPDEV_FOR_TESTS:-0}" = 1 ]; then DEBS+=(chromium zsh); fi
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: not root; cannot install ${missing[*]} (tests that need them will be skipped)" >&2
  fi
fi

# Real kernels in virtual machines (loopdev vm, docs/vm.md): QEMU, Debian 12's 6.1 kernel
# headers and loop.c source, busybox-static for the initramfs, the module toolchain. The
# headers are the newest linux-headers-6.1.*-amd64 apt offers (never a hard-coded ABI number);
# the matching linux-image-*-unsigned is only downloaded into the cache (never installed), by
# the fetch step below. LOOPDEV_NO_VM=1 skips all of this.
# The lockdep guest kernel (docs/lockdep-kernel.md) is built from linux-source-6.1 with the
# kernel's own build tools: gcc, make, flex, bison, bc, libelf-dev, libssl-dev, cpio.
# LOOPDEV_NO_LOCKDEP_KERNEL=1 skips those packages and the build.
if [ "${LOOPDEV_NO_VM:-0}" != 1 ]; then
  VM_DEBS=(qemu-system-x86 linux-source-6.1 busybox-static make kmod patch)
  if [ "${LOOPDEV_NO_LOCKDEP_KERNEL:-0}" != 1 ]; then
    VM_DEBS+=(gcc flex bison bc libelf-dev libssl-dev cpio xz-utils)
  fi
  have_headers=$(ls -d /usr/src/linux-headers-6.1.*-amd64 2>/dev/null | head -1 || true)
  if [ -z "$have_headers" ]; then
    headers=$(apt-cache search --names-only '^linux-headers-6\.1\.[0-9.]*-[0-9]+-amd64$' 2>/dev/null \
      | awk '{print $1}' | sort -V | tail -1)
    if [ -n "$headers" ]; then VM_DEBS+=("$headers"); else VM_DEBS+=(linux-headers-amd64); fi
  fi
  vm_missing=()
  for p in "${VM_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || vm_missing+=("$p")
  done
  if [ "${#vm_missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
      echo "setup: installing Debian packages for the VM guests: ${vm_missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${vm_missing[@]}" >/dev/null
    else
      echo "setup: not root; cannot install ${vm_missing[*]} (VM tests will be skipped)" >&2
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.loopdev-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

# The guest kernel (downloaded into the cache) and the variant modules (built into the cache):
# both are kept, so this costs time only once per machine.
if [ "${LOOPDEV_NO_VM:-0}" != 1 ] && [ "$(id -u)" -eq 0 ] && .venv/bin/loopdev vm check >/dev/null 2>&1; then
  .venv/bin/python -c 'from loopdev.vm import debian; debian.fetch_image(debian.guest_kernel())' \
    || echo "setup: could not fetch the guest kernel (loopdev vm check says why)" >&2
  .venv/bin/loopdev vm build >/dev/null || echo "setup: loopdev vm build failed" >&2
fi

# The lockdep guest kernel, built once per machine into the cache (~10 CPU-minutes: 9-18
# minutes of wall clock on a shared 2-core machine; later runs find it at once). The guest
# test of claim 6 (tests/vm/test_lockdep_report_guest.py) boots it. A failed build fails the
# setup: LOOPDEV_NO_LOCKDEP_KERNEL=1 skips the build (that test then skips, saying why).
if [ "${LOOPDEV_NO_VM:-0}" != 1 ] && [ "${LOOPDEV_NO_LOCKDEP_KERNEL:-0}" != 1 ] \
    && [ "$(id -u)" -eq 0 ] && [ -f /usr/src/linux-source-6.1.tar.xz ]; then
  if ! .venv/bin/python -c 'import sys; from loopdev.vm import kbuild; sys.exit(kbuild.find_lockdep_kernel() is None)'; then
    echo "setup: building the lockdep guest kernel once for this machine (~10 CPU-minutes;" \
      "LOOPDEV_NO_LOCKDEP_KERNEL=1 skips it)"
    start=$SECONDS
    if ! .venv/bin/loopdev vm build-kernel --lockdep; then
      echo "setup: the lockdep kernel did not build (LOOPDEV_NO_LOCKDEP_KERNEL=1 skips it)" >&2
      exit 1
    fi
    echo "setup: lockdep kernel built in $(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s" \
      "(load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  fi
fi
