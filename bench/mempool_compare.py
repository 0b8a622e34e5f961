#!/usr/bin/env python3
"""Compares bench/dpdk_mempool_perf.c output with shmdp's mempool_perf criterion bench.

usage: mempool_compare.py DIR REPS
DIR holds dpdk.<rep>.txt ("name Mobj/s" lines) and shmdp.<rep>.txt (criterion_table.py
output: id, ns per iteration, objects per iteration, ns per object) for rep in 1..REPS.
Prints one line per figure: name shmdp_mobj_s dpdk_mobj_s ratio (medians over the
repetitions; ratio = shmdp / dpdk, above 1.0 means shmdp is faster). Cached figures, the
issue's targets, are marked with '*'.
"""
import pathlib, statistics, sys

d, reps = pathlib.Path(sys.argv[1]), int(sys.argv[2])
dp, us = {}, {}
for r in range(1, reps + 1):
    for line in (d / f"dpdk.{r}.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("mempool/"):
            dp.setdefault(parts[0], []).append(float(parts[1]))
    for line in (d / f"shmdp.{r}.txt").read_text().splitlines():
        name, _ns_iter, _n, ns_obj = line.split()
        us.setdefault(name, []).append(1e3 / float(ns_obj))
if not dp:
    sys.exit(f"no DPDK figures in {d} (see dpdk.*.log)")
print(f"{'name':34} {'shmdp_Mobj/s':>12} {'dpdk_Mobj/s':>12} {'ratio':>6}")
for name in sorted(set(dp) | set(us)):
    a = statistics.median(us[name]) if name in us else float("nan")
    b = statistics.median(dp[name]) if name in dp else float("nan")
    mark = "*" if "/cache512/" in name else " "
    print(f"{name:33}{mark} {a:12.1f} {b:12.1f} {a / b:6.2f}")
