#!/usr/bin/env bash
# Simulator wall time, variants interleaved run by run so that a busy
# machine slows them alike. Each variant is "label|binary|ENV=V ...".
#   bench/sim_speed.sh RUNS AGENTS 'base|./old/astrolabe' 'new|./target/release/astrolabe|MIMALLOC_X=0'
# Prints every run and the median wall time (the report's wall_seconds) and
# peak RSS of each variant.
set -euo pipefail
RUNS=$1; AGENTS=$2; shift 2
declare -A walls rss
for run in $(seq "$RUNS"); do
    for v in "$@"; do
        IFS='|' read -r label bin envs <<< "$v"
        out=$(env $envs "$bin" sim --agents "$AGENTS" --branching 16 -q)
        w=$(echo "$out" | awk -F': ' '/"wall_seconds"/ {gsub(/[ ,]/, "", $2); print $2}')
        r=$(echo "$out" | awk -F': ' '/"peak_rss_bytes"/ {gsub(/[ ,]/, "", $2); print $2}')
        echo "run $run  $label  wall ${w} s  peak RSS $((r / 1048576)) MiB"
        walls[$label]="${walls[$label]:-} $w"
        rss[$label]="${rss[$label]:-} $r"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
for v in "$@"; do
    label=${v%%|*}
    echo "$label: median wall $(echo "${walls[$label]}" | median) s, median peak RSS $(( $(echo "${rss[$label]}" | median | cut -d. -f1) / 1048576 )) MiB over $RUNS runs of --agents $AGENTS"
done
