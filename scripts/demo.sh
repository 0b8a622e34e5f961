#!/usr/bin/env bash
# The main job: set up, build, and forward a pcap file through a primary and a secondary
# into another pcap file, with exact counts.
#  1. a short-lived primary generates the input capture (txonly into a pcap port);
#  2. the primary owns two ports, net_pcap0 reading in.pcap and net_pcap1 writing out.pcap;
#  3. a secondary attaches and forwards between them (io mode) until the input is done;
#  4. the final statistics are printed, tshark counts the output, the primary stops and
#     leaves no files behind.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-demo}
COUNT=${COUNT:-100000}
DIR=${DIR:-/tmp/shmdp-demo}

scripts/setup.sh
cargo build --release --bins -q
BIN=target/release
mkdir -p "$DIR"
rm -f "$DIR/in.pcap" "$DIR/out.pcap"

echo "== generating $DIR/in.pcap: $COUNT UDP frames of 128 bytes"
"$BIN/shmdp-primary" --file-prefix "$PREFIX-gen" -m 64 \
  --vdev "net_pcap0,tx_pcap=$DIR/in.pcap" --fwd txonly --tx-count "$COUNT" --txpkts 128 >/dev/null

echo "== starting shmdp-primary --file-prefix $PREFIX with two pcap ports"
"$BIN/shmdp-primary" --file-prefix "$PREFIX" -m 64 \
  --vdev "net_pcap0,rx_pcap=$DIR/in.pcap" --vdev "net_pcap1,tx_pcap=$DIR/out.pcap" &
PRIMARY=$!
trap 'kill -INT $PRIMARY 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$BIN/shmdp-secondary" --file-prefix "$PREFIX" info >/dev/null 2>&1 && break
  sleep 0.05
done

echo "== shmdp-secondary --file-prefix $PREFIX fwd --fwd io (until the input is done)"
"$BIN/shmdp-secondary" --file-prefix "$PREFIX" fwd --fwd io --idle-exit 0.5 \
  --stats-json "$DIR/stats.json"

echo "== shmdp-secondary --file-prefix $PREFIX stats"
"$BIN/shmdp-secondary" --file-prefix "$PREFIX" stats

echo "== stopping the primary (SIGINT)"
kill -INT $PRIMARY
wait $PRIMARY
trap - EXIT
in=$(tshark -r "$DIR/in.pcap" 2>/dev/null | wc -l)
out=$(tshark -r "$DIR/out.pcap" 2>/dev/null | wc -l)
echo "== tshark: $in packets in $DIR/in.pcap, $out packets in $DIR/out.pcap"
left=$(ls /dev/hugepages /dev/shm 2>/dev/null | grep -c "^shmdp\.$PREFIX" || true)
echo "== files left behind: $left"
[ "$in" = "$COUNT" ] && [ "$out" = "$COUNT" ] && [ "$left" = 0 ]
