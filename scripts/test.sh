#!/usr/bin/env bash
# The test command: sets everything up, then lint, type checks and the whole test suite.
# Real-kernel tests (tests/kernel) run when root; they clean up all they attach or mount.
set -euo pipefail
cd "$(dirname "$0")/.."
LOOPDEV_FOR_TESTS=1 bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check src tests benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
