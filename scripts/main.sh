#!/usr/bin/env bash
# The main job: the race lab (model variants, plus this kernel when root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/loopdev lab "$@"
