#!/usr/bin/env bash
# Forwarding in a secondary process, DPDK's dpdk-testpmd and shmdp side by side in one run:
# a primary owns two loopback ring ports (--vdev net_ring0 --vdev net_ring1) and forwards
# nothing; a secondary attached to it forwards between them (io mode, burst 32, --tx-first,
# one forwarding core) for SECS s. REPS alternated repetitions, a fresh primary each time.
#  - DPDK: `dpdk-testpmd -i` as the primary (interactive mode, fed from a fifo: it owns and
#    starts the ports and waits at its prompt), then `dpdk-testpmd --proc-type=secondary`
#    (forwarding on lcore 1, stopped with SIGINT); rate = the median of its per-second
#    Rx-pps summed over both ports, first period left out.
#  - shmdp: `shmdp-primary` without --fwd, then `shmdp-secondary fwd --fwd io --tx-first`
#    pinned to CPU 1; rate = rx packets / seconds from its --stats-json.
# DPDK secondaries need the primary's hugepages (a --no-huge primary publishes no memory to
# attach to), so both sides run on hugepages here: about 160 free 2 MiB pages are needed.
# Prints: name shmdp_Mpps dpdk_Mpps ratio (medians; ratio = shmdp / dpdk, above 1 = faster),
# then each side's min-max over the repetitions and the per-repetition ratios.
# usage: bench/testpmd-secondary-vs-shmdp.sh [REPS] [SECS]   (as root; scripts/setup.sh
# installs what it needs). Quick check that it works: bench/testpmd-secondary-vs-shmdp.sh 1 2
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
SECS=${2:-4}
# The packages (dpdk-dev, libdpdk-dev, ...) come from the same list as the tests'.
scripts/setup.sh >/dev/null
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-target}/release
free_pages=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if [ "${free_pages:-0}" -lt 160 ]; then
  echo "need about 160 free 2 MiB hugepages, have ${free_pages:-0} (echo 512 > /proc/sys/vm/nr_hugepages)" >&2
  exit 1
fi
out=$(mktemp -d /tmp/testpmd-secondary-vs-shmdp.XXXXXX)
DPREFIX="shmdp-tpsec-$$"
SPREFIX="tpsec-$$"
EAL=(--no-pci -l 0-1 --file-prefix "$DPREFIX")
tp_pid="" us_pid=""

cleanup() {
  for pid in $tp_pid $us_pid; do
    kill "$pid" 2>/dev/null || true
  done
  exec 3>&-
  rm -rf "/var/run/dpdk/$DPREFIX" "$out/tp.fifo"
}
trap cleanup EXIT

# Waits up to 30 s for PATTERN in FILE while process PID lives.
wait_for() { # file pattern pid
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "no '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

# Waits up to 10 s for PID to exit, then kills it.
reap() { # pid
  for _ in $(seq 100); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# testpmd's Rx-pps summed over ports, per 1 s stats period: the median of the busy periods
# after the first (as bench/testpmd-vs-shmdp.sh).
testpmd_rate() { # log
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

run_dpdk() { # rep
  local log=$out/tp-prim.$1.log
  rm -f "$out/tp.fifo"
  mkfifo "$out/tp.fifo"
  # Read-write open: never blocks, and the primary sees no end of file until we close it.
  exec 3<>"$out/tp.fifo"
  dpdk-testpmd "${EAL[@]}" -m 256 --vdev net_ring0 --vdev net_ring1 -- -i \
    --total-num-mbufs=8191 < "$out/tp.fifo" > "$log" 2>&1 &
  tp_pid=$!
  wait_for "$log" "testpmd>" "$tp_pid"
  timeout -s INT -k 10 "$((SECS + 3))" stdbuf -oL dpdk-testpmd --proc-type=secondary "${EAL[@]}" -- \
    --forward-mode=io --burst=32 --nb-cores=1 --tx-first --stats-period=1 \
    > "$out/tp-sec.$1.log" 2>&1 || true
  echo quit >&3
  reap "$tp_pid"
  tp_pid=""
  exec 3>&-
  rm -rf "/var/run/dpdk/$DPREFIX"
  testpmd_rate "$out/tp-sec.$1.log" > "$out/tp.$1"
}

run_shmdp() { # rep
  local log=$out/us-prim.$1.log
  "$BIN/shmdp-primary" --file-prefix "$SPREFIX" -m 64 -l 0 --vdev net_ring0 --vdev net_ring1 \
    > "$log" 2>&1 &
  us_pid=$!
  wait_for "$log" "ready:" "$us_pid"
  timeout -k 10 "$((SECS + 30))" "$BIN/shmdp-secondary" --file-prefix "$SPREFIX" -l 1 fwd --fwd io \
    --burst 32 --tx-first --duration "$SECS" --stats-json "$out/us.$1.json" > "$out/us-sec.$1.log" 2>&1
  kill -INT "$us_pid"
  reap "$us_pid"
  us_pid=""
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{r[\"total\"][\"rx_packets\"]/r[\"seconds\"]/1e6:.2f}')" \
    "$out/us.$1.json" > "$out/us.$1"
}

for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  run_dpdk "$rep"
  run_shmdp "$rep"
done

python3 - "$out" "$REPS" <<'PY' | tee "$out/table.txt"
import statistics, sys, pathlib
d, reps = pathlib.Path(sys.argv[1]), int(sys.argv[2])
us = [float((d / f"us.{r}").read_text()) for r in range(1, reps + 1)]
tp = [float((d / f"tp.{r}").read_text()) for r in range(1, reps + 1)]
a, b = statistics.median(us), statistics.median(tp)
print(f"{'name':34} {'shmdp_Mpps':>10} {'dpdk_Mpps':>10} {'ratio':>6}")
print(f"{'secondary io net_ring0<->net_ring1':34} {a:10.2f} {b:10.2f} {a / b if b else float('nan'):6.2f}")
print(f"spread: shmdp {min(us):.2f}-{max(us):.2f}, dpdk {min(tp):.2f}-{max(tp):.2f}; per-repetition ratios "
      + " ".join(f"{x / y:.2f}" if y else "nan" for x, y in zip(us, tp)))
PY
echo "raw output: $out" >&2
