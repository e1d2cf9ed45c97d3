//! `/metrics`: host metrics, the agent's own metrics, and every zone row the
//! agent knows, in the Prometheus text format (0.0.4) or OpenMetrics 1.0.
//!
//! Families are built per scrape from the snapshot, so their names follow
//! the aggregates in force; a small writer renders them in either format.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;
use std::sync::Mutex;

use astrolabe_collectors::{Kind, MetricFamily};

use super::names::{collides_in, sanitize, zone_metric};
use crate::aggregate::State;
use crate::engine::Refusal;
use crate::view::View;
use crate::zone::{Value, ATTR_ADDR, ATTR_CONTACTS, ATTR_ID, ATTR_MEMBERS, ATTR_REPORTING};

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn zone_families(view: &View) -> Vec<MetricFamily> {
    let mut by_name: BTreeMap<String, MetricFamily> = BTreeMap::new();
    let mut add = |name: String,
                   help: &str,
                   suffix: &'static str,
                   labels: Vec<(&str, String)>,
                   value: f64| {
        let kind = if suffix == "_count" || labels.iter().any(|(k, _)| *k == "quantile") {
            Kind::Summary
        } else {
            Kind::Gauge
        };
        let family = by_name
            .entry(name.clone())
            .or_insert_with(|| MetricFamily::new(&name, help, kind));
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        family.push_suffixed(suffix, &labels, value);
    };
    for zone in &view.zones {
        let row = &zone.row;
        let path = row.zone.to_string();
        add(
            "astrolabe_zone_members".into(),
            "Live agents in the zone.",
            "",
            vec![("zone_path", path.clone())],
            row.members() as f64,
        );
        add(
            "astrolabe_zone_age_seconds".into(),
            "Age of the oldest input of the zone's row, as this agent sees it.",
            "",
            vec![("zone_path", path.clone())],
            zone.age_seconds,
        );
        let values = row.values();
        // Attributes served under a name of their own, for collisions.
        let mut renamed: Vec<(String, String)> = Vec::new();
        for (name, value) in values {
            let system = [ATTR_ID, ATTR_ADDR, ATTR_CONTACTS, ATTR_MEMBERS];
            if system.contains(&&**name) {
                continue;
            }
            let Some(number) = served_number(value) else {
                continue;
            };
            if let Some(collision) =
                collides_in(values, &renamed, name, |v| served_number(v).is_some())
            {
                view.collisions.note(&collision, name, "gossip");
                continue;
            }
            if let std::borrow::Cow::Owned(clean) = sanitize(name) {
                renamed.push((clean, name.to_string()));
            }
            let metric = zone_metric(name);
            let mut labels = vec![("zone_path", path.clone())];
            let help = if &**name == ATTR_REPORTING {
                "Children of the zone heard from within their expiry."
            } else {
                "Zone attribute (an aggregate over the zone's leaves, or a host's own value)."
            };
            let quantile = match row.states().and_then(|s| s.get(name)) {
                Some(State::Quantile { q, sketch }) => Some((*q, sketch.count())),
                _ => None,
            };
            let Some((q, count)) = quantile else {
                add(metric, help, "", labels, number);
                continue;
            };
            let zone_only = labels.clone();
            labels.push(("quantile", q.to_string()));
            add(metric.clone(), help, "", labels, number);
            // A summary's `_count`: the leaf values the sketch holds (an
            // OTLP summary needs it).
            add(metric, help, "_count", zone_only, count as f64);
        }
    }
    by_name.into_values().collect()
}

/// The number a zone attribute is served as, if it is served at all.
fn served_number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        Value::Bool(b) => Some(*b as u8 as f64),
        _ => None,
    }
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
    .chain(std::iter::once(crate::security::refusals_family(
        &view.signatures,
    )))
    .chain(std::iter::once(view.collisions.family()))
    .chain(view.otlp.families())
    .collect()
}

/// Every family served on `/metrics`.
pub fn families(view: &View) -> Vec<MetricFamily> {
    // Zones first: they count the collisions the agent's families report.
    let zones = zone_families(view);
    let mut all: Vec<MetricFamily> = view.host.iter().cloned().collect();
    all.extend(agent_families(view));
    all.extend(zones);
    all
}

/// A label value in either format: `\\`, `\n` and `"` escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

/// A HELP text: `\\` and `\n` escaped, and `"` too in OpenMetrics.
fn escape_help(text: &str, openmetrics: bool) -> String {
    let text = text.replace('\\', "\\\\").replace('\n', "\\n");
    if openmetrics {
        text.replace('"', "\\\"")
    } else {
        text
    }
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

/// The names an OpenMetrics family of `kind` takes for its samples; two
/// families may not share one (prometheus_client's "Clashing name").
fn openmetrics_names(family: &str, kind: Kind) -> impl Iterator<Item = String> + '_ {
    let suffixes: &[&str] = match kind {
        Kind::Counter => &["", "_total", "_created"],
        Kind::Summary => &["", "_sum", "_count", "_created"],
        Kind::Histogram => &["", "_sum", "_count", "_bucket", "_created"],
        Kind::Gauge | Kind::Untyped => &[""],
    };
    suffixes.iter().map(move |s| format!("{family}{s}"))
}

/// Families left out of OpenMetrics for a clashing name, logged once each.
static CLASHES_LOGGED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn log_clash_once(name: &str) {
    let mut logged = CLASHES_LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    if logged.insert(name.to_string()) {
        tracing::warn!(
            metric = name,
            "left out of the OpenMetrics exposition: its sample names are those of another family (the text format still serves it)"
        );
    }
}

/// Renders families; families of one name are merged, so the output never
/// repeats a family (which promtool refuses).
///
/// In OpenMetrics a counter is the family `x` with the sample `x_total`,
/// whether its name was `x_total` or `x`; the text format keeps the name.
pub fn render(families: &[MetricFamily], openmetrics: bool) -> String {
    let mut merged: BTreeMap<&str, (&MetricFamily, Vec<&astrolabe_collectors::Sample>)> =
        BTreeMap::new();
    for f in families {
        let entry = merged.entry(&f.name).or_insert((f, Vec::new()));
        entry.1.extend(f.samples.iter());
    }
    let mut out = String::new();
    let mut taken: HashSet<String> = HashSet::new();
    for (name, (family, samples)) in merged {
        if samples.is_empty() {
            continue;
        }
        let counter = family.kind == Kind::Counter;
        let family_name = match openmetrics && counter {
            true => name.strip_suffix("_total").unwrap_or(name),
            false => name,
        };
        if openmetrics {
            let names: Vec<String> = openmetrics_names(family_name, family.kind).collect();
            if names.iter().any(|n| taken.contains(n)) {
                log_clash_once(name);
                continue;
            }
            taken.extend(names);
        }
        let kind = match (family.kind, openmetrics) {
            (Kind::Untyped, true) => "unknown",
            (k, _) => k.as_str(),
        };
        let help = if family.help.is_empty() {
            name
        } else {
            family.help.as_str()
        };
        let _ = writeln!(
            out,
            "# HELP {family_name} {}",
            escape_help(help, openmetrics)
        );
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        let sample_name = if openmetrics && counter {
            format!("{family_name}_total")
        } else {
            name.to_string()
        };
        let mut seen = std::collections::BTreeSet::new();
        for s in samples {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
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
            let _ = writeln!(
                out,
                "{sample_name}{suffix}{labels} {}",
                format_value(s.value)
            );
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
    fn attributes_of_a_gossiped_row_that_become_one_metric_are_counted_once() {
        use crate::view::ZoneView;
        use crate::zone::{Body, Freshness, Row, ZonePath};
        let attrs: crate::zone::Attributes = [
            ("a.b".into(), Value::Int(1)),
            ("a_b".into(), Value::Int(2)),
            ("c-d".into(), Value::Int(3)),
            ("c.d".into(), Value::Int(4)),
            ("age_seconds".into(), Value::Int(5)),
            ("e.f".into(), Value::Int(6)),
            ("e_f".into(), Value::str("not a number")),
        ]
        .into_iter()
        .collect();
        let row = Row::new(
            ZonePath::parse("/x/h1").unwrap(),
            Freshness::default(),
            1,
            Body::Leaf(attrs),
        );
        let view = View {
            zones: vec![ZoneView {
                row: std::sync::Arc::new(row),
                age_seconds: 0.5,
                computed: false,
            }],
            ..View::default()
        };
        for _ in 0..3 {
            let text = render(&families(&view), false);
            let zone = |metric: &str| {
                text.lines()
                    .filter(|l| l.starts_with(&format!("{metric}{{zone_path=\"/x/h1\"}}")))
                    .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            };
            // The attribute already named like the metric wins; of two
            // renamed ones, the first; a string is no metric at all.
            assert_eq!(zone("astrolabe_zone_a_b"), ["2"], "{text}");
            assert_eq!(zone("astrolabe_zone_c_d"), ["3"], "{text}");
            assert_eq!(zone("astrolabe_zone_age_seconds"), ["0.5"], "{text}");
            assert_eq!(zone("astrolabe_zone_e_f"), ["6"], "{text}");
            assert!(
                text.contains("\nastrolabe_metric_name_collisions_total 3\n"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_counter_without_total_gets_it_in_openmetrics_only() {
        let mut c = MetricFamily::new("jobs_done", "Jobs.", Kind::Counter);
        c.push(&[], 5.0);
        let text = render(std::slice::from_ref(&c), false);
        assert!(
            text.contains("# TYPE jobs_done counter\njobs_done 5\n"),
            "{text}"
        );
        let om = render(&[c], true);
        assert!(
            om.contains("# TYPE jobs_done counter\njobs_done_total 5\n"),
            "{om}"
        );
    }

    #[test]
    fn help_and_labels_are_escaped_once_for_each_format() {
        let mut g = MetricFamily::new("m", "a \\ b\nc \"d\"", Kind::Gauge);
        g.push(&[("v", "x\\y\nz\"")], 1.0);
        let text = render(std::slice::from_ref(&g), false);
        assert!(text.contains("# HELP m a \\\\ b\\nc \"d\"\n"), "{text}");
        assert!(text.contains("m{v=\"x\\\\y\\nz\\\"\"} 1\n"), "{text}");
        let om = render(&[g], true);
        assert!(om.contains("# HELP m a \\\\ b\\nc \\\"d\\\"\n"), "{om}");
    }

    #[test]
    fn a_family_whose_openmetrics_names_clash_is_left_out_of_openmetrics() {
        let mut c = MetricFamily::new("jobs", "", Kind::Counter);
        c.push(&[], 1.0);
        let g = MetricFamily::gauge("jobs_total", "", 2.0);
        let both = [c, g];
        let om = render(&both, true);
        assert!(
            om.contains("jobs_total 1\n") && !om.contains("jobs_total 2"),
            "{om}"
        );
        let text = render(&both, false);
        assert!(
            text.contains("jobs 1\n") && text.contains("jobs_total 2\n"),
            "{text}"
        );
    }
}
