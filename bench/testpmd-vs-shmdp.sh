#!/usr/bin/env bash
# Forwarding throughput, DPDK's dpdk-testpmd and shmdp side by side in one run:
#  1. io forwarding between two loopback ring ports (--vdev net_ring0 --vdev net_ring1,
#     --tx-first, burst 32, one forwarding core), REPS alternated repetitions of SECS s;
#  2. pcap replay: io forwarding of a generated capture of PKTS 64-byte frames from
#     net_pcap0 (rx_pcap) to net_pcap1 (tx_pcap).
# Prints: name shmdp_Mpps dpdk_Mpps ratio (medians; ratio = shmdp / dpdk, above 1 = faster).
# usage: bench/testpmd-vs-shmdp.sh [REPS] [SECS] [PKTS]   (as root; scripts/setup.sh installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-4}
PKTS=${3:-10000000}
# The packages (dpdk-dev, libdpdk-dev, ...) come from the same list as the tests'.
scripts/setup.sh >/dev/null
cargo build --release --bins -q
BIN=target/release
out=$(mktemp -d /tmp/testpmd-vs-shmdp.XXXXXX)
EAL=(--no-pci --no-huge -m 512 -l 0-1 --file-prefix "shmdp-tpbench-$$")

# testpmd's Rx-pps summed over ports, per 1 s stats period: the median of the busy
# periods after the first (ring: steady state), or the best period (pcap: a finite file,
# the first and last periods are partly idle).
testpmd_rate() { # log median|max
  python3 - "$1" "$2" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
rates = []
for b in text.split("Port statistics")[1:]:
    pps = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", b)]
    if pps:
        rates.append(sum(pps) / 1e6)
busy = [r for r in rates if r > 0]
if sys.argv[2] == "max":
    print(f"{max(busy or [0.0]):.2f}")
else:
    print(f"{statistics.median(busy[1:] or busy or [0.0]):.2f}")
PY
}

run_testpmd() { # log seconds vdev...
  local log=$1 secs=$2; shift 2
  local vdevs=()
  for v in "$@"; do vdevs+=(--vdev "$v"); done
  ( sleep "$secs" ) | timeout $((secs + 30)) stdbuf -oL dpdk-testpmd "${EAL[@]}" "${vdevs[@]}" -- \
    --forward-mode=io --burst=32 --stats-period=1 --total-num-mbufs=8191 --no-flush-rx \
    ${TXFIRST:+--tx-first} > "$log" 2>&1 || true
  rm -rf "/var/run/dpdk/shmdp-tpbench-$$"
}

for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  TXFIRST=1 run_testpmd "$out/tp-ring.$rep.log" "$((SECS + 2))" net_ring0 net_ring1
  testpmd_rate "$out/tp-ring.$rep.log" median > "$out/tp-ring.$rep"
  "$BIN/shmdp-primary" --file-prefix "tpb-$$" -m 64 -l 1 --vdev net_ring0 --vdev net_ring1 \
    --fwd io --tx-first --duration "$SECS" --stats-json "$out/us-ring.$rep.json" > "$out/us-ring.$rep.log" 2>&1
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{r[\"total\"][\"rx_packets\"]/r[\"seconds\"]/1e6:.2f}')" \
    "$out/us-ring.$rep.json" > "$out/us-ring.$rep"
done

echo "generating $PKTS frames for the pcap replay" >&2
"$BIN/shmdp-primary" --file-prefix "tpg-$$" -m 64 --vdev "net_pcap0,tx_pcap=$out/in.pcap" \
  --fwd txonly --tx-count "$PKTS" --txpkts 64 >/dev/null
for rep in $(seq "$REPS"); do
  rm -f "$out/tp-out.pcap" "$out/us-out.pcap"
  run_testpmd "$out/tp-pcap.$rep.log" $((PKTS / 1000000 + 8)) \
    "net_pcap0,rx_pcap=$out/in.pcap" "net_pcap1,tx_pcap=$out/tp-out.pcap"
  testpmd_rate "$out/tp-pcap.$rep.log" max > "$out/tp-pcap.$rep"
  "$BIN/shmdp-primary" --file-prefix "tpb-$$" -m 64 -l 1 --vdev "net_pcap0,rx_pcap=$out/in.pcap" \
    --vdev "net_pcap1,tx_pcap=$out/us-out.pcap" --fwd io --idle-exit 0.5 \
    --stats-json "$out/us-pcap.$rep.json" > "$out/us-pcap.$rep.log" 2>&1
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{r[\"total\"][\"rx_packets\"]/r[\"seconds\"]/1e6:.2f}')" \
    "$out/us-pcap.$rep.json" > "$out/us-pcap.$rep"
done

python3 - "$out" "$REPS" <<'PY' | tee "$out/table.txt"
import statistics, sys, pathlib
d, reps = pathlib.Path(sys.argv[1]), int(sys.argv[2])
print(f"{'name':30} {'shmdp_Mpps':>10} {'dpdk_Mpps':>10} {'ratio':>6}")
for name, us, tp in [("io net_ring0<->net_ring1", "us-ring", "tp-ring"),
                     ("io pcap replay (64 B)", "us-pcap", "tp-pcap")]:
    a = statistics.median(float((d / f"{us}.{r}").read_text()) for r in range(1, reps + 1))
    b = statistics.median(float((d / f"{tp}.{r}").read_text()) for r in range(1, reps + 1))
    print(f"{name:30} {a:10.2f} {b:10.2f} {a / b if b else float('nan'):6.2f}")
PY
rm -f "$out/in.pcap" "$out/tp-out.pcap" "$out/us-out.pcap"
echo "raw output: $out" >&2
