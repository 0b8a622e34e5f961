#!/usr/bin/env bash
# Host-side cost of the IVSHMEM export path: the same echo (receive on one ring, send back
# on another, mbufs from one pool) run by a secondary attached the normal way (control
# socket, every memseg mapped) and by a process that maps only the export segment file as a
# guest maps BAR2. A sender and a checking receiver (normal secondaries) surround it.
# Prints: name Mpps, and the ratio export / plain (target >= 0.8).
# usage: bench/ivshmem-export.sh [REPS] [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
COUNT=${2:-1000000}
cargo build --release --bins -q
B=target/release
P="ivb-$$"
"$B/shmdp-primary" --file-prefix "$P" -m 32 --memseg vm1=16 --ring vm1_rx=1024@vm1 \
  --ring vm1_tx=1024@vm1 --mempool vm1_pool=4095:0@vm1 \
  --ivshmem vm1:ring=vm1_rx,ring=vm1_tx,pool=vm1_pool >/dev/null 2>&1 &
PRIMARY=$!
trap 'kill -INT $PRIMARY 2>/dev/null || true; wait $PRIMARY 2>/dev/null || true' EXIT
for _ in $(seq 100); do "$B/shmdp-secondary" --file-prefix "$P" info >/dev/null 2>&1 && break; sleep 0.05; done
SEG=$(readlink "/run/shmdp/$P/vm1.seg")
S=("$B/shmdp-secondary" --file-prefix "$P")
rate() { # echo-command...
  "${S[@]}" mbuf-recv vm1_pool vm1_tx --count "$COUNT" >/dev/null 2>&1 &
  local recv=$!
  local out
  out=$( ("$@" 2>&1) & "${S[@]}" mbuf-send vm1_pool vm1_rx --count "$COUNT" >/dev/null 2>&1; wait)
  wait $recv
  echo "$out" | sed -n 's/.*(\([0-9.]*\) Mpps).*/\1/p' | tail -1
}
plain=(); export=()
for rep in $(seq "$REPS"); do
  plain+=("$(rate "${S[@]}" mbuf-echo vm1_pool vm1_rx vm1_tx --count "$COUNT")")
  export+=("$(rate "$B/shmdp-secondary" ivshmem --dev "$SEG" echo --pool vm1_pool --rx vm1_rx --tx vm1_tx --count "$COUNT")")
  echo "rep $rep: plain ${plain[-1]} Mpps, export ${export[-1]} Mpps" >&2
done
python3 - "${plain[*]}" "${export[*]}" <<'PY'
import statistics, sys
p = statistics.median(float(x) for x in sys.argv[1].split())
e = statistics.median(float(x) for x in sys.argv[2].split())
print(f"{'echo via control-socket attach':36} {p:8.3f} Mpps")
print(f"{'echo via the export segment file':36} {e:8.3f} Mpps")
print(f"{'ratio export / plain':36} {e / p:8.2f}")
PY
