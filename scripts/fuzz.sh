#!/usr/bin/env bash
# Runs every cargo-fuzz target of the project (ivshmem-meta/fuzz, pmds/fuzz) for SECS
# seconds each, from a fixed seed, and fails on the first crash (its input is left in that
# workspace's artifacts/). Needs the nightly toolchain and cargo-fuzz (scripts/setup.sh
# installs both where rustup is present).
# Usage: scripts/fuzz.sh [SECS]      (default 20; CI runs it from scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz or the nightly toolchain is missing: run scripts/setup.sh (rustup toolchain install nightly; cargo install cargo-fuzz)" >&2
  exit 1
fi
for ws in ivshmem-meta pmds; do
  (
    cd "$ws"
    for t in $(cargo +nightly fuzz list); do
      echo "== fuzz: $ws/$t for ${SECS} s"
      # -seed fixes the run's randomness; the time bound keeps CI's time fixed.
      log=$(mktemp /tmp/shmdp-fuzz.XXXXXX)
      if ! cargo +nightly fuzz run "$t" -- -seed=1 -max_total_time="$SECS" -rss_limit_mb=2048 \
        >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $ws/$t crashed; the input is in $ws/fuzz/artifacts/$t/" >&2
        rm -f "$log"
        exit 1
      fi
      grep -E '^Done [0-9]+ runs' "$log" || tail -3 "$log"
      rm -f "$log"
    done
  )
done
echo "fuzz: every target ran ${SECS} s without a crash"
