#!/usr/bin/env python3
"""On-demand query latency on loopback: N in-process agents (`astrolabe demo`,
real UDP sockets, one HTTP port each), then Q times `SELECT count(*) FROM
process` over the whole tree from a random agent: p50/p99 of the answer's
elapsed_ms (as the entry agent measured it) and of the client's round trip,
and the coverage reached.
   bench/overlay_loopback.py [agents] [queries]   (after cargo build --release)
Ports: ASTROLABE_BENCH_PORT (default 30000) for HTTP, +2000 for gossip.
"""
import json, os, random, re, subprocess, sys, time, urllib.request

AGENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
QUERIES = int(sys.argv[2]) if len(sys.argv) > 2 else 100
WEB = int(os.environ.get("ASTROLABE_BENCH_PORT", "30000"))
GOSSIP = WEB + 2000
BIN = os.environ.get("ASTROLABE_BIN", os.path.join(os.path.dirname(__file__), "..", "target", "release", "astrolabe"))
SQL = "SELECT count(*) FROM process"

def members(i):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{WEB + i}/metrics", timeout=2).read().decode()
    except Exception:
        return None
    m = re.search(r'^astrolabe_zone_members\{zone_path="/"\} (\S+)$', body, re.M)
    return float(m.group(1)) if m else None

def query(i):
    body = json.dumps({"zone": "/", "sql": SQL, "timeout_ms": 2000}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{WEB + i}/api/v1/query", data=body,
                                 headers={"Content-Type": "application/json"})
    t = time.time()
    answer = json.loads(urllib.request.urlopen(req, timeout=10).read())
    return answer, (time.time() - t) * 1000

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]

demo = subprocess.Popen([BIN, "demo", "--agents", str(AGENTS), "--zones", "10", "--gossip-port", str(GOSSIP),
                         "--web-port", str(WEB), "--no-collector.host", "--quiet", "--duration", "10m"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    t0 = time.time()
    while not all(members(i) == AGENTS for i in range(0, AGENTS, 7)):
        if time.time() - t0 > 120:
            sys.exit("did not converge in 120 s")
        time.sleep(0.5)
    time.sleep(3)
    elapsed, rtt, full = [], [], 0
    for _ in range(QUERIES):
        a, ms = query(random.randrange(AGENTS))
        elapsed.append(a["elapsed_ms"])
        rtt.append(ms)
        full += a["coverage"]["answered"] == AGENTS
    print(json.dumps({
        "agents": AGENTS, "queries": QUERIES, "sql": SQL,
        "full_coverage": full,
        "elapsed_ms_p50": pct(elapsed, 0.5), "elapsed_ms_p99": pct(elapsed, 0.99),
        "client_ms_p50": round(pct(rtt, 0.5), 1), "client_ms_p99": round(pct(rtt, 0.99), 1),
    }))
finally:
    demo.terminate()
    try:
        demo.wait(timeout=20)
    except subprocess.TimeoutExpired:
        demo.kill()
