//! /metrics as Prometheus users check it: promtool, OpenMetrics, gzip, a
//! real Prometheus server scraping one agent; and hostile or bad input.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const AGGREGATE: &str = "SELECT sum(work_items) AS work_summed, max(work_items) AS work_maximum";

fn cluster(n: usize, name: &str) -> (Vec<Agent>, std::path::PathBuf) {
    let dir = temp_dir(name);
    let mut agents: Vec<Agent> = Vec::new();
    let mut seeds = Vec::new();
    for i in 0..n {
        let d = dir.join(format!("a{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("w.prom"), format!("work_items {}\n", i + 1)).unwrap();
        let zone = format!("/z{}/h{i}", i % 2);
        let a = Agent::spawn(&zone, &seeds, &d, &["--aggregate", AGGREGATE]);
        if seeds.is_empty() {
            seeds.push(a.gossip);
        }
        agents.push(a);
    }
    let want = n as f64;
    let sum = (n * (n + 1) / 2) as f64;
    let ok = eventually(Duration::from_secs(30), || {
        agents.iter().all(|a| {
            a.get("/metrics").is_some_and(|m| {
                zone_value(&m, "astrolabe_zone_members", "/") == Some(want)
                    && zone_value(&m, "astrolabe_zone_work_summed", "/") == Some(sum)
            })
        })
    });
    assert!(ok, "cluster of {n} did not converge");
    (agents, dir)
}

/// promtool's lint, less the camelCase warning for node_exporter's own
/// meminfo names (node_memory_MemAvailable_bytes), which node_exporter
/// itself triggers and which dashboards depend on.
fn promtool_problems(text: &str) -> Vec<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed; .ci/run installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    all.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(l.starts_with("node_memory_") && l.contains("camelCase")))
        .map(String::from)
        .collect()
}

#[test]
fn metrics_pass_promtool_and_negotiate_openmetrics_and_gzip() {
    let (agents, dir) = cluster(3, "expo");
    let text = agents[0].get("/metrics").unwrap();
    for needle in [
        "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}",
        "node_load1 ",
        "node_memory_MemAvailable_bytes ",
        "astrolabe_zone_reporting{zone_path=\"/\"} 2",
        "astrolabe_zone_age_seconds{zone_path=\"/z1\"}",
        "astrolabe_collector_success{collector=\"textfile\"} 1",
        "astrolabe_zone_work_summed{zone_path=\"/\"} 6",
        "astrolabe_zone_cpu_utilization_p95{zone_path=\"/\",quantile=\"0.95\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let problems = promtool_problems(&text);
    assert!(problems.is_empty(), "promtool: {problems:?}");

    let (status, om) = http_get_with(
        agents[0].web,
        "/metrics",
        &["Accept: application/openmetrics-text; version=1.0.0"],
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"));
    assert!(
        om.contains("# TYPE astrolabe_gossip_rounds counter\nastrolabe_gossip_rounds_total "),
        "{om}"
    );

    let mut s = std::net::TcpStream::connect(("127.0.0.1", agents[0].web)).unwrap();
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap();
    let head = String::from_utf8_lossy(&raw[..raw.len().min(400)]).to_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");

    let zones = agents[1].get("/api/v1/zones").unwrap();
    let json: serde_json::Value = serde_json::from_str(&zones).unwrap();
    assert!(json["zones"]
        .as_array()
        .unwrap()
        .iter()
        .any(|z| z["zone_path"] == "/" && z["members"] == 3));
    let page = agents[2].get("/").unwrap();
    assert!(page.contains("<table id=\"zones\">") && page.contains("/z0"));
    assert!(agents[2].get("/-/healthy").is_some());
    assert!(agents[2].get("/-/ready").is_some());
    drop(agents);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn garbage_datagrams_are_dropped_counted_and_harmless() {
    let (agents, dir) = cluster(2, "garbage");
    let target = ("127.0.0.1", agents[0].gossip);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1500) as usize;
        let mut buf: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8).collect();
        match i % 4 {
            0 => buf.truncate(0),
            1 if !buf.is_empty() => buf[0] = 1, // right version, garbage body
            2 => buf = vec![1; 3000],           // oversized
            _ => {}
        }
        let _ = sock.send_to(&buf, target);
    }
    std::thread::sleep(Duration::from_millis(500));
    let m = agents[0].get("/metrics").expect("still serving");
    let dropped: f64 = m
        .lines()
        .filter(|l| l.starts_with("astrolabe_gossip_dropped_datagrams_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 300.0, "dropped {dropped}\n{m}");
    assert_eq!(zone_value(&m, "astrolabe_zone_members", "/"), Some(2.0));
    assert_eq!(zone_value(&m, "astrolabe_zone_work_summed", "/"), Some(3.0));
    drop(agents);
    let _ = std::fs::remove_dir_all(dir);
}

fn run_fails(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    err
}

#[test]
fn bad_configuration_stops_start_up_with_one_clear_line() {
    let e = run_fails(&[
        "agent",
        "--zone",
        "/eu//fra",
        "--web.listen-address",
        "127.0.0.1:0",
        "--gossip.listen-address",
        "127.0.0.1:0",
    ]);
    assert!(e.contains("--zone") && e.contains("empty segment"), "{e}");
    let e = run_fails(&[
        "agent",
        "--zone",
        "/a/b",
        "--aggregate",
        "SELECT medain(x) AS m",
        "--web.listen-address",
        "127.0.0.1:0",
        "--gossip.listen-address",
        "127.0.0.1:0",
    ]);
    assert!(
        e.contains("unknown function") && e.contains("line 1, column 8"),
        "{e}"
    );
    let e = run_fails(&[
        "agent",
        "--zone",
        "/a/b",
        "--gossip.seed",
        "no-such-host.invalid:7946",
        "--web.listen-address",
        "127.0.0.1:0",
        "--gossip.listen-address",
        "127.0.0.1:0",
    ]);
    assert!(
        e.contains("seed") && e.contains("no-such-host.invalid"),
        "{e}"
    );
    let e = run_fails(&[
        "agent",
        "--zone",
        "/a/b",
        "--attribute",
        "novalue",
        "--web.listen-address",
        "127.0.0.1:0",
        "--gossip.listen-address",
        "127.0.0.1:0",
    ]);
    assert!(e.contains("name=value"), "{e}");
    let e = run_fails(&["agent", "--zone", "/a/b", "--gossip.interval", "1d"]);
    assert!(e.contains("unknown unit"), "{e}");
}

#[test]
fn a_real_prometheus_scraping_one_agent_sees_the_whole_cluster() {
    let (agents, dir) = cluster(4, "prom");
    // The shipped configuration, pointed at this cluster's first agent and
    // scraping every second, with the shipped rules beside it.
    let dashboards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let shipped = std::fs::read_to_string(dashboards.join("prometheus.yml")).unwrap();
    let target = format!("127.0.0.1:{}", agents[0].web);
    let config_text = shipped
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("'agent-eu.example.internal:9464'", &format!("'{target}'"))
        .replace("          - 'agent-us.example.internal:9464'\n", "");
    assert!(config_text.contains(&target) && config_text.contains("honor_labels: true"));
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, config_text).unwrap();
    std::fs::copy(
        dashboards.join("astrolabe-rules.yml"),
        dir.join("astrolabe-rules.yml"),
    )
    .unwrap();
    let prom = Prometheus::start(&config, &dir);
    let mut last = None;
    let ok = eventually(Duration::from_secs(40), || {
        let r = prom.query("astrolabe_zone_work_summed");
        let found = r
            .as_ref()
            .and_then(|r| r["data"]["result"].as_array().cloned())
            .unwrap_or_default();
        let root = found.iter().find(|s| s["metric"]["zone_path"] == "/");
        let ok = root.is_some_and(|s| s["value"][1] == "10")
            && found.iter().any(|s| s["metric"]["zone_path"] == "/z1");
        last = r;
        ok
    });
    drop(prom);
    assert!(
        ok,
        "PromQL did not return the cluster's aggregates: {last:?}"
    );
    drop(agents);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unreachable_seed_is_reported_loudly_and_in_a_metric() {
    let web = free_port();
    let mut child = Command::new(BIN)
        .args([
            "agent",
            "--zone",
            "/lonely/h1",
            "--no-collector.host",
            "--gossip.interval",
            "100ms",
        ])
        .args([
            "--gossip.listen-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--web.listen-address", &format!("127.0.0.1:{web}")])
        .args(["--gossip.seed", &format!("127.0.0.1:{}", free_port())])
        .env("ASTROLABE_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let known = eventually(Duration::from_secs(5), || {
        http_get(web, "/metrics").is_some_and(|m| m.contains("astrolabe_gossip_known_zones 0"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(known, "known_zones metric missing");
    assert!(err.contains("no seed has answered"), "{err}");
}

#[test]
fn with_no_flags_the_agent_runs_a_single_host_agent() {
    // Default ports may be taken on a developer's machine; the environment
    // moves them without changing anything else.
    let web = free_port();
    let mut child = Command::new(BIN)
        .arg("agent")
        .env("ASTROLABE_WEB_LISTEN_ADDRESS", format!("127.0.0.1:{web}"))
        .env(
            "ASTROLABE_GOSSIP_LISTEN_ADDRESS",
            format!("0.0.0.0:{}", free_port()),
        )
        .env("ASTROLABE_LOG", "warn")
        .spawn()
        .unwrap();
    let ok = eventually(Duration::from_secs(10), || {
        http_get(web, "/api/v1/zones").is_some_and(|z| z.contains("\"agent_zone\":\"/local/"))
            && http_get(web, "/metrics").is_some_and(|m| m.contains("node_load1 "))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "a flagless agent did not come up as /local/<hostname>");
}
