//! /metrics as Prometheus users check it: promtool, OpenMetrics, gzip, a
//! real Prometheus server scraping one agent; and hostile or bad input.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const AGGREGATE: &str = "SELECT sum(work_items) AS work_summed, max(work_items) AS work_maximum";

fn cluster(n: usize, name: &str) -> Cluster {
    let agents = Cluster::builder(name)
        .zones((0..n).map(|i| format!("/z{}/h{i}", i % 2)))
        .textfile(|i| format!("work_items {}\n", i + 1))
        .args(["--aggregate", AGGREGATE])
        .spawn();
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
    agents
}

/// promtool's lint, less the camelCase warning for node_exporter's own
/// meminfo names (node_memory_MemAvailable_bytes), which node_exporter
/// itself triggers and which dashboards depend on.
///
/// Without promtool (outside CI), no problems, and the check says it skipped.
fn promtool_problems(text: &str) -> Vec<String> {
    if !require(
        "promtool check metrics",
        "promtool (Debian package prometheus)",
        command_works("promtool", &["--version"]),
    ) {
        return Vec::new();
    }
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
    let agents = cluster(3, "expo");
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
}

#[test]
fn garbage_datagrams_are_dropped_counted_and_harmless() {
    let agents = cluster(2, "garbage");
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
}

fn run_fails(args: &[&str]) -> String {
    let out = run_cli(args, &[]);
    assert!(!out.ok, "{args:?} should fail");
    let err = out.stderr.trim().to_string();
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
    let agents = cluster(4, "prom");
    let dir = &agents.dir;
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
    let prom = Prometheus::start(&config, dir);
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
}

#[test]
fn an_unreachable_seed_is_reported_loudly_and_in_a_metric() {
    let mut agent = Agent::builder("/lonely/h1")
        .interval(Some("100ms"))
        .seed(free_port())
        .arg("--no-collector.host")
        .unready()
        .start();
    let known = eventually(Duration::from_secs(5), || {
        agent
            .metrics()
            .is_some_and(|m| m.contains("astrolabe_gossip_known_zones 0"))
    });
    std::thread::sleep(Duration::from_millis(1500));
    agent.kill();
    let err = agent.log();
    assert!(known, "known_zones metric missing");
    assert!(err.contains("no seed has answered"), "{err}");
}

#[test]
fn with_no_flags_the_agent_runs_a_single_host_agent() {
    // Default ports may be taken on a developer's machine; the environment
    // moves them without changing anything else.
    let launch = Agent::builder_without_zone().bare();
    let (web, gossip) = (launch.web, launch.gossip);
    let mut agent = launch
        .env("ASTROLABE_WEB_LISTEN_ADDRESS", format!("127.0.0.1:{web}"))
        .env(
            "ASTROLABE_GOSSIP_LISTEN_ADDRESS",
            format!("0.0.0.0:{gossip}"),
        )
        .start();
    let ok = eventually(Duration::from_secs(10), || {
        agent
            .get("/api/v1/zones")
            .is_some_and(|z| z.contains("\"agent_zone\":\"/local/"))
            && agent.metrics().is_some_and(|m| m.contains("node_load1 "))
    });
    agent.kill();
    assert!(ok, "a flagless agent did not come up as /local/<hostname>");
}

/// A textfile with what strict consumers trip on: a counter not named
/// `*_total`, escapes in HELP and label values, a summary, a histogram.
const STRICT_TEXTFILE: &str = r#"# HELP jobs_done Jobs done.
# TYPE jobs_done counter
jobs_done 5
# HELP escaped_help Backslash \\ and newline \n and a "quote" in it.
# TYPE escaped_help gauge
escaped_help{path="C:\\dir",text="line1\nline2",quoted="say \"hi\""} 1
# HELP rpc_seconds RPC latency.
# TYPE rpc_seconds summary
rpc_seconds{service="a",quantile="0.5"} 0.05
rpc_seconds{service="a",quantile="0.99"} 0.2
rpc_seconds_sum{service="a"} 12.5
rpc_seconds_count{service="a"} 100
# TYPE request_size_bytes histogram
request_size_bytes_bucket{le="100"} 3
request_size_bytes_bucket{le="1000"} 7
request_size_bytes_bucket{le="+Inf"} 9
request_size_bytes_sum 4200
request_size_bytes_count 9
"#;

/// The HELP and label values of STRICT_TEXTFILE, unescaped.
const STRICT_HELP: &str = "Backslash \\ and newline \n and a \"quote\" in it.";
const STRICT_LABELS: [(&str, &str); 3] = [
    ("path", "C:\\dir"),
    ("text", "line1\nline2"),
    ("quoted", "say \"hi\""),
];

/// Parses an exposition with prometheus_client (`text` or `openmetrics`);
/// its families as JSON, or the parser's error.
fn prometheus_client_parse(format: &str, exposition: &str) -> Result<serde_json::Value, String> {
    const SCRIPT: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
families = [
    {"name": f.name, "type": f.type, "help": f.documentation,
     "samples": [{"name": s.name, "labels": s.labels, "value": repr(float(s.value))}
                 for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// (sample name, labels without `le`/`quantile` added back, value) of a
/// parsed family, as strings for comparison.
fn samples_of(family: &serde_json::Value) -> Vec<(String, String, f64)> {
    family["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut labels: Vec<String> = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect();
            labels.sort();
            (
                s["name"].as_str().unwrap().to_string(),
                labels.join(","),
                s["value"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn expect_samples(family: &serde_json::Value, want: &[(&str, &str, f64)]) {
    let want: Vec<(String, String, f64)> = want
        .iter()
        .map(|(n, l, v)| (n.to_string(), l.to_string(), *v))
        .collect();
    assert_eq!(samples_of(family), want, "{family}");
}

/// Both prometheus_client parsers accept the whole exposition of an agent
/// with STRICT_TEXTFILE, and give back exactly the file's HELP, label
/// values, counter, summary and histogram.
fn check_with_prometheus_client(format: &str, exposition: &str) {
    let families = prometheus_client_parse(format, exposition)
        .unwrap_or_else(|e| panic!("prometheus_client's {format} parser refused:\n{e}"));
    let families = families.as_array().unwrap();
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{format}: no family {name}"))
    };
    let help = family("escaped_help");
    assert_eq!(help["help"], STRICT_HELP, "{format}");
    let labels = &help["samples"][0]["labels"];
    for (k, v) in STRICT_LABELS {
        assert_eq!(labels[k], v, "{format}: label {k}");
    }
    let jobs = family("jobs_done");
    assert_eq!(jobs["type"], "counter", "{format}");
    expect_samples(jobs, &[("jobs_done_total", "", 5.0)]);
    let rpc = family("rpc_seconds");
    assert_eq!(rpc["type"], "summary", "{format}");
    expect_samples(
        rpc,
        &[
            ("rpc_seconds", "quantile=0.5,service=a", 0.05),
            ("rpc_seconds", "quantile=0.99,service=a", 0.2),
            ("rpc_seconds_sum", "service=a", 12.5),
            ("rpc_seconds_count", "service=a", 100.0),
        ],
    );
    let size = family("request_size_bytes");
    assert_eq!(size["type"], "histogram", "{format}");
    expect_samples(
        size,
        &[
            ("request_size_bytes_bucket", "le=100", 3.0),
            ("request_size_bytes_bucket", "le=1000", 7.0),
            ("request_size_bytes_bucket", "le=+Inf", 9.0),
            ("request_size_bytes_sum", "", 4200.0),
            ("request_size_bytes_count", "", 9.0),
        ],
    );
    expect_samples(
        family("node_textfile_scrape_error"),
        &[("node_textfile_scrape_error", "", 0.0)],
    );
}

#[test]
fn textfiles_come_out_exact_for_prometheus_client_promtool_and_prometheus() {
    let test = "textfiles_come_out_exact_for_prometheus_client_promtool_and_prometheus";
    if !require(
        test,
        "python3 with prometheus_client (pip install prometheus_client)",
        python_modules(&[
            "prometheus_client.parser",
            "prometheus_client.openmetrics.parser",
        ]),
    ) || !require(
        test,
        "prometheus (Debian package)",
        command_works("prometheus", &["--version"]),
    ) {
        return;
    }
    let dir = temp_dir("strict");
    std::fs::write(dir.join("strict.prom"), STRICT_TEXTFILE).unwrap();
    // With the host collectors and the built-in aggregates (quantile
    // summaries of zones), so the parsers see everything an agent serves.
    let agent = Agent::builder("/strict/h1").dir(&dir).spawn();
    let ready = eventually(Duration::from_secs(20), || {
        agent
            .get("/metrics")
            .is_some_and(|m| m.contains("rpc_seconds_count") && m.contains("node_load1 "))
    });
    assert!(ready, "the agent did not serve the textfile");
    let text = agent.get("/metrics").unwrap();
    let (status, om) = http_get_with(
        agent.web,
        "/metrics",
        &["Accept: application/openmetrics-text; version=1.0.0"],
    )
    .unwrap();
    assert_eq!(status, 200);
    // The text format keeps the file's counter name; OpenMetrics names
    // its sample `_total`.
    assert!(
        text.contains("# TYPE jobs_done counter\njobs_done 5\n"),
        "{text}"
    );
    assert!(
        om.contains("# TYPE jobs_done counter\njobs_done_total 5\n"),
        "{om}"
    );
    check_with_prometheus_client("text", &text);
    check_with_prometheus_client("openmetrics", &om);

    // promtool parses it (Go's parser); its only lint is the file's own
    // counter name.
    let problems: Vec<String> = promtool_problems(&text)
        .into_iter()
        .filter(|p| !p.starts_with("jobs_done counter metrics should have \"_total\" suffix"))
        .collect();
    assert!(problems.is_empty(), "promtool: {problems:?}");

    // A real Prometheus (which negotiates OpenMetrics) stores the file's
    // HELP, label values, summary and histogram as they were written.
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: strict\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            agent.web
        ),
    )
    .unwrap();
    let prom = Prometheus::start(&config, &dir.join("prom"));
    let value = |promql: &str| {
        prom.query(promql).and_then(|r| {
            r["data"]["result"][0]["value"][1]
                .as_str()
                .map(String::from)
        })
    };
    let scraped = eventually(Duration::from_secs(40), || {
        value("jobs_done_total").as_deref() == Some("5")
    });
    assert!(scraped, "Prometheus never stored jobs_done_total 5");
    assert_eq!(
        value("rpc_seconds{quantile=\"0.99\"}").as_deref(),
        Some("0.2")
    );
    assert_eq!(
        value("request_size_bytes_bucket{le=\"+Inf\"}").as_deref(),
        Some("9")
    );
    let series = prom.query("escaped_help").unwrap();
    let labels = &series["data"]["result"][0]["metric"];
    for (k, v) in STRICT_LABELS {
        assert_eq!(labels[k], v, "Prometheus label {k}: {series}");
    }
    let (_, metadata) =
        http_get_with(prom.port, "/api/v1/metadata?metric=escaped_help", &[]).unwrap();
    let metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(
        metadata["data"]["escaped_help"][0]["help"], STRICT_HELP,
        "{metadata}"
    );
    drop(prom);
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_textfile_is_reported_once_per_change_and_in_scrape_error() {
    let dir = temp_dir("badtextfile");
    std::fs::write(
        dir.join("good.prom"),
        "# TYPE lat summary\nlat{quantile=\"0.5\"} 1\nlat_sum 2\nlat_count 2\n",
    )
    .unwrap();
    let bad = dir.join("bad.prom");
    std::fs::write(&bad, "# TYPE broken counter\nbroken -1\n").unwrap();
    let agent = Agent::builder("/bad/h1")
        .dir(&dir)
        .args(["--no-collector.host", "--collector.interval", "100ms"])
        .spawn();
    let about_bad = || {
        agent
            .log()
            .lines()
            .filter(|l| l.contains("bad.prom"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let scrape_error = || {
        agent
            .get("/metrics")
            .and_then(|m| sample(&m, "node_textfile_scrape_error"))
    };
    assert!(eventually(Duration::from_secs(10), || scrape_error() == Some(1.0)));
    let m = agent.get("/metrics").unwrap();
    assert!(
        m.contains("lat_count 2\n"),
        "the good file still counts:\n{m}"
    );
    // Twenty collections later, still one line about it.
    std::thread::sleep(Duration::from_secs(2));
    let lines = about_bad();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("counter broken cannot be -1"),
        "{lines:#?}"
    );
    // A change of the file is reported again, once.
    std::fs::write(&bad, "# TYPE broken counter\nbroken -2\n").unwrap();
    assert!(eventually(Duration::from_secs(5), || about_bad().len() == 2));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(about_bad().len(), 2, "{:#?}", about_bad());
    // Fixed: no error, nothing more logged.
    std::fs::write(&bad, "# TYPE broken counter\nbroken 2\n").unwrap();
    assert!(eventually(Duration::from_secs(5), || scrape_error() == Some(0.0)));
    assert_eq!(about_bad().len(), 2, "{:#?}", about_bad());
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn attributes_that_become_one_metric_are_refused_or_counted_never_silent() {
    // At start-up, from flags and from the file: refused naming both.
    let e = run_fails(&[
        "agent",
        "--zone",
        "/a/b",
        "--attribute",
        "a.b=1",
        "--attribute",
        "a_b=2",
        "--web.listen-address",
        "127.0.0.1:0",
        "--gossip.listen-address",
        "127.0.0.1:0",
    ]);
    assert!(
        e.contains("attributes a.b and a_b both become the metric astrolabe_zone_a_b"),
        "{e}"
    );
    let dir = temp_dir("collisions");
    let file = dir.join("agent.toml");
    std::fs::write(
        &file,
        "zone = \"/a/b\"\n[attributes]\n\"x-y\" = 1\nx_y = 2\n",
    )
    .unwrap();
    let e = run_fails(&["check-config", file.to_str().unwrap()]);
    assert!(
        e.contains("agent.toml")
            && e.contains("attributes x-y and x_y both become the metric astrolabe_zone_x_y"),
        "{e}"
    );

    // From textfiles: left out, counted and logged once each.
    std::fs::write(dir.join("c.prom"), "a_b 2\nc:d 3\nc_d 4\nfine 5\n").unwrap();
    let agent = Agent::builder("/a/h1")
        .dir(&dir)
        .args(["--attribute", "a.b=1", "--no-collector.host"])
        .args(["--collector.interval", "100ms"])
        .spawn();
    let zone = |m: &str, metric: &str| zone_value(m, metric, "/a/h1");
    let served = eventually(Duration::from_secs(10), || {
        agent
            .get("/metrics")
            .is_some_and(|m| zone(&m, "astrolabe_zone_fine") == Some(5.0))
    });
    assert!(served);
    std::thread::sleep(Duration::from_secs(1));
    let m = agent.get("/metrics").unwrap();
    assert_eq!(zone(&m, "astrolabe_zone_a_b"), Some(1.0), "{m}");
    assert_eq!(zone(&m, "astrolabe_zone_c_d"), Some(3.0), "{m}");
    assert_eq!(
        sample(&m, "astrolabe_metric_name_collisions_total"),
        Some(2.0),
        "{m}"
    );
    let lines: Vec<String> = agent
        .log()
        .lines()
        .filter(|l| l.contains("both become the metric"))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("attributes a.b and a_b")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("attributes c:d and c_d")),
        "{lines:#?}"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn zone_ids_are_strings_in_the_zones_api() {
    let dir = temp_dir("ids");
    let id = "3973617967595041974";
    let agent = Agent::builder("/ids/h1")
        .dir(&dir)
        .args(["--agent.id", id, "--no-collector.host"])
        .spawn();
    let mut body = String::new();
    let ok = eventually(Duration::from_secs(10), || {
        body = agent.get("/api/v1/zones").unwrap_or_default();
        body.contains("/ids/h1")
    });
    assert!(ok, "{body}");
    assert!(body.contains(&format!("\"agent_id\":\"{id}\"")), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let own = json["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["zone_path"] == "/ids/h1")
        .unwrap();
    assert_eq!(own["attributes"]["id"], id, "{own}");
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}
