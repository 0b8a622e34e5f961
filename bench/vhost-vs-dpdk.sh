#!/usr/bin/env bash
# vhost-user throughput, DPDK and shmdp side by side in one run. Each pair is a backend
# (vhost-user) and a frontend (virtio-user), each forwarding io on its one port with one
# forwarding core pinned to its own CPU; the frontend starts with --tx-first, so 64-byte
# frames circle frontend -> backend -> frontend. Pairs:
#   dpdk:  testpmd net_vhost0   <-> testpmd net_virtio_user0
#   shmdp: shmdp   net_vhost0   <-> shmdp   net_virtio_user0
# Mpps = frames the frontend received per second (each also crossed the other way).
# Prints: name shmdp_Mpps dpdk_Mpps ratio (medians of REPS alternated repetitions of SECS s;
# ratio = shmdp / dpdk, above 1 = faster).
# usage: bench/vhost-vs-dpdk.sh [REPS] [SECS]   (as root; scripts/setup.sh installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-5}
# The packages (dpdk-dev, libdpdk-dev, ...) come from the same list as the tests'.
scripts/setup.sh >/dev/null
cargo build --release --bins -q
BIN=target/release
out=$(mktemp -d /tmp/vhost-vs-dpdk.XXXXXX)

testpmd() { # log cpu secs vdev [extra testpmd args...]
  local log=$1 cpu=$2 secs=$3 vdev=$4; shift 4
  ( sleep "$secs" ) | timeout $((secs + 30)) stdbuf -oL dpdk-testpmd --no-pci --no-huge -m 256 \
    --lcores "0@$cpu,1@$cpu" --file-prefix "vhb-$cpu-$$" --single-file-segments --vdev "$vdev" -- \
    --forward-mode=io --burst=32 --stats-period=1 --total-num-mbufs=8191 --no-flush-rx "$@" \
    > "$log" 2>&1 || true
  rm -rf "/var/run/dpdk/vhb-$cpu-$$"
}

# testpmd's Rx-pps per 1 s period: the median of the busy periods after the first.
rate() {
  python3 - "$1" <<'PY'
import re, statistics, sys
rates = []
for b in open(sys.argv[1]).read().split("Port statistics")[1:]:
    pps = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", b)]
    if pps:
        rates.append(sum(pps) / 1e6)
busy = [r for r in rates if r > 0]
print(f"{statistics.median(busy[1:] or busy or [0.0]):.2f}")
PY
}

for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  sock=/tmp/vhb-$$.sock
  rm -f "$sock"
  testpmd "$out/tp-back.$rep.log" 0 $((SECS + 4)) "net_vhost0,iface=$sock,queues=1" &
  sleep 1.5
  testpmd "$out/tp-front.$rep.log" 1 $((SECS + 1)) "net_virtio_user0,path=$sock,queues=1" --tx-first
  wait
  rate "$out/tp-front.$rep.log" > "$out/tp.$rep"
  rm -f "$sock"
  "$BIN/shmdp-primary" --file-prefix "vhb-b-$$" --no-huge -m 64 -l 0 --vdev "net_vhost0,iface=$sock" \
    --fwd io --duration $((SECS + 3)) > "$out/us-back.$rep.log" 2>&1 &
  sleep 1
  "$BIN/shmdp-primary" --file-prefix "vhb-f-$$" --no-huge -m 64 -l 1 --vdev "net_virtio_user0,path=$sock" \
    --fwd io --tx-first --duration "$SECS" --stats-json "$out/us-front.$rep.json" > "$out/us-front.$rep.log" 2>&1
  wait
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{r[\"total\"][\"rx_packets\"]/r[\"seconds\"]/1e6:.2f}')" \
    "$out/us-front.$rep.json" > "$out/us.$rep"
done
python3 - "$out" "$REPS" <<'PY'
import statistics, sys
d, reps = sys.argv[1], int(sys.argv[2])
us = statistics.median(float(open(f"{d}/us.{r}").read()) for r in range(1, reps + 1))
tp = statistics.median(float(open(f"{d}/tp.{r}").read()) for r in range(1, reps + 1))
print(f"{'name':28} {'shmdp_Mpps':>10} {'dpdk_Mpps':>10} {'ratio':>6}")
print(f"{'vhost<->virtio-user io 64B':28} {us:10.2f} {tp:10.2f} {us / tp if tp else 0:6.2f}")
PY
echo "raw output: $out" >&2
