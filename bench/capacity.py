#!/usr/bin/env python3
"""Capacity of one agent under a query burst, on loopback (issue 16).

N-1 agents in one process (`astrolabe demo`, real UDP sockets) plus the
measured agent, a process of its own (`astrolabe agent`, default limits),
and node_exporter beside it. Against the measured agent, per run:

  burst:  the issue's burst, 2,000 (BURST) whole-tree queries (`SELECT count(*)
          FROM host`) from 20 concurrent clients, as fast as they are
          answered: wall time, queries per second, client latency p50/p99,
          answers that were partial (answered < expected or < N) or refused,
          the most overlay tasks in progress at once, peak RSS;
  ramp:   open-loop rates (queries sent on a schedule, latency counted
          from the scheduled time, so a stalled agent cannot hide its
          queue) for RAMP_SECONDS each: the highest rate with p99 <= 250 ms
          and every answer complete is the capacity;
  scrape: all the while, /metrics of the agent and of node_exporter every
          200 ms: latency p50/p99/max of each.

Several runs; each figure as min / median / max over the runs.

  bench/capacity.py [agents] [runs]   (after cargo build --release -p astrolabe-exporter --bin astrolabe;
                                       needs prometheus-node-exporter)
ASTROLABE_BIN, ASTROLABE_BENCH_PORT (default 31000; +2000 for gossip),
RAMP (comma-separated rates, default 50,100,200,400,800), RAMP_SECONDS (5), BURST (2000),
ZONES (default 3 up to 12 agents, else 10), AGENT_FLAGS (extra flags for the measured agent, e.g. "--limits.pending-queries 64"),
PROCESSES=1 (the N-1 other agents as N-1 `astrolabe agent` processes instead of one `astrolabe demo`).
"""
import http.client, json, os, re, shutil, statistics, subprocess, sys, tempfile, threading, time

AGENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 12
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
WEB = int(os.environ.get("ASTROLABE_BENCH_PORT", "31000"))
GOSSIP = WEB + 2000
MEASURED_WEB, MEASURED_GOSSIP, NE_PORT = WEB + 1900, GOSSIP + 1900, WEB + 1901
BIN = os.environ.get("ASTROLABE_BIN") or os.path.join(os.path.dirname(__file__), "..", "target", "release", "astrolabe")
NE = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
RAMP = [int(r) for r in os.environ.get("RAMP", "50,100,200,400,800").split(",")]
RAMP_SECONDS = float(os.environ.get("RAMP_SECONDS", "5"))
AGENT_FLAGS = os.environ.get("AGENT_FLAGS", "").split()
PROCESSES = os.environ.get("PROCESSES", "") not in ("", "0")
SQL = "SELECT count(*) FROM host"
P99_BOUND_MS = 250


def get(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def metric(body, pattern):
    m = re.search(r"^" + pattern + r" (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client:
    """One keep-alive connection to the measured agent."""

    def __init__(self):
        self.conn = None

    def query(self):
        body = json.dumps({"zone": "/", "sql": SQL, "timeout_ms": 2000})
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", MEASURED_WEB, timeout=10)
                self.conn.request("POST", "/api/v1/query", body, {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                text = r.read()
                return r.status, json.loads(text) if text else {}
            except (http.client.HTTPException, OSError, ValueError):
                # A keep-alive connection the agent closed: once more, anew.
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
        return 0, {}


def verdict(status, answer):
    if status == 503:
        return "refused"
    if status != 200:
        return "error"
    c = answer.get("coverage", {})
    complete = c.get("answered") == c.get("expected") == AGENTS and answer.get("rows") == [[AGENTS]]
    return "complete" if complete else "partial"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))] if xs else float("nan")


class Sampler(threading.Thread):
    """Scrapes the agent and node_exporter every 200 ms, and the agent's RSS."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.stop, self.lock = pid, threading.Event(), threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, "lock", threading.Lock()):
            self.agent_ms, self.ne_ms, self.bad, self.rss_peak = [], [], 0, 0

    def run(self):
        while not self.stop.is_set():
            for port, into in ((MEASURED_WEB, "agent_ms"), (NE_PORT, "ne_ms")):
                t = time.perf_counter()
                try:
                    status, _ = get(port, "/metrics")
                except OSError:
                    status = 0
                ms = (time.perf_counter() - t) * 1000
                with self.lock:
                    getattr(self, into).append(ms)
                    self.bad += status != 200
            with self.lock:
                self.rss_peak = max(self.rss_peak, rss_kb(self.pid))
            time.sleep(0.2)


def burst(total=int(os.environ.get("BURST", "2000")), clients=20):
    lock, latencies, verdicts, left = threading.Lock(), [], {}, [total]

    def worker():
        c = Client()
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            t = time.perf_counter()
            v = verdict(*c.query())
            ms = (time.perf_counter() - t) * 1000
            with lock:
                latencies.append(ms)
                verdicts[v] = verdicts.get(v, 0) + 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "qps": round(total / wall, 1), "p50_ms": round(pct(latencies, 0.5), 1),
            "p99_ms": round(pct(latencies, 0.99), 1), **{k: verdicts.get(k, 0) for k in ("complete", "partial", "refused", "error")}}


def open_loop(rate, seconds, workers=64):
    """`rate` queries per second on a schedule; latency from the scheduled time."""
    n = int(rate * seconds)
    start = time.perf_counter() + 0.05
    lock, latencies, verdicts, nxt = threading.Lock(), [], {}, [0]

    def worker():
        c = Client()
        while True:
            with lock:
                i = nxt[0]
                if i >= n:
                    return
                nxt[0] += 1
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            v = verdict(*c.query())
            ms = (time.perf_counter() - due) * 1000
            with lock:
                latencies.append(ms)
                verdicts[v] = verdicts.get(v, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    achieved = n / (time.perf_counter() - start)
    return {"rate": rate, "achieved": round(achieved, 1), "p50_ms": round(pct(latencies, 0.5), 1),
            "p99_ms": round(pct(latencies, 0.99), 1), **{k: verdicts.get(k, 0) for k in ("complete", "partial", "refused", "error")}, "n": n}


def spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return f"{min(xs):g} / {statistics.median(xs):g} / {max(xs):g}"


def main():
    if not NE:
        sys.exit("prometheus-node-exporter is missing")
    tmp = tempfile.mkdtemp()
    procs = []
    try:
        zones = int(os.environ.get("ZONES", "3" if AGENTS <= 12 else "10"))
        if PROCESSES:
            # One process per agent, as on a fleet: no agent's overlay work
            # waits behind another's on a shared runtime thread.
            for i in range(AGENTS - 1):
                procs.append(subprocess.Popen(
                    [BIN, "agent", "--zone", f"/demo/zone{i % zones}/agent{i}",
                     "--gossip.listen-address", f"127.0.0.1:{GOSSIP + i}",
                     "--web.listen-address", f"127.0.0.1:{WEB + i}", "--gossip.seed", f"127.0.0.1:{GOSSIP}",
                     "--no-collector.host"],
                    stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/agent{i}.log", "w"),
                    env={**os.environ, "ASTROLABE_LOG": "warn"}))
        else:
            procs.append(subprocess.Popen(
                [BIN, "demo", "--agents", str(AGENTS - 1), "--zones", str(zones),
                 "--gossip-port", str(GOSSIP), "--web-port", str(WEB), "--no-collector.host", "--no-gossip-encryption",
                 "--quiet", "--duration", "1h"], stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/demo.log", "w")))
        time.sleep(2)
        agent = subprocess.Popen(
            [BIN, "agent", "--zone", "/demo/zone0/measured", "--gossip.listen-address", f"127.0.0.1:{MEASURED_GOSSIP}",
             "--web.listen-address", f"127.0.0.1:{MEASURED_WEB}", "--gossip.seed", f"127.0.0.1:{GOSSIP}",
             "--no-collector.host"] + AGENT_FLAGS,
            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/agent.log", "w"), env={**os.environ, "ASTROLABE_LOG": "warn"})
        procs.append(agent)
        procs.append(subprocess.Popen([NE, f"--web.listen-address=127.0.0.1:{NE_PORT}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        t0 = time.time()
        while True:
            try:
                members = metric(get(MEASURED_WEB, "/metrics")[1], r'astrolabe_zone_members\{zone_path="/"\}')
            except OSError:
                members = None
            if members == AGENTS:
                break
            if time.time() - t0 > 180:
                sys.exit(f"the measured agent's root counts {members} of {AGENTS} after 180 s")
            time.sleep(0.5)
        print(f"{AGENTS} agents converged in {time.time() - t0:.1f} s; runs: {RUNS}", flush=True)
        time.sleep(12)  # past the agent's start-up page release (10 s)
        idle_rss = rss_kb(agent.pid)
        sampler = Sampler(agent.pid)
        sampler.start()
        results = []
        for run in range(RUNS):
            sampler.reset()
            b = burst()
            burst_scrapes = (list(sampler.agent_ms), list(sampler.ne_ms), sampler.bad, sampler.rss_peak)
            ramp = []
            for rate in RAMP:
                r = open_loop(rate, RAMP_SECONDS)
                ramp.append(r)
                if r["p99_ms"] > 4 * P99_BOUND_MS:
                    break  # far past the knee; higher rates only queue
            with sampler.lock:
                all_agent, all_ne, bad, rss_peak = list(sampler.agent_ms), list(sampler.ne_ms), sampler.bad, sampler.rss_peak
            ok = [r["rate"] for r in ramp if r["p99_ms"] <= P99_BOUND_MS and r["complete"] == r["n"]
                  and r["achieved"] >= 0.95 * r["rate"]]
            m = get(MEASURED_WEB, "/metrics")[1]
            res = {
                "run": run + 1, "burst": b, "burst_rss_mb": round(burst_scrapes[3] / 1024, 1),
                "burst_scrape_agent_ms_p50_p99_max": [round(pct(burst_scrapes[0], q), 1) for q in (0.5, 0.99, 1.0)],
                "burst_scrape_node_exporter_ms_p50_p99_max": [round(pct(burst_scrapes[1], q), 1) for q in (0.5, 0.99, 1.0)],
                "ramp": ramp, "capacity_qps": max(ok) if ok else 0,
                "rss_peak_mb": round(rss_peak / 1024, 1),
                "scrape_agent_ms_p50_p99_max": [round(pct(all_agent, q), 1) for q in (0.5, 0.99, 1.0)],
                "scrape_node_exporter_ms_p50_p99_max": [round(pct(all_ne, q), 1) for q in (0.5, 0.99, 1.0)],
                "scrapes_not_200": bad,
                "tasks_in_progress_peak": metric(m, "astrolabe_overlay_tasks_in_progress_peak"),
                "pending_refusals": metric(m, r'astrolabe_limit_refusals_total\{limit="pending_queries"\}'),
            }
            print(json.dumps(res), flush=True)
            results.append(res)
        sampler.stop.set()
        print(f"--- {AGENTS} agents, {RUNS} runs (min / median / max); idle RSS {idle_rss / 1024:.1f} MB")
        col = lambda f: spread([f(r) for r in results])
        print(f"burst {os.environ.get('BURST', '2000')} queries x 20 clients: q/s {col(lambda r: r['burst']['qps'])}, "
              f"p50 ms {col(lambda r: r['burst']['p50_ms'])}, p99 ms {col(lambda r: r['burst']['p99_ms'])}, "
              f"partial {col(lambda r: r['burst']['partial'])}, refused {col(lambda r: r['burst']['refused'])}, "
              f"errors {col(lambda r: r['burst']['error'])}, RSS MB {col(lambda r: r['burst_rss_mb'])}")
        print(f"scrape during the burst, p99 ms: agent {col(lambda r: r['burst_scrape_agent_ms_p50_p99_max'][1])}, "
              f"node_exporter {col(lambda r: r['burst_scrape_node_exporter_ms_p50_p99_max'][1])}")
        print(f"capacity (p99 <= {P99_BOUND_MS} ms, all complete): q/s {col(lambda r: r['capacity_qps'])}")
        print(f"scrape over the whole run, p50 / p99 / max ms: agent p99 {col(lambda r: r['scrape_agent_ms_p50_p99_max'][1])}, "
              f"max {col(lambda r: r['scrape_agent_ms_p50_p99_max'][2])}; node_exporter p99 "
              f"{col(lambda r: r['scrape_node_exporter_ms_p50_p99_max'][1])}, max {col(lambda r: r['scrape_node_exporter_ms_p50_p99_max'][2])}; "
              f"not 200: {col(lambda r: r['scrapes_not_200'])}")
        print(f"RSS peak MB {col(lambda r: r['rss_peak_mb'])}; overlay tasks in progress, peak {col(lambda r: r['tasks_in_progress_peak'])}; "
              f"pending_queries refusals (cumulative) {col(lambda r: r['pending_refusals'])}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
