//! Convergence under failures, checked against ground truth over the leaves.

use super::*;
use crate::engine::{EngineConfig, Stats};

fn membership(sim: &mut Sim) {
    let n = sim.live_count() as u64;
    sim.set_predicate(Box::new(move |root: &Row| root.members() == n));
}

const ROUND: u64 = 1000;

fn sim(agents: usize, branching: usize, seed: u64) -> Sim {
    Sim::new(SimConfig::new(agents, branching, seed)).unwrap()
}

/// Runs until every live root counts every live agent; returns the rounds.
fn converge(sim: &mut Sim, max_rounds: u64) -> f64 {
    membership(sim);
    let start = sim.now_ms();
    let took = sim.run_until_all_ok(start + max_rounds * ROUND);
    assert!(
        took.is_some(),
        "no convergence in {max_rounds} rounds: {}/{} roots count {} members",
        sim.ok_count(),
        sim.live_count(),
        sim.live_count()
    );
    took.unwrap_or(0) as f64 / ROUND as f64
}

/// Runs round by round until every root equals the ground truth.
fn assert_root_correct(sim: &mut Sim, max_rounds: u64) {
    for _ in 0..max_rounds {
        if sim.root_mismatches().is_empty() {
            return;
        }
        sim.run_for(ROUND);
    }
    let bad = sim.root_mismatches();
    panic!(
        "{} roots differ from the leaves, e.g. {:?}",
        bad.len(),
        bad.first()
    );
}

fn members_everywhere(sim: &Sim) -> Vec<u64> {
    let mut seen: Vec<u64> = sim
        .live_indices()
        .into_iter()
        .filter_map(|i| sim.engine(i).map(|e| e.root().members()))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

#[test]
fn converges_to_ground_truth_without_loss() {
    let mut sim = sim(300, 8, 1);
    let rounds = converge(&mut sim, 40);
    assert!(rounds > 0.0);
    assert_root_correct(&mut sim, 5);
}

#[test]
fn converges_to_ground_truth_with_20_percent_loss() {
    let mut cfg = SimConfig::new(300, 8, 2);
    cfg.loss = 0.2;
    let mut sim = Sim::new(cfg).unwrap();
    converge(&mut sim, 60);
    assert_root_correct(&mut sim, 10);
}

#[test]
fn a_changed_value_reaches_every_root() {
    let mut sim = sim(300, 8, 3);
    converge(&mut sim, 40);
    for _ in 0..3 {
        let leaf = sim.random_live().unwrap();
        sim.set_attribute(leaf, "mem", Value::Int(5_000_000 + leaf as i64));
        let want = sim.ground_truth().get("mem_sum").cloned().unwrap();
        sim.set_predicate(Box::new(move |root: &Row| {
            root.value("mem_sum") == Some(&want)
        }));
        let start = sim.now_ms();
        assert!(sim.run_until_all_ok(start + 12 * ROUND).is_some());
        assert_root_correct(&mut sim, 2);
    }
}

#[test]
fn a_partitioned_top_level_zone_heals() {
    let mut sim = sim(300, 8, 4);
    converge(&mut sim, 40);
    let zone = ZonePath::parse("/z0").unwrap();
    let inside = sim
        .live_indices()
        .into_iter()
        .filter(|i| zone.contains(sim.path(*i)))
        .count() as u64;
    sim.partition(zone.clone());
    // Longer than the top level's expiry: each side forgets the other.
    // Expiry counts from when each agent received the last version that
    // crossed before the cut; a version in which the zone grew travels by
    // anti-entropy alone (it is not pushed), which can take several rounds
    // to reach the far side of the tree, hence the margin.
    let top_expiry = EngineConfig::new(0, ZonePath::root(), addr_of(0)).expiry_ms(0, 3);
    sim.run_for(top_expiry + 8 * ROUND);
    for i in sim.live_indices() {
        let members = sim.engine(i).unwrap().root().members();
        let want = if zone.contains(sim.path(i)) {
            inside
        } else {
            300 - inside
        };
        assert_eq!(
            members,
            want,
            "agent {i} at {} during the partition",
            sim.path(i)
        );
    }
    sim.heal();
    converge(&mut sim, 60);
    assert_root_correct(&mut sim, 5);
}

#[test]
fn crashed_agents_leave_the_aggregates_at_expiry_and_not_before() {
    let mut sim = sim(300, 8, 5);
    converge(&mut sim, 40);
    sim.run_for(2 * ROUND);
    let mut crashed = Vec::new();
    while crashed.len() < 30 {
        let i = sim.random_live().unwrap();
        if !sim.seeds().contains(&i) {
            sim.crash(i);
            crashed.push(i);
        }
    }
    let leaf_expiry_rounds = EngineConfig::new(0, ZonePath::root(), addr_of(0)).expiry_rounds;
    // Until the leaf expiry (less the rounds a row may already be old
    // when the crash happens) every root still counts them.
    sim.run_for((leaf_expiry_rounds - 2) * ROUND);
    assert_eq!(
        members_everywhere(&sim),
        vec![300],
        "dropped before the expiry"
    );
    converge(&mut sim, 30);
    assert_eq!(members_everywhere(&sim), vec![270]);
    assert_root_correct(&mut sim, 5);
}

#[test]
fn a_restarted_agent_rejoins_and_is_not_shadowed_by_its_old_rows() {
    let mut sim = sim(300, 8, 6);
    converge(&mut sim, 40);
    // Quick restart, before its rows expire, with a new value.
    sim.crash(42);
    sim.run_for(2 * ROUND);
    sim.set_attribute(42, "mem", Value::Int(7_777_777));
    sim.start(42).unwrap();
    converge(&mut sim, 30);
    assert_root_correct(&mut sim, 10);
    // Late restart, after every row of it expired.
    sim.crash(43);
    let top_expiry = EngineConfig::new(0, ZonePath::root(), addr_of(0)).expiry_ms(0, 3);
    sim.run_for(top_expiry + 5 * ROUND);
    assert_eq!(members_everywhere(&sim), vec![299]);
    sim.start(43).unwrap();
    converge(&mut sim, 30);
    assert_root_correct(&mut sim, 10);
}

#[test]
fn skewed_clocks_do_not_stop_convergence() {
    let mut cfg = SimConfig::new(300, 8, 7);
    cfg.skew_ms = 30_000;
    let mut sim = Sim::new(cfg).unwrap();
    converge(&mut sim, 40);
    assert_root_correct(&mut sim, 5);
    let leaf = sim.random_live().unwrap();
    sim.set_attribute(leaf, "mem", Value::Int(3_333_333));
    assert_root_correct(&mut sim, 15);
    sim.crash(leaf);
    sim.run_for(3 * ROUND);
    sim.start(leaf).unwrap();
    converge(&mut sim, 30);
    assert_root_correct(&mut sim, 10);
}

#[test]
fn a_clean_leave_is_seen_at_once_and_never_undone() {
    let mut sim = sim(300, 8, 8);
    converge(&mut sim, 40);
    sim.leave(77);
    let start = sim.now_ms();
    membership(&mut sim);
    assert!(
        sim.run_until_all_ok(start + 3 * ROUND).is_some(),
        "not gone within 3 rounds: {:?}",
        members_everywhere(&sim)
    );
    sim.run_for(60 * ROUND);
    assert_eq!(members_everywhere(&sim), vec![299]);
    assert_root_correct(&mut sim, 2);
}

/// A report without the only fields measured on the host, not in
/// virtual time, as a string to compare.
fn without_host_figures(mut report: serde_json::Value) -> String {
    for volatile in ["wall_seconds", "peak_rss_bytes"] {
        report.as_object_mut().unwrap().remove(volatile);
    }
    report.to_string()
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let run = || {
        let opts = SimOptions::new(SimConfig::new(120, 6, 42), 60, 3);
        let report =
            serde_json::to_value(run_benchmark(&opts, &mut super::Quiet).unwrap()).unwrap();
        without_host_figures(report)
    };
    let first = run();
    assert_eq!(first, run());
    assert!(first.contains("\"root_correct\":true"), "{first}");
}

/// Handing envelopes over (`Wire::Shared`, for 10^5 agents) skips the
/// codec and nothing else: with loss, churn and restarts it gives the
/// report that carrying bytes does.
#[test]
fn shared_envelopes_give_the_report_bytes_give() {
    let run = |wire: crate::node::Wire| {
        let mut config = SimConfig::new(300, 8, 5);
        config.loss = 0.1;
        config.wire = wire;
        let mut opts = SimOptions::new(config, 80, 3);
        opts.churn = 1;
        opts.restarts = 1;
        let report =
            serde_json::to_value(run_benchmark(&opts, &mut super::Quiet).unwrap()).unwrap();
        without_host_figures(report)
    };
    let bytes = run(crate::node::Wire::Bytes);
    assert_eq!(bytes, run(crate::node::Wire::Shared));
    assert!(bytes.contains("\"root_correct\":true"), "{bytes}");
}

/// The simulator runs the agents of one virtual millisecond in parallel;
/// the report must not depend on whether, or on how many threads, it did.
#[test]
fn the_report_does_not_depend_on_the_number_of_threads() {
    let run = |threads: usize| {
        let mut config = SimConfig::new(400, 8, 9);
        // Every millisecond in parallel when threads > 1, none otherwise.
        config.parallel_min_agents = if threads > 1 { 1 } else { usize::MAX };
        let mut opts = SimOptions::new(config, 60, 2);
        // The churn phases too: crashes, joins, restarts, busy rounds.
        opts.churn = 1;
        opts.restarts = 2;
        opts.busy_rounds = 3;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let report = serde_json::to_value(
            pool.install(|| run_benchmark(&opts, &mut super::Quiet))
                .unwrap(),
        )
        .unwrap();
        without_host_figures(report)
    };
    let one = run(1);
    assert_eq!(one, run(4));
    assert!(one.contains("\"root_correct\":true"), "{one}");
}

#[test]
#[ignore]
fn debug_dump() {
    let mut cfg = SimConfig::new(300, 8, 1);
    cfg.aggregates.clear();
    let mut sim = Sim::new(cfg).unwrap();
    for step in 0..6 {
        sim.run_for(5_000);
        eprintln!(
            "t={} delivered={} dropped={}",
            sim.now_ms(),
            sim.delivered,
            sim.dropped
        );
        for i in [0usize, 1, 150, 299] {
            let e = sim.engine(i).unwrap();
            let sizes: Vec<_> = e.tables().iter().map(|t| t.len()).collect();
            eprintln!(
                "  step {step} agent {i} {} root members {} tables {:?} stats {:?}",
                e.zone(),
                e.root().members(),
                sizes,
                e.stats()
            );
        }
    }
}

/// `SIM_N=10000 SIM_B=16 cargo test --release -p astrolabe-exporter scale_membership -- --ignored --nocapture`
#[test]
#[ignore]
fn scale_membership() {
    let n: usize = std::env::var("SIM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let b: usize = std::env::var("SIM_B")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut cfg = SimConfig::new(n, b, 1);
    cfg.aggregates.clear();
    let started = std::time::Instant::now();
    let mut sim = Sim::new(cfg).unwrap();
    membership(&mut sim);
    let t = sim.run_until_all_ok(100_000);
    let mut agg = Stats::default();
    for i in 0..sim.len() {
        let s = sim.engine(i).unwrap().stats();
        agg.rows_installed += s.rows_installed;
        agg.rows_stale += s.rows_stale;
        agg.forwards += s.forwards;
        agg.pushes += s.pushes;
        agg.rows_sent += s.rows_sent;
        for k in 0..4 {
            agg.sent_by_kind[k] += s.sent_by_kind[k];
        }
    }
    eprintln!("cold start totals: delivered {} {:?}", sim.delivered, agg);
    eprintln!(
        "n={n} b={b} converged in {:?} ms, ok {}/{} wall {:?} max msg {}",
        t,
        sim.ok_count(),
        sim.live_count(),
        started.elapsed(),
        sim.max_message_bytes()
    );
    sim.reset_traffic();
    sim.run_for(5_000);
    let before: Vec<_> = (0..sim.len())
        .map(|i| sim.engine(i).unwrap().stats().clone())
        .collect();
    sim.run_for(5_000);
    let mut kinds = [0u64; 4];
    let (mut fw, mut pu, mut rows) = (0, 0, 0);
    for (i, was) in before.iter().enumerate() {
        let s = sim.engine(i).unwrap().stats();
        for (sum, (now, then)) in kinds
            .iter_mut()
            .zip(s.sent_by_kind.iter().zip(was.sent_by_kind))
        {
            *sum += now - then;
        }
        fw += s.forwards - was.forwards;
        pu += s.pushes - was.pushes;
        rows += s.rows_sent - was.rows_sent;
    }
    let per = |x: u64| x as f64 / n as f64 / 5.0;
    eprintln!(
        "per agent per round: digests {} requests {} rows-msgs {} rows {} refresh-msgs {} forwards {} pushes {}",
        per(kinds[0]), per(kinds[1]), per(kinds[2]), per(rows), per(kinds[3]), per(fw), per(pu)
    );
    let total: u64 = (0..sim.len()).map(|i| sim.traffic(i).0).sum();
    eprintln!(
        "steady bytes/agent/round {}",
        total as f64 / n as f64 / 10.0
    );
}

#[test]
#[ignore]
fn debug_loss() {
    let mut cfg = SimConfig::new(2000, 16, 1);
    cfg.loss = std::env::var("SIM_LOSS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.2);
    let mut sim = Sim::new(cfg).unwrap();
    for _ in 0..4 {
        sim.run_for(10 * ROUND);
        let mut hist = std::collections::BTreeMap::<u64, usize>::new();
        for i in sim.live_indices() {
            *hist
                .entry(sim.engine(i).unwrap().root().members())
                .or_default() += 1;
        }
        let expired: u64 = sim
            .live_indices()
            .iter()
            .map(|i| sim.engine(*i).unwrap().stats().rows_expired)
            .sum();
        let lonely = sim
            .live_indices()
            .iter()
            .filter(|i| sim.engine(**i).unwrap().tables().last().unwrap().len() < 16)
            .count();
        eprintln!(
            "t={} expired {expired} leaf-tables-incomplete {lonely} hist {:?}",
            sim.now_ms(),
            hist
        );
    }
    // Per zone: how many agents inside see the right member count of their leaf zone.
    let e = sim.engine(5).unwrap();
    for t in e.tables() {
        let rows: Vec<_> = t
            .entries()
            .map(|(n, e)| format!("{n}:{}", e.row.members()))
            .collect();
        eprintln!("table {} : {:?}", t.zone, rows);
    }
    let e = sim.engine(1715).unwrap();
    eprintln!(
        "h1715 stats {:?} next tick {} now {}",
        e.stats(),
        e.next_tick_ms(),
        sim.now_ms()
    );
    let own = e.own_row().unwrap().clone();
    eprintln!(
        "h1715 own {:?} fp {}",
        own.freshness,
        own.body.fingerprint()
    );
    for j in 1704..1720 {
        if let Some(x) = sim.engine(j) {
            let t = x.tables().last().unwrap();
            match t.get("h1715") {
                Some(en) => eprintln!(
                    "  at h{j}: {:?} fp {} refreshed {}",
                    en.freshness(),
                    en.row.body.fingerprint(),
                    en.refreshed_ms
                ),
                None => eprintln!("  at h{j}: none"),
            }
        }
    }
    let e = sim.engine(1500).unwrap();
    for t in e.tables() {
        let rows: Vec<_> = t
            .entries()
            .map(|(n, e)| format!("{n}:{}", e.row.members()))
            .collect();
        eprintln!("table {} : {:?}", t.zone, rows);
    }
    eprintln!("{:?}", e.stats());
}

#[test]
fn values_set_before_anyone_is_known_still_spread() {
    let mut sim = sim(100, 10, 9);
    sim.run_for(1);
    for i in 0..100 {
        sim.set_attribute(i, "mem", Value::Int(1000 + i as i64));
    }
    converge(&mut sim, 40);
    assert_root_correct(&mut sim, 10);
}

/// Twelve agents as in the real-process skew test: three regions of two
/// zones of two hosts, one clock in three 20 s ahead, one 20 s behind. The
/// skewed hosts' values stand still (libfaketime stalled their collector
/// threads, see docs/ALGORITHM.md) while the others change every round.
/// A zone whose content stands still must still be refreshed at its
/// peers: its row's heartbeats were once held back for as long as
/// changes kept coming elsewhere, until the row expired.
#[test]
fn a_zone_whose_values_stand_still_stays_fresh_while_others_change() {
    let mut sim = Sim::new(mixed_skew_config(12, 1)).unwrap();
    converge(&mut sim, 40);
    let n = sim.live_count() as u64;
    for round in 0..60u64 {
        for i in (0..12).filter(|i| i % 3 == 2) {
            sim.set_attribute(i, "load", Value::Float((round * 7 + i as u64) as f64));
        }
        sim.run_for(ROUND);
        let now = sim.now_ms();
        for i in 0..12 {
            let e = sim.engine(i).unwrap();
            assert_eq!(e.root().members(), n, "agent {i} in round {round}");
            for t in e.tables() {
                for (name, entry) in t.entries().filter(|(name, _)| **name != t.own) {
                    let age = now - entry.refreshed_ms;
                    assert!(
                        age <= 3 * ROUND,
                        "round {round}: agent {i} last refreshed {} {name} {age} ms ago",
                        t.zone
                    );
                }
            }
        }
    }
}

/// `agents` hosts in zones of two, two zones per region, one clock in
/// three 20 s ahead and one 20 s behind, mixed inside every zone.
fn mixed_skew_config(agents: usize, seed: u64) -> SimConfig {
    let zones = [
        "/eu/fra", "/eu/ams", "/us/sfo", "/us/nyc", "/ap/tok", "/ap/syd",
    ];
    let mut cfg = SimConfig::new(agents, 2, seed);
    cfg.paths = Some(
        (0..agents)
            .map(|i| {
                ZonePath::parse(&format!("{}/h{}", zones[(i / 2) % zones.len()], i + 1)).unwrap()
            })
            .collect(),
    );
    cfg.skews_ms = Some(vec![20_000, -20_000, 0]);
    cfg
}

/// Which hop of the tree a slow change waits at.
/// `SIM_N=10000 SIM_B=16 SIM_LOSS=0.2 SIM_SEED=2 cargo test --lib trace_slow_change -- --ignored --nocapture`
#[test]
#[ignore]
fn trace_slow_change() {
    let mut cfg = SimConfig::new(
        env_or("SIM_N", 10000.0) as usize,
        env_or("SIM_B", 16.0) as usize,
        env_or("SIM_SEED", 2.0) as u64,
    );
    cfg.loss = env_or("SIM_LOSS", 0.2);
    let mut sim = Sim::new(cfg).unwrap();
    membership(&mut sim);
    sim.run_until(200_000, &mut |s: &Sim| s.all_ok());
    sim.run_for(ROUND);
    for c in 0..5 {
        let leaf = sim.random_live().unwrap();
        let new_mem = Value::Int(sim.rng().random_range(1_000_000..2_000_000));
        sim.set_attribute(leaf, "mem", new_mem);
        let want = sim.ground_truth().get("mem_sum").cloned().unwrap();
        let w2 = want.clone();
        sim.set_predicate(Box::new(move |root: &Row| {
            root.value("mem_sum") == Some(&w2)
        }));
        let start = sim.now_ms();
        let lpath = sim.path(leaf).clone();
        // per agent: when its root had it
        let n = sim.len();
        let mut got: Vec<Option<u64>> = vec![None; n];
        let before: Vec<Option<Stats>> = (0..sim.len())
            .map(|i| sim.engine(i).map(|e| e.stats().clone()))
            .collect();
        let mut t = start;
        let mut entry_at: Vec<Option<u64>> = vec![None; sim.len()];
        while !sim.all_ok() && t < start + 100_000 {
            t += 100;
            sim.run_until(t, &mut |_| false);
            let lrow = sim
                .engine(leaf)
                .unwrap()
                .tables()
                .iter()
                .map(|t| t.own_row().unwrap().body.fingerprint() as u32)
                .collect::<Vec<_>>();
            for i in 0..n {
                if entry_at[i].is_none() {
                    if let Some(e) = sim.engine(i) {
                        let c = e.zone().common_depth(&lpath).min(e.tables().len() - 1);
                        let name = lpath.ancestor(c + 1).unwrap();
                        if e.tables()[c]
                            .get(name.name())
                            .is_some_and(|en| en.content() == lrow[c])
                        {
                            entry_at[i] = Some(t - start);
                        }
                    }
                }
                if got[i].is_none()
                    && sim
                        .engine(i)
                        .is_some_and(|e| e.root().value("mem_sum") == Some(&want))
                {
                    got[i] = Some(t - start);
                }
            }
        }
        let mut times: Vec<u64> = got.iter().flatten().copied().collect();
        times.sort_unstable();
        let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
        eprintln!(
            "change {c} at {lpath}: p50 {} p90 {} p99 {} max {} ms",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
        // the slowest agent: for each of its nested zones below the common
        // ancestor with the leaf, the first time any agent inside had it
        let slow = (0..n).max_by_key(|i| got[*i].unwrap_or(u64::MAX)).unwrap();
        let spath = sim.path(slow).clone();
        let e = sim.engine(slow).unwrap();
        let b = before[slow].clone().unwrap();
        let st = e.stats();
        eprintln!("   slowest {slow} {spath}: entry at {:?} root at {:?}; rounds {} recv {} sent {} installed {} stale {} expired {}", entry_at[slow], got[slow], st.rounds - b.rounds, st.messages_received - b.messages_received, st.messages_sent - b.messages_sent, st.rows_installed - b.rows_installed, st.rows_stale - b.rows_stale, st.rows_expired - b.rows_expired);
        let cdepth = spath.common_depth(&lpath);
        for d in (cdepth + 1)..=spath.depth() {
            let z = spath.ancestor(d).unwrap();
            let first = (0..n)
                .filter(|i| z.contains(sim.path(*i)))
                .filter_map(|i| got[i])
                .min();
            let inside = (0..n).filter(|i| z.contains(sim.path(*i))).count();
            eprintln!("   zone {z} ({inside} agents): first had it at {first:?}");
            if d == spath.depth() - 1 {
                let all: Vec<_> = (0..n)
                    .filter(|i| z.contains(sim.path(*i)))
                    .map(|i| got[i])
                    .collect();
                eprintln!("      {all:?}");
            }
        }
        sim.run_for(ROUND);
    }
}

/// A rolling restart, as a clean leave and as a crash: no agent that
/// stays ever sees a root that lacks one of the agents not restarting.
/// A restarted agent once sent the rows it computed from its empty
/// tables, and they beat its zone-mates' (the root dropped by a whole
/// zone); now it keeps them until it has caught up (`engine::catchup`).
#[test]
fn rolling_restarts_never_undercount_the_agents_that_stay() {
    use super::churn::{run_restarts, RestartKind};
    for kind in [RestartKind::Leave, RestartKind::Kill] {
        let mut sim = sim(300, 8, 14);
        converge(&mut sim, 40);
        let mut mismatch = None;
        let r = run_restarts(&mut sim, 8, kind, 3000, 200, 60, &mut mismatch).unwrap();
        assert_eq!(r.restarts, 8, "{r:?}");
        assert_eq!(
            (r.undercount_max, r.false_exclusions),
            (0, 0),
            "{kind:?}: {r:?}"
        );
        assert_eq!(mismatch, None, "{kind:?}");
    }
}

/// Crashes and joins: a crashed agent leaves every root, a new one is
/// counted in every root, and no live agent goes missing meanwhile.
#[test]
fn crashes_and_joins_show_everywhere_and_exclude_nobody_alive() {
    let mut cfg = SimConfig::new(300, 8, 15);
    cfg.spares = 3;
    let mut sim = Sim::new(cfg).unwrap();
    converge(&mut sim, 40);
    let mut mismatch = None;
    let r = super::churn::run_churn(&mut sim, 3, 80, &mut mismatch).unwrap();
    assert_eq!((r.crashes, r.joins, r.false_exclusions), (3, 3, 0), "{r:?}");
    // A crash waits for the leaf expiry (20 rounds), then climbs.
    assert!(
        r.crash_rounds.max >= 20.0 && r.crash_rounds.max < 60.0,
        "{r:?}"
    );
    assert_eq!(mismatch, None);
}

/// Diagnoses a wrong root right after the cold start (seed 6 of the
/// 10^4-agent 20% loss sweep): which rows of a wrong agent undercount,
/// who computed them, and which leaves are missing where.
#[test]
#[ignore = "diagnostic; SIM_SEED, SIM_N, SIM_LOSS"]
fn trace_wrong_root_after_cold_start() {
    let mut cfg = SimConfig::new(
        env_or("SIM_N", 10000.0) as usize,
        16,
        env_or("SIM_SEED", 6.0) as u64,
    );
    cfg.loss = env_or("SIM_LOSS", 0.2);
    let mut sim = Sim::new(cfg).unwrap();
    membership(&mut sim);
    sim.run_until(200_000, &mut |s: &Sim| s.all_ok());
    eprintln!("membership at round {:.1}", sim.rounds());
    for step in 0..12 {
        let bad = sim.root_mismatches();
        let expired: u64 = sim
            .live_indices()
            .iter()
            .filter_map(|i| sim.engine(*i))
            .map(|e| e.stats().rows_expired)
            .sum();
        eprintln!(
            "+{step} rounds: {} wrong roots, rows expired so far {expired}",
            bad.len()
        );
        for (i, what) in bad.iter().take(3) {
            let e = sim.engine(*i).unwrap();
            eprintln!("  agent {i} {} {what}", sim.path(*i));
            for (k, t) in e.tables().iter().enumerate() {
                for r in t.rows().filter(|r| !r.is_tombstone()) {
                    let truth = sim
                        .live_indices()
                        .iter()
                        .filter(|j| r.zone.contains(sim.path(**j)))
                        .count() as u64;
                    if r.members() != truth {
                        eprintln!(
                            "    table {k} row {} members {} truth {truth} issuer {} own {} fresh {:?}",
                            r.zone,
                            r.members(),
                            r.issuer,
                            t.is_own(r.zone.name()),
                            r.freshness
                        );
                    }
                }
                // Live leaves of this table's zone that it does not hold.
                if k + 1 == e.tables().len() {
                    for j in sim.live_indices() {
                        let p = sim.path(j);
                        if t.zone.contains(p)
                            && t.get(p.name()).is_none_or(|en| en.current().is_tombstone())
                        {
                            eprintln!(
                                "    leaf table lacks live {p} (remembered: {})",
                                t.remembers(p.name())
                            );
                        }
                    }
                }
            }
        }
        sim.run_for(ROUND);
    }
}

/// Follows one leaf row (SIM_HOST in its zone) round by round: its age
/// at each zone-mate, and what the host itself does.
#[test]
#[ignore = "diagnostic; SIM_SEED, SIM_HOST"]
fn trace_stale_leaf() {
    let mut cfg = SimConfig::new(10000, 16, env_or("SIM_SEED", 6.0) as u64);
    cfg.loss = 0.2;
    let host = env_or("SIM_HOST", 749.0) as usize;
    let mut sim = Sim::new(cfg).unwrap();
    membership(&mut sim);
    let hpath = sim.path(host).clone();
    let zone = hpath.parent().unwrap();
    let mates: Vec<usize> = sim
        .live_indices()
        .into_iter()
        .filter(|j| zone.contains(sim.path(*j)) && *j != host)
        .collect();
    let mut prev = sim.engine(host).unwrap().stats().clone();
    let traced = env_or("SIM_TRACE_FROM", 1000.0) as usize..env_or("SIM_TRACE_TO", 0.0) as usize;
    for round in 0..70 {
        sim.trace = traced.contains(&round).then_some(host);
        sim.run_for(ROUND);
        let e = sim.engine(host).unwrap();
        let st = e.stats().clone();
        let now = sim.now_ms();
        let ages: Vec<String> = mates
            .iter()
            .map(|j| {
                let t = sim.engine(*j).unwrap().tables().last().unwrap();
                match t.get(hpath.name()) {
                    Some(en) if !en.current().is_tombstone() => {
                        format!("{}", now.saturating_sub(en.refreshed_ms) / ROUND)
                    }
                    _ => "-".into(),
                }
            })
            .collect();
        let leaf = e.tables().last().unwrap();
        if (40..=58).contains(&round) {
            let own = leaf.own_row().unwrap();
            let copies: Vec<String> = mates
                .iter()
                .take(4)
                .map(|j| {
                    let t = sim.engine(*j).unwrap().tables().last().unwrap();
                    t.get(hpath.name()).map_or("-".into(), |en| {
                        format!(
                            "{:?} c{:x} i{}",
                            en.freshness().issued,
                            en.content(),
                            en.issuer()
                        )
                    })
                })
                .collect();
            eprintln!(
                "   own {:?} c{:x} body {:x}; copies {:?}",
                own.freshness.issued,
                own.body.fingerprint() as u32,
                own.body.fingerprint(),
                copies
            );
        }
        eprintln!(
            "round {round}: {host} root {} leaf rows {} catching_up {} sent {} recv {} | ages at mates {:?}",
            e.root().members(),
            leaf.len(),
            e.is_catching_up(),
            st.messages_sent - prev.messages_sent,
            st.messages_received - prev.messages_received,
            ages
        );
        prev = st;
    }
}

/// A number from the environment, for the diagnostics above.
fn env_or(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
