//! The agent's own row: attributes derived from the collectors.

use std::borrow::Cow;

use astrolabe_collectors::{utilization, MetricFamily};

use crate::http::names::{collides_in, sanitize, NameCollision, NameCollisions};
use crate::zone::{Attributes, Value};

fn find<'a>(families: &'a [MetricFamily], name: &str) -> Option<&'a MetricFamily> {
    families.iter().find(|f| f.name == name)
}

/// Static attributes, a few derived host figures, and every unlabeled
/// sample of the other collectors (textfile, application) under its name,
/// unless that name is taken, as an attribute or as the metric it becomes:
/// such a sample is noted in `collisions` and left out.
pub fn leaf_attributes(
    base: &Attributes,
    previous: Option<&[MetricFamily]>,
    current: &[MetricFamily],
    interval_seconds: Option<f64>,
    collisions: &NameCollisions,
) -> Attributes {
    let mut attrs = base.clone();
    let mut set = |name: &str, v: f64| {
        if v.is_finite() {
            attrs.insert(name.into(), Value::Float(v));
        }
    };
    let value = |name: &str| find(current, name).and_then(MetricFamily::unlabeled);
    if let (Some(total), Some(available)) = (
        value("node_memory_MemTotal_bytes"),
        value("node_memory_MemAvailable_bytes"),
    ) {
        if total > 0.0 {
            set("memory_used_ratio", 1.0 - available / total);
        }
        set("memory_available_bytes", available);
    }
    if let Some(l) = value("node_load1") {
        set("load1", l);
    }
    if let (Some(before), Some(after)) = (
        previous.and_then(|p| find(p, "node_cpu_seconds_total")),
        find(current, "node_cpu_seconds_total"),
    ) {
        if let Some(u) = utilization(before, after) {
            set("cpu_utilization", u);
        }
    }
    if let Some(fs) = find(current, "node_filesystem_avail_bytes") {
        let root = |f: &MetricFamily| {
            f.samples
                .iter()
                .find(|s| s.labels.iter().any(|(k, v)| k == "mountpoint" && v == "/"))
                .map(|s| s.value)
        };
        if let (Some(avail), Some(size)) = (
            root(fs),
            find(current, "node_filesystem_size_bytes").and_then(root),
        ) {
            if size > 0.0 {
                set("filesystem_root_free_ratio", avail / size);
            }
        }
    }
    for (family, attr) in [
        (
            "node_network_receive_bytes_total",
            "network_receive_bytes_per_second",
        ),
        (
            "node_network_transmit_bytes_total",
            "network_transmit_bytes_per_second",
        ),
    ] {
        // All devices but loopback, as a rate over the sampling interval.
        let total = |fams: &[MetricFamily]| {
            find(fams, family).map(|f| {
                f.samples
                    .iter()
                    .filter(|s| !s.labels.iter().any(|(k, v)| k == "device" && v == "lo"))
                    .map(|s| s.value)
                    .sum::<f64>()
            })
        };
        if let (Some((before, secs)), Some(after)) =
            (previous.zip(interval_seconds), total(current))
        {
            if let Some(before) = total(before) {
                if secs > 0.0 && after >= before {
                    set(attr, (after - before) / secs);
                }
            }
        }
    }
    if let Some(n) = value("astrolabe_processes") {
        set("processes", n);
    }
    if let Some(r) = value("node_procs_running") {
        set("processes_running", r);
    }
    attrs.insert("version".into(), Value::str(env!("CARGO_PKG_VERSION")));
    let mut renamed: Vec<(String, String)> = Vec::new();
    for name in attrs.keys() {
        if let Cow::Owned(clean) = sanitize(name) {
            renamed.push((clean, name.to_string()));
        }
    }
    for f in current {
        if f.name.starts_with("node_") || f.name.starts_with("astrolabe_") {
            continue;
        }
        let Some(v) = f.unlabeled().filter(|v| v.is_finite()) else {
            continue;
        };
        let collision = if attrs.contains_key(f.name.as_str()) {
            Some(NameCollision::Twice(f.name.clone()))
        } else {
            collides_in(&attrs, &renamed, &f.name, |_| true)
        };
        if let Some(c) = collision {
            collisions.note(&c, &f.name, "textfile");
            continue;
        }
        if let Cow::Owned(clean) = sanitize(&f.name) {
            renamed.push((clean, f.name.clone()));
        }
        attrs.insert(f.name.as_str().into(), Value::Float(v));
    }
    attrs
}
