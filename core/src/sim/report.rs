//! `astrolabe sim`: the convergence and scale benchmark, as one JSON object.

use rand::Rng;
use serde::Serialize;

use super::churn::{self, BusyReport, ChurnReport, RestartKind, RestartReport};
use super::{tree, Sim, SimConfig, SimError};
use crate::engine::TRANSPORT_OVERHEAD_BYTES;
use crate::zone::{Row, Value};

/// What one `astrolabe sim` run does: the cluster, its phases and their sizes.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The cluster.
    pub config: SimConfig,
    /// Rounds any phase may take to converge before the run fails.
    pub max_rounds: u64,
    /// Single-attribute changes at random leaves after the cold start, each
    /// measured until every live root reflects it.
    pub changes: usize,
    /// One line per virtual round of the cold start with what all agents
    /// sent in it (what BENCHMARKS.md's cold-start figures come from).
    pub trace_rounds: bool,
    /// Crash-and-join pairs after the value changes (`churn`).
    pub churn: usize,
    /// Rolling restarts after that, and how.
    pub restarts: usize,
    /// Whether a restart is a clean leave or a kill.
    pub restart_kind: RestartKind,
    /// Virtual ms from one restart to the next.
    pub restart_gap_ms: u64,
    /// Virtual ms a restarting agent stays down.
    pub restart_down_ms: u64,
    /// Rounds with a fraction of the agents changing every round.
    pub busy_rounds: u64,
    /// Share of the agents that change a value every busy round.
    pub busy_fraction: f64,
}

impl SimOptions {
    /// A cold start and `changes` value changes, nothing else.
    pub fn new(config: SimConfig, max_rounds: u64, changes: usize) -> SimOptions {
        SimOptions {
            config,
            max_rounds,
            changes,
            trace_rounds: false,
            churn: 0,
            restarts: 0,
            restart_kind: RestartKind::Leave,
            restart_gap_ms: 3000,
            restart_down_ms: 200,
            busy_rounds: 0,
            busy_fraction: 0.5,
        }
    }
}

/// The mean and the greatest of a set of figures, rounded to 3 decimals.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MinMax {
    /// The mean.
    pub mean: f64,
    /// The greatest.
    pub max: f64,
}

impl MinMax {
    pub(crate) fn of(values: &[f64]) -> MinMax {
        if values.is_empty() {
            return MinMax {
                mean: 0.0,
                max: 0.0,
            };
        }
        MinMax {
            mean: round3(values.iter().sum::<f64>() / values.len() as f64),
            max: round3(values.iter().cloned().fold(f64::MIN, f64::max)),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The figures of one `astrolabe sim` run, printed as one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// Agents in the cluster.
    pub agents: usize,
    /// Children per zone.
    pub branching: usize,
    /// Zone levels above the leaves (tables per agent).
    pub levels: usize,
    /// The seed of the run.
    pub seed: u64,
    /// Probability a datagram was lost.
    pub loss: f64,
    /// Clock skew drawn for each agent, within ±skew_ms.
    pub skew_ms: u64,
    /// Rounds from the cold start until every agent counted every member.
    pub rounds_to_membership: f64,
    /// Rounds until a value change showed in every live root.
    pub rounds_to_value: MinMax,
    /// Every column of every live agent's root equalled the truth over the
    /// live leaves at every checkpoint (after the cold start and after each
    /// change, crash, join, restart round and busy phase).
    pub root_correct: bool,
    /// The first checkpoint at which it did not, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_mismatch: Option<String>,
    /// Rows dropped at expiry by live agents from the end of the cold
    /// start to the last value change (nothing crashed: should be 0).
    pub rows_expired: u64,
    /// Steady state, measured over the value changes.
    pub bytes_per_agent_per_round: MinMax,
    /// Largest datagram: largest engine message plus the transport's reserve.
    pub max_datagram_bytes: usize,
    /// Datagrams delivered.
    pub messages_delivered: u64,
    /// Datagrams lost, cut or sent to an agent that was down.
    pub messages_dropped: u64,
    /// Crashes and joins, if the run had them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
    /// Rolling restarts, if the run had them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<RestartReport>,
    /// The busy phase, if the run had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<BusyReport>,
    /// The process's peak resident set, from the observer (0 if not measured).
    pub peak_rss_bytes: u64,
    /// Wall seconds the run took, from the observer (0 if not measured).
    pub wall_seconds: f64,
}

/// What a benchmark run tells the world, and the two figures only the
/// process around it can measure. The core prints nothing and reads no
/// clock; `astrolabe sim` shows progress on stderr and reads its own
/// resident set (exporter `cmd/sim.rs`).
pub trait Observer {
    /// A progress line; `force` at the start of a phase, else as often as
    /// the observer likes (it may throttle). Built only when asked for.
    fn progress(&mut self, force: bool, line: &dyn Fn() -> String);
    /// A phase's progress is over (a terminal moves to the next line).
    fn done(&mut self) {}
    /// A diagnostic line (`trace_rounds`).
    fn trace(&mut self, _line: String) {}
    /// Wall seconds since the run began; 0 if not measured.
    fn wall_seconds(&self) -> f64 {
        0.0
    }
    /// The process's peak resident set in bytes; 0 if not measured.
    fn peak_rss_bytes(&self) -> u64 {
        0
    }
}

/// Shows and measures nothing (tests, sweeps that print a table).
pub struct Quiet;

impl Observer for Quiet {
    fn progress(&mut self, _force: bool, _line: &dyn Fn() -> String) {}
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("{0}")]
    NotConverged(String),
}

/// Cold start, then `changes` single-attribute changes at random leaves.
pub fn run_benchmark(
    opts: &SimOptions,
    observer: &mut dyn Observer,
) -> Result<SimReport, BenchError> {
    let cfg = opts.config.clone();
    let interval = cfg.interval_ms;
    let deadline = |sim: &Sim| sim.now_ms() + opts.max_rounds * interval;
    observer.progress(true, &|| format!("sim: starting {} agents", cfg.agents));
    let mut cfg = cfg;
    cfg.spares = cfg.spares.max(opts.churn);
    let mut sim = Sim::new(cfg.clone())?;

    // Phase 1: from a cold start until every root counts every member.
    let n = sim.live_count() as i64;
    sim.set_predicate(Box::new(move |root: &Row| root.members() as i64 == n));
    let limit = deadline(&sim);
    let trace = opts.trace_rounds;
    let mut last_round = 0u64;
    let mut last_tot = [0u64; 9];
    let converged = sim.run_until(limit, &mut |s: &Sim| {
        if trace && s.now_ms() / interval > last_round {
            last_round = s.now_ms() / interval;
            let mut tot = [0u64; 9];
            for i in s.live_indices() {
                if let Some(e) = s.engine(i) {
                    let st = e.stats();
                    let v = [st.messages_sent, st.bytes_sent, st.sent_by_kind[0], st.sent_by_kind[1], st.sent_by_kind[2], st.sent_by_kind[3], st.rows_sent, st.refreshes_sent, st.forwards];
                    for j in 0..9 { tot[j] += v[j]; }
                }
            }
            let d: Vec<u64> = (0..9).map(|j| tot[j] - last_tot[j]).collect();
            last_tot = tot;
            observer.trace(format!("trace r={} wall={:.1} msgs={} bytes={} dig={} req={} rows={} refr={} rowsitems={} refritems={} fwd={} ok={}", last_round, observer.wall_seconds(), d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], s.ok_count()));
        }
        observer.progress(false, &|| {
            format!(
                "sim: membership  round {:>5.1}  {}/{} agents see all members",
                s.rounds(),
                s.ok_count(),
                s.live_count()
            )
        });
        s.all_ok()
    });
    if !converged {
        observer.done();
        return Err(BenchError::NotConverged(format!(
            "membership did not converge within {} rounds: {} of {} agents see all {} members",
            opts.max_rounds,
            sim.ok_count(),
            sim.live_count(),
            n
        )));
    }
    let rounds_to_membership = round3(sim.rounds());
    observer.progress(true, &|| {
        format!("sim: membership converged in {rounds_to_membership} rounds")
    });

    // Let the rows settle one round before measuring the steady state.
    sim.run_for(interval);
    sim.reset_traffic();
    let window_start = sim.now_ms();
    let expired_at_start = churn::expired(&sim);
    let mut mismatch = churn::first_mismatch(&sim, "after the cold start");

    // Phase 2: single changes, each until every live root reflects it.
    let mut value_rounds = Vec::new();
    for c in 0..opts.changes {
        let Some(leaf) = sim.random_live() else {
            break;
        };
        let new_mem = Value::Int(sim.rng().random_range(1_000_000..2_000_000));
        sim.set_attribute(leaf, "mem", new_mem);
        let want = sim
            .ground_truth()
            .get("mem_sum")
            .cloned()
            .unwrap_or(Value::Null);
        sim.set_predicate(Box::new(move |root: &Row| {
            root.value("mem_sum") == Some(&want)
        }));
        let start = sim.now_ms();
        let limit = deadline(&sim);
        let done = sim.run_until(limit, &mut |s: &Sim| {
            observer.progress(false, &|| {
                format!(
                    "sim: change {}/{}  round {:>5.1}  {}/{} roots updated",
                    c + 1,
                    opts.changes,
                    (s.now_ms() - start) as f64 / interval as f64,
                    s.ok_count(),
                    s.live_count()
                )
            });
            s.all_ok()
        });
        if !done {
            observer.done();
            return Err(BenchError::NotConverged(format!(
                "change {} did not reach every root within {} rounds: {} of {} updated",
                c + 1,
                opts.max_rounds,
                sim.ok_count(),
                sim.live_count()
            )));
        }
        value_rounds.push((sim.now_ms() - start) as f64 / interval as f64);
        if mismatch.is_none() {
            mismatch = churn::first_mismatch(&sim, &format!("after change {}", c + 1));
        }
        // A pause between changes, so each is measured on its own.
        sim.run_for(interval);
    }
    let window_rounds = (sim.now_ms() - window_start) as f64 / interval as f64;
    let per_agent: Vec<f64> = sim
        .live_indices()
        .into_iter()
        .map(|i| sim.traffic(i).0 as f64 / window_rounds.max(1e-9))
        .collect();
    let rows_expired = churn::expired(&sim) - expired_at_start;
    let max_rounds = opts.max_rounds;
    let churn_report = if opts.churn > 0 {
        observer.progress(true, &|| format!("sim: {} crashes and joins", opts.churn));
        Some(
            churn::run_churn(&mut sim, opts.churn, max_rounds, &mut mismatch)
                .map_err(BenchError::NotConverged)?,
        )
    } else {
        None
    };
    let restart_report = if opts.restarts > 0 {
        observer.progress(true, &|| format!("sim: {} rolling restarts", opts.restarts));
        Some(
            churn::run_restarts(
                &mut sim,
                opts.restarts,
                opts.restart_kind,
                opts.restart_gap_ms,
                opts.restart_down_ms,
                max_rounds,
                &mut mismatch,
            )
            .map_err(BenchError::NotConverged)?,
        )
    } else {
        None
    };
    let busy_report = if opts.busy_rounds > 0 {
        observer.progress(true, &|| format!("sim: {} busy rounds", opts.busy_rounds));
        Some(
            churn::run_busy(
                &mut sim,
                opts.busy_rounds,
                opts.busy_fraction,
                max_rounds,
                &mut mismatch,
            )
            .map_err(BenchError::NotConverged)?,
        )
    } else {
        None
    };
    observer.progress(true, &|| "sim: done".to_string());
    observer.done();
    Ok(SimReport {
        agents: cfg.agents,
        branching: cfg.branching,
        levels: tree::levels(cfg.agents, cfg.branching),
        seed: cfg.seed,
        loss: cfg.loss,
        skew_ms: cfg.skew_ms,
        rounds_to_membership,
        rounds_to_value: MinMax::of(&value_rounds),
        root_correct: mismatch.is_none(),
        root_mismatch: mismatch,
        rows_expired,
        bytes_per_agent_per_round: MinMax::of(&per_agent),
        max_datagram_bytes: sim.max_message_bytes() + TRANSPORT_OVERHEAD_BYTES,
        messages_delivered: sim.delivered,
        messages_dropped: sim.dropped,
        churn: churn_report,
        restarts: restart_report,
        busy: busy_report,
        peak_rss_bytes: observer.peak_rss_bytes(),
        wall_seconds: round3(observer.wall_seconds()),
    })
}
