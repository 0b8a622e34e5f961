#!/usr/bin/env bash
# Packets that really cross processes, DPDK and shmdp side by side in one run: a producer
# process allocates 64-byte mbufs, writes a sequence number into the first 8 bytes of
# each, and enqueues bursts of 32 into a ring; a consumer process dequeues, checks length
# and sequence, and frees them. COUNT packets, REPS alternated repetitions, a fresh
# primary each time. Same shapes on both sides: a pool of 8191 mbufs with a per-lcore
# (per-process) cache of 512 and an MP/MC free ring (DPDK: rte_pktmbuf_pool_create,
# ring_mp_mc), a single-producer single-consumer ring of 1023 usable slots (DPDK:
# rte_ring_create(1024, RING_F_SP_ENQ | RING_F_SC_DEQ)); producer on CPU 0, consumer on
# CPU 1, the primary idle.
#  - DPDK: bench/dpdk_xproc.c built against the installed libdpdk, run as primary, then
#    `recv` and `send` as --proc-type=secondary (lcores 1 and 0: distinct pool caches).
#  - shmdp: `shmdp-primary --mempool ... --ring ...`, then `shmdp-secondary mbuf-recv` and
#    `mbuf-send` with --burst 32 --seq-only (their bench mode), pinned with taskset.
# The figure is the consumer's rate, from its first packet to its last.
# Prints: name shmdp_Mpps dpdk_Mpps ratio (medians; ratio = shmdp / dpdk, above 1 = faster),
# then each side's min-max, the per-repetition ratios and the producers' median rates.
# usage: bench/xproc-vs-dpdk.sh [REPS] [COUNT]   (as root; scripts/setup.sh installs what it
# needs; about 100 free 2 MiB hugepages). Quick check that it works: bench/xproc-vs-dpdk.sh 1 100000
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
COUNT=${2:-20000000}
BURST=32
SIZE=64
POOL=8191
CACHE=512
RING=1024
# The packages (dpdk-dev, libdpdk-dev, ...) come from the same list as the tests'.
scripts/setup.sh >/dev/null
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-target}/release
free_pages=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if [ "${free_pages:-0}" -lt 100 ]; then
  echo "need about 100 free 2 MiB hugepages, have ${free_pages:-0} (echo 512 > /proc/sys/vm/nr_hugepages)" >&2
  exit 1
fi
out=$(mktemp -d /tmp/xproc-vs-dpdk.XXXXXX)
# DPDK's own build flags (pkg-config's, -march=corei7 on Debian) and -O3.
# shellcheck disable=SC2046
cc -O3 $(pkg-config --cflags libdpdk) bench/dpdk_xproc.c -o "$out/dpdk_xproc" \
  $(pkg-config --libs libdpdk)
DPREFIX="shmdp-xpbench-$$"
SPREFIX="xpb-$$"
EAL=(--no-pci --file-prefix "$DPREFIX" --log-level=lib.eal:error)
# Giving up: the harnesses stop after 30 s without progress; this bounds a whole run.
LIMIT=$((COUNT / 1000000 + 60))
prim_pid="" recv_pid=""

cleanup() {
  for pid in $recv_pid $prim_pid; do
    kill "$pid" 2>/dev/null || true
  done
  exec 3>&-
  rm -rf "/var/run/dpdk/$DPREFIX" "$out/dp.fifo"
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

# The "(R Mpps" figure of a sender's or receiver's log; fails if there is none.
rate() { # log
  local r
  r=$(grep -oE '\(([0-9.]+) Mpps' "$1" | tr -d '(' | cut -d' ' -f1 | tail -1)
  [ -n "$r" ] || { echo "no rate in $1:" >&2; cat "$1" >&2; return 1; }
  echo "$r"
}

# Starts the receiver in the background, then runs the sender; both must succeed.
xfer() { # side rep recv-cmd... ::: send-cmd...
  local side=$1 rep=$2 recv=() send=()
  shift 2
  while [ "$1" != ":::" ]; do recv+=("$1"); shift; done
  shift
  send=("$@")
  timeout -k 5 "$LIMIT" "${recv[@]}" > "$out/$side-recv.$rep.log" 2>&1 &
  recv_pid=$!
  sleep 0.5
  timeout -k 5 "$LIMIT" "${send[@]}" > "$out/$side-send.$rep.log" 2>&1
  wait "$recv_pid"
  recv_pid=""
  rate "$out/$side-recv.$rep.log" > "$out/$side.$rep"
  rate "$out/$side-send.$rep.log" > "$out/$side-send.$rep"
}

run_dpdk() { # rep
  local log=$out/dp-prim.$1.log
  rm -f "$out/dp.fifo"
  mkfifo "$out/dp.fifo"
  # Read-write open: never blocks, and the primary sees no end of file until we close it.
  exec 3<>"$out/dp.fifo"
  "$out/dpdk_xproc" "${EAL[@]}" -l 0 -m 128 -- primary "$POOL" "$CACHE" "$RING" \
    < "$out/dp.fifo" > "$log" 2>&1 &
  prim_pid=$!
  wait_for "$log" "ready:" "$prim_pid"
  xfer dp "$1" "$out/dpdk_xproc" "${EAL[@]}" -l 1 --proc-type=secondary -- recv "$COUNT" "$BURST" "$SIZE" \
    ::: "$out/dpdk_xproc" "${EAL[@]}" -l 0 --proc-type=secondary -- send "$COUNT" "$BURST" "$SIZE"
  echo quit >&3
  reap "$prim_pid"
  prim_pid=""
  exec 3>&-
  rm -rf "/var/run/dpdk/$DPREFIX"
}

run_shmdp() { # rep
  local log=$out/us-prim.$1.log
  "$BIN/shmdp-primary" --file-prefix "$SPREFIX" -m 64 -l 0 --mempool "xpool=$POOL:$CACHE" \
    --ring "xring=$((RING - 1)):sp_sc" > "$log" 2>&1 &
  prim_pid=$!
  wait_for "$log" "ready:" "$prim_pid"
  local opts=(xpool xring --count "$COUNT" --size "$SIZE" --burst "$BURST" --seq-only)
  xfer us "$1" taskset -c 1 "$BIN/shmdp-secondary" --file-prefix "$SPREFIX" mbuf-recv "${opts[@]}" \
    ::: taskset -c 0 "$BIN/shmdp-secondary" --file-prefix "$SPREFIX" mbuf-send "${opts[@]}"
  kill -INT "$prim_pid"
  reap "$prim_pid"
  prim_pid=""
}

for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  run_dpdk "$rep"
  run_shmdp "$rep"
done

python3 - "$out" "$REPS" "$COUNT" <<'PY' | tee "$out/table.txt"
import statistics, sys, pathlib
d, reps, count = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
get = lambda name: [float((d / f"{name}.{r}").read_text()) for r in range(1, reps + 1)]
us, dp = get("us"), get("dp")
a, b = statistics.median(us), statistics.median(dp)
name = f"xproc 64 B burst 32 ({count / 1e6:g} M)"
print(f"{'name':34} {'shmdp_Mpps':>10} {'dpdk_Mpps':>10} {'ratio':>6}")
print(f"{name:34} {a:10.2f} {b:10.2f} {a / b if b else float('nan'):6.2f}")
print(f"spread: shmdp {min(us):.2f}-{max(us):.2f}, dpdk {min(dp):.2f}-{max(dp):.2f}; per-repetition ratios "
      + " ".join(f"{x / y:.2f}" if y else "nan" for x, y in zip(us, dp)))
print(f"producers (median, from their first allocation): shmdp {statistics.median(get('us-send')):.2f}, "
      f"dpdk {statistics.median(get('dp-send')):.2f} Mpps")
PY
echo "raw output: $out" >&2
