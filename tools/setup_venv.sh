#!/usr/bin/env bash
# Create (or repair) the project's virtual environment.
# Usage: tools/setup_venv.sh [VENV_DIR]
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3.11}
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"

$PIP install -q --upgrade "pip>=24" "setuptools>=68" wheel
# torch/torchvision: pinned pair (pip takes them from the local wheel cache here).
$PIP install -q "torch==2.14.1" "torchvision==0.29.1" "numpy>=1.24,<2"

# learn2learn 0.2.0's sdist ships Cython-generated C files that include
# longintrepr.h, which Python 3.11 removed. Regenerate them with Cython 3 and
# build without isolation against the torch installed above.
if ! $PY -c 'import learn2learn' 2>/dev/null; then
    $PIP install -q "cython>=3,<4" "numpy>=1.24,<2"
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    $PIP download -q --no-deps --no-binary :all: "learn2learn==0.2.0" -d "$TMP"
    tar -xzf "$TMP"/learn2learn-0.2.0.tar.gz -C "$TMP"
    SRC="$TMP/learn2learn-0.2.0"
    (cd "$SRC" && "$HERE/$VENV/bin/cython" -3 learn2learn/data/*.pyx)
    $PIP install -q --no-build-isolation "$SRC"
fi

# The project itself, editable, with its dev extras (pytest, ray for the Ray executor's tests, ...).
$PIP install -q -e ".[dev]"
$PY -c 'import torch, torchvision, avalanche, learn2learn, mnist1d, ray, kta_plugins, strategies, scenarios'
echo "set-up done: $VENV"
