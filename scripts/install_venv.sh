#!/bin/sh
# Builds the foresight wheel from a source folder and installs it, with its dependencies as binary wheels only
# (no compiler is needed or used), into a new virtualenv; then checks that both entry points start.
# The image's build stage runs exactly this (Dockerfile), and so does the test of the install
# (tests/deploy/test_image_install.py), so a missing package-data file or an import that only works from the
# source tree fails in CI rather than in a cluster.
# Usage: scripts/install_venv.sh SOURCE_DIR WHEEL_DIR VENV_DIR
set -eu
src=$1
wheels=$2
venv=$3
python="${PYTHON:-python3}"

"$python" -m pip wheel --no-deps --wheel-dir "$wheels" "$src"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --only-binary=:all: "$wheels"/foresight-*.whl
"$venv/bin/foresight-scaler" --help >/dev/null
"$venv/bin/rightsizer" --help >/dev/null
