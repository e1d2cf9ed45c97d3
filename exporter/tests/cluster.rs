//! Twelve agent processes in three levels on loopback, each with a textfile
//! holding a known value: every agent's /metrics must serve the aggregates
//! computed directly from the files, lose SIGKILLed agents after the expiry
//! and a SIGTERMed one within a few rounds.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const AGGREGATE: &str = "SELECT sum(work_items) AS work_sum, max(work_items) AS work_max, avg(work_items) AS work_avg, count(work_items) AS work_count";

struct Expect {
    sum: f64,
    max: f64,
    avg: f64,
    count: f64,
}

/// Ground truth per zone (every ancestor of every live agent), from the files.
fn truth(agents: &[Agent], values: &[f64]) -> BTreeMap<String, Expect> {
    let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (a, v) in agents.iter().zip(values) {
        if a.child.is_none() {
            continue;
        }
        let mut zone = String::new();
        per.entry("/".into()).or_default().push(*v);
        for seg in a.zone.trim_start_matches('/').split('/') {
            zone.push('/');
            zone.push_str(seg);
            per.entry(zone.clone()).or_default().push(*v);
        }
    }
    per.into_iter()
        .map(|(z, vs)| {
            let sum: f64 = vs.iter().sum();
            let e = Expect {
                sum,
                max: vs.iter().cloned().fold(f64::MIN, f64::max),
                avg: sum / vs.len() as f64,
                count: vs.len() as f64,
            };
            (z, e)
        })
        .collect()
}

/// Whether `agent` serves the expected aggregates for every zone it should
/// know: the root, its ancestors and their children.
fn serves_truth(agent: &Agent, expect: &BTreeMap<String, Expect>) -> Result<(), String> {
    let m = agent.get("/metrics").ok_or("no /metrics")?;
    let segments: Vec<&str> = agent.zone.trim_start_matches('/').split('/').collect();
    for (zone, e) in expect {
        // Zones this agent knows: the root and the children of its ancestors.
        let depth = zone.matches('/').count() - usize::from(zone == "/");
        let parent_matches = zone == "/" || {
            let parts: Vec<&str> = zone.trim_start_matches('/').split('/').collect();
            parts[..parts.len() - 1] == segments[..parts.len() - 1]
        };
        if depth > segments.len() || !parent_matches {
            continue;
        }
        if depth == segments.len() {
            continue; // a leaf: its own value, not an aggregate
        }
        for (metric, want) in [
            ("astrolabe_zone_work_sum", e.sum),
            ("astrolabe_zone_work_max", e.max),
            ("astrolabe_zone_work_avg", e.avg),
            ("astrolabe_zone_work_count", e.count),
            ("astrolabe_zone_members", e.count),
        ] {
            let have = zone_value(&m, metric, zone);
            if have.is_none_or(|h| (h - want).abs() > 1e-9 * want.abs().max(1.0)) {
                return Err(format!(
                    "{} sees {metric} of {zone} = {have:?}, want {want}",
                    agent.zone
                ));
            }
        }
    }
    Ok(())
}

fn all_serve_truth(agents: &[Agent], values: &[f64]) -> Result<(), String> {
    let expect = truth(agents, values);
    for a in agents.iter().filter(|a| a.child.is_some()) {
        serves_truth(a, &expect)?;
    }
    Ok(())
}

/// Waits until every live agent serves the truth; the last mismatch if not.
fn wait_for_truth(agents: &[Agent], values: &[f64], timeout: Duration) -> Result<(), String> {
    let mut last = Ok(());
    if eventually(timeout, || {
        last = all_serve_truth(agents, values);
        last.is_ok()
    }) {
        Ok(())
    } else {
        last
    }
}

#[test]
fn a_twelve_process_cluster_serves_exact_zone_aggregates() {
    let zones = [
        "/eu/fra/h0",
        "/eu/fra/h1",
        "/eu/fra/h2",
        "/eu/ams/h3",
        "/eu/ams/h4",
        "/eu/ams/h5",
        "/us/nyc/h6",
        "/us/nyc/h7",
        "/us/nyc/h8",
        "/us/sfo/h9",
        "/us/sfo/h10",
        "/us/sfo/h11",
    ];
    let values: Vec<f64> = (0..zones.len()).map(|i| (i * 3 + 1) as f64).collect();
    let textfile = values.clone();
    let mut agents = Cluster::builder("cluster")
        .zones(zones)
        .seeded_by_first(2)
        .textfile(move |i| format!("# TYPE work_items gauge\nwork_items {}\n", textfile[i]))
        .args(["--aggregate", AGGREGATE, "--no-collector.host"])
        .spawn();
    wait_for_truth(&agents, &values, Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("no convergence: {e}"));

    // Two agents die without a word: gone from every aggregate after expiry.
    agents[4].signal("-KILL");
    agents[10].signal("-KILL");
    wait_for_truth(&agents, &values, Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("killed agents still counted: {e}"));

    // One leaves cleanly: gone within a few rounds (200 ms each), far
    // sooner than the 4 s leaf expiry.
    agents[7].signal("-TERM");
    let left = eventually(Duration::from_millis(2500), || {
        all_serve_truth(&agents, &values).is_ok()
    });
    assert!(
        left,
        "SIGTERMed agent still counted: {:?}",
        all_serve_truth(&agents, &values)
    );
}

#[test]
fn agents_gossip_over_ipv6() {
    if !require(
        "agents_gossip_over_ipv6",
        "an IPv6 loopback ([::1])",
        std::net::UdpSocket::bind("[::1]:0").is_ok(),
    ) {
        return;
    }
    let agents = Cluster::builder("ipv6")
        .zones((0..3).map(|i| format!("/v6/h{i}")))
        .ipv6()
        .textfile(|i| format!("work_items {}\n", i + 1))
        .args(["--no-collector.host", "--aggregate", AGGREGATE])
        .spawn();
    let ok = eventually(Duration::from_secs(20), || {
        agents
            .iter()
            .all(|a| a.zone_value("astrolabe_zone_work_sum", "/") == Some(6.0))
    });
    drop(agents);
    assert!(ok, "agents on [::1] did not converge");
}
