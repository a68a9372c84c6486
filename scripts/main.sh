#!/usr/bin/env bash
# The main job: the race lab. Every loop-driver design in the model; as root also each design's
# real loop.c in QEMU guests and this machine's kernel (the report says why when it cannot).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/loopdev lab "$@"
