#!/usr/bin/env python3
"""100 agents with real UDP sockets on loopback (one process, `astrolabe demo`)
at a 1 s gossip interval: how long until a textfile change at one agent shows
in every agent's root aggregate (p50/p95 over 20 changes), and the CPU an idle
agent costs.   bench/loopback.py [agents] [changes]   (after cargo build --release)
INSECURE=1 runs the same with gossip in the clear, to compare encryption's cost.
"""
import os, random, re, shutil, subprocess, sys, tempfile, time, urllib.request

AGENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
CHANGES = int(sys.argv[2]) if len(sys.argv) > 2 else 20
WEB, GOSSIP = 20000, 22000
BIN = os.environ.get("ASTROLABE_BIN") or os.path.join(os.path.dirname(__file__), "..", "target", "release", "astrolabe")

def root_sum(i):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{WEB + i}/metrics", timeout=2).read().decode()
    except Exception:
        return None
    m = re.search(r'^astrolabe_zone_bench_total_value\{zone_path="/"\} (\S+)$', body, re.M)
    return float(m.group(1)) if m else None

def udp_out():
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Udp:")]
    return int(rows[1][rows[0].index("OutDatagrams")])

def all_see(want):
    return all(root_sum(i) == want for i in range(AGENTS))

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

root = tempfile.mkdtemp()
values = [float(i + 1) for i in range(AGENTS)]
for i in range(AGENTS):
    os.makedirs(f"{root}/agent{i}", exist_ok=True)
    with open(f"{root}/agent{i}/v.prom", "w") as f:
        f.write(f"bench_value {values[i]}\n")
demo = subprocess.Popen([BIN, "demo", "--agents", str(AGENTS), "--zones", "10", "--gossip-port", str(GOSSIP),
                         "--web-port", str(WEB), "--no-collector.host", "--quiet", "--duration", "1h",
                         "--textfile-root", root, "--aggregate", "SELECT sum(bench_value) AS bench_total_value"]
                        + (["--no-gossip-encryption"] if os.environ.get("INSECURE") == "1" else []),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    t0 = time.time()
    while not all_see(sum(values)):
        if time.time() - t0 > 60:
            sys.exit("did not converge in 60 s")
        time.sleep(0.5)
    print(f"{AGENTS} agents converged {time.time() - t0:.1f} s after start")
    time.sleep(5)
    c0, w0, d0 = cpu_seconds(demo.pid), time.time(), udp_out()
    time.sleep(30)
    idle = (cpu_seconds(demo.pid) - c0) / (time.time() - w0) / AGENTS * 100
    dgrams = (udp_out() - d0) / (time.time() - w0) / AGENTS
    print(f"idle CPU per agent: {idle:.3f}% of a core (30 s, {AGENTS} agents in one process)")
    print(f"UDP datagrams sent per agent per 1 s round: {dgrams:.1f} (machine-wide counter)")
    rng = random.Random(1)
    delays = []
    for c in range(CHANGES):
        i = rng.randrange(AGENTS)
        values[i] += 1000.0
        want = sum(values)
        with open(f"{root}/agent{i}/v.prom.tmp", "w") as f:
            f.write(f"bench_value {values[i]}\n")
        os.rename(f"{root}/agent{i}/v.prom.tmp", f"{root}/agent{i}/v.prom")
        start = time.time()
        while not all_see(want):
            if time.time() - start > 30:
                sys.exit(f"change {c} not visible everywhere after 30 s")
            time.sleep(0.05)
        delays.append(time.time() - start)
    delays.sort()
    p = lambda q: delays[min(len(delays) - 1, int(round(q * (len(delays) - 1))))]
    print(f"textfile change visible at every root: p50 {p(0.5):.2f} s, p95 {p(0.95):.2f} s, max {delays[-1]:.2f} s "
          f"over {CHANGES} changes (includes the 1 s textfile sampling period and the polling of {AGENTS} endpoints)")
finally:
    demo.terminate()
    demo.wait()
    shutil.rmtree(root, ignore_errors=True)
