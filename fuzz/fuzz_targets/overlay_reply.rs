//! A peer's reply to an overlay query: any bytes that decode as a partial
//! (what a hostile or broken child can send) merge with this host's own
//! partials, in both orders, and finish, without a panic or a runaway
//! allocation. The first byte picks one of a fixed set of planned queries.
#![no_main]

use astrolabe::overlay::query::{LocalData, Partial, Query};
use astrolabe::zone::{Attributes, Value};
use libfuzzer_sys::fuzz_target;

const QUERIES: [&str; 6] = [
    "SELECT role, quantile(0.95, cpu_utilization) AS p95, count(*) FROM host GROUP BY role",
    "SELECT count_distinct(name) AS names, sum(rss_bytes), avg(cpu_seconds) FROM process",
    "SELECT first(2, host, cpu_utilization), topk(2, host, load1), min(load1), max(host) FROM host",
    "SELECT host, pid, rss_bytes FROM process ORDER BY rss_bytes DESC LIMIT 3",
    "SELECT name, count(*) AS n FROM process GROUP BY name ORDER BY n DESC LIMIT 2",
    "SELECT * FROM host",
];

fn host(name: &str, cpu: f64, procs: &[(&str, i64)]) -> LocalData {
    let a = |pairs: Vec<(&str, Value)>| -> Attributes {
        pairs
            .into_iter()
            .map(|(k, v)| (std::sync::Arc::from(k), v))
            .collect()
    };
    LocalData {
        host: a(vec![
            ("zone", Value::str("/z")),
            ("host", Value::str(name)),
            ("cpu_utilization", Value::Float(cpu)),
            ("load1", Value::Float(cpu * 2.0)),
            ("role", Value::str("web")),
        ]),
        processes: procs
            .iter()
            .map(|(n, rss)| {
                a(vec![
                    ("host", Value::str(name)),
                    ("pid", Value::Int(*rss % 1000)),
                    ("name", Value::str(n)),
                    ("rss_bytes", Value::Int(*rss)),
                    ("cpu_seconds", Value::Float(*rss as f64 / 7.0)),
                ])
            })
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((pick, bytes)) = data.split_first() else {
        return;
    };
    let Ok(query) = Query::parse(QUERIES[*pick as usize % QUERIES.len()]) else {
        return;
    };
    let Ok(hostile) = postcard::from_bytes::<Partial>(bytes) else {
        return;
    };
    let locals: Vec<Partial> = [
        host("h1", 0.5, &[("nginx", 1 << 20), ("init", 4096)]),
        host("h2", 0.9, &[("nginx", 3 << 20)]),
    ]
    .iter()
    .map(|h| query.local(h))
    .collect();
    // The hostile reply first (it becomes the accumulator's groups), then
    // honest ones merge into it; and the other way round.
    let mut acc = query.empty();
    query.merge(&mut acc, &hostile);
    for p in &locals {
        query.merge(&mut acc, p);
    }
    query.merge(&mut acc, &hostile);
    let _ = query.finish(&acc);
    let mut acc = query.empty();
    for p in &locals {
        query.merge(&mut acc, p);
    }
    query.merge(&mut acc, &hostile);
    let _ = query.finish(&acc);
    let _ = query.finish(&hostile);
});
