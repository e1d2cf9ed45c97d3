#!/usr/bin/env python3
"""Markdown table of a seed sweep run one seed per file.

`astrolabe sim --seeds` prints its summary only when every seed is done;
on a loaded machine a 10^4-agent sweep takes an hour, so sweeps here run
one seed per process, each writing `DIR/s<seed>.json`, and this script
puts the files together: a row per seed, then min / median / max.

    for s in $(seq 1 20); do
        astrolabe sim --agents 10000 --branching 16 --loss 0.2 --seed $s -q > DIR/s$s.json
    done
    bench/seed_table.py DIR            # gossip figures
    bench/seed_table.py --queries DIR  # with --queries

A seed whose file is missing or not JSON (a wrong root exits non-zero
with the mismatch on stderr) is listed as failed, never skipped.
"""
import json
import os
import re
import statistics
import sys


def load(directory):
    runs = {}
    for name in os.listdir(directory):
        m = re.fullmatch(r"s(\d+)\.json", name)
        if not m:
            continue
        seed = int(m.group(1))
        try:
            with open(os.path.join(directory, name)) as f:
                runs[seed] = json.load(f)
        except (OSError, json.JSONDecodeError):
            runs[seed] = None
    return dict(sorted(runs.items()))


def dig(run, path):
    for key in path.split("."):
        if not isinstance(run, dict) or key not in run:
            return None
        run = run[key]
    return run


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "true" if v else "**false**"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v)


def spread(values):
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        return "–"
    return " / ".join(fmt(x) for x in (min(nums), statistics.median(nums), max(nums)))


GOSSIP = [
    ("membership (rounds)", "rounds_to_membership"),
    ("value mean", "rounds_to_value.mean"),
    ("value max", "rounds_to_value.max"),
    ("root_correct", "root_correct"),
    ("rows expired", "rows_expired"),
    ("bytes/agent/round", "bytes_per_agent_per_round.mean"),
    ("wall s", "wall_seconds"),
]


def main():
    args = sys.argv[1:]
    queries = "--queries" in args
    args = [a for a in args if a != "--queries"]
    if len(args) != 1:
        sys.exit("usage: seed_table.py [--queries] DIR")
    runs = load(args[0])
    if queries:
        columns = query_columns(runs)
    else:
        columns = GOSSIP
    print("| seed | " + " | ".join(c for c, _ in columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for seed, run in runs.items():
        if run is None:
            print(f"| {seed} | **failed** (no report: see its stderr) |")
            continue
        print(f"| {seed} | " + " | ".join(fmt(dig(run, p)) for _, p in columns) + " |")
    good = [r for r in runs.values() if r is not None]
    cells = []
    for _, p in columns:
        vals = [dig(r, p) for r in good]
        if vals and all(isinstance(v, bool) for v in vals):
            cells.append(f"{sum(vals)} of {len(runs)}")
        else:
            cells.append(spread(vals))
    print("| min / median / max | " + " | ".join(cells) + " |")


def query_columns(runs):
    """The numeric fields of the query report, found in the first run."""
    first = next((r for r in runs.values() if r), {})
    cols = []

    def walk(obj, prefix):
        for k, v in obj.items():
            path = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, path + ".")
            elif isinstance(v, (int, float)) and k not in ("agents", "branching", "seed", "levels"):
                cols.append((path, path))

    walk(first, "")
    return cols


if __name__ == "__main__":
    main()
