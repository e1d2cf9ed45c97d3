#!/usr/bin/env bash
# CPU time per /metrics scrape and resident memory: the agent (in a
# 1,000-member zone tree, gossiping in the clear so the agent can join it)
# against node_exporter, measured in the same run.
#   bench/scrape.sh [scrapes] [binary]   (needs: cargo build --release; prometheus-node-exporter)
# Also prints where each process's resident set is: its own executable's
# pages, shared libraries, anonymous memory (heap, thread stacks).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
BIN=${2:-./target/release/astrolabe}
NE=$(command -v prometheus-node-exporter || command -v node_exporter)
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
rss_split() { awk '/VmHWM|RssAnon|RssFile|Threads/ {printf "%s %s  ", $1, $2}' "/proc/$1/status"; }
# Resident KiB by mapping: the executable itself, shared libraries, the rest (anonymous).
rss_by_mapping() {
    awk -v exe="$(readlink "/proc/$1/exe")" '
        /^[0-9a-f]+-[0-9a-f]+ / { k = ($6 == exe) ? "executable" : ($6 ~ /\.so/) ? "libraries" : "anonymous"; next }
        /^Rss:/ { rss[k] += $2 }
        END { printf "executable %d kB, libraries %d kB, anonymous %d kB", rss["executable"], rss["libraries"], rss["anonymous"] }' "/proc/$1/smaps"
}
measure() { # name pid url
    local name=$1 pid=$2 url=$3
    for _ in $(seq 20); do curl -s -o /dev/null "$url"; done   # warm up
    local before samples
    before=$(cpu_ticks "$pid")
    local t0=$(date +%s.%N)
    for _ in $(seq "$N"); do curl -s -o /dev/null "$url"; done
    local t1=$(date +%s.%N)
    local after=$(cpu_ticks "$pid")
    samples=$(curl -s "$url" | grep -vc '^#')
    local hz=$(getconf CLK_TCK)
    awk -v n="$N" -v b="$before" -v a="$after" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v rss="$(rss_kb "$pid")" -v name="$name" -v s="$samples" \
        'BEGIN { printf "%-28s samples %5d   cpu/scrape %6.2f ms   wall/scrape %6.2f ms   rss %6.1f MB\n", name, s, (a-b)/hz/n*1000, (t1-t0)/n*1000, rss/1024 }'
}

echo "--- starting a 1000-agent zone tree (one process) and the measured agent"
$BIN demo --agents 1000 --zones 32 --gossip-port 24000 --web-port 26000 --no-collector.host --no-gossip-encryption --quiet --duration 1h > "$tmp/demo.log" 2>&1 &
sleep 15
$BIN agent --zone /demo/zone0/measured --gossip.listen-address 127.0.0.1:34999 --web.listen-address 127.0.0.1:34998 \
    --gossip.seed 127.0.0.1:24000 > "$tmp/agent.log" 2>&1 &
AGENT=$!
agent_started=$(date +%s)
$NE --web.listen-address=127.0.0.1:34997 > "$tmp/ne.log" 2>&1 &
NEPID=$!
for _ in $(seq 60); do
    m=$(curl -s 127.0.0.1:34998/metrics | awk '/^astrolabe_zone_members\{zone_path="\/"\}/ {print $2}' || true)
    [ "${m:-0}" -ge 1001 ] && break
    sleep 1
done
echo "--- the measured agent's root counts ${m:-?} members"
# The agent lets go of its start-up pages 10 s after start: measure the
# steady state, after that.
while [ $(( $(date +%s) - agent_started )) -lt 15 ]; do sleep 1; done
measure "astrolabe agent" "$AGENT" http://127.0.0.1:34998/metrics
measure "node_exporter $($NE --version 2>&1 | head -1 | awk '{print $3}')" "$NEPID" http://127.0.0.1:34997/metrics
echo "agent: $(rss_split "$AGENT")   node_exporter: $(rss_split "$NEPID")"
echo "agent by mapping: $(rss_by_mapping "$AGENT")"
echo "node_exporter by mapping: $(rss_by_mapping "$NEPID")"
awk -v a="$(rss_kb "$AGENT")" -v b="$(rss_kb "$NEPID")" 'BEGIN { printf "RSS ratio agent / node_exporter: %.2f\n", a / b }'
