#!/usr/bin/env python3
"""Prints one line per criterion benchmark under target/criterion: full id, ns per
iteration (median), elements per iteration, ns per element."""
import json, pathlib, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
for bench in sorted(root.glob("**/new/benchmark.json")):
    meta = json.loads(bench.read_text())
    est = json.loads((bench.parent / "estimates.json").read_text())
    ns = est["median"]["point_estimate"]
    n = (meta.get("throughput") or {}).get("Elements", 1)
    print(f'{meta["full_id"]} {ns:.3f} {n} {ns / n:.3f}')
