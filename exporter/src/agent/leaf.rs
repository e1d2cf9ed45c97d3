//! The agent's own row: attributes derived from the collectors.

use std::borrow::Cow;

use astrolabe_collectors::{utilization, MetricFamily};

use crate::http::names::{collides_in, sanitize, NameCollision, NameCollisions};
use crate::zone::{Attributes, Value};

/// The attributes `leaf_attributes` derives from the host collectors,
/// named here once: the default aggregates (`agent::host_aggregates`),
/// the landing page and the demo read them by these names.
pub mod attr {
    pub const MEMORY_USED_RATIO: &str = "memory_used_ratio";
    pub const MEMORY_AVAILABLE_BYTES: &str = "memory_available_bytes";
    pub const LOAD1: &str = "load1";
    pub const CPU_UTILIZATION: &str = "cpu_utilization";
    pub const FILESYSTEM_ROOT_FREE_RATIO: &str = "filesystem_root_free_ratio";
    pub const NETWORK_RECEIVE_BYTES_PER_SECOND: &str = "network_receive_bytes_per_second";
    pub const NETWORK_TRANSMIT_BYTES_PER_SECOND: &str = "network_transmit_bytes_per_second";
    pub const PROCESSES: &str = "processes";
    pub const PROCESSES_RUNNING: &str = "processes_running";
    /// The agent's version, a string.
    pub const VERSION: &str = "version";

    /// Every one of them.
    pub const ALL: [&str; 10] = [
        MEMORY_USED_RATIO,
        MEMORY_AVAILABLE_BYTES,
        LOAD1,
        CPU_UTILIZATION,
        FILESYSTEM_ROOT_FREE_RATIO,
        NETWORK_RECEIVE_BYTES_PER_SECOND,
        NETWORK_TRANSMIT_BYTES_PER_SECOND,
        PROCESSES,
        PROCESSES_RUNNING,
        VERSION,
    ];
}

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
            set(attr::MEMORY_USED_RATIO, 1.0 - available / total);
        }
        set(attr::MEMORY_AVAILABLE_BYTES, available);
    }
    if let Some(l) = value("node_load1") {
        set(attr::LOAD1, l);
    }
    if let (Some(before), Some(after)) = (
        previous.and_then(|p| find(p, "node_cpu_seconds_total")),
        find(current, "node_cpu_seconds_total"),
    ) {
        if let Some(u) = utilization(before, after) {
            set(attr::CPU_UTILIZATION, u);
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
                set(attr::FILESYSTEM_ROOT_FREE_RATIO, avail / size);
            }
        }
    }
    for (family, attr) in [
        (
            "node_network_receive_bytes_total",
            attr::NETWORK_RECEIVE_BYTES_PER_SECOND,
        ),
        (
            "node_network_transmit_bytes_total",
            attr::NETWORK_TRANSMIT_BYTES_PER_SECOND,
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
        set(attr::PROCESSES, n);
    }
    if let Some(r) = value("node_procs_running") {
        set(attr::PROCESSES_RUNNING, r);
    }
    attrs.insert(attr::VERSION.into(), Value::str(env!("CARGO_PKG_VERSION")));
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

#[cfg(test)]
mod tests {
    use astrolabe_collectors::{fixture, MetricFamily};

    use super::{attr, leaf_attributes};
    use crate::http::names::NameCollisions;
    use crate::zone::{Attributes, Value};

    /// The fixture's families as they were `seconds` earlier: each CPU one
    /// second busier in user mode and three idle since, and every network
    /// device `rx` and `tx` bytes behind.
    fn earlier(current: &[MetricFamily], rx: f64, tx: f64) -> Vec<MetricFamily> {
        let mut before = current.to_vec();
        for f in &mut before {
            for s in &mut f.samples {
                let label = |name: &str| {
                    s.labels
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                s.value -= match (f.name.as_str(), label("mode").as_deref()) {
                    ("node_cpu_seconds_total", Some("user")) => 1.0,
                    ("node_cpu_seconds_total", Some("idle")) => 3.0,
                    ("node_network_receive_bytes_total", _) => rx,
                    ("node_network_transmit_bytes_total", _) => tx,
                    _ => 0.0,
                };
            }
        }
        before
    }

    fn float(attrs: &Attributes, name: &str) -> f64 {
        match attrs.get(name) {
            Some(Value::Float(v)) => *v,
            other => panic!("{name}: {other:?}"),
        }
    }

    /// The host figures of a row, from the fixture host's collectors: each
    /// named attribute, with the value the fixture files make it.
    #[test]
    fn the_fixture_hosts_families_become_the_host_attributes() {
        let current = fixture::collect_all();
        let previous = earlier(&current, 1000.0, 500.0);
        let base: Attributes = [("role".into(), Value::str("web"))].into_iter().collect();
        let collisions = NameCollisions::default();
        let attrs = leaf_attributes(&base, Some(&previous), &current, Some(2.0), &collisions);

        let mut names: Vec<&str> = attrs.keys().map(|k| &**k).collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = attr::ALL.iter().copied().chain(["role"]).collect();
        expected.sort_unstable();
        assert_eq!(
            names, expected,
            "the fixture yields every host attribute, and only those"
        );

        // proc/meminfo: MemTotal 15666184 kB, MemAvailable 9864012 kB.
        assert_eq!(
            float(&attrs, attr::MEMORY_AVAILABLE_BYTES),
            9864012.0 * 1024.0
        );
        assert_eq!(
            float(&attrs, attr::MEMORY_USED_RATIO),
            1.0 - 9864012.0 / 15666184.0
        );
        // proc/loadavg, read as f32 by procfs.
        assert_eq!(float(&attrs, attr::LOAD1), 0.21_f32 as f64);
        // Two CPUs, each 1 s of 4 busy.
        assert!((float(&attrs, attr::CPU_UTILIZATION) - 0.25).abs() < 1e-9);
        // rootfs/statvfs: f_bavail / f_blocks.
        assert_eq!(
            float(&attrs, attr::FILESYSTEM_ROOT_FREE_RATIO),
            32396040.0 / 61202533.0
        );
        // Three devices besides lo, over 2 s.
        assert_eq!(
            float(&attrs, attr::NETWORK_RECEIVE_BYTES_PER_SECOND),
            1500.0
        );
        assert_eq!(
            float(&attrs, attr::NETWORK_TRANSMIT_BYTES_PER_SECOND),
            750.0
        );
        // proc/<pid>: five processes; proc/stat: procs_running 2.
        assert_eq!(float(&attrs, attr::PROCESSES), 5.0);
        assert_eq!(float(&attrs, attr::PROCESSES_RUNNING), 2.0);
        assert_eq!(
            attrs.get(attr::VERSION),
            Some(&Value::str(env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(attrs.get("role"), Some(&Value::str("web")));
    }

    /// A first sample has nothing to take a rate over: no CPU utilization
    /// and no network rates yet, the other figures already.
    #[test]
    fn the_first_sample_has_no_rates() {
        let current = fixture::collect_all();
        let attrs = leaf_attributes(
            &Attributes::new(),
            None,
            &current,
            None,
            &NameCollisions::default(),
        );
        for rate in [
            attr::CPU_UTILIZATION,
            attr::NETWORK_RECEIVE_BYTES_PER_SECOND,
            attr::NETWORK_TRANSMIT_BYTES_PER_SECOND,
        ] {
            assert!(!attrs.contains_key(rate), "{rate}");
        }
        assert!(attrs.contains_key(attr::LOAD1));
    }

    /// Every attribute the default aggregates read is one this function
    /// produces from the fixture host, so none of their columns stays null.
    #[test]
    fn the_default_aggregates_read_attributes_the_fixture_host_has() {
        let current = fixture::collect_all();
        let previous = earlier(&current, 1000.0, 500.0);
        let attrs = leaf_attributes(
            &Attributes::new(),
            Some(&previous),
            &current,
            Some(2.0),
            &NameCollisions::default(),
        );
        let sql = crate::agent::host_aggregates();
        for name in attr::ALL.iter().filter(|a| sql.contains(&format!("{a})"))) {
            assert!(attrs.contains_key(*name), "{name}");
        }
        assert!(sql.contains(&format!("AS {}", crate::agent::column::LOAD1_MAX)));
    }
}
