#!/usr/bin/env bash
# Installs what loopdev's main job and tests need: Debian packages (when root and missing),
# a virtual environment in .venv with loopdev and its dev tools. Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(util-linux e2fsprogs squashfs-tools xfsprogs erofs-utils fio udev)
if [ "${LOOPDEV_WITH_CHROMIUM:-0}" = 1 ]; then DEBS+=(chromium); fi
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

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.loopdev-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
