#!/usr/bin/env python3
"""The simulator against a real network: N real `astrolabe agent` processes,
each in its own network namespace, run the scenario `astrolabe sim` runs, and
the figures measured from outside are printed beside the simulator's.

    bench/netns.py --bin target/debug/astrolabe --agents 32 --loss 0.2 --seeds 1..5

Root only (network namespaces, veth pairs, /dev/net/tun). The test bed:

- a hub namespace; per agent a namespace whose eth0 is one end of a veth
  pair, the other end in the hub. Agent i is the simulator's agent i: its
  address 10.0.x.y (i + 1), its leaf zone (`/z<d>/.../h<i>`), its id
  (i + 1), its seeds (agents 0, n/3, 2n/3) and the simulator's aggregates;
- links: the hub routes every agent-to-agent datagram into tun0, owned by a
  relay process (this script with --relay) that drops it with probability
  --loss or writes it back after the one-way delay of that ordered link,
  which is the simulator's own draw for the link and seed
  (`link_latency_ms`, uniform in --latency-min-ms..--latency-max-ms). This
  is tc netem done in user space: sch_netem is not in every kernel (not in
  this machine's). The hub's own traffic (the HTTP poller) goes straight;
- cold start: every agent process is started stopped (before it execs) and
  all are let go (SIGCONT) at one instant, as the simulator starts every
  engine at time zero, at the simulator's phase of the wall clock in the
  engine's 3 s growth grid (--wall-phase-ms). "Rounds to membership" is
  from that instant until every agent's root counts every agent; a round's
  pause; then --changes times: one random agent's `mem` (a textfile) is
  changed and collected at once (the `collect` command), and "rounds to
  value" is from the write until every root's `mem_sum` equals the new sum;
  a round's pause. Every checkpoint checks every root's members, hosts,
  mem_sum, load_min, load_max and load_avg against the leaves.
- the state is read from outside: a poller in the hub namespace reads every
  agent's /api/v1/zones (all agents at once, every --poll-ms at most).

Only namespaces it made carry traffic; they are removed on exit, on failure,
on SIGTERM / SIGINT and after --timeout (and those of a run killed hard at
the next start). Agents and relay die with this script (PR_SET_PDEATHSIG).

Prints JSON (--json) or a side-by-side table: per seed the bed's and the
simulator's rounds_to_membership and rounds_to_value mean / max, then min /
median / max of each over the seeds, and the ratio bed / sim of the medians.
"""
import argparse
import concurrent.futures
import ctypes
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# The simulator's aggregates (exporter/src/sim/mod.rs, SIM_AGGREGATES).
SIM_AGGREGATE = (
    "SELECT count(*) AS hosts, sum(mem) AS mem_sum, min(load) AS load_min, "
    "max(load) AS load_max, avg(load) AS load_avg, quantile(0.95, load) AS load_p95"
)
GOSSIP_PORT = 7946
# The simulator's wall clock at time zero (exporter/src/sim/mod.rs EPOCH_MS)
# and the engine's growth gap (EngineConfig::growth_gap_ms): a growing zone
# row is recomputed at wall-clock multiples of the gap, so rounds to
# membership depend on where in that grid the cold start falls. The bed
# starts at the simulator's phase unless told otherwise.
SIM_EPOCH_MS = 1_700_000_000_000
GROWTH_GAP_MS = 3000
WEB_PORT = 9464
HUB_IP = "10.0.255.254"
# Large enough that no gossip datagram is fragmented (the relay drops or
# delays whole packets, as the simulator does datagrams).
MTU = 9000
RELAY_TABLE = 100
NS_PREFIX = "asb"
M64 = (1 << 64) - 1
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)


class BedError(Exception):
    pass


class Timeout(BaseException):
    """Raised by the alarm: a BaseException so no `except Exception` eats it."""


# --- the simulator's layout, addresses and link latencies ---------------------

def levels(agents, branching):
    n, cap = 1, branching
    while cap < agents:
        n += 1
        cap *= branching
    return n


def leaf_path(index, agents, branching):
    """exporter/src/sim/tree.rs `leaf_path`."""
    digits, rest = [], index
    for _ in range(levels(agents, branching) - 1):
        rest //= branching
        digits.append(rest % branching)
    digits.reverse()
    return "".join(f"/z{d}" for d in digits) + f"/h{index}"


def addr_of(index):
    """exporter/src/sim/network.rs `addr_of`, without the port."""
    n = index + 1
    if n >= 0xFF00:
        raise BedError("at most 65279 agents")
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def sim_seeds(agents, k=3):
    """exporter/src/sim/mod.rs `Sim::seeds`."""
    k = max(1, min(k, agents))
    out = []
    for j in range(k):
        s = j * agents // k
        if not out or out[-1] != s:
            out.append(s)
    return out


def link_latency_ms(seed, lo, hi, frm, to):
    """exporter/src/sim/network.rs `link_latency_ms`, bit for bit."""
    span = max(hi - lo, 0) + 1
    h = (seed ^ 0x9E3779B97F4A7C15) & M64
    for v in (frm, to):
        h ^= (v * 0xBF58476D1CE4E5B9) & M64
        h = ((h << 31) | (h >> 33)) & M64
        h = (h * 0x94D049BB133111EB) & M64
    return lo + (h >> 11) % span


# --- namespaces ----------------------------------------------------------------

def run(cmd, check=True, input=None):
    r = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise BedError(f"{' '.join(cmd[:6])}{' ...' if len(cmd) > 6 else ''}: {r.stderr.strip() or r.returncode}")
    return r


def netns_list():
    r = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def remove_stale(prefix_root):
    """Namespaces of an earlier run whose script is gone (killed hard)."""
    for ns in netns_list():
        if not ns.startswith(prefix_root):
            continue
        pid = ns[len(prefix_root):].split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            run(["ip", "netns", "del", ns], check=False)


class Bed:
    """The namespaces, links, relay and agents of one run."""

    def __init__(self, args, seed, prefix):
        self.args = args
        self.seed = seed
        self.prefix = prefix
        self.hub = f"{prefix}-hub"
        self.made = []
        self.procs = []
        self.relay = None
        self.dir = tempfile.mkdtemp(prefix=f"{prefix}-")
        self.rng = random.Random(seed)
        self.mem = []
        self.load = []

    def ns(self, i):
        return f"{self.prefix}-a{i}"

    def setup(self):
        n = self.args.agents
        run(["ip", "netns", "add", self.hub])
        self.made.append(self.hub)
        hub = ["ip", "-n", self.hub]
        sysctl = ["ip", "netns", "exec", self.hub, "sysctl", "-q", "-w"]
        run(sysctl + ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                      "net.ipv4.conf.default.rp_filter=0"])
        run(hub + ["link", "set", "lo", "up"])
        hub_batch = []
        for i in range(n):
            ns = self.ns(i)
            run(["ip", "netns", "add", ns])
            self.made.append(ns)
            # Both ends made in the agent's namespace, one then moved to the hub.
            run(["ip", "-n", ns, "link", "add", "eth0", "mtu", str(MTU), "type", "veth",
                 "peer", "name", f"h{i}", "mtu", str(MTU)])
            run(["ip", "-n", ns, "link", "set", f"h{i}", "netns", self.hub])
            batch = [
                "link set lo up",
                f"addr add {addr_of(i)}/32 dev eth0",
                "link set eth0 up",
                f"route add {HUB_IP}/32 dev eth0",
                f"route add 10.0.0.0/16 via {HUB_IP} dev eth0",
            ]
            run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n")
            hub_batch += [
                f"addr add {HUB_IP}/32 dev h{i}",
                f"link set h{i} up",
                f"route add {addr_of(i)}/32 dev h{i}",
                # What comes from an agent goes to the relay (tun0), but
                # what is for the hub itself (the poller) does not.
                f"rule add iif h{i} lookup {RELAY_TABLE} pref 100",
            ]
        run(hub + ["-batch", "-"], input="\n".join(hub_batch) + "\n")
        self.start_relay()

    def start_relay(self):
        """The link emulator: a process in the hub namespace that owns
        tun0, to which the hub routes every agent-to-agent datagram, and
        writes each back after its link's delay unless it is lost."""
        a = self.args
        cmd = ["ip", "netns", "exec", self.hub, sys.executable, os.path.abspath(__file__), "--relay",
               "--seeds", str(self.seed), "--agents", str(a.agents), "--loss", str(a.loss),
               "--latency-min-ms", str(a.latency_min_ms), "--latency-max-ms", str(a.latency_max_ms)]
        self.relay = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL))
        line = self.relay.stdout.readline()
        if line.strip() != "ready":
            raise BedError(f"relay did not start: {line.strip() or self.relay.wait()}")
        hub = ["ip", "-n", self.hub]
        batch = [
            f"link set tun0 mtu {MTU} up",
            f"route add 10.0.0.0/17 dev tun0 table {RELAY_TABLE}",
        ]
        run(hub + ["-batch", "-"], input="\n".join(batch) + "\n")
        run(["ip", "netns", "exec", self.hub, "sysctl", "-q", "-w", "net.ipv4.conf.tun0.rp_filter=0"])

    def write_values(self, i):
        path = os.path.join(self.dir, f"a{i}")
        tmp = os.path.join(path, "sim.prom.tmp")
        with open(tmp, "w") as f:
            f.write(f"load {self.load[i]}\nmem {self.mem[i]}\ncpu 0.5\n")
        os.rename(tmp, os.path.join(path, "sim.prom"))

    def start_agents(self):
        a = self.args
        seeds = [f"{addr_of(s)}:{GOSSIP_PORT}" for s in sim_seeds(a.agents)]
        for i in range(a.agents):
            self.load.append(round(self.rng.random(), 3))
            self.mem.append(self.rng.randint(1, 64) * 1024)
            os.makedirs(os.path.join(self.dir, f"a{i}"))
            self.write_values(i)
        for i in range(a.agents):
            ip = addr_of(i)
            cmd = ["ip", "netns", "exec", self.ns(i), a.bin, "agent",
                   "--zone", leaf_path(i, a.agents, a.branching),
                   "--agent.id", str(i + 1),
                   "--gossip.listen-address", f"{ip}:{GOSSIP_PORT}",
                   "--web.listen-address", f"{ip}:{WEB_PORT}",
                   "--gossip.interval", f"{a.interval_ms}ms",
                   "--no-collector.host",
                   "--collector.textfile.directory", os.path.join(self.dir, f"a{i}"),
                   "--aggregate", SIM_AGGREGATE]
            if a.collect_ms:
                cmd += ["--collector.interval", f"{a.collect_ms}ms"]
            for s in seeds:
                cmd += ["--gossip.seed", s]
            log = open(os.path.join(self.dir, f"a{i}.log"), "w")
            env = dict(os.environ, ASTROLABE_LOG="warn")
            # Each starts stopped (the shell stops itself before it execs
            # the agent), so that all can be let go at one instant.
            self.procs.append(subprocess.Popen(
                ["sh", "-c", 'kill -STOP $$; exec "$@"', "sh"] + cmd,
                stdout=subprocess.DEVNULL, stderr=log, env=env,
                preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)))
            log.close()

    def wait_stopped(self, timeout=30):
        """Until every agent's shell has stopped itself."""
        deadline = time.time() + timeout
        for p in self.procs:
            while True:
                try:
                    with open(f"/proc/{p.pid}/stat") as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    state = "gone"
                if state == "T":
                    break
                if state in ("gone", "Z") or time.time() > deadline:
                    raise BedError(f"agent process {p.pid} did not start (state {state})")
                time.sleep(0.005)

    def release(self):
        for p in self.procs:
            os.kill(p.pid, signal.SIGCONT)

    def open_gate(self):
        self.relay.stdin.write("open\n")
        self.relay.stdin.flush()
        if self.relay.stdout.readline().strip() != "open":
            raise BedError("relay did not open")

    def relay_stats(self):
        """What the relay has carried and lost so far."""
        if self.relay is None or self.relay.poll() is not None:
            return None
        try:
            self.relay.stdin.write("stats\n")
            self.relay.stdin.flush()
            return json.loads(self.relay.stdout.readline())
        except (OSError, ValueError):
            return None

    def dead_agents(self):
        return [i for i, p in enumerate(self.procs) if p.poll() is not None]

    def log_tail(self, i, lines=5):
        try:
            with open(os.path.join(self.dir, f"a{i}.log")) as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                # One that was never let go acts on the signal only once
                # it runs again.
                p.send_signal(signal.SIGCONT)
        deadline = time.time() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.relay is not None and self.relay.poll() is None:
            self.relay.kill()
            self.relay.wait()
        for ns in reversed(self.made):
            run(["ip", "netns", "del", ns], check=False)
        left = [ns for ns in netns_list() if ns.startswith(self.prefix + "-")]
        for ns in left:
            run(["ip", "netns", "del", ns], check=False)
        self.made = []
        if not self.args.keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)


def enter_netns(name):
    """Moves this thread (the main one, before any other starts) into a
    namespace; sockets it and later threads open live there."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise BedError(f"setns {name}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def leave_netns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise BedError(f"setns back: {os.strerror(ctypes.get_errno())}")



# --- the link emulator (tc netem is not in every kernel: not in this one) ----

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def index_of(ip_bytes):
    """exporter/src/sim/network.rs `index_of`: 10.a.b.c -> agent."""
    if ip_bytes[0] != 10:
        return None
    n = (ip_bytes[1] << 16) | (ip_bytes[2] << 8) | ip_bytes[3]
    return n - 1 if n >= 1 else None


def relay_main(args):
    """Runs in the hub namespace: owns tun0; every IPv4 packet the hub
    routes into it (agent to agent) is dropped with probability --loss, or
    written back after the link's delay, `link_latency_ms` of the seed.
    Drops everything until "open" on stdin; "stats" prints what it did."""
    import fcntl
    import heapq
    import select
    import struct

    seed = args.seeds[0]
    rng = random.Random(seed ^ 0x5EED)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"tun0", IFF_TUN | IFF_NO_PI))
    delay = {}
    for i in range(args.agents):
        for j in range(args.agents):
            delay[(i, j)] = link_latency_ms(seed, args.latency_min_ms, args.latency_max_ms, i, j) / 1000
    print("ready", flush=True)
    is_open = False
    heap, seq, late_sum = [], 0, 0.0
    counts = {"gated": 0, "lost": 0, "delivered": 0, "other": 0, "late_ms_max": 0.0}
    stdin = sys.stdin.fileno()
    while True:
        timeout = max(0.0, heap[0][0] - time.monotonic()) if heap else 1.0
        ready, _, _ = select.select([fd, stdin], [], [], timeout)
        if stdin in ready:
            line = sys.stdin.readline()
            if not line:
                return
            if line.strip() == "open":
                is_open = True
                print("open", flush=True)
            elif line.strip() == "stats":
                counts["late_ms_mean"] = round(late_sum / max(counts["delivered"], 1), 2)
                print(json.dumps(counts), flush=True)
        if fd in ready:
            now = time.monotonic()
            while True:
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if len(pkt) < 20 or pkt[0] >> 4 != 4:
                    counts["other"] += 1
                    continue
                src, dst = index_of(pkt[12:16]), index_of(pkt[16:20])
                d = delay.get((src, dst))
                if d is None:
                    counts["other"] += 1
                    continue
                if not is_open:
                    counts["gated"] += 1
                    continue
                if args.loss > 0 and rng.random() < args.loss:
                    counts["lost"] += 1
                    continue
                seq += 1
                heapq.heappush(heap, (now + d, seq, pkt))
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            due, _, pkt = heapq.heappop(heap)
            late = (now - due) * 1000
            counts["late_ms_max"] = max(counts["late_ms_max"], round(late, 1))
            late_sum += late
            try:
                os.write(fd, pkt)
                counts["delivered"] += 1
            except OSError:
                counts["other"] += 1

# --- measuring from outside ---------------------------------------------------

class Poller:
    """Reads every agent's /api/v1/zones, all at once, over kept-alive
    connections; a sweep's states are each agent's own and root rows."""

    def __init__(self, agents, poll_ms):
        self.agents = agents
        self.poll_s = poll_ms / 1000
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=agents)
        self.conns = [None] * agents
        self.sweeps = 0
        self.sweep_seconds = 0.0

    def fetch(self, i):
        try:
            if self.conns[i] is None:
                self.conns[i] = http.client.HTTPConnection(addr_of(i), WEB_PORT, timeout=2)
            c = self.conns[i]
            c.request("GET", "/api/v1/zones")
            r = c.getresponse()
            body = json.loads(r.read())
        except (OSError, http.client.HTTPException, ValueError):
            if self.conns[i] is not None:
                self.conns[i].close()
            self.conns[i] = None
            return time.time(), None
        t = time.time()
        own, root = None, None
        for z in body.get("zones", []):
            if z["zone_path"] == "/":
                root = z
            if z["zone_path"] == body.get("agent_zone"):
                own = z
        return t, {"root": root, "own": own}

    def sweep(self):
        started = time.time()
        states = list(self.pool.map(self.fetch, range(self.agents)))
        self.sweeps += 1
        self.sweep_seconds += time.time() - started
        return states

    def until(self, ok, deadline, since):
        """Sweeps until every agent's state satisfies `ok`; the time of the
        response that completed it (or None at the deadline), the last
        states, and when each agent was first seen satisfying it, in
        seconds after `since`."""
        first = [None] * self.agents
        while True:
            started = time.time()
            states = self.sweep()
            good = [s is not None and ok(i, s) for i, (_, s) in enumerate(states)]
            for i, g in enumerate(good):
                if g and first[i] is None:
                    first[i] = states[i][0] - since
            if all(good):
                return max(t for t, _ in states), states, first
            if started > deadline:
                return None, states, first
            time.sleep(max(0.0, self.poll_s - (time.time() - started)))

    def collect(self, i, zone):
        """The agent samples at once (the `collect` command), so that a
        changed textfile is its row when this returns."""
        c = http.client.HTTPConnection(addr_of(i), WEB_PORT, timeout=5)
        try:
            body = json.dumps({"zone": zone, "command": "collect", "timeout_ms": 2000})
            c.request("POST", "/api/v1/command", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
        for c in self.conns:
            if c is not None:
                c.close()


def close(a, b):
    if a is None or b is None:
        return False
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-12) + 1e-9


def truth(bed):
    n = len(bed.mem)
    return {
        "members": n, "hosts": n, "mem_sum": float(sum(bed.mem)),
        "load_min": min(bed.load), "load_max": max(bed.load),
        "load_avg": sum(bed.load) / n,
    }


def mismatch(states, want):
    """The first root that differs from the truth: agent, column, got, want."""
    for i, (_, s) in enumerate(states):
        root = (s or {}).get("root")
        if root is None:
            return f"agent {i}: no root"
        if root["members"] != want["members"]:
            return f"agent {i}: members {root['members']}, want {want['members']}"
        attrs = root["attributes"]
        for col in ("hosts", "mem_sum", "load_min", "load_max", "load_avg"):
            got = attrs.get(col)
            if not isinstance(got, (int, float)) or not close(float(got), float(want[col])):
                return f"agent {i}: {col} {got}, want {want[col]}"
    return None


def run_bed(args, seed):
    prefix = f"{args.prefix}{os.getpid()}-{seed}"
    bed = Bed(args, seed, prefix)
    interval = args.interval_ms / 1000
    out = {"seed": seed}
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    poller = None
    try:
        t_setup = time.time()
        bed.setup()
        out["setup_seconds"] = round(time.time() - t_setup, 2)
        t_spawn = time.time()
        bed.start_agents()
        enter_netns(bed.hub)
        poller = Poller(args.agents, args.poll_ms)
        bed.wait_stopped()
        out["spawn_seconds"] = round(time.time() - t_spawn, 3)
        # The cold start: every agent let go at one instant, as the
        # simulator starts every engine at time zero.
        if args.wall_phase_ms >= 0:
            now_ms = time.time() * 1000
            wait = (args.wall_phase_ms - now_ms) % GROWTH_GAP_MS
            time.sleep(wait / 1000)
        bed.open_gate()
        t_open = time.time()
        bed.release()
        out["wall_phase_ms"] = round(t_open * 1000 % GROWTH_GAP_MS, 1)
        t_up, _, _ = poller.until(lambda i, s: s["own"] is not None, t_open + 30, t_open)
        if t_up is None:
            dead = bed.dead_agents()
            why = f"; agent {dead[0]} exited: {bed.log_tail(dead[0])}" if dead else ""
            raise BedError(f"agents not answering HTTP after 30 s{why}")
        out["all_answering_rounds"] = round((t_up - t_open) / interval, 3)
        limit = args.max_rounds * interval
        n = args.agents
        t, states, first = poller.until(lambda i, s: s["root"] is not None and s["root"]["members"] == n,
                                        t_open + limit, t_open)
        if t is None:
            seen = sorted((s or {}).get("root", {}).get("members", 0) if s and s["root"] else 0 for _, s in states)
            raise BedError(f"membership did not converge in {args.max_rounds} rounds: roots count {seen}")
        # Each agent's response time in which its root first counted all: the
        # last of these is when every root did (the response time, not the
        # end of the sweep it was in).
        out["rounds_to_membership"] = round(max(first) / interval, 3)
        # When each agent's root first counted everyone: the curve, sorted.
        out["membership_first_seen"] = sorted(round(f / interval, 2) for f in first)
        time.sleep(interval)
        first = mismatch(poller.sweep(), truth(bed))
        mismatch_at = f"after the cold start: {first}" if first else None
        value_rounds, source_lag, value_seen, source_root = [], [], [], []
        for c in range(args.changes):
            leaf = bed.rng.randrange(args.agents)
            bed.mem[leaf] = bed.rng.randint(1_000_000, 2_000_000 - 1)
            want = float(sum(bed.mem))
            t_write = time.time()
            bed.write_values(leaf)
            status, _ = poller.collect(leaf, leaf_path(leaf, args.agents, args.branching))
            t_ack = time.time()
            if status != 200:
                raise BedError(f"collect at agent {leaf}: HTTP {status}")
            source_lag.append((t_ack - t_write) / interval)

            def ok(i, s, want=want):
                root = s["root"]
                return root is not None and close(root["attributes"].get("mem_sum"), want)

            t, states, first = poller.until(ok, t_write + limit, t_write)
            seen = sorted(f / interval for f in first if f is not None)
            if t is None:
                behind = sum(1 for _, s in states if not (s and s["root"] and close(s["root"]["attributes"].get("mem_sum"), want)))
                raise BedError(f"change {c + 1} did not reach every root in {args.max_rounds} rounds: {behind} behind")
            value_rounds.append(seen[-1])
            # The changed agent's own root: the floor of this measurement
            # (collect command, HTTP polling), with no network in it.
            source_root.append(first[leaf] / interval)
            value_seen.append([round(seen[0], 3), round(statistics.median(seen), 3), round(seen[-1], 3)])
            if mismatch_at is None:
                m = mismatch(states, truth(bed))
                mismatch_at = f"after change {c + 1}: {m}" if m else None
            time.sleep(interval)
        out["rounds_to_value"] = {
            "mean": round(statistics.fmean(value_rounds), 3),
            "max": round(max(value_rounds), 3),
            "all": [round(v, 3) for v in value_rounds],
            # When the changed agent's own root showed it, and the rest:
            # the part of rounds_to_value that crossed the network.
            "source_root_mean": round(statistics.fmean(source_root), 3),
            "network_mean": round(statistics.fmean(v - s for v, s in zip(value_rounds, source_root)), 3),
            "network_max": round(max(v - s for v, s in zip(value_rounds, source_root)), 3),
            # Per change: the first, median and last agent to show it.
            "first_seen_min_median_max": value_seen,
        }
        # The write to the collect command's answer: an upper bound on how
        # late the change entered the changed agent's engine.
        out["source_lag_rounds_max"] = round(max(source_lag), 3) if source_lag else None
        # The last checkpoint: what every agent's root served, beside the truth.
        roots = [s["root"] for _, s in states if s and s["root"]]
        out["truth"] = truth(bed)
        out["roots"] = {
            "answered": len(roots),
            "members": sorted({r["members"] for r in roots}),
            "mem_sum": sorted({float(r["attributes"].get("mem_sum") or 0) for r in roots}),
        }
        out["root_correct"] = mismatch_at is None
        if mismatch_at:
            out["root_mismatch"] = mismatch_at
        out["sweeps"] = poller.sweeps
        out["sweep_ms_mean"] = round(poller.sweep_seconds / max(poller.sweeps, 1) * 1000, 1)
        out["relay"] = bed.relay_stats()
        dead = bed.dead_agents()
        if dead:
            raise BedError(f"agent {dead[0]} exited: {bed.log_tail(dead[0])}")
    finally:
        if poller:
            poller.close()
        try:
            leave_netns(home)
        finally:
            os.close(home)
            bed.teardown()
    out["namespaces_left"] = [ns for ns in netns_list() if ns.startswith(prefix + "-")]
    return out


def run_sim(args, seed):
    cmd = [args.bin, "sim", "--agents", str(args.agents), "--branching", str(args.branching),
           "--loss", str(args.loss), "--seed", str(seed), "--changes", str(args.changes),
           "--latency-min-ms", str(args.latency_min_ms), "--latency-max-ms", str(args.latency_max_ms),
           "--max-rounds", str(args.max_rounds), "--json", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        rep = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"seed": seed, "error": r.stderr.strip()[-400:] or f"exit {r.returncode}"}
    return {
        "seed": seed,
        "rounds_to_membership": rep["rounds_to_membership"],
        "rounds_to_value": rep["rounds_to_value"],
        "root_correct": rep["root_correct"],
        "max_datagram_bytes": rep.get("max_datagram_bytes"),
    }


# --- report -------------------------------------------------------------------

FIGURES = [("membership", lambda r: r.get("rounds_to_membership")),
           ("value_mean", lambda r: (r.get("rounds_to_value") or {}).get("mean")),
           ("value_max", lambda r: (r.get("rounds_to_value") or {}).get("max")),
           # The bed's value figure less its floor (the changed agent's own
           # root); the simulator's own root changes at once, so its is the
           # value figure itself.
           ("value_network_mean", lambda r: (r.get("rounds_to_value") or {}).get(
               "network_mean", (r.get("rounds_to_value") or {}).get("mean")))]


def stats(rows):
    out = {}
    for name, get in FIGURES:
        v = sorted(x for x in (get(r) for r in rows) if x is not None)
        if v:
            out[name] = {"min": v[0], "median": round(statistics.median(v), 3), "max": v[-1]}
    return out


def parse_seeds(text):
    if ".." in text:
        a, b = text.split("..")
        return list(range(int(a), int(b.lstrip("=")) + 1))
    return [int(s) for s in text.split(",")]


def parse_ms(text):
    t = text.strip()
    if t.endswith("ms"):
        return int(t[:-2])
    if t.endswith("s"):
        return int(float(t[:-1]) * 1000)
    return int(t)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=32)
    p.add_argument("--branching", type=int, default=16)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--latency-min-ms", type=int, default=1)
    p.add_argument("--latency-max-ms", type=int, default=50)
    p.add_argument("--changes", type=int, default=5)
    p.add_argument("--seeds", type=parse_seeds, default=[1])
    p.add_argument("--interval", type=parse_ms, default=1000, dest="interval_ms",
                   help="gossip round of the real agents (the simulator's is 1 s)")
    p.add_argument("--collect-ms", type=int, default=0,
                   help="the agents' --collector.interval (default: theirs, a round; a change is collected at once by the collect command)")
    p.add_argument("--poll-ms", type=int, default=20, help="how often every agent is read (at most)")
    p.add_argument("--max-rounds", type=int, default=100)
    p.add_argument("--wall-phase-ms", type=int, default=SIM_EPOCH_MS % GROWTH_GAP_MS,
                   help="start when the wall clock is this far into the engine's 3 s growth grid, "
                        "as the simulator does (default); -1: whenever ready")
    p.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "astrolabe"))
    p.add_argument("--no-sim", action="store_true", help="the bed only")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=0, help="give up (and clean up) after this many seconds")
    p.add_argument("--prefix", default=NS_PREFIX, help="namespace names start with this and the pid")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.relay:
        return relay_main(args)
    if args.agents < 2 or args.agents >= 0xFF00:
        sys.exit("--agents must be in 2..65278")
    if os.geteuid() != 0:
        sys.exit("netns.py needs root (ip netns, tc)")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"no agent binary at {args.bin} (--bin)")

    def on_signal(signum, _frame):
        raise Timeout(f"signal {signum}")

    def on_alarm(_signum, _frame):
        raise Timeout(f"timed out after {args.timeout} s")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    if args.timeout > 0:
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
    remove_stale(args.prefix)

    rows, failures = [], []
    for seed in args.seeds:
        print(f"netns: seed {seed}: {args.agents} agents, loss {args.loss}", file=sys.stderr)
        try:
            bed = run_bed(args, seed)
        except (BedError, Timeout) as e:
            bed = {"seed": seed, "error": str(e)}
            failures.append(f"seed {seed}: {e}")
            print(f"netns: seed {seed}: {e}", file=sys.stderr)
            if isinstance(e, Timeout):
                rows.append({"seed": seed, "bed": bed})
                break
        if bed.get("namespaces_left"):
            failures.append(f"seed {seed}: namespaces left: {bed['namespaces_left']}")
        if bed.get("root_correct") is False:
            failures.append(f"seed {seed}: wrong root {bed.get('root_mismatch')}")
        row = {"seed": seed, "bed": bed}
        if not args.no_sim:
            row["sim"] = run_sim(args, seed)
        rows.append(row)
    signal.setitimer(signal.ITIMER_REAL, 0)

    beds = [r["bed"] for r in rows if "error" not in r["bed"]]
    sims = [r["sim"] for r in rows if "sim" in r and "error" not in r["sim"]]
    summary = {"bed": stats(beds), "sim": stats(sims)}
    if beds and sims:
        summary["ratio_bed_over_sim_of_medians"] = {
            k: round(summary["bed"][k]["median"] / summary["sim"][k]["median"], 3)
            for k in summary["bed"] if k in summary["sim"] and summary["sim"][k]["median"]
        }
    report = {
        "agents": args.agents, "branching": args.branching, "levels": levels(args.agents, args.branching),
        "loss": args.loss, "latency_ms": [args.latency_min_ms, args.latency_max_ms],
        "interval_ms": args.interval_ms, "poll_ms": args.poll_ms, "collect_ms": args.collect_ms,
        "wall_phase_ms": args.wall_phase_ms,
        "changes": args.changes, "runs": rows, "summary": summary, "failures": failures,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.agents} agents, B={args.branching}, loss {args.loss}, latency "
              f"{args.latency_min_ms}-{args.latency_max_ms} ms, round {args.interval_ms} ms, poll {args.poll_ms} ms")
        head = ["seed", "bed_memb", "sim_memb", "bed_val_mean", "sim_val_mean", "bed_val_max", "sim_val_max",
                "bed_net_mean", "sim_val_mean", "bed_ok"]
        table = []

        def cell(x):
            return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)

        for r in rows:
            b, s = r["bed"], r.get("sim", {})
            table.append([str(r["seed"])] + [cell(get(x)) for _, get in FIGURES for x in (b, s)]
                         + [cell(b.get("root_correct", b.get("error", "-")))])
        for label in ("min", "median", "max"):
            table.append([label] + [cell(summary[w].get(k, {}).get(label)) for k, _ in FIGURES for w in ("bed", "sim")] + [""])
        widths = [max(len(row[c]) for row in table + [head]) for c in range(len(head))]
        for row in [head] + table:
            print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
        if "ratio_bed_over_sim_of_medians" in summary:
            print("bed / sim (medians):", summary["ratio_bed_over_sim_of_medians"])
    if failures:
        print("netns: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
