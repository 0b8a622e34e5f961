#!/usr/bin/env bash
# Runs DPDK's mempool (the mempool_perf_autotest loop, via bench/dpdk_mempool_perf.c built
# against the installed libdpdk) and shmdp's mempool_perf bench in the same run,
# alternating REPS times, and prints one line per figure: name shmdp_mobj_s dpdk_mobj_s
# ratio (medians; ratio = shmdp / dpdk, above 1.0 means shmdp is faster).
# Busy-polling figures collapse when anything else runs on the 2 CPUs: run it on an idle
# machine; each repetition prints the load average before it starts.
# usage: bench/mempool-vs-dpdk.sh [REPS] [SECONDS]   (as root; scripts/setup.sh installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-2}
# The packages (dpdk-dev, libdpdk-dev, ...) come from the same list as the tests'.
scripts/setup.sh >/dev/null
out=$(mktemp -d /tmp/mempool-vs-dpdk.XXXXXX)
# DPDK's own build flags (pkg-config's, -march=corei7 on Debian) and -O3.
# shellcheck disable=SC2046
cc -O3 $(pkg-config --cflags libdpdk) bench/dpdk_mempool_perf.c -o "$out/dpdk_mempool_perf" \
  $(pkg-config --libs libdpdk)
cargo bench -q -p shm-mempool --bench mempool_perf --no-run >/dev/null 2>&1
for rep in $(seq "$REPS"); do
  echo "rep $rep/$REPS: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  timeout 300 stdbuf -oL "$out/dpdk_mempool_perf" --no-pci --no-huge -m 512 -l 0-1 \
    --file-prefix "shmdp-mpbench-$$" --log-level=lib.eal:error -- "$SECS" \
    > "$out/dpdk.$rep.txt" 2>"$out/dpdk.$rep.log" || true
  rm -rf "/var/run/dpdk/shmdp-mpbench-$$"
  rm -rf target/criterion/mempool
  cargo bench -q -p shm-mempool --bench mempool_perf > "$out/shmdp.$rep.log" 2>&1
  python3 bench/criterion_table.py target/criterion/mempool > "$out/shmdp.$rep.txt"
done
python3 bench/mempool_compare.py "$out" "$REPS" | tee "$out/table.txt"
echo "raw output: $out" >&2
