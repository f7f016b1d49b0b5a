#!/usr/bin/env bash
# An outside project against the installed package: `cmake --install` the build tree into a
# prefix, check the exported targets name no absolute paths, configure examples/ on its own with
# find_package(dualpipe 0.1 REQUIRED), build it, and run its DualPipe example on two ranks with
# the installed `dualpipe launch`. A version that is not 0.1.* must not be accepted.
#   consumer_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
work=$build/install-test
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
export CCACHE_BASEDIR=$src

cmake --install "$build" --prefix "$prefix" >/dev/null
targets=$(ls "$prefix"/lib*/cmake/dualpipe/dualpipeTargets*.cmake)
[ -f "$prefix"/lib/cmake/dualpipe/dualpipeConfigVersion.cmake ] || {
  echo "FAIL: no dualpipeConfigVersion.cmake installed"; exit 1; }
# NOTE: the installed targets must be relocatable: no path of this machine's source, build or
# LibTorch installation may be baked in (LibTorch is the `torch` target of find_dependency).
for path in "$src" "$build" /usr/lib; do
  if grep -n "$path" $targets; then
    echo "FAIL: the exported targets name the absolute path $path"; exit 1
  fi
done
grep -q '"dualpipe::schedule;torch"' $targets || {
  echo "FAIL: dualpipe::runtime does not link the torch target:"; grep -n LINK_LIBRARIES $targets; exit 1; }

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$src/examples" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}" >"$work/configure.log" ||
  { cat "$work/configure.log"; echo "FAIL: configuring examples/ against the installed package"; exit 1; }
cmake --build "$work/build" -j 2
OMP_NUM_THREADS=1 "$prefix/bin/dualpipe" launch -n 2 --timeout 60 -- "$work/build/dualpipe_example_dualpipe"

# The version check: 0.2 (and 1.0) are refused, 0.1 accepted.
mkdir -p "$work/version"
for wanted in 0.2 1.0; do
  cat >"$work/version/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(version_check LANGUAGES CXX)
find_package(dualpipe $wanted REQUIRED COMPONENTS schedule)
CMAKE
  if cmake -S "$work/version" -B "$work/version/build-$wanted" -DCMAKE_PREFIX_PATH="$prefix" \
    >"$work/version/$wanted.log" 2>&1; then
    echo "FAIL: find_package(dualpipe $wanted) accepted version 0.1"; exit 1
  fi
  grep -q "0.1.0" "$work/version/$wanted.log" || { cat "$work/version/$wanted.log"; exit 1; }
done
# An unknown component is refused by check_required_components.
cat >"$work/version/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(component_check LANGUAGES CXX)
find_package(dualpipe 0.1 REQUIRED COMPONENTS no_such_module)
CMAKE
if cmake -S "$work/version" -B "$work/version/build-component" -DCMAKE_PREFIX_PATH="$prefix" \
  >"$work/version/component.log" 2>&1; then
  echo "FAIL: find_package accepted the component no_such_module"; exit 1
fi
echo "consumer project built and ran against $prefix"
