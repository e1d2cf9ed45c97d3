//! Churn in the simulator: crashes, joins, rolling restarts and busy
//! hosts, each measured against the truth over the live leaves. These are
//! the phases `astrolabe sim --churn / --restarts / --busy-rounds` adds
//! after the value changes (figures in BENCHMARKS.md).

use std::collections::BTreeSet;

use rand::Rng;
use serde::Serialize;

use super::report::MinMax;
use super::{values_match, FloorWatch, Sim};
use crate::zone::{Row, Value};

/// Crashes and joins: how long each takes to show in every live root,
/// and whether any live agent went missing from a root meanwhile.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChurnReport {
    /// Agents crashed (each followed by a join).
    pub crashes: usize,
    /// Rounds until a crashed agent's values have left every live root.
    pub crash_rounds: MinMax,
    /// Agents that joined.
    pub joins: usize,
    /// Rounds until a new agent is counted in every root.
    pub join_rounds: MinMax,
    /// New roots of live agents that lacked a live agent every root had
    /// already counted (target 0).
    pub false_exclusions: u64,
}

/// Rolling restarts: one agent after another stops (a clean leave, or a
/// crash for `kill`) and starts again with empty tables.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RestartReport {
    /// Agents restarted, one after another.
    pub restarts: usize,
    /// How each stopped.
    pub kind: RestartKind,
    /// The most members any live, not restarting agent's root lacked,
    /// against the live agents minus those restarting (target 0).
    pub undercount_max: u64,
    /// How many roots showed such an undercount.
    pub false_exclusions: u64,
    /// Rounds from a restart until every root counts every agent again.
    pub rounds_to_rejoin: MinMax,
}

/// How an agent stops before it restarts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RestartKind {
    /// SIGTERM: a tombstone first.
    Leave,
    /// kill -9: the old rows stay until the new ones beat them.
    Kill,
}

/// A fraction of the agents change a value every round (like hosts
/// sampling their CPU) while the others' values stand still.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BusyReport {
    /// Rounds the busy phase ran.
    pub rounds: u64,
    /// Agents changing a value every round.
    pub busy_agents: usize,
    /// The longest any live agent went without a fresher version of a row
    /// it holds, in rounds (rows expire after 20 at the leaves).
    pub oldest_row_rounds: f64,
    /// Rows dropped at expiry by live agents during the phase.
    pub rows_expired: u64,
    /// New roots that counted fewer members than the live agents.
    pub false_exclusions: u64,
}

/// Where the simulated run stands against the truth, checked at each
/// checkpoint: every column of every live agent's root.
pub fn first_mismatch(sim: &Sim, checkpoint: &str) -> Option<String> {
    sim.root_mismatches().into_iter().next().map(|(i, what)| {
        format!(
            "round {:.1} ({checkpoint}): agent {i} ({}) root {what}",
            sim.rounds(),
            sim.path(i)
        )
    })
}

/// A predicate true for a root equal to the truth now, in every column.
fn equals_truth(sim: &Sim) -> super::Predicate {
    let truth = sim.ground_truth();
    Box::new(move |root: &Row| {
        let got = root.values();
        truth
            .iter()
            .all(|(name, want)| values_match(want, got.get(name).unwrap_or(&Value::Null)))
    })
}

fn rounds_since(sim: &Sim, start_ms: u64) -> f64 {
    (sim.now_ms() - start_ms) as f64 / sim.cfg.interval_ms as f64
}

/// Runs until every live root equals the truth, at most `max_rounds`;
/// the rounds it took.
fn until_truth(sim: &mut Sim, max_rounds: u64) -> Option<f64> {
    let pred = equals_truth(sim);
    sim.set_predicate(pred);
    let start = sim.now_ms();
    let limit = start + max_rounds * sim.cfg.interval_ms;
    sim.run_until_all_ok(limit)?;
    Some(rounds_since(sim, start))
}

/// `count` crashes of random live agents, each followed by a join of a
/// spare agent (`SimConfig::spares`), each measured until every live root
/// equals the truth. Checkpoint failures go to `mismatch`.
pub fn run_churn(
    sim: &mut Sim,
    count: usize,
    max_rounds: u64,
    mismatch: &mut Option<String>,
) -> Result<ChurnReport, String> {
    let mut watch = FloorWatch {
        floor: sim.live_count() as u64,
        ..Default::default()
    };
    let spares: Vec<usize> = (sim.cfg.agents..sim.len()).collect();
    let (mut crash_rounds, mut join_rounds) = (Vec::new(), Vec::new());
    for c in 0..count {
        let Some(victim) = sim.random_live() else {
            break;
        };
        sim.crash(victim);
        watch.floor -= 1;
        sim.watch = Some(watch.clone());
        let Some(rounds) = until_truth(sim, max_rounds) else {
            return Err(format!(
                "crash {}: agent {victim} still in {} of {} roots after {max_rounds} rounds",
                c + 1,
                sim.live_count() - sim.ok_count(),
                sim.live_count()
            ));
        };
        crash_rounds.push(rounds);
        watch = sim.watch.take().unwrap_or_default();
        checkpoint(sim, &format!("after crash {}", c + 1), mismatch);

        let Some(&joiner) = spares.get(c) else {
            continue;
        };
        watch.exempt.insert(joiner);
        sim.watch = Some(watch.clone());
        sim.start(joiner).map_err(|e| e.to_string())?;
        let Some(rounds) = until_truth(sim, max_rounds) else {
            return Err(format!(
                "join {}: agent {joiner} counted in only {} of {} roots after {max_rounds} rounds",
                c + 1,
                sim.ok_count(),
                sim.live_count()
            ));
        };
        join_rounds.push(rounds);
        watch = sim.watch.take().unwrap_or_default();
        watch.exempt.remove(&joiner);
        watch.floor += 1;
        checkpoint(sim, &format!("after join {}", c + 1), mismatch);
    }
    Ok(ChurnReport {
        crashes: crash_rounds.len(),
        crash_rounds: MinMax::of(&crash_rounds),
        joins: join_rounds.len(),
        join_rounds: MinMax::of(&join_rounds),
        false_exclusions: watch.below,
    })
}

/// `count` restarts of random live agents, one every `gap_ms`, each down
/// for `down_ms`. An agent is "restarting" from its stop until every root
/// counts every agent again; while any is, the floor is the live agents
/// minus those restarting.
pub fn run_restarts(
    sim: &mut Sim,
    count: usize,
    kind: RestartKind,
    gap_ms: u64,
    down_ms: u64,
    max_rounds: u64,
    mismatch: &mut Option<String>,
) -> Result<RestartReport, String> {
    const SLICE_MS: u64 = 100;
    let n = sim.live_count() as u64;
    sim.set_predicate(Box::new(move |root: &Row| root.members() == n));
    sim.watch = Some(FloorWatch {
        floor: n,
        ..Default::default()
    });
    let mut restarting: Vec<(usize, u64)> = Vec::new();
    let mut rejoin = Vec::new();
    let mut settle = |sim: &mut Sim, restarting: &mut Vec<(usize, u64)>| {
        if restarting.is_empty() || !sim.all_ok() {
            return;
        }
        for (_, started) in restarting.drain(..) {
            rejoin.push(rounds_since(sim, started));
        }
        if let Some(w) = sim.watch.as_mut() {
            w.exempt.clear();
            w.floor = n;
        }
    };
    for _ in 0..count {
        let victim = loop {
            let Some(v) = sim.random_live() else {
                return Err("no live agent to restart".into());
            };
            if restarting.iter().all(|(a, _)| *a != v) {
                break v;
            }
        };
        if let Some(w) = sim.watch.as_mut() {
            w.exempt.insert(victim);
            w.floor = n - (restarting.len() as u64 + 1);
        }
        match kind {
            RestartKind::Leave => sim.leave(victim),
            RestartKind::Kill => sim.crash(victim),
        }
        sim.run_for(down_ms);
        sim.start(victim).map_err(|e| e.to_string())?;
        restarting.push((victim, sim.now_ms()));
        let mut waited = down_ms;
        while waited < gap_ms.max(down_ms) {
            sim.run_for(SLICE_MS);
            waited += SLICE_MS;
            settle(sim, &mut restarting);
        }
    }
    let limit = sim.now_ms() + max_rounds * sim.cfg.interval_ms;
    while !restarting.is_empty() {
        if sim.now_ms() >= limit {
            return Err(format!(
                "restarts: {} of {} roots count every agent {max_rounds} rounds after the last restart",
                sim.ok_count(),
                sim.live_count()
            ));
        }
        sim.run_for(SLICE_MS);
        settle(sim, &mut restarting);
    }
    let watch = sim.watch.take().unwrap_or_default();
    let pred = equals_truth(sim);
    sim.set_predicate(pred);
    let limit = sim.now_ms() + max_rounds * sim.cfg.interval_ms;
    sim.run_until_all_ok(limit);
    checkpoint(sim, "after the restarts", mismatch);
    Ok(RestartReport {
        restarts: rejoin.len(),
        kind,
        undercount_max: watch.worst,
        false_exclusions: watch.below,
        rounds_to_rejoin: MinMax::of(&rejoin),
    })
}

/// `rounds` rounds in which a `fraction` of the agents change `load`
/// every round; then the values stand still until every root equals the
/// truth again.
pub fn run_busy(
    sim: &mut Sim,
    rounds: u64,
    fraction: f64,
    max_rounds: u64,
    mismatch: &mut Option<String>,
) -> Result<BusyReport, String> {
    let live = sim.live_indices();
    let mut busy: BTreeSet<usize> = BTreeSet::new();
    let want = ((live.len() as f64 * fraction).round() as usize).min(live.len());
    while busy.len() < want {
        let k = sim.rng().random_range(0..live.len());
        busy.insert(live[k]);
    }
    let expired_before = expired(sim);
    sim.watch = Some(FloorWatch {
        floor: sim.live_count() as u64,
        ..Default::default()
    });
    let interval = sim.cfg.interval_ms;
    let mut oldest_ms = 0u64;
    for _ in 0..rounds {
        for &i in &busy {
            let load = Value::Float((sim.rng().random::<f64>() * 1000.0).round() / 1000.0);
            sim.set_attribute(i, "load", load);
        }
        sim.run_for(interval);
        oldest_ms = oldest_ms.max(oldest_row_ms(sim));
    }
    let watch = sim.watch.take().unwrap_or_default();
    let pred = equals_truth(sim);
    sim.set_predicate(pred);
    let limit = sim.now_ms() + max_rounds * interval;
    if sim.run_until_all_ok(limit).is_none() {
        return Err(format!(
            "busy: {} of {} roots equal the truth {max_rounds} rounds after the values stood still",
            sim.ok_count(),
            sim.live_count()
        ));
    }
    checkpoint(sim, "after the busy rounds", mismatch);
    Ok(BusyReport {
        rounds,
        busy_agents: busy.len(),
        oldest_row_rounds: (oldest_ms as f64 / interval as f64 * 1000.0).round() / 1000.0,
        rows_expired: expired(sim) - expired_before,
        false_exclusions: watch.below,
    })
}

/// Rows dropped at expiry by all live agents so far.
pub fn expired(sim: &Sim) -> u64 {
    sim.live_indices()
        .into_iter()
        .filter_map(|i| sim.engine(i))
        .map(|e| e.stats().rows_expired)
        .sum()
}

/// The longest any live agent has gone without a fresher version of a
/// row it holds (its own rows aside).
fn oldest_row_ms(sim: &Sim) -> u64 {
    let now = sim.now_ms();
    sim.live_indices()
        .into_iter()
        .filter_map(|i| sim.engine(i))
        .flat_map(|e| {
            e.tables().iter().flat_map(move |t| {
                t.entries()
                    .filter(move |(name, _)| **name != t.own)
                    .map(move |(_, entry)| now.saturating_sub(entry.refreshed_ms))
            })
        })
        .max()
        .unwrap_or(0)
}

fn checkpoint(sim: &Sim, what: &str, mismatch: &mut Option<String>) {
    if mismatch.is_none() {
        *mismatch = first_mismatch(sim, what);
    }
}
