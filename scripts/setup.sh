#!/usr/bin/env bash
# Installs what dualpipe needs to build, test and run, from Debian's packages only: Debian 13
# (trixie: LibTorch 2.6) or Debian 12 (bookworm: LibTorch 1.13); the package names are the same.
# Idempotent: installs only what is missing. Run as root (or with sudo).
set -euo pipefail

debian=$(cat /etc/debian_version 2>/dev/null || echo unknown)
case "$debian" in
  12.* | 13.* | trixie* | forky* | */sid) ;;
  *) echo "setup: warning: Debian 12 or 13 expected, /etc/debian_version says '$debian'" >&2 ;;
esac

packages=(
  build-essential cmake ninja-build ccache git pkg-config
  libtorch-dev libgloo-dev libopenblas-dev libopenblas0-pthread
  python3-torch  # the Python side of the same LibTorch (torchrun, side-by-side checks)
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  fortunes fortunes-min
  clang-format
  librsvg2-bin  # rsvg-convert: look at the SVG timelines of `dualpipe sim --svg` as PNG
  libtoml11-dev  # header-only TOML parser: `dualpipe train --config FILE.toml`
  pybind11-dev python3-dev python3-pytest  # the Python package `dualpipe` and its tests
  openmpi-bin iproute2  # mpirun and network namespaces: the launcher tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# NOTE: Debian's LibTorch calls the generic BLAS; make sure the OpenBLAS build backs it
# (netlib's reference BLAS is ~30x slower for matrix products).
if command -v update-alternatives >/dev/null; then
  for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
    cand=$(update-alternatives --list "$alt" 2>/dev/null | grep -m1 openblas || true)
    if [ -n "$cand" ]; then
      ${SUDO:-} update-alternatives --set "$alt" "$cand" >/dev/null 2>&1 || true
    fi
  done
fi
version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo missing; }
echo "setup: all packages present (Debian $debian, libtorch-dev $(version_of libtorch-dev)," \
  "python3-torch $(version_of python3-torch))"
