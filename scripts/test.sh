#!/usr/bin/env bash
# Runs every test: unit tests, cross-process tests with real primaries and secondaries,
# the loom models of the ring protocols, Miri on the unsafe crates' unit tests (where a
# nightly toolchain with Miri is installed), every cargo-fuzz target for a fixed time
# (FUZZ_SECS, default 20 s each), and each benchmark once in test mode.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins --examples
cargo test --workspace
cargo test -p shm-ring -p shm-mempool --benches

echo "== loom: ring protocols"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p shm-ring --release --test loom
echo "== loom: mempool cache refill/flush crash exactness"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 \
  cargo test -p shm-ring --release --test loom_cache

echo "== fuzz: every cargo-fuzz target for a fixed time"
if [ "${CI:-}" = true ] || cargo +nightly fuzz --version >/dev/null 2>&1; then
  scripts/fuzz.sh "${FUZZ_SECS:-20}"
else
  echo "SKIP: fuzz: no cargo-fuzz here (scripts/setup.sh installs it where a nightly toolchain is)"
fi

echo "== miri: shm, shm-ring and shm-mempool unit tests"
if cargo +nightly miri --version >/dev/null 2>&1; then
  MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-symbolic-alignment-check" CARGO_TARGET_DIR=target/miri \
    cargo +nightly miri test -p shm-ring -p shm -p shm-mempool --lib
else
  echo "SKIP: miri: no nightly toolchain with the miri component here (rustup component add miri --toolchain nightly)"
fi
