//! The overlay's query planner and executor: any text is planned or
//! refused with a message; a planned query runs over a small fixed set of
//! hosts and processes, its partials travel the wire codec and merge along
//! a tree, and the answer is finished, all without a panic.
#![no_main]

use astrolabe::overlay::query::{LocalData, Partial, Query};
use astrolabe::zone::{Attributes, Value};
use libfuzzer_sys::fuzz_target;

fn attrs(pairs: &[(&str, Value)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (std::sync::Arc::from(*k), v.clone()))
        .collect()
}

fn host(zone: &str, name: &str, cpu: f64, procs: &[(i64, &str, i64, f64)]) -> LocalData {
    LocalData {
        host: attrs(&[
            ("zone", Value::str(zone)),
            ("host", Value::str(name)),
            ("cpu_utilization", Value::Float(cpu)),
            ("load1", Value::Float(cpu * 4.0)),
            ("memory_available_bytes", Value::Int(1 << 30)),
            ("role", Value::str(if cpu > 0.5 { "db" } else { "web" })),
            ("tags", Value::List(vec![Value::str("a"), Value::Int(1)])),
            ("up", Value::Bool(true)),
            ("nothing", Value::Null),
        ]),
        processes: procs
            .iter()
            .map(|(pid, n, rss, c)| {
                attrs(&[
                    ("zone", Value::str(zone)),
                    ("host", Value::str(name)),
                    ("pid", Value::Int(*pid)),
                    ("name", Value::str(n)),
                    ("user", Value::str("root")),
                    ("rss_bytes", Value::Int(*rss)),
                    ("cpu_seconds", Value::Float(*c)),
                    ("threads", Value::Int(4)),
                    ("start_time", Value::Float(1.7e9)),
                    ("cmdline", Value::str("/usr/bin/x --flag")),
                ])
            })
            .collect(),
    }
}

fn hosts() -> Vec<LocalData> {
    vec![
        host("/eu/fra/h1", "h1", 0.25, &[(1, "init", 10_000, 1.5), (42, "nginx", 80_000_000, 30.0)]),
        host("/eu/fra/h2", "h2", 0.75, &[(1, "init", 11_000, 2.0), (7, "postgres", 1 << 31, f64::MAX)]),
        host("/us/nyc/h3", "h3", f64::NAN, &[(1, "init", i64::MAX, -0.0)]),
        host("/us/nyc/h4", "h4", -1.0, &[]),
    ]
}

/// A partial as it crosses the wire: encoded and decoded with postcard.
fn over_the_wire(p: &Partial) -> Partial {
    postcard::to_allocvec(p)
        .ok()
        .and_then(|b| postcard::from_bytes(&b).ok())
        .unwrap_or_else(|| p.clone())
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = Query::parse(sql) else {
        return;
    };
    let partials: Vec<Partial> = hosts().iter().map(|h| over_the_wire(&query.local(h))).collect();
    // Two zones of two hosts, then the root: the overlay's shape.
    let mut root = query.empty();
    for pair in partials.chunks(2) {
        let mut zone = query.empty();
        for p in pair {
            query.merge(&mut zone, p);
        }
        query.merge(&mut root, &over_the_wire(&zone));
    }
    // A duplicate answer (a retry through another contact) merges too.
    query.merge(&mut root, &partials[0]);
    let _ = query.finish(&root);
    let _ = query.finish(&query.empty());
});
