//! The local tables of a real host: `host` from the agent's own row and
//! collector samples, `process` from /proc.

use std::collections::HashMap;

use astrolabe_collectors::MetricFamily;

use super::query::{LocalData, Query, Source};
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

/// Which /proc files a query needs read per process: a count needs none,
/// and the user and command line cost a file each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessNeeds {
    pub stat: bool,
    pub user: bool,
    pub cmdline: bool,
}

impl ProcessNeeds {
    pub const ALL: ProcessNeeds = ProcessNeeds {
        stat: true,
        user: true,
        cmdline: true,
    };

    /// From the query's plan: exactly the columns it reads, wherever they
    /// appear (WHERE, output, GROUP BY, aggregate arguments, ORDER BY), so
    /// an alias, a string literal or `count (*)` spelled with a space does
    /// not make it read files it does not need, and no column it reads is
    /// missed.
    pub fn of_query(query: &Query) -> ProcessNeeds {
        let read = query.columns_read();
        let reads = |c: &str| read.contains(c);
        ProcessNeeds {
            stat: STAT_COLUMNS.iter().any(|c| reads(c)),
            user: reads("user"),
            cmdline: reads("cmdline"),
        }
    }
}

/// The `process` columns that come from /proc/PID/stat.
const STAT_COLUMNS: [&str; 5] = ["name", "cpu_seconds", "rss_bytes", "threads", "start_time"];

/// One row per process still there when read (processes come and go).
pub fn process_rows(leaf: &ZonePath) -> Vec<Attributes> {
    process_rows_with(leaf, ProcessNeeds::ALL)
}

/// Process rows with only the columns `needs` asks for (others NULL).
pub fn process_rows_with(leaf: &ZonePath, needs: ProcessNeeds) -> Vec<Attributes> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let tps = procfs::ticks_per_second().max(1) as f64;
    let page = procfs::page_size() as i64;
    let boot = procfs::boot_time_secs().unwrap_or(0) as f64;
    let users = if needs.user {
        user_names()
    } else {
        HashMap::new()
    };
    let (zone, host) = zone_and_host(leaf);
    let mut rows = Vec::new();
    for p in all.flatten() {
        let mut row = Attributes::new();
        row.insert("zone".into(), Value::str(&zone));
        row.insert("host".into(), Value::str(&host));
        row.insert("pid".into(), Value::Int(p.pid as i64));
        if needs.user {
            let user = p
                .uid()
                .ok()
                .map(|u| users.get(&u).cloned().unwrap_or_else(|| u.to_string()))
                .unwrap_or_default();
            row.insert("user".into(), Value::str(&user));
        }
        if needs.cmdline {
            let cmdline: String = p
                .cmdline()
                .map(|c| c.join(" "))
                .unwrap_or_default()
                .chars()
                .take(CMDLINE_CHARS)
                .collect();
            row.insert("cmdline".into(), Value::str(&cmdline));
        }
        if !needs.stat {
            rows.push(row);
            continue;
        }
        let Ok(stat) = p.stat() else { continue };
        row.insert("name".into(), Value::str(&stat.comm));
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
        rows.push(row);
    }
    rows
}

/// What a query over `source` needs: /proc is read only for `process`
/// (the `columns` table comes from the `host` row),
/// and only the files the query's columns come from.
pub fn local_data(
    query: &Query,
    leaf: &ZonePath,
    attributes: &Attributes,
    samples: &[MetricFamily],
) -> LocalData {
    LocalData {
        host: host_row(leaf, attributes, samples),
        processes: match query.source {
            Source::Process => process_rows_with(leaf, ProcessNeeds::of_query(query)),
            Source::Host | Source::Columns => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(sql: &str) -> ProcessNeeds {
        ProcessNeeds::of_query(&Query::parse(sql).unwrap())
    }

    #[test]
    fn only_the_needed_files_are_read() {
        let none = ProcessNeeds {
            stat: false,
            user: false,
            cmdline: false,
        };
        assert_eq!(needs("SELECT count(*) FROM process"), none);
        // Spelling, aliases and literals that merely look like columns.
        assert_eq!(
            needs("SELECT COUNT ( * ) AS threads_total, max(pid) AS user_max FROM process WHERE pid <> 0 OR 'name' = 'cmdline'"),
            none
        );
        // (`user` is an SQL keyword: the column is written quoted.)
        let n = needs(r#"SELECT "user", count(*) FROM process WHERE name = 'x' GROUP BY "user""#);
        assert_eq!((n.stat, n.user, n.cmdline), (true, true, false));
        // A column used only as a hidden sort key or aggregate argument.
        let n = needs("SELECT pid FROM process ORDER BY rss_bytes DESC LIMIT 3");
        assert_eq!((n.stat, n.user, n.cmdline), (true, false, false));
        let n = needs("SELECT topk(3, cmdline, cpu_seconds) AS top FROM process");
        assert_eq!((n.stat, n.user, n.cmdline), (true, false, true));
        assert_eq!(needs("SELECT * FROM process"), ProcessNeeds::ALL);
        let leaf = ZonePath::parse("/a/me").unwrap();
        let all = process_rows(&leaf).len();
        let bare = process_rows_with(&leaf, needs("SELECT count(*) FROM process"));
        assert!(bare.len() + 50 >= all && all + 50 >= bare.len());
        assert!(bare.iter().all(|r| r.get("name").is_none()));
        // What is read is what the query then finds: the answer over rows
        // read with the detected needs equals the one over full rows.
        let sql = "SELECT name, count(*) AS n FROM process WHERE pid = 1 OR pid = 2 GROUP BY name ORDER BY name";
        let q = Query::parse(sql).unwrap();
        let with_needs = LocalData {
            host: Attributes::new(),
            processes: process_rows_with(&leaf, ProcessNeeds::of_query(&q)),
        };
        let full = LocalData {
            host: Attributes::new(),
            processes: process_rows(&leaf),
        };
        assert_eq!(q.finish(&q.local(&with_needs)), q.finish(&q.local(&full)));
    }

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
