//! The alert and recording rules in dashboards/: promtool accepts them and
//! their unit tests (every alert firing and not firing) pass, and the series
//! they read are the ones an agent serves.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn dashboards() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn promtool(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus) must be installed; .ci/run installs it");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let text = promtool(&["check", "rules", "astrolabe-rules.yml"], &dashboards());
    assert!(text.contains("SUCCESS"), "{text}");
    let text = promtool(
        &["test", "rules", "astrolabe-rules.test.yml"],
        &dashboards().join("tests"),
    );
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_has_a_firing_test_and_reads_served_metrics() {
    let rules = std::fs::read_to_string(dashboards().join("astrolabe-rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(dashboards().join("tests/astrolabe-rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 7);
    for a in &alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - exp_labels"
            )),
            "{a} has no firing test"
        );
        assert!(
            tests.contains(&format!("alertname: {a}\n        exp_alerts: []")),
            "{a} has no not-firing test"
        );
    }
    // The metric names the rules read must be ones the agent serves.
    let agent = common::Agent::builder("/rules/h1").spawn();
    let ok = common::eventually(std::time::Duration::from_secs(10), || {
        agent
            .get("/metrics")
            .is_some_and(|m| m.contains("astrolabe_zone_cpu_utilization_avg"))
    });
    let metrics = agent.get("/metrics").unwrap_or_default();
    assert!(ok, "{metrics}");
    for name in [
        "astrolabe_zone_members",
        "astrolabe_zone_reporting",
        "astrolabe_zone_age_seconds",
        "astrolabe_zone_cpu_utilization_avg",
        "astrolabe_zone_memory_used_ratio_max",
        "astrolabe_gossip_dropped_datagrams_total",
        "astrolabe_agent_info",
        "astrolabe_gossip_known_zones",
    ] {
        assert!(rules.contains(name), "{name} not used by the rules");
        assert!(metrics.contains(&format!("\n{name}")), "{name} not served");
    }
}
