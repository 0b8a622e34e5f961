#!/usr/bin/env bash
# Prepares a Debian 12 machine for shmdp: packages the tests and benchmarks use, and
# 2 MiB hugepages mounted at /dev/hugepages. Idempotent; only raises the hugepage count.
# Usage: scripts/setup.sh            (as root; without root it only checks)
set -euo pipefail
HUGEPAGES=${SHMDP_HUGEPAGES:-512}
# dpdk: dpdk-testpmd is the vhost-user/virtio-user peer of the interop tests (the bench
# scripts add dpdk-dev for their C harnesses).
APT_PACKAGES=(build-essential pkg-config tshark busybox-static cpio iproute2 python3 dpdk)
# QEMU 10.x (the guests' emulated devices we target) comes from bookworm-backports.
QEMU_PACKAGE=qemu-system-x86

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  say "not root: skipping package install and hugepage setup (memsegs fall back to /dev/shm)"
  exit 0
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! qemu-system-x86_64 --version 2>/dev/null | grep -q 'version 10\.'; then
  say "installing $QEMU_PACKAGE from bookworm-backports"
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > /etc/apt/sources.list.d/bookworm-backports.sources
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends -t bookworm-backports "$QEMU_PACKAGE" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install Rust (rustup) first"; exit 1
fi
# Miri checks the unsafe crates; it needs a nightly toolchain (optional, best effort).
if command -v rustup >/dev/null 2>&1 && rustup toolchain list | grep -q '^nightly' \
   && ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup component add miri rust-src --toolchain nightly >/dev/null 2>&1 \
    && say "installed miri for the nightly toolchain" || say "miri not installable; its tests will be skipped"
fi

free=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages 2>/dev/null || echo 0)
total=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
if [ "$free" -lt "$HUGEPAGES" ]; then
  want=$(( total + HUGEPAGES - free ))
  echo "$want" > /proc/sys/vm/nr_hugepages || true
  say "hugepages: asked for $want in total, have $(cat /proc/sys/vm/nr_hugepages)"
fi
if ! awk '$3 == "hugetlbfs" { found = 1 } END { exit !found }' /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs -o pagesize=2M none /dev/hugepages
  say "mounted hugetlbfs at /dev/hugepages"
fi
say "ready: $(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages) free 2 MiB hugepages"
