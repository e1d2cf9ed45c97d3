//! On-demand queries and commands over twelve real agent processes on
//! loopback: exact answers with coverage, the machine's real processes,
//! actions that run exactly where configured, and two agents killed just
//! before a long query reported missing before its deadline.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn zones() -> Vec<String> {
    let mut z = Vec::new();
    for (i, parent) in ["/eu/fra", "/eu/ber", "/us/nyc"].iter().enumerate() {
        for k in 0..4 {
            z.push(format!("{parent}/h{}", i * 4 + k));
        }
    }
    z
}

#[test]
fn queries_and_commands_over_twelve_agents() {
    let mut agents = Cluster::builder("overlay")
        .zones(zones())
        .textfile(|i| format!("work_items {}\n", i + 1))
        .each(|i, agent| {
            // The action is configured on h0, h1 (in /eu) and h8 (in /us) only.
            let action = format!("touch-it=touch {}", agent.dir.join("touched").display());
            let agent = if [0, 1, 8].contains(&i) {
                agent.args(["--overlay.action", action.as_str()])
            } else {
                agent
            };
            // Only /eu/fra's four hosts have a `tier` column.
            if i < 4 {
                agent.args(["--attribute", "tier=gold"])
            } else {
                agent
            }
        })
        .spawn();
    // Everyone counts twelve members at the root.
    let converged = roots_count(&agents, 12.0, Duration::from_secs(60));
    assert!(converged, "the cluster did not converge");
    let web = agents[0].web;
    // Query metrics exist before any query, at zero.
    let m = agents[0].get("/metrics").unwrap_or_default();
    assert_eq!(
        sample(
            &m,
            r#"astrolabe_query_duration_seconds_count{kind="query"}"#
        ),
        Some(0.0),
        "{m}"
    );

    // An aggregate over the host table equals the files' values.
    let (status, v) = query(
        web,
        "/",
        "SELECT count(*) AS n, sum(work_items) AS s, max(work_items) AS hi FROM host",
        5000,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["columns"], json!(["n", "s", "hi"]));
    assert_eq!(v["rows"], json!([[12, 78.0, 12.0]]), "{v}");
    assert_eq!(v["coverage"]["answered"], json!(12));
    assert_eq!(v["coverage"]["expected"], json!(12));
    assert_eq!(v["coverage"]["missing_zones"], json!([]));
    assert_eq!(v["coverage"]["refused_zones"], json!([]));
    // A zone below, asked from an agent outside it.
    let (status, v) = query(
        web,
        "/us",
        "SELECT host, work_items FROM host WHERE work_items > 10 ORDER BY work_items DESC",
        5000,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"], json!([["h11", 12.0], ["h10", 11.0]]), "{v}");
    assert_eq!(v["coverage"]["answered"], json!(4));
    // Both queries, answered here as the entry point, are in its metrics.
    let mut m = String::new();
    let counted = eventually(Duration::from_secs(10), || {
        m = agents[0].get("/metrics").unwrap_or_default();
        sample(
            &m,
            r#"astrolabe_query_duration_seconds_count{kind="query"}"#,
        ) == Some(2.0)
    });
    assert!(counted, "{m}");
    assert_eq!(
        sample(
            &m,
            r#"astrolabe_query_duration_seconds_bucket{kind="query",le="+Inf"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"astrolabe_queries_total{kind="query",outcome="complete"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, r#"astrolabe_query_coverage_ratio{kind="query"}"#),
        Some(1.0)
    );
    assert!(
        sample(&m, r#"astrolabe_query_duration_seconds_sum{kind="query"}"#)
            .is_some_and(|s| s > 0.0)
    );
    // Another agent was not the entry point of either.
    let other = agents[5].get("/metrics").unwrap_or_default();
    assert_eq!(
        sample(
            &other,
            r#"astrolabe_query_duration_seconds_count{kind="query"}"#
        ),
        Some(0.0)
    );

    // The process table is the machine's: every agent sees the twelve.
    let pids: BTreeSet<i64> = agents
        .iter()
        .map(|a| a.child.as_ref().unwrap().id() as i64)
        .collect();
    let (status, v) = query(
        web,
        "/",
        "SELECT host, pid FROM process WHERE name = 'astrolabe' ORDER BY pid LIMIT 1000",
        5000,
    );
    assert_eq!(status, 200, "{v}");
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for row in v["rows"].as_array().unwrap() {
        *seen.entry(row[1].as_i64().unwrap()).or_default() += 1;
    }
    for pid in &pids {
        assert_eq!(seen.get(pid), Some(&12), "pid {pid} in {seen:?}");
    }
    let (_, v) = query(
        web,
        "/eu/fra",
        "SELECT name, count(*) AS n FROM process WHERE name = 'astrolabe' GROUP BY name",
        5000,
    );
    assert!(v["rows"][0][1].as_i64().unwrap() >= 4 * 12, "{v}");

    // Bad SQL: 400 with the parser's message; an unknown zone: 404.
    let (status, v) = query(web, "/", "SELEC count(*) FROM host", 2000);
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("Expected"), "{v}");
    let (status, _) = query(web, "/asia", "SELECT count(*) FROM host", 2000);
    assert_eq!(status, 404);
    let (status, _) = query(web, "/us/nowhere", "SELECT count(*) FROM host", 2000);
    assert_eq!(status, 404);

    // Streaming: NDJSON lines, the last one done.
    let (status, body) = http_post_json(
        web,
        "/api/v1/query",
        &json!({"zone": "/", "sql": "SELECT count(*) FROM host", "stream": true}),
    );
    assert_eq!(status, 200);
    let lines: Vec<Value> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect();
    assert!(!lines.is_empty(), "{body}");
    assert_eq!(lines.last().unwrap()["done"], json!(true), "{body}");

    // A column no host has is an error, not twelve rows of NULL; one that
    // some hosts lack is answered with a warning that counts them.
    let (status, v) = query(web, "/", "SELECT host, nosuchcol FROM host", 5000);
    assert_eq!(status, 400, "{v}");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("nosuchcol") && e.contains("12 answering hosts"),
        "{v}"
    );
    let (status, v) = query(
        web,
        "/",
        "SELECT host FROM host WHERE tier = 'gold' ORDER BY host",
        5000,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"], json!([["h0"], ["h1"], ["h2"], ["h3"]]), "{v}");
    assert_eq!(
        v["warnings"],
        json!(["column tier: 8 of 12 hosts lack it"]),
        "{v}"
    );
    let (_, v) = query(web, "/eu/fra", "SELECT host, tier FROM host", 5000);
    assert_eq!(v["warnings"], json!([]), "{v}");
    // The process table's columns are fixed: an unknown one is refused at once.
    let (status, v) = query(web, "/", "SELECT nosuchcol FROM process", 5000);
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rss_bytes"),
        "{v}"
    );
    // `query --columns` lists both tables' columns, with how many hosts have each.
    let server = format!("http://127.0.0.1:{web}");
    let columns = run_cli(&["query", "--columns", "--server", &server], &[]);
    let stdout = &columns.stdout;
    assert!(columns.ok, "{stdout} {}", columns.stderr);
    let listed: BTreeSet<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for row in [
        ["table_name", "column_name", "data_type", "hosts"],
        ["host", "tier", "string", "4"],
        ["host", "work_items", "float", "12"],
        ["host", "zone", "string", "12"],
        ["process", "rss_bytes", "int", "12"],
        ["process", "cmdline", "string", "12"],
    ] {
        assert!(listed.contains(row.as_slice()), "{row:?} not in\n{stdout}");
    }
    // The CLI shows the warning on stderr, below the table on stdout.
    let sql = "SELECT count(*) AS n FROM host WHERE tier = 'gold'";
    let warned = run_cli(&["query", "--server", &server, sql], &[]);
    assert!(warned.ok, "{}", warned.stderr);
    assert_eq!(
        warned.stderr.trim(),
        "warning: column tier: 8 of 12 hosts lack it"
    );

    // The action runs on exactly the hosts of /eu that configured it.
    let (status, body) = http_post_json(
        web,
        "/api/v1/command",
        &json!({"zone": "/eu", "command": "touch-it", "timeout_ms": 5000}),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["ok"].clone(),
            v["failed"].clone(),
            v["not_configured"].clone()
        ),
        (json!(2), json!(0), json!(6)),
        "{v}"
    );
    for i in 0..12 {
        let touched = agents[i].dir.join("touched").exists();
        assert_eq!(touched, i == 0 || i == 1, "agent {i}");
    }
    // An action nobody configured runs nowhere.
    let (_, body) = http_post_json(
        web,
        "/api/v1/command",
        &json!({"zone": "/", "command": "rm-rf", "timeout_ms": 5000}),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["not_configured"].clone()),
        (json!(0), json!(12)),
        "{v}"
    );

    // The CLI prints an aligned table and a coverage line.
    let server = agents[0].url();
    let sql = "SELECT host, work_items FROM host ORDER BY work_items LIMIT 3";
    let out = run_cli(&["query", "--server", &server, "--zone", "/eu", sql], &[]);
    let stdout = &out.stdout;
    assert!(out.ok, "{stdout} {}", out.stderr);
    assert!(
        stdout.starts_with("host  work_items\nh0             1\n"),
        "{stdout}"
    );
    assert!(stdout.contains("coverage: 8/8 hosts"), "{stdout}");
    let out = run_cli(&["query", "--server", &server, "SELECT FROM"], &[]);
    let stderr = &out.stderr;
    assert!(!out.ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP 400"), "{stderr}");
    let touched = run_cli(
        &["command", "--server", &server, "--zone", "/us", "touch-it"],
        &[],
    );
    assert!(
        touched
            .stdout
            .contains("ok: 1, failed: 0, not configured: 3"),
        "{}",
        touched.stdout
    );
    // Scripts can tell: three hosts had no such action, so it failed.
    assert!(!touched.ok, "{}", touched.stdout);
    assert_eq!(
        touched.stderr.trim(),
        "astrolabe: touch-it did not run on 3 of 4 hosts (failed 0, not configured 3, refused 0)"
    );

    // Kill two; their rows still look alive. A long query comes back
    // before its deadline, naming them missing.
    agents[5].signal("-KILL");
    agents[10].signal("-KILL");
    let started = Instant::now();
    let (status, v) = query(
        web,
        "/",
        "SELECT count(*) AS n, sum(work_items) AS s FROM host",
        8000,
    );
    let took = started.elapsed();
    assert_eq!(status, 200, "{v}");
    assert!(took < Duration::from_millis(8000), "{took:?}");
    assert_eq!(v["rows"], json!([[10, 78.0 - 6.0 - 11.0]]), "{v}");
    assert_eq!(v["coverage"]["answered"], json!(10));
    assert_eq!(v["coverage"]["expected"], json!(12));
    assert_eq!(
        v["coverage"]["missing_zones"],
        json!(["/eu/ber/h5", "/us/nyc/h10"]),
        "{v}"
    );
    assert!(v["elapsed_ms"].as_u64().unwrap() < 8000);
}

/// The agent's log so far; every line must be one JSON object.
fn log_lines(agent: &Agent) -> Vec<Value> {
    agent
        .log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON log line ({e}): {l}", agent.zone))
        })
        .collect()
}

fn is_line(line: &Value, level: &str, message: &str) -> bool {
    line["level"] == json!(level)
        && line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(message))
}

fn count_lines(agent: &Agent, level: &str, message: &str) -> usize {
    log_lines(agent)
        .iter()
        .filter(|l| is_line(l, level, message))
        .count()
}

/// `astrolabe command --zone / ARGS...` through the CLI, which must exit
/// 0 exactly when every host ran it (`ran`); its stdout.
fn command_cli(web: u16, args: &[&str], ran: bool) -> String {
    let server = format!("http://127.0.0.1:{web}");
    let mut argv = vec!["command", "--server", &server, "--zone", "/"];
    argv.extend(args);
    let out = run_cli(&argv, &[]);
    assert_eq!(out.ok, ran, "{args:?}: {} {}", out.stdout, out.stderr);
    out.stdout
}

/// A datagram no agent can decode: dropped, with a debug line.
fn send_garbage(agent: &Agent) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"not a datagram of ours", ("127.0.0.1", agent.gossip))
        .unwrap();
}

fn work_items(web: u16) -> Value {
    let (status, v) = query(
        web,
        "/",
        "SELECT host, work_items FROM host ORDER BY host",
        5000,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["coverage"]["answered"], json!(4), "{v}");
    v["rows"].clone()
}

#[test]
fn built_in_commands_collect_and_set_log_level_on_every_host() {
    // JSON log lines (stderr), collectors that sample only once an hour
    // unless told to.
    let agents = Cluster::builder("overlay-builtins")
        .zones(["/a/h0", "/a/h1", "/b/h2", "/b/h3"])
        .textfile(|i| format!("work_items {}\n", i + 1))
        .args(["--collector.interval", "1h"])
        .args(["--no-collector.host", "--log.format", "json"])
        .env("ASTROLABE_LOG", "info")
        .spawn();
    let converged = roots_count(&agents, 4.0, Duration::from_secs(60));
    assert!(converged, "the cluster did not converge");
    let web = agents[0].web;
    let before = json!([["h0", 1.0], ["h1", 2.0], ["h2", 3.0], ["h3", 4.0]]);
    assert_eq!(work_items(web), before);

    // collect: the files change, but the collectors sample once an hour,
    // so the hosts still answer the old values...
    for (i, a) in agents.iter().enumerate() {
        std::fs::write(
            a.dir.join("w.prom"),
            format!("work_items {}\n", 10 * (i + 1)),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(work_items(web), before);
    // ...until `collect`, after which the very next query sees the new ones.
    let out = command_cli(web, &["collect"], true);
    assert!(out.contains("ok: 4, failed: 0, not configured: 0"), "{out}");
    assert_eq!(
        work_items(web),
        json!([["h0", 10.0], ["h1", 20.0], ["h2", 30.0], ["h3", 40.0]])
    );
    // And every host logged that it ran it.
    for a in &agents {
        assert_eq!(
            count_lines(a, "WARN", "collect requested over the overlay"),
            1,
            "{}",
            a.zone
        );
    }

    // set-log-level with the JSON log format. At info, a dropped datagram
    // leaves no line; an unconfigured command leaves an info line.
    for a in &agents {
        send_garbage(a);
    }
    let out = command_cli(web, &["nothing-here"], false);
    assert!(out.contains("ok: 0, failed: 0, not configured: 4"), "{out}");
    for a in &agents {
        assert_eq!(count_lines(a, "INFO", "command not configured here"), 1);
    }
    let out = command_cli(web, &["set-log-level", "debug"], true);
    assert!(out.contains("ok: 4, failed: 0, not configured: 0"), "{out}");
    for a in &agents {
        let lines = log_lines(a);
        let asked = lines
            .iter()
            .position(|l| is_line(l, "WARN", "set-log-level requested"))
            .unwrap_or_else(|| panic!("{}: set-log-level not logged", a.zone));
        assert_eq!(lines[asked]["fields"]["level"], json!("debug"));
        // Nothing at debug before the command (the garbage was sent then).
        assert!(
            !lines[..asked].iter().any(|l| l["level"] == json!("DEBUG")),
            "{}: debug line before set-log-level debug",
            a.zone
        );
    }
    // At debug, a dropped datagram is logged, on every host.
    for a in &agents {
        send_garbage(a);
    }
    let logged = eventually(Duration::from_secs(10), || {
        agents
            .iter()
            .all(|a| count_lines(a, "DEBUG", "datagram dropped") >= 1)
    });
    assert!(logged, "no debug line after set-log-level debug");
    // A word that is no level, or no argument, is refused on every host
    // with the reason, and the level stays debug.
    let out = command_cli(web, &["set-log-level", "loud"], false);
    assert!(out.contains("ok: 0, failed: 4"), "{out}");
    assert!(out.contains("\"loud\" is not a log level"), "{out}");
    let out = command_cli(web, &["set-log-level"], false);
    assert!(out.contains("ok: 0, failed: 4"), "{out}");
    assert!(out.contains("takes one level"), "{out}");
    let before: Vec<usize> = agents
        .iter()
        .map(|a| count_lines(a, "DEBUG", "datagram dropped"))
        .collect();
    for a in &agents {
        send_garbage(a);
    }
    let still_debug = eventually(Duration::from_secs(10), || {
        agents
            .iter()
            .zip(&before)
            .all(|(a, n)| count_lines(a, "DEBUG", "datagram dropped") > *n)
    });
    assert!(still_debug, "a refused level changed the log level");

    // Back to warn: info lines stop (the unconfigured command runs again,
    // its info line does not appear), the command itself is still logged.
    let out = command_cli(web, &["set-log-level", "warn"], true);
    assert!(out.contains("ok: 4, failed: 0, not configured: 0"), "{out}");
    let out = command_cli(web, &["nothing-here"], false);
    assert!(out.contains("not configured: 4"), "{out}");
    for a in &agents {
        assert_eq!(count_lines(a, "WARN", "set-log-level requested"), 4);
        assert_eq!(
            count_lines(a, "INFO", "command not configured here"),
            1,
            "{}: info line after set-log-level warn",
            a.zone
        );
    }
    // A bad level is refused on every host and changes nothing.
    let out = command_cli(web, &["set-log-level", "[not a filter"], false);
    assert!(out.contains("ok: 0, failed: 4"), "{out}");
}
