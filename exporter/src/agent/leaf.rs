//! The agent's own row: attributes derived from the collectors.

use astrolabe_collectors::{utilization, MetricFamily};

use crate::zone::{Attributes, Value};

fn find<'a>(families: &'a [MetricFamily], name: &str) -> Option<&'a MetricFamily> {
    families.iter().find(|f| f.name == name)
}

/// Static attributes, a few derived host figures, and every unlabeled
/// sample of the other collectors (textfile, application) under its name.
pub fn leaf_attributes(
    base: &Attributes,
    previous: Option<&[MetricFamily]>,
    current: &[MetricFamily],
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
    if let Some(r) = value("node_procs_running") {
        set("processes_running", r);
    }
    for f in current {
        if f.name.starts_with("node_") || f.name.starts_with("astrolabe_") {
            continue;
        }
        if let Some(v) = f.unlabeled() {
            set(&f.name, v);
        }
    }
    attrs.insert("version".into(), Value::str(env!("CARGO_PKG_VERSION")));
    attrs
}
