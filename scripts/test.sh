#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export OMP_NUM_THREADS=1
ctest --test-dir "${DUALPIPE_BUILD_DIR:-build}" --output-on-failure -j "${DUALPIPE_JOBS:-2}"
