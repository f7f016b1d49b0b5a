#!/usr/bin/env bash
# Configures and builds dualpipe into build/ (Release, Ninja, ccache when present).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${DUALPIPE_BUILD_DIR:-build}
JOBS=${DUALPIPE_JOBS:-2}
# NOTE: relative paths in the ccache key let fresh clones (CI) reuse earlier compilations.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
