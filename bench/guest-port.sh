#!/usr/bin/env bash
# Host-side forwarding through a guest-facing ring port (guest_pool=, every packet copied
# across the boundary both ways), without a VM: a host process maps the export segment
# file as a guest maps BAR2 and echoes every frame (`shmdp-secondary ivshmem --dev SEG
# echo`); `fwd io --tx-first` forwards between a host loopback ring port and the
# guest-facing port for SECS s. Prints the forwarder's Mpps per rep, then the median.
# With two binary directories (A B), the reps alternate A, B, A, B, ... and both medians
# and their ratio B / A are printed (an A/B of the guest path's copies and checks).
# usage: bench/guest-port.sh [REPS] [SECS] [BIN_DIR_A [BIN_DIR_B]]   (default: target/release)
#        BURST=N (fwd burst, default 64: with --tx-first, 2 x N frames circulate), PIN=0|1
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
SECS=${2:-5}
A=${3:-}
B=${4:-}
if [ -z "$A" ]; then
  cargo build --release --bins -q
  A=target/release
fi
# The forwarder on CPU 0 and the "guest" on CPU 1 (two busy processes on a two-core
# machine otherwise share cores at the scheduler's whim); PIN=0 turns it off.
PIN_FWD="" PIN_GUEST=""
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null; then
  PIN_FWD="taskset -c 0" PIN_GUEST="taskset -c 1"
fi
run_once() { # bindir -> Mpps
  local bin=$1 p="gpb-$$-$RANDOM"
  "$bin/shmdp-primary" --file-prefix "$p" -m 64 --memseg vm1=32 --ring vm1_rx=1024@vm1 \
    --ring vm1_tx=1024@vm1 --mempool vm1_pool=4095:0@vm1 \
    --ivshmem vm1:ring=vm1_rx,ring=vm1_tx,pool=vm1_pool \
    --vdev net_ring0 --vdev net_ring1,rx_ring=vm1_tx,tx_ring=vm1_rx,guest_pool=vm1_pool \
    >/dev/null 2>&1 &
  local primary=$!
  for _ in $(seq 200); do "$bin/shmdp-secondary" --file-prefix "$p" info >/dev/null 2>&1 && break; sleep 0.05; done
  local rt=${SHMDP_RUNTIME_DIR:-/run/shmdp}
  local seg
  seg=$(readlink "$rt/$p/vm1.seg")
  $PIN_GUEST "$bin/shmdp-secondary" ivshmem --dev "$seg" echo --pool vm1_pool --rx vm1_rx --tx vm1_tx \
    --count 100000000000 --timeout 3 >/dev/null 2>&1 &
  local guest=$!
  local out
  out=$($PIN_FWD "$bin/shmdp-secondary" --file-prefix "$p" fwd --fwd io --portlist 0,1 --tx-first --burst "${BURST:-64}" \
    --duration "$SECS" 2>&1 || true)
  kill "$guest" 2>/dev/null || true
  wait "$guest" 2>/dev/null || true
  kill -INT "$primary" 2>/dev/null || true
  wait "$primary" 2>/dev/null || true
  echo "$out" | sed -n 's/.*(\([0-9.]*\) Mpps).*/\1/p' | tail -1
}
ra=(); rb=()
for rep in $(seq "$REPS"); do
  ra+=("$(run_once "$A")")
  if [ -n "$B" ]; then
    rb+=("$(run_once "$B")")
    echo "rep $rep: A ${ra[-1]} Mpps, B ${rb[-1]} Mpps" >&2
  else
    echo "rep $rep: ${ra[-1]} Mpps" >&2
  fi
done
python3 - "${ra[*]}" "${rb[*]:-}" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
print(f"A: median {statistics.median(a):.3f} Mpps  (min {min(a):.3f}, max {max(a):.3f}, n {len(a)})")
if sys.argv[2].strip():
    b = [float(x) for x in sys.argv[2].split()]
    print(f"B: median {statistics.median(b):.3f} Mpps  (min {min(b):.3f}, max {max(b):.3f}, n {len(b)})")
    print(f"ratio B / A (medians): {statistics.median(b) / statistics.median(a):.3f}")
PY
