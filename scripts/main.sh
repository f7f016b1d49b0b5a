#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export OMP_NUM_THREADS=1
exec "${DUALPIPE_BUILD_DIR:-build}/bin/dualpipe" train "$@"
