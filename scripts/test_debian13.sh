#!/usr/bin/env bash
# The README's test command against Debian 13's LibTorch 2.6 from a Debian 12 host: makes (once)
# a Debian 13 root with debootstrap, binds this checkout into it at the same path and runs
# scripts/test.sh there with its own build folder (build-deb13), so both LibTorch versions are
# built and tested from one checkout. On Debian 13 itself it is scripts/test.sh. As root.
#   DUALPIPE_DEBIAN13_ROOT   where the Debian 13 root lives (default /var/cache/dualpipe/debian13)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
case "$(cat /etc/debian_version 2>/dev/null)" in
  13.* | trixie*) exec bash scripts/test.sh ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "test_debian13: run as root (debootstrap, mount, chroot)" >&2; exit 1; }

root=${DUALPIPE_DEBIAN13_ROOT:-/var/cache/dualpipe/debian13}
if [ ! -x "$root/usr/bin/apt-get" ]; then
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
  # NOTE: the same Debian mirror this host's apt uses.
  mirror=$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+/debian/?$' /etc/apt/sources.list.d/*.sources \
    2>/dev/null | head -n 1 | awk '{print $2}')
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' \
    /etc/apt/sources.list 2>/dev/null)
  [ -n "$mirror" ] || { echo "test_debian13: no Debian mirror in this host's apt sources" >&2; exit 1; }
  echo "test_debian13: creating a Debian 13 root in $root from $mirror"
  rm -rf "$root.partial"
  mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase trixie "$root.partial" "$mirror" >"$root.debootstrap.log" ||
    { tail -n 20 "$root.debootstrap.log"; exit 1; }
  mv "$root.partial" "$root"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"

mounted=()
unmount_all() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R -l "${mounted[i]}" 2>/dev/null || true; done
}
trap unmount_all EXIT
bind() {  # bind SOURCE TARGET_IN_ROOT
  mkdir -p "$root$2"
  mount --rbind "$1" "$root$2"
  mount --make-rslave "$root$2"
  mounted+=("$root$2")
}
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
bind /dev /dev  # with /dev/pts and /dev/shm
bind "$repo" "$repo"  # same path inside: build-deb13's CMake cache and ccache keys stay valid

chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CI="${CI:-}" \
  DUALPIPE_BUILD_DIR=build-deb13 DUALPIPE_JOBS="${DUALPIPE_JOBS:-2}" \
  bash -c "cd '$repo' && bash scripts/test.sh"
