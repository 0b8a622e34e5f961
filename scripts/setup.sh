#!/usr/bin/env bash
# Prepares a Debian 12 machine for shmdp: the package of every external command the tests,
# the demo and the benchmarks run, and 2 MiB hugepages mounted at /dev/hugepages.
# Idempotent; only raises the hugepage count. After installing, every command of TOOLS is
# looked up and a missing one is named with its package (exit 1).
# Usage: scripts/setup.sh            (as root; without root it only checks)
#        scripts/setup.sh --list     (prints "command package" per tool, and the packages)
set -euo pipefail
HUGEPAGES=${SHMDP_HUGEPAGES:-512}
# Debian 12's `dpdk` package holds only three Python scripts: dpdk-testpmd (the peer of the
# vhost-user/virtio-user interop tests) and dpdk-test (the ring bench) are in dpdk-dev, the
# headers the bench's C harnesses build against in libdpdk-dev.
APT_PACKAGES=(build-essential gcc binutils pkg-config tshark busybox-static cpio iproute2 python3
  dpdk dpdk-dev libdpdk-dev)
# QEMU 10.x (the guests' emulated devices we target) comes from bookworm-backports.
QEMU_PACKAGE=qemu-system-x86
# Every external command the tests, demo and benches run, with the package that has it
# (`.ci/check-tools` checks this table against dpkg and against the sources).
TOOLS=(
  dpdk-testpmd=dpdk-dev dpdk-test=dpdk-dev tshark=tshark
  qemu-system-x86_64=qemu-system-x86 busybox=busybox-static cpio=cpio ip=iproute2
  python3=python3 strip=binutils gcc=gcc pkg-config=pkg-config prlimit=util-linux
  sleep=coreutils
)

if [ "${1:-}" = "--list" ]; then
  for t in "${TOOLS[@]}"; do printf 'tool %s %s\n' "${t%%=*}" "${t#*=}"; done
  printf 'package %s\n' "${APT_PACKAGES[@]}" "$QEMU_PACKAGE"
  exit 0
fi

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
# cargo-fuzz (from crates.io) runs the fuzz targets for a fixed time in CI
# (scripts/fuzz.sh); like Miri it needs the machine's nightly toolchain.
if command -v rustup >/dev/null 2>&1 && rustup toolchain list | grep -q '^nightly' \
   && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked -q
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
missing=0
for t in "${TOOLS[@]}"; do
  if ! command -v "${t%%=*}" >/dev/null 2>&1; then
    say "${t%%=*} is missing after install: install package ${t#*=} (apt-get install ${t#*=})"
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1
say "ready: $(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages) free 2 MiB hugepages"
