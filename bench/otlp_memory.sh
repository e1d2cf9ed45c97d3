#!/usr/bin/env bash
# Peak resident memory of an agent that pushes OTLP against the same agent
# without OTLP, side by side in one cluster: a 1,000-agent zone tree in one
# process (`astrolabe demo`), two measured agents in the same zone reading
# the same textfiles, one of them pushing to a real OTLP/gRPC receiver
# (opentelemetry-proto + grpcio in Python) every 2 s. The tree gossips in
# the clear (the demo's key is its own), so the measured agents can join.
#   bench/otlp_memory.sh [seconds] [binary]
#   (needs: cargo build --release; pip install opentelemetry-proto grpcio)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-40}
BIN=${2:-./target/release/astrolabe}
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

status() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
report() { # name pid
    printf "%-22s VmHWM %7.1f MiB   VmRSS %7.1f MiB   RssAnon %7.1f MiB   RssFile %6.1f MiB   threads %s\n" "$1" \
        "$(echo "$(status "$2" VmHWM) / 1024" | bc -l)" "$(echo "$(status "$2" VmRSS) / 1024" | bc -l)" \
        "$(echo "$(status "$2" RssAnon) / 1024" | bc -l)" "$(echo "$(status "$2" RssFile) / 1024" | bc -l)" \
        "$(status "$2" Threads)"
}

# Textfiles like a host's: 200 series of counters, gauges and untyped samples.
mkdir -p "$tmp/text"
{
    echo "# TYPE app_requests_total counter"
    for i in $(seq 100); do echo "app_requests_total{route=\"/r$i\",code=\"200\"} $((i * 7))"; done
    echo "# TYPE app_queue_bytes gauge"
    for i in $(seq 50); do echo "app_queue_bytes{queue=\"q$i\"} $((i * 1024))"; done
    for i in $(seq 50); do echo "job:app_latency_seconds:rate5m{job=\"j$i\"} 0.$i"; done
} > "$tmp/text/app.prom"

PORT=$((40000 + RANDOM % 10000))
python3 exporter/tests/otlp_receiver.py --grpc "$PORT" --points-only > "$tmp/received" &
$BIN demo --agents 1000 --zones 32 --gossip-port 24000 --web-port 26000 --no-collector.host --no-gossip-encryption --quiet --duration 1h > "$tmp/demo.log" 2>&1 &
sleep 15
common=(--gossip.seed 127.0.0.1:24000 --collector.textfile.directory "$tmp/text")
$BIN agent --zone /demo/zone0/plain --gossip.listen-address 127.0.0.1:34989 --web.listen-address 127.0.0.1:34988 \
    "${common[@]}" > "$tmp/plain.log" 2>&1 &
PLAIN=$!
$BIN agent --zone /demo/zone0/otlp --gossip.listen-address 127.0.0.1:34979 --web.listen-address 127.0.0.1:34978 \
    "${common[@]}" --otlp.endpoint "http://127.0.0.1:$PORT" --otlp.interval 2s > "$tmp/otlp.log" 2>&1 &
OTLP=$!
root_members() { curl -s "127.0.0.1:$1/metrics" | awk '/^astrolabe_zone_members\{zone_path="\/"\}/ {print $2}'; }
started=$(date +%s)
for _ in $(seq 90); do
    [ "$(root_members 34988)" -ge 1002 ] 2>/dev/null && [ "$(root_members 34978)" -ge 1002 ] 2>/dev/null && break
    sleep 1
done
left=$((SECS - ($(date +%s) - started)))
[ "$left" -gt 0 ] && sleep "$left"
echo "--- $(( $(date +%s) - started )) s after start; roots count $(root_members 34988) (plain) and $(root_members 34978) (OTLP) members;" \
    "$(wc -l < "$tmp/received") exports received, last one $(tail -1 "$tmp/received")"
curl -s 127.0.0.1:34978/metrics | grep '^astrolabe_otlp_' || true
report "agent without OTLP" "$PLAIN"
report "agent with OTLP" "$OTLP"
awk -v a="$(status "$OTLP" VmHWM)" -v b="$(status "$PLAIN" VmHWM)" 'BEGIN { printf "peak RSS ratio, with / without OTLP: %.2f\n", a / b }'
