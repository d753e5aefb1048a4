#!/usr/bin/env bash
# Idempotent set-up: system packages (Debian), the virtualenv and the project in editable mode.
# --with-test-tools also installs what the test suite needs: Debian's prometheus (with promtool),
# prometheus-pushgateway, chromium (the live view's browser test renders the page headless), redis-server (the
# replica tests start their own on a loopback port) and the dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
with_test_tools=0
[[ "${1:-}" == "--with-test-tools" ]] && with_test_tools=1

SUDO=""
if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
PYTHON="${PYTHON:-python3}"

apt_packages=()
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || apt_packages+=(python3-venv python3-pip)
if [[ $with_test_tools == 1 ]]; then
  command -v prometheus >/dev/null && command -v promtool >/dev/null || apt_packages+=(prometheus)
  # The rightsizer's metrics push is tested against the real Pushgateway.
  command -v prometheus-pushgateway >/dev/null || apt_packages+=(prometheus-pushgateway)
  command -v chromium >/dev/null || apt_packages+=(chromium)
  command -v redis-server >/dev/null || apt_packages+=(redis-server)
fi
if (( ${#apt_packages[@]} )); then
  echo "setup: installing Debian packages: ${apt_packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: Python >= 3.11 is required, found {sys.version.split()[0]}")
PY

stamp=".venv/.installed-$([[ $with_test_tools == 1 ]] && echo dev || echo run)"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [[ $with_test_tools == 1 ]]; then
    .venv/bin/python -m pip install -q -e '.[dev]'
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi
