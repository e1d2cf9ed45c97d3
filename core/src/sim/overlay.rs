//! The overlay in the simulator: requests to the very `Node`s the gossip
//! simulation converged, carried between them as the bytes the agent
//! sends, on a virtual clock with the simulator's link latencies and loss.
//!
//! Gossip is paused while queries run (a query lasts a fraction of a
//! round); crashed agents keep their rows, which is exactly the "dead but
//! not yet expired" case the overlay must route around.

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::network::{addr_of, index_of, link_latency_ms, NetworkConfig};
use super::{Sim, SimConfig, SimError};
use crate::node::{Input, LocalWork, Node, Output};
use crate::overlay::query::{LocalData, Partial, Query, Table};
use crate::overlay::{Answer, Outcome, Request};
use crate::zone::{Attributes, Row, Value, ZonePath};

/// Process names of the simulated hosts.
const NAMES: &[&str] = &["nginx", "postgres", "sshd", "cron", "java", "astrolabe"];

/// The synthetic local data of simulated agent `i`: its gossip attributes
/// and a few processes, all derived from the index.
pub fn local_data(sim: &Sim, i: usize) -> LocalData {
    let path = sim.path(i);
    let zone = path.parent().unwrap_or_else(ZonePath::root).to_string();
    let host = path.name().to_string();
    let mut attrs: Attributes = sim.attributes(i).clone();
    attrs.insert("zone".into(), Value::str(&zone));
    attrs.insert("host".into(), Value::str(&host));
    let processes = (0..2 + i % 5)
        .map(|p| {
            let mut a = Attributes::new();
            a.insert("zone".into(), Value::str(&zone));
            a.insert("host".into(), Value::str(&host));
            a.insert("pid".into(), Value::Int(100 + p as i64));
            a.insert("name".into(), Value::str(NAMES[(i + p) % NAMES.len()]));
            a.insert(
                "rss_bytes".into(),
                Value::Int(((i * 7919 + p * 104_729) % 1_000_000) as i64 * 1024),
            );
            a.insert(
                "cpu_seconds".into(),
                Value::Float(((i * 31 + p * 17) % 1000) as f64 / 10.0),
            );
            a
        })
        .collect();
    LocalData {
        host: attrs,
        processes,
    }
}

enum Ev {
    Deliver {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Tick(usize),
    Local {
        agent: usize,
        qid: u64,
        work: LocalWork,
    },
}

/// One query's run: what the caller saw and when.
#[derive(Debug, Clone, Serialize)]
pub struct QueryRun {
    /// The zone asked.
    pub zone: String,
    /// Live hosts in the zone (ground truth).
    pub live: u32,
    /// Virtual ms from the start until every live host had answered.
    pub full_live_ms: Option<u64>,
    /// Hosts the final answer counts as answered.
    pub answered: u32,
    /// Hosts the subtree has by the gossiped member counts.
    pub expected: u32,
    /// Zones the final answer names missing, plus those only counted.
    pub missing: usize,
    /// The zones the answer names missing.
    #[serde(skip)]
    pub missing_zones: Vec<ZonePath>,
    /// Virtual ms from the start until the final answer.
    pub elapsed_ms: u64,
    /// Overlay bytes sent by all agents for this query.
    pub bytes: u64,
    /// The final answer's table, for comparison with the direct computation.
    #[serde(skip)]
    pub table: Option<Table>,
    /// The error the request ended with, if any.
    #[serde(skip)]
    pub error: Option<String>,
}

/// Requests over a `Sim` that has converged, with some agents crashed:
/// each agent's `Node` answers them, gossip held still meanwhile.
pub struct OverlaySim {
    /// The gossip simulation underneath.
    pub sim: Sim,
    net: NetworkConfig,
    rng: ChaCha8Rng,
    queue: BTreeMap<u64, VecDeque<Ev>>,
    tick_at: Vec<u64>,
    now: u64,
    /// Indexes of the agents crashed after convergence.
    pub dead: Vec<usize>,
}

impl OverlaySim {
    /// Runs gossip until every agent counts every member, then crashes a
    /// `dead_fraction` of the agents (their rows stay, as before expiry).
    pub fn new(
        cfg: SimConfig,
        dead_fraction: f64,
        max_rounds: u64,
    ) -> Result<OverlaySim, SimError> {
        let seed = cfg.seed;
        let mut sim = Sim::new(cfg)?;
        let n = sim.len() as u64;
        sim.set_predicate(Box::new(move |root: &Row| root.members() == n));
        let deadline = max_rounds * sim.cfg.interval_ms;
        if sim.run_until_all_ok(deadline).is_none() {
            return Err(SimError::Config(format!(
                "gossip did not converge in {max_rounds} rounds"
            )));
        }
        // A few more rounds so contacts settle everywhere.
        sim.run_for(3 * sim.cfg.interval_ms);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0fe7_1a11);
        let count = (sim.len() as f64 * dead_fraction).round() as usize;
        let mut dead = Vec::new();
        while dead.len() < count {
            let i = rng.random_range(0..sim.len());
            if !dead.contains(&i) {
                dead.push(i);
                sim.crash(i);
            }
        }
        dead.sort_unstable();
        let net = NetworkConfig {
            latency_min_ms: sim.cfg.latency_min_ms,
            latency_max_ms: sim.cfg.latency_max_ms,
            loss: sim.cfg.loss,
            seed,
        };
        let now = sim.now_ms();
        let len = sim.len();
        Ok(OverlaySim {
            sim,
            net,
            rng,
            queue: BTreeMap::new(),
            tick_at: vec![u64::MAX; len],
            now,
            dead,
        })
    }

    /// Live hosts inside `zone`.
    pub fn live_in(&self, zone: &ZonePath) -> Vec<usize> {
        (0..self.sim.len())
            .filter(|i| self.sim.is_alive(*i) && zone.contains(self.sim.path(*i)))
            .collect()
    }

    /// The answer computed directly over the live hosts of `zone`.
    pub fn direct(&self, zone: &ZonePath, sql: &str) -> Option<Table> {
        let q = Query::parse(sql).ok()?;
        let mut acc: Partial = q.empty();
        for i in self.live_in(zone) {
            q.merge(&mut acc, &q.local(&local_data(&self.sim, i)));
        }
        Some(q.finish(&acc))
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.entry(at).or_default().push_back(ev);
    }

    fn schedule_tick(&mut self, i: usize) {
        let Some(next) = self
            .sim
            .node_mut(i)
            .and_then(|n| n.overlay().next_tick_ms())
        else {
            return;
        };
        let at = next.max(self.now + 1);
        if at < self.tick_at[i] || self.tick_at[i] < self.now {
            self.tick_at[i] = at;
            self.push(at, Ev::Tick(i));
        }
    }

    /// Carries out what agent `from`'s node asked for: datagrams onto
    /// the network, answers to the caller, host work a millisecond later.
    fn dispatch(&mut self, from: usize, answers: &mut Vec<Answer>, bytes: &mut u64) {
        let outputs = self
            .sim
            .node_mut(from)
            .map(Node::take_outputs)
            .unwrap_or_default();
        for output in outputs {
            match output {
                Output::Datagram {
                    to,
                    bytes: datagram,
                } => {
                    *bytes += datagram.len() as u64;
                    let Some(to) = index_of(&to).filter(|t| *t < self.sim.len()) else {
                        continue;
                    };
                    if self.net.loss > 0.0 && self.rng.random::<f64>() < self.net.loss {
                        continue;
                    }
                    let at = self.now + link_latency_ms(&self.net, from, to);
                    self.push(
                        at,
                        Ev::Deliver {
                            to,
                            from,
                            bytes: datagram,
                        },
                    );
                }
                // Gossip is held still here (module doc).
                Output::Envelope { .. } => {}
                Output::Local { qid, work } => {
                    // Reading /proc takes about a millisecond.
                    let at = self.now + 1;
                    self.push(
                        at,
                        Ev::Local {
                            agent: from,
                            qid,
                            work,
                        },
                    );
                }
                Output::Answer { answer, .. } => answers.push(answer),
            }
        }
        self.schedule_tick(from);
    }

    /// Runs one request from agent `entry` and returns when its last
    /// answer came (or the timeout passed).
    pub fn query(
        &mut self,
        entry: usize,
        zone: &ZonePath,
        request: Request,
        timeout_ms: u64,
    ) -> QueryRun {
        let live = self.live_in(zone).len() as u32;
        let start = self.now;
        let mut answers = Vec::new();
        let mut bytes = 0u64;
        let mut run = QueryRun {
            zone: zone.to_string(),
            live,
            full_live_ms: None,
            answered: 0,
            expected: 0,
            missing: 0,
            missing_zones: Vec::new(),
            elapsed_ms: 0,
            bytes: 0,
            table: None,
            error: None,
        };
        let query = match &request {
            Request::Query { sql } => Query::parse(sql).ok(),
            Request::Command { .. } => None,
        };
        let now = self.sim.now_at(entry, start);
        let Some(node) = self.sim.node_mut(entry) else {
            run.error = Some("entry agent is dead".into());
            return run;
        };
        if let Err(e) = node.request(now, zone.clone(), request, timeout_ms) {
            run.error = Some(e.to_string());
            return run;
        }
        self.dispatch(entry, &mut answers, &mut bytes);
        let mut last: Option<Answer> = None;
        let until = start + timeout_ms + 1;
        loop {
            for a in answers.drain(..) {
                if run.full_live_ms.is_none() && a.reply.answered >= live {
                    run.full_live_ms = Some(self.now - start);
                }
                last = Some(a);
            }
            if last.as_ref().is_some_and(|a| a.reply.last) {
                break;
            }
            let Some(ev) = self.pop_due(until) else {
                break;
            };
            if let Some(agent) = self.run_event(ev) {
                self.dispatch(agent, &mut answers, &mut bytes);
            }
        }
        // Late messages of this query must not leak into the next one's
        // figures: let the network go quiet (ticks keep lingering tasks).
        let quiet = self.now.max(start + timeout_ms) + 1;
        self.drain_until(quiet);
        self.now = quiet;
        if let Some(a) = last {
            run.answered = a.reply.answered;
            run.expected = a.reply.expected;
            run.missing = a.reply.missing.len() + a.reply.missing_more as usize;
            run.missing_zones = a.reply.missing.clone();
            run.elapsed_ms = a.elapsed_ms;
            match (&a.reply.outcome, &query) {
                (Outcome::Query(p), Some(q)) => run.table = Some(q.finish(p)),
                (Outcome::Error(e), _) => run.error = Some(e.to_string()),
                _ => {}
            }
        }
        run.bytes = bytes;
        run
    }

    /// The next event due by `until`; the clock moves to its time.
    fn pop_due(&mut self, until: u64) -> Option<Ev> {
        loop {
            let mut due = self.queue.first_entry()?;
            let at = *due.key();
            if at > until {
                return None;
            }
            let Some(ev) = due.get_mut().pop_front() else {
                due.remove();
                continue;
            };
            if due.get().is_empty() {
                due.remove();
            }
            self.now = at;
            return Some(ev);
        }
    }

    /// Runs a tick, a delivery or a host answer at its node; the agent
    /// whose node has outputs now (None: stale, or the agent is gone).
    fn run_event(&mut self, ev: Ev) -> Option<usize> {
        let at = self.now;
        match ev {
            Ev::Tick(i) => {
                if self.tick_at[i] != at {
                    return None;
                }
                self.tick_at[i] = u64::MAX;
                let now = self.sim.now_at(i, at);
                self.sim.node_mut(i)?.tick_overlay(now);
                Some(i)
            }
            Ev::Deliver { to, from, bytes } => {
                let now = self.sim.now_at(to, at);
                self.sim
                    .node_mut(to)?
                    .handle_datagram(now, addr_of(from), &bytes);
                Some(to)
            }
            Ev::Local { agent, qid, work } => {
                let outcome = match work {
                    LocalWork::Query { query, .. } => {
                        Outcome::Query(query.local(&local_data(&self.sim, agent)))
                    }
                    _ => Outcome::Command(crate::overlay::command::Tally::one(
                        self.sim.path(agent).as_str(),
                        crate::overlay::command::Status::Ok,
                        "",
                    )),
                };
                let now = self.sim.now_at(agent, at);
                self.sim
                    .node_mut(agent)?
                    .apply(now, Input::LocalDone { qid, outcome });
                Some(agent)
            }
        }
    }

    /// Delivers what is still in flight, dropping answers (for between queries).
    fn drain_until(&mut self, until: u64) {
        let mut sink = Vec::new();
        let mut bytes = 0;
        while let Some(ev) = self.pop_due(until) {
            if let Some(agent) = self.run_event(ev) {
                self.dispatch(agent, &mut sink, &mut bytes);
                sink.clear();
            }
        }
    }

    /// A live agent chosen at random.
    pub fn random_live(&mut self) -> usize {
        loop {
            let i = self.rng.random_range(0..self.sim.len());
            if self.sim.is_alive(i) {
                return i;
            }
        }
    }

    /// The RNG of the overlay's network and choices, so that a scenario follows
    /// the seed.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

/// Figures of a batch of queries, for BENCHMARKS.md.
#[derive(Debug, Clone, Serialize)]
pub struct OverlayReport {
    /// Agents simulated.
    pub agents: usize,
    /// Agents crashed before the queries.
    pub dead: usize,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Queries run.
    pub queries: usize,
    /// Queries that reached every live host before their deadline.
    pub full_live_coverage: usize,
    /// Median of `QueryRun::full_live_ms` over those queries.
    pub full_live_ms_p50: Option<u64>,
    /// 99th percentile of it.
    pub full_live_ms_p99: Option<u64>,
    /// Median time to the final answer, in ms.
    pub final_answer_ms_p50: u64,
    /// Overlay bytes sent per query, divided by the number of agents.
    pub bytes_per_query_per_host: f64,
    /// Answers equal to the direct computation over the live hosts.
    pub answers_equal_direct: usize,
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(k).copied()
}

/// Runs `queries` whole-tree queries from random live agents; `sql` is
/// checked against the direct computation over the live hosts.
pub fn run_queries(
    osim: &mut OverlaySim,
    queries: usize,
    sql: &str,
    timeout_ms: u64,
) -> (OverlayReport, Vec<QueryRun>) {
    let root = ZonePath::root();
    let want = osim.direct(&root, sql);
    let mut runs = Vec::new();
    for _ in 0..queries {
        let entry = osim.random_live();
        runs.push(osim.query(
            entry,
            &root,
            Request::Query {
                sql: sql.to_string(),
            },
            timeout_ms,
        ));
    }
    let mut full: Vec<u64> = runs.iter().filter_map(|r| r.full_live_ms).collect();
    full.sort_unstable();
    let mut finals: Vec<u64> = runs.iter().map(|r| r.elapsed_ms).collect();
    finals.sort_unstable();
    let hosts = osim.sim.len() as f64;
    let report = OverlayReport {
        agents: osim.sim.len(),
        dead: osim.dead.len(),
        loss: osim.net.loss,
        queries,
        full_live_coverage: full.len(),
        full_live_ms_p50: percentile(&full, 0.5),
        full_live_ms_p99: percentile(&full, 0.99),
        final_answer_ms_p50: percentile(&finals, 0.5).unwrap_or(0),
        bytes_per_query_per_host: runs.iter().map(|r| r.bytes as f64).sum::<f64>()
            / queries.max(1) as f64
            / hosts,
        answers_equal_direct: runs
            .iter()
            .filter(|r| r.table.is_some() && tables_match(r.table.as_ref(), want.as_ref()))
            .count(),
    };
    (report, runs)
}

/// Equal tables, floats to a relative 1e-9 (sums depend on merge order).
pub fn tables_match(a: Option<&Table>, b: Option<&Table>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.columns == b.columns
                && a.rows.len() == b.rows.len()
                && a.rows.iter().zip(&b.rows).all(|(x, y)| {
                    x.len() == y.len() && x.iter().zip(y).all(|(p, q)| super::values_match(p, q))
                })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGG: &str = "SELECT count(*) AS hosts, sum(mem) AS mem, min(load) AS lo, max(load) AS hi, avg(load) AS mean FROM host";

    #[test]
    fn thousand_agents_five_percent_dead_every_live_host_answers() {
        let cfg = SimConfig::new(1000, 16, 11);
        let t = std::time::Instant::now();
        let mut osim = OverlaySim::new(cfg, 0.05, 60).unwrap();
        eprintln!("gossip converged in {:?}", t.elapsed());
        assert_eq!(osim.dead.len(), 50);
        let (report, runs) = run_queries(&mut osim, 100, AGG, 2000);
        eprintln!("{}", serde_json::to_string(&report).unwrap());
        // Coverage of the live hosts is complete in at least 99 of 100.
        let full = runs.iter().filter(|r| r.answered == r.live).count();
        assert!(full >= 99, "{full}/100 complete: {report:?}");
        // And those answers equal the direct computation over live hosts.
        let want = osim.direct(&ZonePath::root(), AGG).unwrap();
        assert_eq!(want.rows[0][0], Value::Int(950));
        for r in runs.iter().filter(|r| r.answered == r.live) {
            assert!(
                tables_match(r.table.as_ref(), Some(&want)),
                "{:?} vs {want:?}",
                r.table
            );
            // Expected comes from gossip, which still counts the dead.
            assert_eq!(r.expected, 1000);
            // Each dead host is named missing (or counted beyond the cap).
            assert_eq!(r.missing, 50, "{r:?}");
            assert!(r.elapsed_ms <= 2000);
        }
        // A grouped process query and a zone below the root agree too.
        let some = osim.random_live();
        let zone = osim.sim.path(some).parent().unwrap();
        let sql = "SELECT name, count(*) AS n, sum(rss_bytes) AS rss FROM process GROUP BY name ORDER BY rss DESC LIMIT 3";
        let entry = osim.random_live();
        let run = osim.query(entry, &zone, Request::Query { sql: sql.into() }, 2000);
        assert_eq!(run.answered, run.live);
        assert!(tables_match(
            run.table.as_ref(),
            osim.direct(&zone, sql).as_ref()
        ));
        // An unknown zone is an error, not a hang.
        let run = osim.query(
            entry,
            &ZonePath::parse("/z99").unwrap(),
            Request::Query { sql: sql.into() },
            2000,
        );
        assert!(run.error.unwrap().contains("unknown zone"));
    }

    /// `SIM_SEED=2 cargo test --lib trace_missing_live_hosts -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn trace_missing_live_hosts() {
        let seed = std::env::var("SIM_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        let mut osim = OverlaySim::new(SimConfig::new(10_000, 16, seed), 0.05, 100).unwrap();
        // Zones whose every contact is dead, as agent 0's... every live agent's tables say.
        let mut seen = std::collections::BTreeSet::new();
        for i in osim.sim.live_indices() {
            for t in osim.sim.engine(i).unwrap().tables() {
                for r in t.rows() {
                    let cs = r.contacts();
                    if !cs.is_empty()
                        && cs.iter().all(|c| !osim.sim.is_alive(index_of(c).unwrap()))
                        && seen.insert(r.zone.clone())
                    {
                        eprintln!(
                            "zone {} contacts {:?} all dead; live inside {}",
                            r.zone,
                            cs,
                            osim.live_in(&r.zone).len()
                        );
                    }
                }
            }
        }
        let (report, runs) = run_queries(&mut osim, 3, AGG, 2000);
        eprintln!("{}", serde_json::to_string(&report).unwrap());
        for r in &runs {
            eprintln!(
                "answered {} live {} expected {} missing {}",
                r.answered, r.live, r.expected, r.missing
            );
            for z in &r.missing_zones {
                let live = osim.live_in(z);
                if !live.is_empty() {
                    let paths: Vec<String> = live
                        .iter()
                        .take(5)
                        .map(|i| osim.sim.path(*i).to_string())
                        .collect();
                    eprintln!(
                        "  missing {z} holds {} live hosts, e.g. {paths:?}",
                        live.len()
                    );
                }
            }
        }
    }

    #[test]
    fn twenty_percent_loss_still_covers_within_the_deadline() {
        let mut cfg = SimConfig::new(1000, 16, 12);
        cfg.loss = 0.2;
        let mut osim = OverlaySim::new(cfg, 0.0, 80).unwrap();
        let (report, runs) = run_queries(&mut osim, 50, AGG, 2000);
        eprintln!("{}", serde_json::to_string(&report).unwrap());
        for r in &runs {
            assert!(r.answered as f64 >= 0.99 * r.live as f64, "{r:?}");
        }
        assert!(runs.iter().all(|r| r.elapsed_ms <= 2000));
    }
}
