#!/usr/bin/env python3
"""Compares DPDK's ring_perf_autotest output with shmdp's ring_perf criterion bench.

usage: ring_compare.py DIR REPS
DIR holds dpdk.<rep>.txt (dpdk-test output) and shmdp.<rep>.txt (criterion_table.py
output) for rep in 1..REPS. Prints one line per figure: name shmdp_ns dpdk_ns ratio, medians
over the repetitions, ns per element (ns per call for single and empty dequeue).
A ratio below 1.0 means shmdp is faster. Target figures (bulk/burst 32, 1 and 2 cores,
SP/SC and MP/MC) are marked with '*'.
"""
import re, statistics, sys, pathlib

d, reps = pathlib.Path(sys.argv[1]), int(sys.argv[2])

SECTIONS = {
    "single element": "single", "burst enq/deq": "burst", "bulk enq/deq": "bulk",
    "empty bulk deq": "empty_deq", "two physical cores": "2core_bulk",
}

def dpdk_figures(text):
    """Returns {our_id: ns per element} from one dpdk-test run."""
    m = re.search(r"TSC frequency is ~(\d+) KHz", text)
    ghz = int(m.group(1)) / 1e6 if m else None
    if ghz is None:
        sys.exit("dpdk-test did not print its TSC frequency (run it with --log-level=lib.eal:debug)")
    out, section = {}, None
    for line in text.splitlines():
        h = re.match(r"### Testing (.*) ###", line)
        if h:
            section = next((v for k, v in SECTIONS.items() if k in h.group(1)), None)
            continue
        f = re.match(r"(legacy|elem) APIs: (?:element size (\d+)B: )?(SP/SC|MP/MC): (single|burst|bulk)(?: \(size: (\d+)\))?: ([\d.]+)", line)
        if not f or section is None:
            continue
        api, esize, mode, _, size, cycles = f.groups()
        group = "ring" if api == "legacy" else f"ring{esize}"
        n = int(size) if size else 1
        mode = mode.lower().replace("/", "_")
        cyc = float(cycles)
        if section in ("burst", "bulk"):
            cyc /= n  # 22.11 prints cycles per (enqueue n + dequeue n)
        op = section
        key = f"{group}/{mode}/{op}/{n if section != 'empty_deq' else 8}"
        if section == "empty_deq":
            key = f"{group}/{mode}/empty_deq/8"
        out[key] = cyc / ghz
    return out

def ours(text):
    out = {}
    for line in text.splitlines():
        name, _ns_iter, n, ns_elem = line.split()
        out[name] = float(ns_elem)
    return out

dp, us = {}, {}
for r in range(1, reps + 1):
    for k, v in dpdk_figures((d / f"dpdk.{r}.txt").read_text()).items():
        dp.setdefault(k, []).append(v)
    for k, v in ours((d / f"shmdp.{r}.txt").read_text()).items():
        us.setdefault(k, []).append(v)

print(f"{'name':32} {'shmdp_ns':>9} {'dpdk_ns':>9} {'ratio':>6}")
worst = 0.0
for k in sorted(set(dp) & set(us)):
    a, b = statistics.median(us[k]), statistics.median(dp[k])
    target = re.match(r"ring/(sp_sc|mp_mc)/(bulk|burst|2core_bulk)/32$", k) is not None
    ratio = a / b
    if target:
        worst = max(worst, ratio)
    print(f"{k:32} {a:9.2f} {b:9.2f} {ratio:6.2f}{' *' if target else ''}")
print(f"worst target ratio: {worst:.2f} (target <= 1.0)")
