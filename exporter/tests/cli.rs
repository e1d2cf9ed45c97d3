//! What scripts and new users meet on the command line: the demo's first
//! screen, and `keys` against agents that gossip in the clear.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The demo's nine agents say their one warning once, and its zone table
/// lines up: every column's cells end (numbers) or start (zone) together.
#[test]
fn the_demo_warns_once_and_its_table_lines_up() {
    let (gossip, web) = (free_ports(9), free_ports(9));
    let out = Command::new(BIN)
        .args(["demo", "--duration", "5s"])
        .args(["--gossip-port", &gossip.to_string()])
        .args(["--web-port", &web.to_string()])
        .env_remove("ASTROLABE_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let log: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("COMMANDS ARE UNSIGNED"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(log.len() <= 2, "{} log lines:\n{stderr}", log.len());
    let tables: Vec<Vec<&str>> = stdout
        .split("\n\n")
        .filter(|b| b.starts_with("ZONE"))
        .map(|b| b.lines().collect())
        .collect();
    assert!(!tables.is_empty(), "no table in\n{stdout}");
    for table in &tables {
        // A header and zones (the root, /demo and its three, once known).
        assert!((2..=6).contains(&table.len()), "{table:#?}");
        let cells = |line: &str| -> Vec<(usize, usize)> {
            let mut spans = Vec::new();
            let mut start = None;
            for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
                match (c == ' ', start) {
                    (false, None) => start = Some(i),
                    (true, Some(s)) => {
                        spans.push((s, i));
                        start = None;
                    }
                    _ => {}
                }
            }
            spans
        };
        let header = cells(table[0]);
        assert_eq!(header.len(), 6, "{}", table[0]);
        for row in &table[1..] {
            let spans = cells(row);
            assert_eq!(spans.len(), 6, "{row}");
            assert_eq!(
                spans[0].0,
                header[0].0,
                "zone column:\n{}",
                table.join("\n")
            );
            for (i, (span, head)) in spans.iter().zip(&header).enumerate().skip(1) {
                assert_eq!(span.1, head.1, "column {i}:\n{}", table.join("\n"));
            }
        }
    }
}

/// `keys list` and `keys install` against an agent without a keyring say
/// so, instead of an HTTP status, and exit non-zero.
#[test]
fn keys_against_an_agent_without_a_keyring_say_so() {
    let agent = Agent::builder("/k/a").arg("--no-collector.host").spawn();
    assert!(eventually(Duration::from_secs(10), || agent
        .get("/metrics")
        .is_some()));
    let server = agent.url();
    let said = format!(
        "{server}: this agent has no gossip keyring (started without --gossip.key/--gossip.keyring-file)"
    );
    let list = run_cli(&["keys", "list", "--server", &server], &[]);
    assert!(!list.ok);
    assert_eq!(list.stdout.trim(), said);
    assert_eq!(
        list.stderr.trim(),
        "astrolabe: 1 of 1 agents have no gossip keyring"
    );
    let key = String::from_utf8(run_ok(&["keys", "generate"])).unwrap();
    let key = key.trim();
    let install = run_cli(
        &["keys", "install", key, "--server", &server],
        &[("ASTROLABE_GOSSIP_KEY", key)],
    );
    assert!(!install.ok);
    assert!(!install.stdout.contains("HTTP 404"), "{}", install.stdout);
    assert!(
        install.stdout.contains("this agent has no gossip keyring"),
        "{}",
        install.stdout
    );
    // The API says it too, for curl.
    let (status, body) = agent.get_with("/api/v1/keys", &[]).unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("no gossip keyring"), "{body}");
}

/// A bad aggregate stops the agent with one line that says which
/// aggregate once, not `aggregate 1: ...: aggregate 1: ...`.
#[test]
fn a_bad_aggregate_is_reported_once() {
    let (gossip, web) = (free_port(), free_port());
    let ran = run_cli(
        &[
            "agent",
            "--zone",
            "/b/a",
            "--no-collector.host",
            "--gossip.listen-address",
            &format!("127.0.0.1:{gossip}"),
            "--web.listen-address",
            &format!("127.0.0.1:{web}"),
            "--aggregate",
            "SELECT count(*) AS fine",
            "--aggregate",
            "SELECT nonsense(",
        ],
        &[],
    );
    let stderr = ran.stderr;
    assert!(!ran.ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(stderr.matches("aggregate 2:").count(), 1, "{stderr}");
    assert!(stderr.starts_with("astrolabe: aggregate 2: "), "{stderr}");
}

/// `max(my-attr.x)` reads `my` and `x` (SQL's `my - attr.x`), which no
/// row has: accepted, and warned about once each after the first
/// collection, naming the aggregate, the attribute and the name meant. An
/// attribute only a sibling has is no cause. A certificate over an absent
/// attribute is warned about when installed.
#[test]
fn aggregates_over_absent_attributes_are_warned_about_once() {
    let dir = temp_dir("cli-absent");
    std::fs::create_dir_all(&dir).unwrap();
    let operator = dir.join("operator.key");
    let public = generate_operator_key(&operator);
    let sibling = Agent::builder("/w/b")
        .dir(&dir.join("b"))
        .args(["--no-collector.host", "--attribute", "sibling_only=3"])
        .spawn();
    let mut agent = Agent::builder("/w/a")
        .dir(&dir.join("a"))
        .seed(sibling.gossip)
        .args(["--no-collector.host", "--attribute", "my-attr.x=5"])
        .args(["--aggregate", "SELECT max(my-attr.x) AS attr_max"])
        .args(["--aggregate", r#"SELECT max("my-attr.x") AS attr_quoted"#])
        .args(["--aggregate", "SELECT max(sibling_only) AS sibling_max"])
        .args(["--security.trusted-key", &public])
        .spawn();
    let web = agent.web;
    let served = eventually(Duration::from_secs(15), || {
        http_get(web, "/metrics").is_some_and(|m| {
            m.contains("astrolabe_zone_attr_quoted{zone_path=\"/\"} 5")
                && m.contains("astrolabe_zone_sibling_max{zone_path=\"/\"} 3")
        })
    });
    // Many collections later (one per 200 ms round), still one warning each.
    std::thread::sleep(Duration::from_millis(1500));
    let install = run_cli(
        &[
            "aggregate",
            "install",
            "--server",
            &agent.url(),
            "--zone",
            "/w",
            "--key",
            operator.to_str().unwrap(),
            "SELECT sum(nothere) AS nothere_sum",
        ],
        &[],
    );
    let warned_cert = eventually(Duration::from_secs(10), || {
        agent.log().contains("nothere_sum")
    });
    std::thread::sleep(Duration::from_millis(600));
    agent.kill();
    let log = agent.log();
    assert!(served, "{log}");
    assert!(install.ok, "{}", install.stderr);
    let about = |attribute: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("reads attribute \"{attribute}\"")))
            .collect::<Vec<_>>()
    };
    for attribute in ["my", "x"] {
        let lines = about(attribute);
        assert_eq!(lines.len(), 1, "{attribute}:\n{log}");
        assert!(lines[0].contains("aggregate attr_max"), "{}", lines[0]);
        assert!(lines[0].contains("\"my-attr.x\""), "{}", lines[0]);
    }
    assert!(warned_cert, "{log}");
    let lines = about("nothere");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("certificate nothere_sum in /w"),
        "{}",
        lines[0]
    );
    assert!(!log.contains("attr_quoted"), "{log}");
    assert!(!log.contains("sibling_only"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}
