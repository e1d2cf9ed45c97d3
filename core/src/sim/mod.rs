//! The deterministic simulator: thousands of engines in one process on a
//! virtual clock, with latency, loss, partitions, crashes, restarts and
//! clock skew. One seed makes a run reproducible to the byte.
//!
//! It drives the very same `Node` the agent runs, with the very bytes the
//! agent would send: every message is encoded, carried, decoded and
//! screened against the limits. Only the clock and the network are
//! simulated.

pub mod churn;
mod network;
pub mod overlay;
mod report;
mod tree;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use network::{addr_of, index_of, link_latency_ms, NetworkConfig, Partition};
pub use report::{run_benchmark, MinMax, Observer, Quiet, SimOptions, SimReport};
pub use tree::leaf_path;

use crate::aggregate::AggregateSet;
use crate::engine::{Engine, EngineConfig, Envelope, Message, Now};
use crate::node::{Input, Node, NodeConfig, Output, Wire};
use crate::zone::{Attributes, Row, Value, ZonePath};

/// Virtual wall clock at simulation time zero (Nov 2023), so HLC values
/// look like real ones and encode to realistic sizes.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// The aggregates every simulated agent runs on top of the defaults.
pub const SIM_AGGREGATES: &[&str] = &[
    "SELECT count(*) AS hosts, sum(mem) AS mem_sum, min(load) AS load_min, max(load) AS load_max, avg(load) AS load_avg, quantile(0.95, load) AS load_p95",
];

/// The parameters of one simulated run; `new` gives the defaults.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Agents started at time zero.
    pub agents: usize,
    /// Children per zone of the balanced tree the agents are leaves of.
    pub branching: usize,
    /// Seed of every random choice: same seed, same run.
    pub seed: u64,
    /// Probability that one datagram is lost, 0 <= loss < 1.
    pub loss: f64,
    /// Each agent's wall clock is off by a value drawn from ±skew_ms.
    pub skew_ms: u64,
    /// Least one-way latency of a link, in ms.
    pub latency_min_ms: u64,
    /// Greatest one-way latency of a link, in ms.
    pub latency_max_ms: u64,
    /// One gossip round of every agent, in ms.
    pub interval_ms: u64,
    /// Agents that serve as seeds, spread evenly over the indexes.
    pub seeds: usize,
    /// Aggregate SELECTs every agent runs on top of the defaults.
    pub aggregates: Vec<String>,
    /// Fewer agents busy in one virtual millisecond than this run on the
    /// calling thread: below it, threads cost more than they give.
    pub parallel_min_agents: usize,
    /// Leaf zones by agent, instead of the balanced tree (tests).
    pub paths: Option<Vec<ZonePath>>,
    /// Clock offsets by agent, repeated (agent i gets `[i % len]`),
    /// instead of draws from ±skew_ms.
    pub skews_ms: Option<Vec<i64>>,
    /// Agents placed in the tree but not started: joiners (`start`).
    /// Agent `agents + j` is host `s{j}` of the leaf zone of agent
    /// `j * 7919 % agents`.
    pub spares: usize,
    /// Bytes (the default: every message encoded, carried and decoded as
    /// the agent does), or shared structs for runs too large for a copy of
    /// every row per agent (`node::Wire`).
    pub wire: Wire,
}

impl SimConfig {
    /// `agents` in a tree of `branching`: no loss or skew, 1 to 50 ms links, 1
    /// s rounds, 3 seeds and `SIM_AGGREGATES`.
    pub fn new(agents: usize, branching: usize, seed: u64) -> SimConfig {
        SimConfig {
            agents,
            branching,
            seed,
            loss: 0.0,
            skew_ms: 0,
            latency_min_ms: 1,
            latency_max_ms: 50,
            interval_ms: 1000,
            seeds: 3,
            aggregates: SIM_AGGREGATES.iter().map(|s| s.to_string()).collect(),
            parallel_min_agents: 64,
            paths: None,
            skews_ms: None,
            spares: 0,
            wire: Wire::Bytes,
        }
    }
}

/// Why a simulation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Parameters out of range (the message says which).
    #[error("bad simulation parameters: {0}")]
    Config(String),
    /// An aggregate did not compile.
    #[error("aggregate: {0}")]
    Aggregate(#[from] crate::aggregate::AggregateError),
    /// An engine could not be made.
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
}

struct SimAgent {
    path: ZonePath,
    /// Boxed: a node leaves its agent for every millisecond it has work
    /// in, and moving a pointer is cheaper than moving the node (the
    /// copies were a visible part of the single-threaded share).
    node: Option<Box<Node>>,
    /// Index of this agent's job in the millisecond being run, if any.
    job: Option<u32>,
    attrs: Attributes,
    skew_ms: i64,
    /// Time of the tick event that is current for this agent.
    tick_at: u64,
    last_root: Option<Arc<Row>>,
    ok: bool,
    bytes_sent: u64,
    max_message: usize,
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        payload: Payload,
    },
    Tick {
        agent: usize,
    },
}

/// Pending events by virtual millisecond, each millisecond's in the order
/// they were scheduled. Far cheaper than a heap of whole events at 10^5
/// agents: there are only a few thousand distinct times in flight.
#[derive(Default)]
struct EventQueue {
    buckets: BTreeMap<u64, VecDeque<Event>>,
}

impl EventQueue {
    fn push(&mut self, at: u64, event: Event) {
        self.buckets.entry(at).or_default().push_back(event);
    }

    fn next_time(&self) -> Option<u64> {
        self.buckets.keys().next().copied()
    }

    /// All events of one millisecond. Events scheduled for that same
    /// millisecond while they run form a new batch.
    fn take(&mut self, at: u64) -> Option<VecDeque<Event>> {
        self.buckets.remove(&at)
    }
}

enum Work {
    Tick,
    Deliver {
        from: std::net::SocketAddr,
        payload: Payload,
    },
}

/// What a simulated link carries: the datagram's bytes, or with
/// `Wire::Shared` the gossip message itself.
enum Payload {
    Bytes(Vec<u8>),
    Envelope(Envelope),
}

impl Payload {
    /// The engine message's length, without the frame byte, as the byte
    /// figures have always counted it (BENCHMARKS.md compares across stops).
    fn message_len(&self, len: usize) -> usize {
        match self {
            Payload::Bytes(bytes) => bytes.len().saturating_sub(1),
            Payload::Envelope(_) => len,
        }
    }
}

/// What a node asked for, oldest first, taken whole (`Node::take_outputs`:
/// no node keeps a burst's capacity, nothing is copied on the way to
/// `dispatch`). Only datagrams: the gossip simulator starts no request,
/// so no answer or host work comes out (`sim::overlay` handles those).
type Sends = VecDeque<Output>;

/// One agent's events of one virtual millisecond, run apart from the rest.
struct AgentJob {
    agent: usize,
    now: Now,
    node: Box<Node>,
    /// Events with their position in the millisecond's order.
    work: Vec<(usize, Work)>,
    outputs: Vec<(usize, Sends)>,
    /// The node's next tick and its root row after the work, read here
    /// on the job's thread: read after the step, on the one thread that
    /// runs between steps, they were a cache miss per busy engine there.
    next_tick_ms: u64,
    /// The root's address, only compared (see `root_address`).
    root: usize,
}

/// Where a root row lives: a root whose address is that of the agent's
/// last seen root (which `last_root` keeps alive) is that same row.
fn root_address(root: &Arc<Row>) -> usize {
    Arc::as_ptr(root) as usize
}

impl AgentJob {
    fn run(&mut self) {
        for (pos, work) in self.work.drain(..) {
            match work {
                Work::Tick => self.node.tick(self.now),
                Work::Deliver {
                    from,
                    payload: Payload::Bytes(bytes),
                } => self.node.handle_datagram(self.now, from, &bytes),
                Work::Deliver {
                    from,
                    payload: Payload::Envelope(envelope),
                } => self.node.handle_envelope(self.now, from, envelope),
            }
            self.outputs.push((pos, self.node.take_outputs()));
        }
        self.next_tick_ms = self.node.poll_timeout();
        self.root = root_address(self.node.engine().root());
    }
}

/// What every live agent's root row is checked against.
pub type Predicate = Box<dyn Fn(&Row) -> bool>;

/// Watches every new root for a count below `floor`: the live agents that
/// every root already counted (those restarting or joining left out). A
/// root below it lacks a live agent it had counted: a false exclusion.
/// Agents in `exempt` (restarting ones) are not watched themselves.
#[derive(Debug, Clone, Default)]
pub struct FloorWatch {
    /// Roots of live, watched agents that count fewer members than this are
    /// undercounts.
    pub floor: u64,
    /// Agents not watched (restarting or joining ones).
    pub exempt: std::collections::BTreeSet<usize>,
    /// New roots seen below the floor.
    pub below: u64,
    /// The largest shortfall seen.
    pub worst: u64,
}

impl FloorWatch {
    fn see(&mut self, agent: usize, members: u64) {
        if members < self.floor && !self.exempt.contains(&agent) {
            self.below += 1;
            self.worst = self.worst.max(self.floor - members);
        }
    }
}

/// A simulated cluster: every agent's engine, an event queue of ticks and
/// deliveries on a virtual clock, and the network between them.
pub struct Sim {
    /// The parameters it was made with.
    pub cfg: SimConfig,
    net: NetworkConfig,
    aggregates: Arc<AggregateSet>,
    agents: Vec<SimAgent>,
    queue: EventQueue,
    now: u64,
    rng: ChaCha8Rng,
    partition: Option<Partition>,
    predicate: Option<Predicate>,
    ok_count: usize,
    /// Roots that count fewer members than this are undercounts (`FloorWatch`).
    pub watch: Option<FloorWatch>,
    live: usize,
    /// Datagrams handed to a live agent.
    pub delivered: u64,
    /// Datagrams lost, cut by a partition, or sent to an agent that is down.
    pub dropped: u64,
    /// Diagnostics: every datagram from or to this agent is described on
    /// stderr with its fate (see the ignored trace tests).
    pub trace: Option<usize>,
}

impl Sim {
    /// Builds the tree and starts every agent at time zero, each knowing
    /// only the seeds.
    pub fn new(cfg: SimConfig) -> Result<Sim, SimError> {
        if cfg.agents == 0 || cfg.branching < 2 {
            return Err(SimError::Config(
                "need at least one agent and a branching factor of at least 2".into(),
            ));
        }
        if !(0.0..1.0).contains(&cfg.loss) {
            return Err(SimError::Config("loss must be in [0, 1)".into()));
        }
        let aggregates = Arc::new(AggregateSet::with_defaults(&cfg.aggregates)?);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let net = NetworkConfig {
            latency_min_ms: cfg.latency_min_ms,
            latency_max_ms: cfg.latency_max_ms,
            loss: cfg.loss,
            seed: cfg.seed,
        };
        let mut agents = Vec::with_capacity(cfg.agents + cfg.spares);
        for i in 0..cfg.agents + cfg.spares {
            let path = if i >= cfg.agents {
                let j = i - cfg.agents;
                let beside = tree::leaf_path(j * 7919 % cfg.agents, cfg.agents, cfg.branching);
                let zone = beside.parent().unwrap_or_else(ZonePath::root);
                zone.child(&format!("s{j}"))
                    .map_err(|e| SimError::Config(e.to_string()))?
            } else {
                match &cfg.paths {
                    Some(paths) => paths[i % paths.len()].clone(),
                    None => tree::leaf_path(i, cfg.agents, cfg.branching),
                }
            };
            let skew_ms = if let Some(skews) = cfg.skews_ms.as_ref().filter(|s| !s.is_empty()) {
                skews[i % skews.len()]
            } else if cfg.skew_ms > 0 {
                rng.random_range(-(cfg.skew_ms as i64)..=cfg.skew_ms as i64)
            } else {
                0
            };
            let attrs = random_attributes(&mut rng);
            agents.push(SimAgent {
                path,
                node: None,
                job: None,
                attrs,
                skew_ms,
                tick_at: u64::MAX,
                last_root: None,
                ok: false,
                bytes_sent: 0,
                max_message: 0,
            });
        }
        let mut sim = Sim {
            net,
            aggregates,
            agents,
            queue: EventQueue::default(),
            now: 0,
            rng,
            partition: None,
            predicate: None,
            ok_count: 0,
            watch: None,
            live: 0,
            delivered: 0,
            dropped: 0,
            trace: None,
            cfg,
        };
        for i in 0..sim.cfg.agents {
            sim.start(i)?;
        }
        Ok(sim)
    }

    /// Virtual time since the start, in ms.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// Virtual time since the start, in gossip rounds.
    pub fn rounds(&self) -> f64 {
        self.now as f64 / self.cfg.interval_ms as f64
    }

    /// Agents, live or not (spares included).
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether there is no agent.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Agents running now.
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// The aggregate set every agent runs.
    pub fn aggregates(&self) -> &Arc<AggregateSet> {
        &self.aggregates
    }

    /// Agent `i`'s leaf zone.
    pub fn path(&self, i: usize) -> &ZonePath {
        &self.agents[i].path
    }

    /// Whether agent `i` is running and has not left.
    pub fn is_alive(&self, i: usize) -> bool {
        self.agents[i]
            .node
            .as_ref()
            .is_some_and(|n| !n.engine().has_left())
    }

    /// Agent `i`'s engine, if it is running.
    pub fn engine(&self, i: usize) -> Option<&Engine> {
        self.agents[i]
            .node
            .as_deref()
            .map(Node::engine)
            .filter(|e| !e.has_left())
    }

    /// Indexes of the running agents.
    pub fn live_indices(&self) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|i| self.is_alive(*i))
            .collect()
    }

    /// Indexes of the seed agents, spread evenly (at least one).
    pub fn seeds(&self) -> Vec<usize> {
        let n = self.cfg.agents;
        let k = self.cfg.seeds.clamp(1, n);
        let mut seeds: Vec<usize> = (0..k).map(|j| j * n / k).collect();
        seeds.dedup();
        seeds
    }

    fn now_for(&self, i: usize) -> Now {
        self.now_at(i, self.now)
    }

    /// Agent `i`'s clocks at virtual time `t`.
    pub(crate) fn now_at(&self, i: usize, t: u64) -> Now {
        let wall = (EPOCH_MS + t) as i64 + self.agents[i].skew_ms;
        Now {
            mono_ms: t,
            wall_ms: wall.max(0) as u64,
        }
    }

    /// Agent `i`'s node, if it runs.
    pub(crate) fn node_mut(&mut self, i: usize) -> Option<&mut Node> {
        self.agents[i].node.as_deref_mut()
    }

    /// Starts (or restarts, after a crash) agent `i` with its id and zone.
    pub fn start(&mut self, i: usize) -> Result<(), SimError> {
        let mut cfg = EngineConfig::new(i as u64 + 1, self.agents[i].path.clone(), addr_of(i));
        cfg.seeds = self.seeds().into_iter().map(addr_of).collect();
        cfg.interval_ms = self.cfg.interval_ms;
        cfg.rng_seed = self.cfg.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.now;
        let now = self.now_for(i);
        // Commands are unsigned here, so the signature window is moot.
        let mut cfg = NodeConfig::new(cfg, cfg_qid_seed(self.cfg.seed, i), 60_000);
        cfg.wire = self.cfg.wire;
        let node = Node::new(
            cfg,
            self.aggregates.clone(),
            self.agents[i].attrs.clone(),
            now,
        )?;
        let was_alive = self.is_alive(i);
        self.agents[i].node = Some(Box::new(node));
        self.agents[i].last_root = None;
        if !was_alive {
            self.live += 1;
        }
        self.schedule_tick(i);
        self.update_ok(i);
        Ok(())
    }

    /// Stops agent `i` without a word: its rows stay until they expire.
    pub fn crash(&mut self, i: usize) {
        if self.is_alive(i) {
            self.live -= 1;
        }
        if self.agents[i].ok {
            self.ok_count -= 1;
            self.agents[i].ok = false;
        }
        self.agents[i].node = None;
        self.agents[i].tick_at = u64::MAX;
    }

    /// Stops agent `i` cleanly: it sends its tombstone first.
    pub fn leave(&mut self, i: usize) {
        if !self.is_alive(i) {
            return;
        }
        let now = self.now_for(i);
        let sends = match self.agents[i].node.as_mut() {
            Some(node) => {
                node.apply(now, Input::Leave);
                node.take_outputs()
            }
            None => return,
        };
        self.dispatch(i, sends);
        // Counted here: once it has left, `crash` no longer sees it alive.
        self.live -= 1;
        self.crash(i);
    }

    /// Sets one attribute of agent `i`'s leaf row; a running agent issues the
    /// new row at once.
    pub fn set_attribute(&mut self, i: usize, name: &str, value: Value) {
        self.agents[i].attrs.insert(name.into(), value);
        let attrs = self.agents[i].attrs.clone();
        let now = self.now_for(i);
        if let Some(node) = self.agents[i].node.as_mut() {
            node.apply(now, Input::Attributes(attrs));
            let sends = node.take_outputs();
            self.dispatch(i, sends);
            self.schedule_tick(i);
        }
    }

    /// Agent `i`'s leaf attributes.
    pub fn attributes(&self, i: usize) -> &Attributes {
        &self.agents[i].attrs
    }

    /// Cuts the agents inside `zone` off from the rest until `heal`.
    pub fn partition(&mut self, zone: ZonePath) {
        self.partition = Some(Partition { zone });
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    /// A running agent picked at random (from the simulation's RNG), if any.
    pub fn random_live(&mut self) -> Option<usize> {
        let live = self.live_indices();
        if live.is_empty() {
            return None;
        }
        let k = self.rng.random_range(0..live.len());
        Some(live[k])
    }

    /// The simulation's RNG, so that a scenario's choices follow the seed.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Sets the condition every live agent's root row is tracked against.
    pub fn set_predicate(&mut self, predicate: Predicate) {
        self.predicate = Some(predicate);
        self.ok_count = 0;
        for i in 0..self.agents.len() {
            self.agents[i].ok = false;
            self.update_ok(i);
        }
    }

    /// Live agents whose root row satisfies the predicate.
    pub fn ok_count(&self) -> usize {
        self.ok_count
    }

    /// Whether every running agent's root row satisfies the predicate.
    pub fn all_ok(&self) -> bool {
        self.ok_count == self.live
    }

    fn update_ok(&mut self, i: usize) {
        if let (Some(w), Some(e)) = (
            self.watch.as_mut(),
            self.agents[i].node.as_deref().map(Node::engine),
        ) {
            if !e.has_left() {
                w.see(i, e.root().members());
            }
        }
        let ok = match (
            &self.predicate,
            self.agents[i].node.as_deref().map(Node::engine),
        ) {
            (Some(p), Some(e)) if !e.has_left() => p(e.root()),
            _ => false,
        };
        if ok != self.agents[i].ok {
            self.agents[i].ok = ok;
            if ok {
                self.ok_count += 1;
            } else {
                self.ok_count -= 1;
            }
        }
    }

    /// Bytes agent `i` sent since the last reset, and its largest message.
    pub fn traffic(&self, i: usize) -> (u64, usize) {
        (self.agents[i].bytes_sent, self.agents[i].max_message)
    }

    /// Resets every agent's byte count (`traffic`), not its largest message.
    pub fn reset_traffic(&mut self) {
        for a in &mut self.agents {
            a.bytes_sent = 0;
        }
    }

    /// The largest message any agent has sent.
    pub fn max_message_bytes(&self) -> usize {
        self.agents.iter().map(|a| a.max_message).max().unwrap_or(0)
    }

    fn push(&mut self, at: u64, event: Event) {
        self.queue.push(at, event);
    }

    fn schedule_tick(&mut self, i: usize) {
        let Some(node) = self.agents[i].node.as_ref() else {
            return;
        };
        let next = node.poll_timeout();
        self.schedule_tick_at(i, next);
    }

    /// `schedule_tick` for an engine whose next tick is known.
    fn schedule_tick_at(&mut self, i: usize, next_tick_ms: u64) {
        let at = next_tick_ms.max(self.now);
        let current = self.agents[i].tick_at;
        if at < current || current < self.now {
            self.agents[i].tick_at = at;
            self.push(at, Event::Tick { agent: i });
        }
    }

    fn dispatch(&mut self, from: usize, sends: Sends) {
        for output in sends {
            let (to, payload, len) = match output {
                Output::Datagram { to, bytes } => (to, Payload::Bytes(bytes), 0),
                Output::Envelope { to, envelope, len } => (to, Payload::Envelope(envelope), len),
                Output::Answer { .. } | Output::Local { .. } => continue,
            };
            let len = payload.message_len(len);
            let a = &mut self.agents[from];
            a.bytes_sent += len as u64;
            a.max_message = a.max_message.max(len);
            let Some(to) = index_of(&to).filter(|t| *t < self.agents.len()) else {
                self.dropped += 1;
                continue;
            };
            if let Some(p) = &self.partition {
                if p.separates(&self.agents[from].path, &self.agents[to].path) {
                    self.dropped += 1;
                    continue;
                }
            }
            let lost = self.net.loss > 0.0 && self.rng.random::<f64>() < self.net.loss;
            if self.trace.is_some_and(|t| t == from || t == to) {
                eprintln!(
                    "  t={} {} -> {} {}{}",
                    self.now,
                    from,
                    to,
                    match &payload {
                        Payload::Bytes(bytes) => describe_datagram(bytes),
                        Payload::Envelope(envelope) => describe(&envelope.message),
                    },
                    if lost { " LOST" } else { "" }
                );
            }
            if lost {
                self.dropped += 1;
                continue;
            }
            let at = self.now + link_latency_ms(&self.net, from, to);
            self.push(at, Event::Deliver { to, from, payload });
        }
    }

    /// Processes events up to virtual time `until_ms`, or until `stop`
    /// says so (checked after each virtual millisecond in which a root
    /// changed). Returns whether `stop` fired.
    ///
    /// Every link takes at least a millisecond, so the events of one
    /// millisecond cannot cause each other: each agent's events of the
    /// millisecond run in order, different agents run in parallel, and the
    /// effects are then sent in the order of the events that made them. The
    /// result is the same whatever the number of threads.
    pub fn run_until(&mut self, until_ms: u64, stop: &mut dyn FnMut(&Sim) -> bool) -> bool {
        while let Some(next) = self.queue.next_time() {
            if next > until_ms {
                break;
            }
            let Some(events) = self.queue.take(next) else {
                break;
            };
            self.now = next;
            let mut jobs = self.jobs_for(events);
            if jobs.len() >= self.cfg.parallel_min_agents {
                jobs.par_iter_mut().for_each(AgentJob::run);
            } else {
                jobs.iter_mut().for_each(AgentJob::run);
            }
            let mut outputs: Vec<(usize, usize, Sends)> = Vec::new();
            let mut touched = Vec::with_capacity(jobs.len());
            for job in jobs {
                self.agents[job.agent].node = Some(job.node);
                touched.push((job.agent, job.next_tick_ms, job.root));
                outputs.extend(job.outputs.into_iter().map(|(pos, e)| (pos, job.agent, e)));
            }
            outputs.sort_unstable_by_key(|(pos, _, _)| *pos);
            for (_, agent, effects) in outputs {
                self.dispatch(agent, effects);
            }
            let mut root_changed = false;
            for (i, next_tick_ms, root) in touched {
                self.schedule_tick_at(i, next_tick_ms);
                let changed = match &self.agents[i].last_root {
                    Some(last) => root_address(last) != root,
                    None => true,
                };
                if changed {
                    self.agents[i].last_root = self.agents[i]
                        .node
                        .as_ref()
                        .map(|n| n.engine().root().clone());
                    self.update_ok(i);
                    root_changed = true;
                }
            }
            if root_changed && stop(self) {
                return true;
            }
        }
        if self.now < until_ms {
            self.now = until_ms;
        }
        false
    }

    /// Groups one millisecond's events by the agent they are for, in order,
    /// taking each engine out of the agent for the time of the step. Stale
    /// ticks and messages to dead agents are dropped here.
    fn jobs_for(&mut self, events: VecDeque<Event>) -> Vec<AgentJob> {
        let mut jobs: Vec<AgentJob> = Vec::with_capacity(events.len());
        for (pos, event) in events.into_iter().enumerate() {
            let (agent, work) = match event {
                Event::Tick { agent } => {
                    if self.agents[agent].tick_at != self.now {
                        continue;
                    }
                    self.agents[agent].tick_at = u64::MAX;
                    (agent, Work::Tick)
                }
                Event::Deliver { to, from, payload } => {
                    if self.agents[to].node.is_none() && self.agents[to].job.is_none() {
                        self.dropped += 1;
                        continue;
                    }
                    self.delivered += 1;
                    (
                        to,
                        Work::Deliver {
                            from: addr_of(from),
                            payload,
                        },
                    )
                }
            };
            let index = match self.agents[agent].job {
                Some(j) => j as usize,
                None => {
                    let Some(node) = self.agents[agent].node.take() else {
                        continue;
                    };
                    jobs.push(AgentJob {
                        agent,
                        now: self.now_for(agent),
                        node,
                        work: Vec::new(),
                        outputs: Vec::new(),
                        next_tick_ms: 0,
                        root: 0,
                    });
                    self.agents[agent].job = Some((jobs.len() - 1) as u32);
                    jobs.len() - 1
                }
            };
            jobs[index].work.push((pos, work));
        }
        for job in &jobs {
            self.agents[job.agent].job = None;
        }
        jobs
    }

    /// Runs until every live agent's root satisfies the predicate, or the
    /// deadline. Returns the time it took, if it converged.
    pub fn run_until_all_ok(&mut self, deadline_ms: u64) -> Option<u64> {
        let start = self.now;
        if self.all_ok() {
            return Some(0);
        }
        if self.run_until(deadline_ms, &mut |s: &Sim| s.all_ok()) {
            Some(self.now - start)
        } else {
            None
        }
    }

    /// Runs the simulation for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until, &mut |_| false);
    }

    /// The aggregates computed directly over the leaves of every live
    /// agent: the ground truth every root row must equal.
    pub fn ground_truth(&self) -> Attributes {
        let states: Vec<_> = self
            .agents
            .iter()
            .filter_map(|a| a.node.as_deref().map(Node::engine))
            .filter(|e| !e.has_left())
            .filter_map(|e| e.own_row())
            .map(|r| self.aggregates.leaf_states(r.values()))
            .collect();
        let merged = self.aggregates.merge(states.iter());
        merged
            .iter()
            .map(|(name, state)| (name.clone(), state.finalize()))
            .collect()
    }

    /// Live agents whose root row differs from the ground truth, with the
    /// first differing column.
    pub fn root_mismatches(&self) -> Vec<(usize, String)> {
        let truth = self.ground_truth();
        let mut out = Vec::new();
        for (i, a) in self.agents.iter().enumerate() {
            let Some(e) = a
                .node
                .as_deref()
                .map(Node::engine)
                .filter(|e| !e.has_left())
            else {
                continue;
            };
            let got = e.root().values();
            for (name, want) in &truth {
                let have = got.get(name).unwrap_or(&Value::Null);
                if !values_match(want, have) {
                    out.push((i, format!("{name}: want {want}, have {have}")));
                    break;
                }
            }
        }
        out
    }
}

/// Equal, with floats compared to a relative 1e-9 (sums of floats depend on
/// the order of the merges).
pub fn values_match(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-12)
        }
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_match(a, b))
        }
        _ => a == b,
    }
}

fn random_attributes(rng: &mut ChaCha8Rng) -> Attributes {
    let mut attrs = Attributes::new();
    attrs.insert(
        "load".into(),
        Value::Float((rng.random::<f64>() * 1000.0).round() / 1000.0),
    );
    attrs.insert("mem".into(), Value::Int(rng.random_range(1..=64) * 1024));
    attrs.insert(
        "cpu".into(),
        Value::Float((rng.random::<f64>() * 100.0).round() / 100.0),
    );
    attrs
}
#[cfg(test)]
mod tests;

/// Request ids unlike any other agent's, the same on every run of a seed
/// (and the same as before the overlay simulator used the agents' nodes).
fn cfg_qid_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A one-line description of a datagram, for `Sim::trace`.
fn describe_datagram(bytes: &[u8]) -> String {
    match crate::transport::decode_frame(bytes, usize::MAX) {
        Ok(crate::transport::Frame::Gossip(envelope)) => describe(&envelope.message),
        Ok(crate::transport::Frame::Overlay(_)) => "overlay".into(),
        Err(reason) => format!("undecodable ({reason})"),
    }
}

/// A one-line description of a message, for `Sim::trace`.
fn describe(message: &Message) -> String {
    match message {
        Message::Digest { tables, .. } => {
            let parts: Vec<String> = tables
                .iter()
                .map(|t| format!("{}:{}", t.zone, t.entries.len()))
                .collect();
            format!("Digest[{}]", parts.join(" "))
        }
        Message::Request(reqs) => {
            let parts: Vec<String> = reqs
                .iter()
                .map(|r| {
                    let names: Vec<&str> = r.wants.iter().map(|(n, _)| n.as_str()).collect();
                    format!("{}:{}", r.zone, names.join(","))
                })
                .collect();
            format!("Request[{}]", parts.join(" "))
        }
        Message::Rows(rows) | Message::Push(rows) => {
            let kind = if matches!(message, Message::Push(_)) {
                "Push"
            } else {
                "Rows"
            };
            let parts: Vec<String> = rows
                .iter()
                .map(|r| format!("{}@{:?}", r.zone, r.freshness.issued))
                .collect();
            format!("{kind}[{}]", parts.join(" "))
        }
        Message::Refresh(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|r| format!("{}@{:?}", r.zone, r.freshness.issued))
                .collect();
            format!("Refresh[{}]", parts.join(" "))
        }
        Message::CertDigest { .. } => "CertDigest".into(),
        Message::Certs { .. } => "Certs".into(),
    }
}
