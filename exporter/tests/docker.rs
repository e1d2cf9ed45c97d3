//! The Docker demo for real, without any image registry: docker/package.sh
//! packages the test build of the agent and docker/package-prometheus.sh
//! Debian's Prometheus into FROM-scratch images, docker-compose brings up
//! docker/docker-compose.yml as a user would (nine agents on networks of
//! their own, and Prometheus; Grafana stays behind its profile), compose's
//! own Prometheus must scrape every agent and load the shipped rules, and
//! one zone is cut off with `docker network disconnect` and reconnected.
//! Both sides must report the partition (members, reporting) and converge
//! again.
//!
//! Without docker the test fails under CI=true and is skipped elsewhere.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    out
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker-compose` (v1) where installed, else the `docker compose` plugin.
fn compose_command() -> Option<Vec<String>> {
    let works = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else if works("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else {
        None
    }
}

/// Everything the test brought up, torn down whatever happens.
struct Stack {
    compose: Vec<String>,
    project: String,
    /// First two octets of the zone networks.
    net: String,
    env: Vec<(String, String)>,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(repo().join("docker/docker-compose.yml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn container(&self, service: &str) -> String {
        ok(&mut self.compose(&["ps", "-q", service]))
    }

    fn network(&self, name: &str) -> String {
        // The project name is plain lowercase alphanumerics, which compose
        // v1 and v2 both keep as it is.
        format!("{}_{name}", self.project)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = run(&mut self.compose(&["down", "-v", "--remove-orphans", "-t", "2"]));
    }
}

/// The test's image, removed at the end.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = run(Command::new("docker").args(["rmi", "-f", &self.0]));
    }
}

fn get_metrics(ip: IpAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&(ip, 9464).into(), Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    text.starts_with("HTTP/1.1 200")
        .then(|| text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()))
        .flatten()
}

/// (members, reporting) of a zone as one agent serves it.
fn sees(ip: IpAddr, zone: &str) -> Option<(f64, f64)> {
    let m = get_metrics(ip)?;
    Some((
        zone_value(&m, "astrolabe_zone_members", zone)?,
        zone_value(&m, "astrolabe_zone_reporting", zone)?,
    ))
}

/// Brings the stack up as a user does (`up -d`: every service outside a
/// profile), on zone networks under `net` (two octets).
fn up(stack: &Stack) -> Result<(), String> {
    let out = run(&mut stack.compose(&["up", "-d", "--no-build"]));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// GET on a published loopback port; the JSON body, if any.
fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let (status, body) = http_get_with(port, path, &[])?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// Every rule name (recording and alerting) of dashboards/astrolabe-rules.yml.
fn shipped_rule_names() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("dashboards/astrolabe-rules.yml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut names: Vec<String> = rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| {
            r.get("record")
                .or_else(|| r.get("alert"))
                .and_then(|n| n.as_str())
                .map(String::from)
        })
        .collect();
    names.sort();
    names
}

/// What compose's Prometheus still lacks: targets not up, shipped rules
/// not loaded or not evaluated without error. Empty when all is well.
fn prometheus_lacks(port: u16, rules: &[String]) -> Vec<String> {
    let mut lacks = Vec::new();
    let targets = get_json(port, "/api/v1/targets?state=active");
    let active = targets
        .as_ref()
        .and_then(|t| t["data"]["activeTargets"].as_array().cloned())
        .unwrap_or_default();
    for i in 1..=9 {
        let url = format!("http://agent{i}:9464/metrics");
        let health = active
            .iter()
            .find(|t| t["scrapeUrl"] == url.as_str())
            .map(|t| format!("{} {}", t["health"], t["lastError"]));
        if !health.as_deref().is_some_and(|h| h.starts_with("\"up\"")) {
            lacks.push(format!("{url}: {health:?}"));
        }
    }
    let loaded = get_json(port, "/api/v1/rules");
    let loaded: Vec<(String, String)> = loaded
        .as_ref()
        .and_then(|r| r["data"]["groups"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default().to_string();
            (name, r["health"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    for rule in rules {
        match loaded.iter().find(|(n, _)| n == rule) {
            Some((_, health)) if health == "ok" => {}
            found => lacks.push(format!("rule {rule}: {found:?}")),
        }
    }
    lacks
}

#[test]
fn compose_cluster_reports_a_partition_and_heals() {
    let test = "compose_cluster_reports_a_partition_and_heals";
    if !require(test, "docker", command_works("docker", &["--version"])) {
        return;
    }
    // An installed CLI whose engine does not answer is a failure, not a skip.
    ok(Command::new("docker").arg("info"));
    let compose = compose_command();
    if !require(test, "docker-compose", compose.is_some()) {
        return;
    }
    let compose = compose.unwrap_or_default();
    let pid = std::process::id();
    // Phase times go to stderr for BENCHMARKS.md; never asserted.
    let started = std::time::Instant::now();
    let phase = |what: &str| {
        eprintln!(
            "docker test: {what} after {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };
    let image = Image(format!("astrolabe-test:{pid}"));
    ok(Command::new(repo().join("docker/package.sh")).args([BIN, &image.0]));
    let prometheus_image = Image(format!("astrolabe-prometheus-test:{pid}"));
    ok(Command::new(repo().join("docker/package-prometheus.sh")).arg(&prometheus_image.0));
    phase("images packaged");
    let prometheus_port = free_port();
    // Zone networks at <net>.<zone>.0/24; another project's networks may
    // hold a prefix already, so try a few.
    let mut stack = None;
    let mut refused = String::new();
    for attempt in 0..4 {
        let net = format!("172.{}", 20 + (pid + attempt) % 12);
        let s = Stack {
            compose: compose.clone(),
            project: format!("astrolabetest{pid}"),
            net: net.clone(),
            env: vec![
                ("ASTROLABE_IMAGE".into(), image.0.clone()),
                (
                    "ASTROLABE_PROMETHEUS_IMAGE".into(),
                    prometheus_image.0.clone(),
                ),
                ("ASTROLABE_GOSSIP_INTERVAL".into(), "250ms".into()),
                ("ASTROLABE_NET".into(), net),
                ("ASTROLABE_AGENT1_PORT".into(), free_port().to_string()),
                (
                    "ASTROLABE_PROMETHEUS_PORT".into(),
                    prometheus_port.to_string(),
                ),
            ],
        };
        match up(&s) {
            Ok(()) => {
                stack = Some(s);
                break;
            }
            Err(e) if e.contains("overlap") => {
                // Dropping `s` tears the half-made project down.
                refused = e;
            }
            Err(e) => panic!("docker-compose up failed:\n{e}"),
        }
    }
    let stack = stack.unwrap_or_else(|| panic!("no free subnet for the zone networks: {refused}"));
    let running = ok(&mut stack.compose(&["ps", "--services", "--filter", "status=running"]));
    assert!(
        !running.lines().any(|s| s == "grafana"),
        "grafana runs only with --profile grafana:\n{running}"
    );
    let containers: Vec<String> = (1..=9)
        .map(|i| stack.container(&format!("agent{i}")))
        .collect();
    // Every agent at its fixed address on its own zone's network.
    let ip = |i: u32| -> IpAddr {
        format!("{}.{}.{}", stack.net, (i - 1) / 3 + 1, 100 + i)
            .parse()
            .unwrap()
    };
    let (a1, a7) = (ip(1), ip(7));

    // One scrape of one container shows all nine, in three zones.
    let mut last = String::new();
    let whole = eventually(Duration::from_secs(120), || {
        let Some(m) = get_metrics(a1) else {
            return false;
        };
        let ok = zone_value(&m, "astrolabe_zone_members", "/") == Some(9.0)
            && zone_value(&m, "astrolabe_zone_reporting", "/demo") == Some(3.0)
            && (1..=3).all(|z| {
                zone_value(&m, "astrolabe_zone_members", &format!("/demo/zone{z}")) == Some(3.0)
            });
        last = m;
        ok
    });
    assert!(whole, "agent1 never saw all nine:\n{last}");
    phase("nine agents up and converged");

    // Compose's own Prometheus (its scrape configuration, 15 s interval)
    // scrapes all nine and evaluates the shipped rules.
    let rules = shipped_rule_names();
    assert!(rules.len() >= 5, "{rules:?}");
    let mut lacks = Vec::new();
    let scraped = eventually(Duration::from_secs(90), || {
        lacks = prometheus_lacks(prometheus_port, &rules);
        lacks.is_empty()
    });
    assert!(scraped, "compose's Prometheus lacks: {lacks:#?}");
    let members = get_json(
        prometheus_port,
        &format!(
            "/api/v1/query?query={}",
            percent_encode("max(astrolabe_zone_members{zone_path=\"/\"})")
        ),
    );
    assert_eq!(
        members
            .as_ref()
            .map(|m| m["data"]["result"][0]["value"][1].clone()),
        Some(serde_json::json!("9")),
        "{members:?}"
    );
    phase("Prometheus scraped every agent and evaluated the rules");

    // Cut zone 3 off: every link between it and the other zones goes.
    let links: Vec<(usize, String)> = (0..6)
        .map(|i| (i, stack.network("zone3")))
        .chain((6..9).flat_map(|i| [(i, stack.network("zone1")), (i, stack.network("zone2"))]))
        .collect();
    for (i, net) in &links {
        ok(Command::new("docker").args(["network", "disconnect", net, &containers[*i]]));
    }
    let mut seen = (None, None);
    let split = eventually(Duration::from_secs(180), || {
        seen = (sees(a1, "/demo"), sees(a7, "/demo"));
        seen == (Some((6.0, 2.0)), Some((3.0, 1.0)))
    });
    assert!(
        split,
        "the partition was not reported as (members, reporting) of /demo: majority {:?}, zone 3 {:?}",
        seen.0, seen.1
    );
    phase("partition reported on both sides");
    // Inside the cut-off zone, its agents still have one another.
    assert_eq!(sees(a7, "/demo/zone3"), Some((3.0, 3.0)));

    // Reconnect the links: the tree heals.
    for (i, net) in &links {
        ok(Command::new("docker").args(["network", "connect", net, &containers[*i]]));
    }
    let healed = eventually(Duration::from_secs(180), || {
        seen = (sees(a1, "/demo"), sees(a7, "/demo"));
        seen == (Some((9.0, 3.0)), Some((9.0, 3.0)))
    });
    assert!(
        healed,
        "no convergence after reconnecting: majority {:?}, zone 3 {:?}",
        seen.0, seen.1
    );
    phase("converged again after reconnecting");
    drop(stack);
    drop(image);
    drop(prometheus_image);
}

/// The demo's Prometheus configuration loads with the shipped rules, and
/// the compose file is valid and provisions every dashboard.
#[test]
fn compose_files_are_valid() {
    let dir = temp_dir("compose-files");
    std::fs::copy(
        repo().join("docker/prometheus/prometheus.yml"),
        dir.join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(
        repo().join("dashboards/astrolabe-rules.yml"),
        dir.join("astrolabe-rules.yml"),
    )
    .unwrap();
    if !require(
        "compose_files_are_valid",
        "promtool (Debian package prometheus)",
        command_works("promtool", &["--version"]),
    ) {
        return;
    }
    let checked = ok(Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.join("prometheus.yml")));
    assert!(checked.contains("SUCCESS"), "{checked}");
    let _ = std::fs::remove_dir_all(&dir);

    let compose = std::fs::read_to_string(repo().join("docker/docker-compose.yml")).unwrap();
    for i in 1..=9 {
        assert!(compose.contains(&format!(
            "ASTROLABE_ZONE: /demo/zone{}/agent{i}",
            (i - 1) / 3 + 1
        )));
    }
    assert!(compose.contains("../dashboards/grafana:/var/lib/grafana/dashboards/astrolabe"));
    assert!(
        compose.contains("../dashboards/astrolabe-rules.yml:/etc/prometheus/astrolabe-rules.yml")
    );
    let compose = compose_command();
    if !require(
        "compose_files_are_valid",
        "docker-compose",
        compose.is_some(),
    ) {
        return;
    }
    let c = compose.unwrap_or_default();
    let config = ok(Command::new(&c[0])
        .args(&c[1..])
        .arg("-f")
        .arg(repo().join("docker/docker-compose.yml"))
        .arg("config"));
    for service in ["agent1", "agent9", "prometheus", "grafana"] {
        assert!(
            config.contains(&format!("  {service}:")),
            "{service} in\n{config}"
        );
    }
    // Nothing the default stack runs is pulled: only Grafana, under its profile.
    let doc: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    for (name, service) in doc["services"].as_mapping().into_iter().flatten() {
        let image = service["image"].as_str().unwrap_or_default();
        let profiled = service.get("profiles").is_some();
        assert!(
            profiled || image.starts_with("astrolabe"),
            "{name:?} runs {image} by default, which needs a registry"
        );
    }
}
