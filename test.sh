#!/usr/bin/env bash
# Sets up everything the tests need (system packages included) and runs lint, type checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh --with-test-tools
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
