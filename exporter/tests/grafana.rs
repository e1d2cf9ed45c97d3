//! The Grafana dashboards in dashboards/grafana/: well-formed for current
//! Grafana (a `${datasource}` variable, no instance's UIDs), and every PromQL
//! expression in them (panels and variable queries, template variables
//! substituted) parses and returns data on a real Prometheus that scraped a
//! running cluster.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/grafana");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().to_string(), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for nested in p["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

/// (where, expression) for every target and every query variable.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("panel {:?}", p["title"]), e.to_string()));
            }
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            out.push((format!("variable {:?}", v["name"]), q.to_string()));
        }
    }
    out
}

#[test]
fn dashboards_are_portable_grafana_json() {
    let all = dashboards();
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "fleet-overview.json",
        "zone-detail.json",
        "host.json",
        "agent-health.json",
    ] {
        assert!(names.contains(want), "missing dashboard {want}");
    }
    let mut uids = BTreeSet::new();
    for (name, d) in &all {
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "{name}: schemaVersion"
        );
        assert!(
            d["id"].is_null(),
            "{name}: a dashboard id belongs to one Grafana instance"
        );
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{name}: uid repeated"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
            "{name}: no datasource variable"
        );
        // Every datasource reference is the variable: no instance's UID.
        let mut refs = Vec::new();
        for p in panels(d) {
            if p["type"] == "row" {
                continue;
            }
            refs.push(&p["datasource"]);
            for t in p["targets"].as_array().into_iter().flatten() {
                refs.push(&t["datasource"]);
            }
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            refs.push(&v["datasource"]);
        }
        assert!(!refs.is_empty());
        for r in refs {
            assert_eq!(r["uid"], "${datasource}", "{name}: {r}");
            assert_eq!(r["type"], "prometheus", "{name}: {r}");
        }
        // Panels do not overlap and fit the 24-column grid.
        let boxes: Vec<(u64, u64, u64, u64)> = panels(d)
            .iter()
            .map(|p| {
                let g = &p["gridPos"];
                let b = (
                    g["x"].as_u64().unwrap(),
                    g["y"].as_u64().unwrap(),
                    g["w"].as_u64().unwrap(),
                    g["h"].as_u64().unwrap(),
                );
                assert!(
                    b.0 + b.2 <= 24,
                    "{name}: {:?} is wider than the grid",
                    p["title"]
                );
                b
            })
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let apart =
                    a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
                assert!(apart, "{name}: panels overlap at {a:?} and {b:?}");
            }
        }
        assert!(!expressions(d).is_empty(), "{name}: no queries");
    }
}

/// Grafana's variables as a user would have them set.
fn substitute(expr: &str, zone: &str, instance: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "10s")
        .replace("$__interval", "2s")
        .replace("$__range", "1m")
        .replace("${zone_path}", zone)
        .replace("$zone_path", zone)
        .replace("${instance}", instance)
        .replace("$instance", instance);
    // Only label_replace's capture references may remain.
    let leftover = regex::Regex::new(r"\$\{?[A-Za-z_]").unwrap();
    assert!(!leftover.is_match(&out), "unsubstituted variable in {out}");
    out
}

/// `label_values(metric, label)` asks for the metric's series; the label
/// must be on them.
fn as_query(expr: &str) -> (String, Option<String>) {
    let lv = regex::Regex::new(r"^label_values\((.*),\s*(\w+)\)$").unwrap();
    match lv.captures(expr.trim()) {
        Some(c) => (c[1].to_string(), Some(c[2].to_string())),
        None => (expr.to_string(), None),
    }
}

fn prometheus(dir: &Path, targets: &[String]) -> Prometheus {
    std::fs::create_dir_all(dir).unwrap();
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: astrolabe\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    Prometheus::start(&dir.join("prometheus.yml"), dir)
}

/// The query's result, or why it has none.
fn evaluate(port: u16, query: &str, label: Option<&str>) -> Result<usize, String> {
    let body = http_get_with(
        port,
        &format!("/api/v1/query?query={}", percent_encode(query)),
        &[],
    )
    .ok_or("Prometheus did not answer")?
    .1;
    let json: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if json["status"] != "success" {
        return Err(format!("error: {}", json["error"]));
    }
    let result = &json["data"]["result"];
    let n = match json["data"]["resultType"].as_str() {
        Some("vector") | Some("matrix") => {
            let series = result.as_array().cloned().unwrap_or_default();
            if let Some(label) = label {
                if !series.iter().any(|s| s["metric"][label].is_string()) {
                    return Err(format!("no series has the label {label}"));
                }
            }
            series.len()
        }
        Some("scalar") => 1,
        other => return Err(format!("unexpected result type {other:?}")),
    };
    if n == 0 {
        Err("no data".into())
    } else {
        Ok(n)
    }
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let agents = Cluster::builder("grafana")
        .zones(["/z0/h0", "/z0/h1", "/z1/h2", "/z1/h3"])
        .spawn();
    let dir = agents.dir.clone();
    let converged = eventually(Duration::from_secs(30), || {
        agents.iter().all(|a| {
            a.get("/metrics")
                .is_some_and(|m| zone_value(&m, "astrolabe_zone_members", "/") == Some(4.0))
        })
    });
    assert!(converged, "cluster did not converge");
    let targets: Vec<String> = agents
        .iter()
        .map(|a| format!("127.0.0.1:{}", a.web))
        .collect();
    let prom = prometheus(&dir.join("prom"), &targets);

    // (dashboard, where, query as run, label a variable needs)
    let mut checks = Vec::new();
    for (name, d) in dashboards() {
        // The zone detail is checked on the root and on an inner zone.
        let zones: &[&str] = if name == "zone-detail.json" {
            &["/", "/z0"]
        } else {
            &["/"]
        };
        for zone in zones {
            for (at, expr) in expressions(&d) {
                let (query, label) = as_query(&substitute(&expr, zone, &targets[0]));
                checks.push((format!("{name} {at} (zone {zone})"), query, label));
            }
        }
    }
    assert!(checks.len() > 40, "only {} queries found", checks.len());

    // Rates need two scrapes in their window; poll until all hold or the
    // deadline passes, then report every query still failing.
    let mut failing: Vec<String> = Vec::new();
    let all_ok = eventually(Duration::from_secs(90), || {
        failing = checks
            .iter()
            .filter_map(|(at, q, label)| {
                evaluate(prom.port, q, label.as_deref())
                    .err()
                    .map(|e| format!("{at}: {e}\n    {q}"))
            })
            .collect();
        failing.is_empty()
    });
    drop(prom);
    drop(agents);
    assert!(
        all_ok,
        "{} of {} dashboard queries fail:\n{}",
        failing.len(),
        checks.len(),
        failing.join("\n")
    );
}
