//! The local tables of a real host: `host` from the agent's own row and
//! collector samples, `process` from /proc.

use std::collections::HashMap;

use astrolabe_collectors::MetricFamily;

use super::query::{LocalData, Source};
use crate::zone::{Attributes, Value, ZonePath};

/// Characters of a command line kept in the `process` table.
pub const CMDLINE_CHARS: usize = 200;

/// `zone` (the parent zone) and `host` (the leaf's name) of a leaf path.
pub fn zone_and_host(leaf: &ZonePath) -> (String, String) {
    let zone = leaf.parent().unwrap_or_else(ZonePath::root).to_string();
    (zone, leaf.name().to_string())
}

/// The `host` row: every leaf attribute, every unlabeled collector sample
/// under its family name, then `zone` and `host`.
pub fn host_row(leaf: &ZonePath, attributes: &Attributes, samples: &[MetricFamily]) -> Attributes {
    let mut row = Attributes::new();
    for f in samples {
        if let Some(v) = f.unlabeled() {
            if v.is_finite() {
                row.insert(f.name.as_str().into(), Value::Float(v));
            }
        }
    }
    for (k, v) in attributes {
        row.insert(k.clone(), v.clone());
    }
    let (zone, host) = zone_and_host(leaf);
    row.insert("zone".into(), Value::str(&zone));
    row.insert("host".into(), Value::str(&host));
    row
}

fn user_names() -> HashMap<u32, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// One row per process still there when read (processes come and go).
pub fn process_rows(leaf: &ZonePath) -> Vec<Attributes> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let tps = procfs::ticks_per_second().max(1) as f64;
    let page = procfs::page_size() as i64;
    let boot = procfs::boot_time_secs().unwrap_or(0) as f64;
    let users = user_names();
    let (zone, host) = zone_and_host(leaf);
    let mut rows = Vec::new();
    for p in all.flatten() {
        let Ok(stat) = p.stat() else { continue };
        let uid = p.uid().ok();
        let user = uid
            .map(|u| users.get(&u).cloned().unwrap_or_else(|| u.to_string()))
            .unwrap_or_default();
        let cmdline: String = p
            .cmdline()
            .map(|c| c.join(" "))
            .unwrap_or_default()
            .chars()
            .take(CMDLINE_CHARS)
            .collect();
        let mut row = Attributes::new();
        row.insert("zone".into(), Value::str(&zone));
        row.insert("host".into(), Value::str(&host));
        row.insert("pid".into(), Value::Int(p.pid as i64));
        row.insert("name".into(), Value::str(&stat.comm));
        row.insert("user".into(), Value::str(&user));
        row.insert(
            "cpu_seconds".into(),
            Value::Float((stat.utime + stat.stime) as f64 / tps),
        );
        row.insert(
            "rss_bytes".into(),
            Value::Int((stat.rss as i64).saturating_mul(page)),
        );
        row.insert("threads".into(), Value::Int(stat.num_threads));
        row.insert(
            "start_time".into(),
            Value::Float(boot + stat.starttime as f64 / tps),
        );
        row.insert("cmdline".into(), Value::str(&cmdline));
        rows.push(row);
    }
    rows
}

/// What a query over `source` needs: /proc is read only for `process`.
pub fn local_data(
    source: Source,
    leaf: &ZonePath,
    attributes: &Attributes,
    samples: &[MetricFamily],
) -> LocalData {
    LocalData {
        host: host_row(leaf, attributes, samples),
        processes: match source {
            Source::Process => process_rows(leaf),
            Source::Host => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_finds_itself_in_the_process_table() {
        let leaf = ZonePath::parse("/a/b/me").unwrap();
        let rows = process_rows(&leaf);
        let me = std::process::id() as i64;
        let row = rows
            .iter()
            .find(|r| r.get("pid") == Some(&Value::Int(me)))
            .expect("own process listed");
        assert_eq!(row.get("zone"), Some(&Value::str("/a/b")));
        assert_eq!(row.get("host"), Some(&Value::str("me")));
        assert!(row.get("rss_bytes").and_then(Value::as_i64).unwrap_or(0) > 0);
        assert!(row.get("threads").and_then(Value::as_i64).unwrap_or(0) >= 1);
    }
}
