#!/usr/bin/env bash
# The main job: set up, build, start a primary with an mbuf pool and a ring, attach one
# secondary that sends packets through the ring and another that receives and checks
# them, print the pool's statistics, stop the primary cleanly, and show that nothing was
# left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-demo}
COUNT=${COUNT:-1000000}

scripts/setup.sh
cargo build --release --bins -q
BIN=target/release
SEC=("$BIN/shmdp-secondary" --file-prefix "$PREFIX")

echo "== starting shmdp-primary --file-prefix $PREFIX"
"$BIN/shmdp-primary" --file-prefix "$PREFIX" -m 64 --memseg guest1=4 --memzone hello=4k@guest1 \
  --mempool mbufs=8191:256 --ring xfer=1024:sp_sc &
PRIMARY=$!
trap 'kill -INT $PRIMARY 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "${SEC[@]}" info >/dev/null 2>&1 && break
  sleep 0.05
done

echo "== shmdp-secondary --file-prefix $PREFIX info"
"${SEC[@]}" info

echo "== $COUNT packets: one secondary sends them from pool mbufs through ring xfer, another receives and checks them"
"${SEC[@]}" mbuf-recv mbufs xfer --count "$COUNT" &
RECV=$!
"${SEC[@]}" mbuf-send mbufs xfer --count "$COUNT"
wait $RECV

echo "== shmdp-secondary --file-prefix $PREFIX stats"
"${SEC[@]}" stats

echo "== stopping the primary (SIGINT)"
kill -INT $PRIMARY
wait $PRIMARY
trap - EXIT
left=$(ls /dev/hugepages /dev/shm 2>/dev/null | grep -c "^shmdp\.$PREFIX\." || true)
echo "== files left behind: $left"
