//! `/metrics`: host metrics, the agent's own metrics, and every zone row the
//! agent knows, in the Prometheus text format (0.0.4) or OpenMetrics 1.0.
//!
//! Families are built per scrape from the snapshot, so their names follow
//! the aggregates in force; a small writer renders them in either format.

use std::collections::BTreeMap;
use std::fmt::Write;

use astrolabe_collectors::{Kind, MetricFamily};

use crate::aggregate::State;
use crate::engine::Refusal;
use crate::view::View;
use crate::zone::{Value, ATTR_ADDR, ATTR_CONTACTS, ATTR_ID, ATTR_MEMBERS, ATTR_REPORTING};

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric name from an attribute name: `[a-zA-Z0-9_]`, not starting with a digit.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn zone_families(view: &View) -> Vec<MetricFamily> {
    let mut by_name: BTreeMap<String, MetricFamily> = BTreeMap::new();
    let mut add = |name: String, help: &str, labels: Vec<(&str, String)>, value: f64| {
        let kind = if labels.iter().any(|(k, _)| *k == "quantile") {
            Kind::Summary
        } else {
            Kind::Gauge
        };
        let family = by_name
            .entry(name.clone())
            .or_insert_with(|| MetricFamily::new(&name, help, kind));
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        family.push(&labels, value);
    };
    for zone in &view.zones {
        let row = &zone.row;
        let path = row.zone.to_string();
        add(
            "astrolabe_zone_members".into(),
            "Live agents in the zone.",
            vec![("zone_path", path.clone())],
            row.members() as f64,
        );
        add(
            "astrolabe_zone_age_seconds".into(),
            "Age of the oldest input of the zone's row, as this agent sees it.",
            vec![("zone_path", path.clone())],
            zone.age_seconds,
        );
        for (name, value) in row.values() {
            let system = [ATTR_ID, ATTR_ADDR, ATTR_CONTACTS, ATTR_MEMBERS];
            if system.contains(&&**name) {
                continue;
            }
            let number = match value {
                Value::Int(i) => *i as f64,
                Value::Float(f) if f.is_finite() => *f,
                Value::Bool(b) => *b as u8 as f64,
                _ => continue,
            };
            let metric = format!("astrolabe_zone_{}", sanitize(name));
            let mut labels = vec![("zone_path", path.clone())];
            if let Some(State::Quantile { q, .. }) = row.states().and_then(|s| s.get(name)) {
                labels.push(("quantile", q.to_string()));
            }
            let help = if &**name == ATTR_REPORTING {
                "Children of the zone heard from within their expiry."
            } else {
                "Zone attribute (an aggregate over the zone's leaves, or a host's own value)."
            };
            add(metric, help, labels, number);
        }
    }
    by_name.into_values().collect()
}

fn agent_families(view: &View) -> Vec<MetricFamily> {
    let s = &view.stats;
    let counter = |name: &str, help: &str, v: u64| {
        let mut f = MetricFamily::new(name, help, Kind::Counter);
        f.push(&[], v as f64);
        f
    };
    let mut dropped = MetricFamily::new(
        "astrolabe_gossip_dropped_datagrams_total",
        "Datagrams dropped before reaching the engine, by reason.",
        Kind::Counter,
    );
    for (reason, n) in &view.dropped {
        dropped.push(&[("reason", reason.label())], *n as f64);
    }
    let mut refused = MetricFamily::new(
        "astrolabe_gossip_refused_rows_total",
        "Rows or message parts refused by the engine, by reason.",
        Kind::Counter,
    );
    for r in Refusal::ALL {
        refused.push(&[("reason", r.label())], s.refused(r) as f64);
    }
    let mut limit_refusals = MetricFamily::new(
        "astrolabe_limit_refusals_total",
        "Rows, queries and requests refused by a limit against hostile peers, by limit.",
        Kind::Counter,
    );
    for l in crate::engine::Limit::ALL {
        let n = s.limit_refused(l) + view.limits.get(l);
        limit_refusals.push(&[("limit", l.label())], n as f64);
    }
    let peers = view
        .zones
        .iter()
        .filter(|z| !z.computed && !z.row.zone.is_root())
        .count();
    let peers = MetricFamily::gauge(
        "astrolabe_gossip_known_zones",
        "Rows of other zones and hosts this agent holds; 0 means no seed has answered.",
        peers as f64,
    );
    let mut info = MetricFamily::new("astrolabe_build_info", "Version of the agent.", Kind::Gauge);
    info.push(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    // The agent's own zone as a label, to join agent-level metrics (drops,
    // seeds) with the zone they concern in alert rules.
    let mut agent = MetricFamily::new(
        "astrolabe_agent_info",
        "The agent's own leaf zone.",
        Kind::Gauge,
    );
    if let Some(zone) = &view.agent_zone {
        agent.push(&[("zone_path", zone.as_str())], 1.0);
    }
    vec![
        info,
        agent,
        peers,
        counter(
            "astrolabe_gossip_rounds_total",
            "Gossip rounds run.",
            s.rounds,
        ),
        counter(
            "astrolabe_gossip_messages_sent_total",
            "Messages sent.",
            s.messages_sent,
        ),
        counter(
            "astrolabe_gossip_bytes_sent_total",
            "Bytes of messages sent.",
            s.bytes_sent,
        ),
        counter(
            "astrolabe_gossip_messages_received_total",
            "Messages received.",
            s.messages_received,
        ),
        counter(
            "astrolabe_gossip_rows_installed_total",
            "Fresher rows taken in.",
            s.rows_installed,
        ),
        counter(
            "astrolabe_gossip_rows_stale_total",
            "Rows received that were not fresher.",
            s.rows_stale,
        ),
        counter(
            "astrolabe_gossip_rows_expired_total",
            "Rows dropped after their expiry.",
            s.rows_expired,
        ),
        counter(
            "astrolabe_gossip_pushes_total",
            "Eager pushes of changed rows.",
            s.pushes,
        ),
        counter(
            "astrolabe_gossip_forwards_total",
            "Relays of pushed rows.",
            s.forwards,
        ),
        dropped,
        refused,
        limit_refusals,
    ]
    .into_iter()
    .chain(view.queries.families())
    .chain(std::iter::once(view.signatures.family()))
    .collect()
}

/// Every family served on `/metrics`.
pub fn families(view: &View) -> Vec<MetricFamily> {
    let mut all: Vec<MetricFamily> = view.host.iter().cloned().collect();
    all.extend(agent_families(view));
    all.extend(zone_families(view));
    all
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

/// A sample value as the text formats write it (`NaN`, `+Inf`, `-Inf`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Renders families; families of one name are merged, so the output never
/// repeats a family (which promtool refuses).
pub fn render(families: &[MetricFamily], openmetrics: bool) -> String {
    let mut merged: BTreeMap<&str, (&MetricFamily, Vec<&astrolabe_collectors::Sample>)> =
        BTreeMap::new();
    for f in families {
        let entry = merged.entry(&f.name).or_insert((f, Vec::new()));
        entry.1.extend(f.samples.iter());
    }
    let mut out = String::new();
    for (name, (family, samples)) in merged {
        if samples.is_empty() {
            continue;
        }
        let (kind, family_name) = match (family.kind, openmetrics) {
            (Kind::Counter, true) => ("counter", name.strip_suffix("_total").unwrap_or(name)),
            (Kind::Untyped, true) => ("unknown", name),
            (k, _) => (k.as_str(), name),
        };
        let help = if family.help.is_empty() {
            name
        } else {
            family.help.as_str()
        };
        let _ = writeln!(
            out,
            "# HELP {family_name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        let mut seen = std::collections::BTreeSet::new();
        for s in samples {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", labels.join(","))
            };
            // Duplicate series are invalid exposition; keep the first.
            if !seen.insert((s.suffix, labels.clone())) {
                continue;
            }
            let suffix = s.suffix;
            let _ = writeln!(out, "{name}{suffix}{labels} {}", format_value(s.value));
        }
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_formats() {
        let mut c = MetricFamily::new("x_total", "Things.", Kind::Counter);
        c.push(&[("a", "q\"uote")], 3.0);
        let g = MetricFamily::gauge("y", "", 1.5);
        let text = render(&[c.clone(), g.clone()], false);
        assert!(
            text.contains("# TYPE x_total counter\nx_total{a=\"q\\\"uote\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# HELP y y\n# TYPE y gauge\ny 1.5\n"));
        let om = render(&[c, g], true);
        assert!(om.contains("# TYPE x counter\nx_total{"), "{om}");
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("cpu.util-ratio"), "cpu_util_ratio");
        assert_eq!(sanitize("9lives"), "_9lives");
    }
}
