#!/usr/bin/env bash
# Sets up a virtualenv in .venv and runs Foresight's main job on its embedded default.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
exec .venv/bin/python -m scaler_service demo "$@"
