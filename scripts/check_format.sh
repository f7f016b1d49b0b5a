#!/usr/bin/env bash
# Checks C++ formatting against the repository's .clang-format.
#   check_format.sh          every tracked .h/.cpp file
#   check_format.sh BASE     only the files changed since git revision BASE
# Exits 1 naming the files clang-format would change (run `clang-format -i FILE` to fix).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
  mapfile -t files < <(git diff --name-only --diff-filter=d "$1" -- '*.h' '*.cpp')
else
  mapfile -t files < <(git ls-files '*.h' '*.cpp')
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format: not formatted with $(clang-format --version | head -1):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
