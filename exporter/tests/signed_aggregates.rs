//! Signed aggregates over six real agent processes on loopback: an
//! aggregate certificate installed at one agent of /eu with `astrolabe
//! aggregate install` reaches every agent of /eu by gossip and shows in
//! their /metrics, and no agent outside holds it; unsigned and wrongly
//! signed certificates are refused, counted and appear nowhere; a signed
//! removal takes the aggregate away again.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn refusals(agent: &Agent, reason: &str) -> f64 {
    signature_refusals(agent, "aggregate", reason)
}

fn held(agent: &Agent) -> Vec<Value> {
    agent
        .get("/api/v1/aggregates")
        .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        .and_then(|v| v["certificates"].as_array().cloned())
        .unwrap_or_default()
}

/// `astrolabe aggregate ...`; success, stdout and stderr.
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = run_cli(&[&["aggregate"], args].concat(), &[]);
    (out.ok, out.stdout, out.stderr)
}

const PEAK: &str = "astrolabe_zone_work_items_peak_eu";
const UNSIGNED: &str = "astrolabe_zone_work_items_unsigned";

#[test]
fn signed_aggregates_spread_through_their_zone_and_nothing_else_applies() {
    let dir = temp_dir("signed-aggregates");
    let good_path = dir.join("operator.key");
    let good_public = generate_operator_key(&good_path);
    let wrong_path = dir.join("stranger.key");
    generate_operator_key(&wrong_path);

    let zones = [
        "/eu/fra/h0",
        "/eu/fra/h1",
        "/eu/ber/h2",
        "/eu/ber/h3",
        "/us/nyc/h4",
        "/us/nyc/h5",
    ];
    let agents = Cluster::builder("signed-aggregates-agents")
        .zones(zones)
        .textfile(|i| format!("work_items {}\n", i + 1))
        .args([
            "--security.trusted-key",
            &good_public,
            "--no-collector.host",
        ])
        .spawn();
    let converged = roots_count(&agents, 6.0, Duration::from_secs(60));
    assert!(converged, "the cluster did not converge");

    // Unsigned, posted straight to the API: 403, counted, held nowhere.
    let (status, v) = http_post_json_value(
        agents[1].web,
        "/api/v1/aggregates",
        &json!({"zone": "/eu", "name": "unsigned", "sql": "SELECT sum(work_items) AS work_items_unsigned",
                "issued": 1, "expires": u64::MAX}),
    );
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["reason"], json!("unsigned"));
    assert_eq!(refusals(&agents[1], "unsigned"), 1.0);
    // Not a certificate at all: 400, counted as malformed.
    let (status, _) =
        http_post_json_value(agents[1].web, "/api/v1/aggregates", &json!({"zone": 5}));
    assert_eq!(status, 400);
    assert_eq!(refusals(&agents[1], "malformed"), 1.0);

    // Signed by a key the agents do not trust: refused.
    let server = |i: usize| agents[i].url();
    let (ok, _, err) = cli(&[
        "install",
        "--server",
        &server(2),
        "--zone",
        "/eu",
        "--key",
        wrong_path.to_str().unwrap(),
        "SELECT sum(work_items) AS work_items_unsigned",
    ]);
    assert!(!ok);
    assert!(err.contains("untrusted-key"), "{err}");
    assert_eq!(refusals(&agents[2], "untrusted-key"), 1.0);

    // Signed by the operator, installed at h2 (in /eu/ber).
    let (ok, out, err) = cli(&[
        "install",
        "--server",
        &server(2),
        "--zone",
        "/eu",
        "--key",
        good_path.to_str().unwrap(),
        "--expires",
        "1h",
        "SELECT max(work_items) AS work_items_peak_eu",
    ]);
    assert!(ok, "{out} {err}");
    assert!(out.contains("installed"), "{out}");
    // Every agent of /eu serves it for /eu and its own leaf zone: the
    // maximum over /eu's hosts (4) and over its leaf zone's.
    let mut last = String::new();
    let spread = eventually(Duration::from_secs(30), || {
        agents.iter().take(4).enumerate().all(|(i, a)| {
            last = a.get("/metrics").unwrap_or_default();
            let own = if i < 2 {
                ("/eu/fra", 2.0)
            } else {
                ("/eu/ber", 4.0)
            };
            zone_value(&last, PEAK, "/eu") == Some(4.0)
                && zone_value(&last, PEAK, own.0) == Some(own.1)
        })
    });
    assert!(spread, "{last}");
    for a in &agents {
        let m = a.get("/metrics").unwrap_or_default();
        let inside = a.zone.starts_with("/eu/");
        assert_eq!(held(a).len(), usize::from(inside), "{}", a.zone);
        // Never computed above /eu or in /us.
        assert_eq!(zone_value(&m, PEAK, "/"), None, "{}", a.zone);
        assert_eq!(zone_value(&m, PEAK, "/us"), None, "{}", a.zone);
        assert_eq!(zone_value(&m, PEAK, "/us/nyc"), None, "{}", a.zone);
        // The refused ones appear nowhere.
        assert!(!m.contains(UNSIGNED), "{}", a.zone);
    }
    let (ok, out, _) = cli(&["list", "--server", &server(0)]);
    assert!(ok);
    assert!(
        out.contains("work_items_peak_eu") && out.contains("/eu"),
        "{out}"
    );

    // A signed removal, posted to another agent of /eu, takes it away.
    let (ok, out, err) = cli(&[
        "remove",
        "--server",
        &server(0),
        "--zone",
        "/eu",
        "--key",
        good_path.to_str().unwrap(),
        "work_items_peak_eu",
    ]);
    assert!(ok, "{out} {err}");
    let removed = eventually(Duration::from_secs(30), || {
        agents.iter().take(4).all(|a| {
            last = a.get("/metrics").unwrap_or_default();
            !last.contains(PEAK) && held(a).first().is_some_and(|c| c["remove"] == json!(true))
        })
    });
    assert!(removed, "{last}");
    let _ = std::fs::remove_dir_all(&dir);
}
