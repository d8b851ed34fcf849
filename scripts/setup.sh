#!/usr/bin/env bash
# Creates the project's environment on a Debian 12 machine (called by `make setup`).
#  1. QGIS 3.22 from Debian (python3-qgis) when `qgis.core` cannot be imported by /usr/bin/python3,
#     and the desktop package (qgis, with qgis_process), Xvfb and lrelease for the plugin's tests;
#  2. .venv from /usr/bin/python3 with --system-site-packages, so QGIS, PyQt5 and GDAL come from Debian;
#  3. pinned requirements, constrained so that pip never replaces numpy with 2.x nor installs PyQt5.
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM_PYTHON=/usr/bin/python3
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! "$SYSTEM_PYTHON" -c "import qgis.core" >/dev/null 2>&1 || ! "$SYSTEM_PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1; then
  echo "setup: installing QGIS (python3-qgis) and python3-venv from Debian..."
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-qgis qgis-providers python3-venv >/dev/null
fi

# QGIS desktop and qgis_process (Debian package 'qgis'), started under Xvfb, run the plugin as an
# analyst's QGIS does in the tests; lrelease (qttools5-dev-tools) compiles its translations.
if [ ! -x /usr/bin/qgis_process.bin ] || ! command -v xvfb-run >/dev/null || ! command -v lrelease >/dev/null; then
  echo "setup: installing QGIS desktop, qgis_process, Xvfb and lrelease from Debian..."
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends qgis xvfb xauth \
    qttools5-dev-tools >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv (with QGIS's system site packages)..."
  "$SYSTEM_PYTHON" -m venv --system-site-packages .venv
fi

find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
echo "setup: installing pinned requirements into .venv..."
.venv/bin/python -m pip install -q "${find_links[@]}" -c requirements/constraints.txt \
  -r requirements/engine.txt -r requirements/training.txt -r requirements/test.txt
echo "setup: environment ready (.venv)."
