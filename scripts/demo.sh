#!/usr/bin/env bash
# The main job: set up, build, start a primary, attach a secondary that finds the shared
# memzones, stop the primary cleanly, and show that nothing was left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-demo}

scripts/setup.sh
cargo build --release --bins -q
BIN=target/release

echo "== starting shmdp-primary --file-prefix $PREFIX"
"$BIN/shmdp-primary" --file-prefix "$PREFIX" -m 64 --memseg guest1=4 --memzone hello=4k@guest1 &
PRIMARY=$!
trap 'kill -INT $PRIMARY 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$BIN/shmdp-secondary" --file-prefix "$PREFIX" info >/dev/null 2>&1 && break
  sleep 0.05
done

echo "== shmdp-secondary --file-prefix $PREFIX info"
"$BIN/shmdp-secondary" --file-prefix "$PREFIX" info

echo "== stopping the primary (SIGINT)"
kill -INT $PRIMARY
wait $PRIMARY
trap - EXIT
left=$(ls /dev/hugepages /dev/shm 2>/dev/null | grep -c "^shmdp\.$PREFIX\." || true)
echo "== files left behind: $left"
