#!/usr/bin/env bash
# Runs DPDK's ring_perf_autotest and shmdp's ring_perf bench in the same run, alternating
# REPS times, and prints one line per figure: name shmdp_ns dpdk_ns ratio (medians).
# Busy-polling figures collapse when anything else runs on the 2 CPUs: run it on an idle
# machine; each repetition prints the load average before it starts.
# usage: bench/ring-vs-dpdk.sh [REPS]     (as root; scripts/setup.sh installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
# The packages (dpdk-dev, libdpdk-dev, ...) come from the same list as the tests'.
scripts/setup.sh >/dev/null
out=$(mktemp -d /tmp/ring-vs-dpdk.XXXXXX)
cargo bench -q -p shm-ring --bench ring_perf --no-run >/dev/null 2>&1
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  echo ring_perf_autotest | timeout 900 stdbuf -oL dpdk-test --no-pci --no-huge -m 512 -l 0-1 \
    --file-prefix "shmdp-bench-$$" --log-level=lib.eal:debug > "$out/dpdk.$rep.txt" 2>&1 || true
  rm -rf "/var/run/dpdk/shmdp-bench-$$"
  rm -rf target/criterion
  cargo bench -q -p shm-ring --bench ring_perf > "$out/shmdp.$rep.log" 2>&1
  python3 bench/criterion_table.py > "$out/shmdp.$rep.txt"
done
python3 bench/ring_compare.py "$out" "$REPS" | tee "$out/table.txt"
echo "raw output: $out" >&2
