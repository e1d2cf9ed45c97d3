use proptest::prelude::*;

use super::*;

fn process(host: &str, pid: i64, name: &str, rss: i64, cpu: f64) -> Attributes {
    let mut a = Attributes::new();
    a.insert("zone".into(), Value::str("/z"));
    a.insert("host".into(), Value::str(host));
    a.insert("pid".into(), Value::Int(pid));
    a.insert("name".into(), Value::str(name));
    a.insert("rss_bytes".into(), Value::Int(rss));
    a.insert("cpu_seconds".into(), Value::Float(cpu));
    a
}

fn host(name: &str, processes: &[(i64, &str, i64, f64)], cpu: f64) -> LocalData {
    let mut h = Attributes::new();
    h.insert("zone".into(), Value::str("/z"));
    h.insert("host".into(), Value::str(name));
    h.insert("cpu_utilization".into(), Value::Float(cpu));
    LocalData {
        host: h,
        processes: processes
            .iter()
            .map(|(pid, n, rss, c)| process(name, *pid, n, *rss, *c))
            .collect(),
    }
}

/// Partials of every host merged along a random tree (the overlay's
/// shape), then finished.
fn through_tree(q: &Query, hosts: &[LocalData], split: &[usize]) -> Table {
    q.finish(&merged_through_tree(q, hosts, split))
}

/// The root's partial of `through_tree`.
fn merged_through_tree(q: &Query, hosts: &[LocalData], split: &[usize]) -> Partial {
    let mut level: Vec<Partial> = hosts.iter().map(|h| q.local(h)).collect();
    let mut s = split.iter().cycle();
    while level.len() > 1 {
        let mut next = Vec::new();
        let mut it = level.into_iter();
        loop {
            let k = 2 + s.next().copied().unwrap_or(1) % 3;
            let mut acc = q.empty();
            let mut any = false;
            for p in it.by_ref().take(k) {
                q.merge(&mut acc, &p);
                any = true;
            }
            if !any {
                break;
            }
            next.push(acc);
        }
        level = next;
    }
    level.pop().unwrap_or_else(|| q.empty())
}

fn all_processes(hosts: &[LocalData]) -> Vec<&Attributes> {
    hosts.iter().flat_map(|h| &h.processes).collect()
}

fn sample() -> Vec<LocalData> {
    vec![
        host("a", &[(1, "nginx", 100, 1.5), (2, "sshd", 10, 0.1)], 0.95),
        host("b", &[(1, "nginx", 300, 2.5), (3, "cron", 5, 0.0)], 0.2),
        host(
            "c",
            &[
                (1, "sshd", 20, 0.2),
                (4, "nginx", 50, 3.0),
                (5, "x", 1, 9.0),
            ],
            0.91,
        ),
    ]
}

#[test]
fn the_issue_examples() {
    let hosts = sample();
    let q = Query::parse(
        "SELECT name, sum(rss_bytes) AS rss FROM process GROUP BY name ORDER BY rss DESC LIMIT 2",
    )
    .unwrap();
    let t = through_tree(&q, &hosts, &[1, 2]);
    assert_eq!(t.columns, vec!["name", "rss"]);
    assert_eq!(
        t.rows,
        vec![
            vec![Value::str("nginx"), Value::Int(450)],
            vec![Value::str("sshd"), Value::Int(30)]
        ]
    );

    let q =
        Query::parse("SELECT zone, host, cpu_utilization FROM host WHERE cpu_utilization > 0.9")
            .unwrap();
    let t = through_tree(&q, &hosts, &[3]);
    let names: Vec<_> = t.rows.iter().map(|r| r[1].clone()).collect();
    assert_eq!(names, vec![Value::str("a"), Value::str("c")]);

    let q = Query::parse("SELECT count(*) FROM process WHERE name = 'nginx'").unwrap();
    let t = through_tree(&q, &hosts, &[0]);
    assert_eq!(t.columns, vec!["count(*)"]);
    assert_eq!(t.rows, vec![vec![Value::Int(3)]]);

    // No row selected: still one row of zeros and NULLs, as in SQL.
    let q = Query::parse("SELECT count(*), max(rss_bytes) FROM process WHERE name = 'no'").unwrap();
    assert_eq!(
        through_tree(&q, &hosts, &[0]).rows,
        vec![vec![Value::Int(0), Value::Null]]
    );
}

#[test]
fn order_by_hidden_column_position_and_star() {
    let hosts = sample();
    let q =
        Query::parse("SELECT host, pid FROM process ORDER BY cpu_seconds DESC LIMIT 2").unwrap();
    let t = through_tree(&q, &hosts, &[1]);
    assert_eq!(
        t.rows,
        vec![
            vec![Value::str("c"), Value::Int(5)],
            vec![Value::str("c"), Value::Int(4)]
        ]
    );
    let q = Query::parse("SELECT * FROM process ORDER BY 7 LIMIT 1").unwrap();
    let t = through_tree(&q, &hosts, &[1]);
    assert_eq!(t.columns.len(), PROCESS_COLUMNS.len());
    assert_eq!(t.rows[0][3], Value::str("x"));
}

#[test]
fn bad_queries_say_why() {
    for (sql, want) in [
        ("SELEC 1", "Expected"),
        ("SELECT x FROM nope", "unknown table"),
        ("SELECT name, count(*) FROM process", "GROUP BY"),
        ("SELECT * FROM host", "process and columns tables only"),
        (
            "SELECT nosuch FROM process",
            "unknown column \"nosuch\" of table process",
        ),
        (
            "SELECT count(*) FROM columns WHERE kind = 'x'",
            "unknown column \"kind\"",
        ),
        (
            "SELECT count(*) FROM process ORDER BY pid",
            "order an aggregate",
        ),
        ("SELECT pid FROM process LIMIT 100000", "LIMIT"),
        ("SELECT pid FROM process LIMIT 3 OFFSET 2", "OFFSET"),
        ("SELECT pid FROM process, host", "joins"),
        ("SELECT pid FROM process; SELECT 1", "one SELECT"),
        ("SELECT nosuch(pid) FROM process", "unknown function"),
    ] {
        let e = Query::parse(sql).unwrap_err();
        assert!(e.0.contains(want), "{sql}: {e}");
    }
    assert!(Query::parse(&format!(
        "SELECT pid FROM process WHERE name = '{}'",
        "a".repeat(2000)
    ))
    .is_err());
}

#[test]
fn partials_are_bounded_by_the_limit_not_the_hosts() {
    let many: Vec<LocalData> = (0..200)
        .map(|h| {
            let procs: Vec<(i64, &str, i64, f64)> =
                (0..50).map(|p| (p, "w", p * 7 + h, p as f64)).collect();
            host(&format!("h{h}"), &procs, 0.0)
        })
        .collect();
    let q = Query::parse("SELECT host, rss_bytes FROM process ORDER BY rss_bytes DESC LIMIT 5")
        .unwrap();
    let mut acc = q.empty();
    for h in &many {
        q.merge(&mut acc, &q.local(h));
        let Partial::Rows { rows, .. } = &acc else {
            panic!("row query gave groups")
        };
        assert!(rows.len() <= 5);
    }
    let t = q.finish(&acc);
    assert_eq!(
        t.rows[0],
        vec![Value::str("h199"), Value::Int(49 * 7 + 199)]
    );
    // Ordered by the group key: groups are cut to LIMIT at every hop.
    let q = Query::parse("SELECT host, count(*) FROM process GROUP BY host ORDER BY host LIMIT 3")
        .unwrap();
    let mut acc = q.empty();
    for h in &many {
        q.merge(&mut acc, &q.local(h));
        let Partial::Groups { groups, .. } = &acc else {
            panic!("aggregate gave rows")
        };
        assert!(groups.len() <= 3);
    }
    assert_eq!(
        q.finish(&acc).rows[0],
        vec![Value::str("h0"), Value::Int(50)]
    );
}

fn arb_hosts() -> impl Strategy<Value = Vec<LocalData>> {
    let names = prop::sample::select(vec!["nginx", "sshd", "cron", "java", "postgres"]);
    let proc_ = (1i64..5000, names, 0i64..1_000_000, 0.0f64..100.0);
    prop::collection::vec((prop::collection::vec(proc_, 0..20), 0.0f64..1.0), 1..30).prop_map(
        |hs| {
            hs.into_iter()
                .enumerate()
                .map(|(i, (procs, cpu))| {
                    let procs: Vec<(i64, &str, i64, f64)> =
                        procs.iter().map(|(p, n, r, c)| (*p, *n, *r, *c)).collect();
                    host(&format!("h{i}"), &procs, cpu)
                })
                .collect()
        },
    )
}

fn close(a: &Value, b: &Value) -> bool {
    crate::sim::values_match(a, b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Aggregates through any tree equal the same functions computed
    /// directly over every selected process.
    #[test]
    fn grouped_aggregates_equal_direct_computation(hosts in arb_hosts(), split in prop::collection::vec(0usize..8, 1..6), min_rss in 0i64..1_000_000) {
        let q = Query::parse(&format!(
            "SELECT name, count(*) AS n, sum(rss_bytes) AS rss, min(cpu_seconds) AS lo, max(cpu_seconds) AS hi, avg(rss_bytes) AS mean FROM process WHERE rss_bytes >= {min_rss} GROUP BY name ORDER BY rss DESC LIMIT 3"
        )).unwrap();
        let got = through_tree(&q, &hosts, &split);
        // Direct: group every selected process by name.
        let mut direct: BTreeMap<String, (i64, i64, f64, f64)> = BTreeMap::new();
        for p in all_processes(&hosts) {
            let rss = p["rss_bytes"].as_i64().unwrap();
            if rss < min_rss { continue; }
            let cpu = p["cpu_seconds"].as_f64().unwrap();
            let e = direct.entry(p["name"].as_str().unwrap().to_string()).or_insert((0, 0, f64::MAX, f64::MIN));
            e.0 += 1; e.1 += rss; e.2 = e.2.min(cpu); e.3 = e.3.max(cpu);
        }
        let mut want: Vec<_> = direct.into_iter().collect();
        want.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(&b.0)));
        want.truncate(3);
        prop_assert_eq!(got.rows.len(), want.len());
        for (row, (name, (n, rss, lo, hi))) in got.rows.iter().zip(&want) {
            prop_assert_eq!(&row[0], &Value::str(name));
            prop_assert_eq!(&row[1], &Value::Int(*n));
            prop_assert_eq!(&row[2], &Value::Int(*rss));
            prop_assert!(close(&row[3], &Value::Float(*lo)));
            prop_assert!(close(&row[4], &Value::Float(*hi)));
            prop_assert!(close(&row[5], &Value::Float(*rss as f64 / *n as f64)));
        }
    }

    /// Top-N rows through any tree equal sorting every row directly.
    #[test]
    fn top_rows_equal_direct_sort(hosts in arb_hosts(), split in prop::collection::vec(0usize..8, 1..6), limit in 0usize..12) {
        let q = Query::parse(&format!(
            "SELECT host, pid, cpu_seconds FROM process WHERE name <> 'cron' ORDER BY cpu_seconds DESC, host, pid LIMIT {limit}"
        )).unwrap();
        let got = through_tree(&q, &hosts, &split);
        let mut want: Vec<(f64, String, i64)> = all_processes(&hosts)
            .into_iter()
            .filter(|p| p["name"].as_str() != Some("cron"))
            .map(|p| (p["cpu_seconds"].as_f64().unwrap(), p["host"].as_str().unwrap().to_string(), p["pid"].as_i64().unwrap()))
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        want.truncate(limit);
        let want: Vec<Vec<Value>> = want.into_iter().map(|(c, h, p)| vec![Value::str(&h), Value::Int(p), Value::Float(c)]).collect();
        prop_assert_eq!(got.rows, want);
    }

    /// Ungrouped count over the host table equals the direct count.
    #[test]
    fn host_counts_equal_direct(hosts in arb_hosts(), split in prop::collection::vec(0usize..8, 1..6), t in 0.0f64..1.0) {
        let q = Query::parse(&format!("SELECT count(*) AS n, sum(cpu_utilization) AS s FROM host WHERE cpu_utilization > {t}")).unwrap();
        let got = through_tree(&q, &hosts, &split);
        let sel: Vec<f64> = hosts.iter().map(|h| h.host["cpu_utilization"].as_f64().unwrap()).filter(|c| *c > t).collect();
        prop_assert_eq!(&got.rows[0][0], &Value::Int(sel.len() as i64));
        let want = if sel.is_empty() { Value::Null } else { Value::Float(sel.iter().sum()) };
        prop_assert!(close(&got.rows[0][1], &want));
    }
}

/// Regression (fuzz `overlay_reply`, artifact crash-b5342374): a child's
/// reply whose distinct-count state is a dense HyperLogLog of one
/// register became a group of the accumulator; merging this host's own
/// state into it panicked. It now merges and finishes.
#[test]
fn a_reply_with_a_forged_distinct_state_merges_without_panic() {
    let q = Query::parse(
        "SELECT count_distinct(name) AS names, sum(rss_bytes), avg(cpu_seconds) FROM process",
    )
    .unwrap();
    // The fuzzer's input after its first byte (the query pick).
    let crash: [u8; 34] = [
        0x01, 0x01, 0x00, 0x03, 0x0b, 0x01, 0x01, 0x01, 0x01, 0x03, 0x05, 0xfa, 0xfc, 0xf6, 0xd2,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x10, 0xf8, 0x00, 0x00,
        0xf8, 0x3f, 0x02, 0x00,
    ];
    let hostile: Partial = postcard::from_bytes(&crash).unwrap();
    let own = q.local(&host("h1", &[(1, "nginx", 4096, 1.0)], 0.5));
    let mut acc = q.empty();
    q.merge(&mut acc, &hostile);
    q.merge(&mut acc, &own);
    let table = q.finish(&acc);
    assert_eq!(table.rows.len(), 1);
    // Whatever the forged state claims, this host's name is counted.
    assert!(
        table.rows[0][0].as_i64().is_some_and(|n| n >= 1),
        "{table:?}"
    );
}

/// `user` is a column of the process table, though SQL reads a bare `user`
/// as the niladic function USER.
#[test]
fn the_user_column_is_a_column() {
    let mut hosts = sample();
    for (i, p) in hosts.iter_mut().flat_map(|h| &mut h.processes).enumerate() {
        let who = if i % 3 == 0 { "root" } else { "www" };
        p.insert("user".into(), Value::str(who));
    }
    let q = Query::parse(
        "SELECT user, count(*) AS n FROM process WHERE user <> 'nobody' GROUP BY user ORDER BY user",
    )
    .unwrap();
    let t = through_tree(&q, &hosts, &[1]);
    assert_eq!(t.columns, vec!["user", "n"]);
    assert_eq!(
        t.rows,
        vec![
            vec![Value::str("root"), Value::Int(3)],
            vec![Value::str("www"), Value::Int(4)]
        ]
    );
    // With parentheses it is a function call, and says so.
    assert!(Query::parse("SELECT user() FROM process").is_err());
}

#[test]
fn hosts_lacking_a_column_are_counted_up_the_tree() {
    let mut hosts: Vec<LocalData> = (0..7).map(|i| host(&format!("h{i}"), &[], 0.5)).collect();
    for h in hosts.iter_mut().take(3) {
        h.host.insert("role".into(), Value::str("web"));
    }
    for sql in [
        "SELECT host, role FROM host WHERE cpu_utilization > 0",
        "SELECT role, count(*) FROM host GROUP BY role",
    ] {
        let q = Query::parse(sql).unwrap();
        for split in [[0], [1], [2]] {
            let p = merged_through_tree(&q, &hosts, &split);
            assert_eq!(p.lacking().get("role"), Some(&4), "{sql}");
            assert_eq!(p.lacking().get("cpu_utilization"), None, "{sql}");
            assert_eq!(
                q.column_warnings(&p, 7, true).unwrap(),
                vec!["column role: 4 of 7 hosts lack it".to_string()]
            );
        }
    }
    // No answering host has it: an error once done, a warning before.
    let q = Query::parse("SELECT host, nosuchcol FROM host").unwrap();
    let p = merged_through_tree(&q, &hosts, &[1]);
    let e = q.column_warnings(&p, 7, true).unwrap_err();
    assert!(
        e.0.contains("\"nosuchcol\"") && e.0.contains("7 answering hosts"),
        "{e}"
    );
    assert_eq!(
        q.column_warnings(&p, 7, false).unwrap(),
        vec!["column nosuchcol: 7 of 7 hosts lack it".to_string()]
    );
    // A peer cannot name columns the query does not read, nor count more
    // hosts than answered.
    let mut hostile = q.empty();
    if let Partial::Rows { lacking, .. } = &mut hostile {
        lacking.insert("unrelated".into(), 5);
        lacking.insert("nosuchcol".into(), u32::MAX);
    }
    let mut acc = q.empty();
    q.merge(&mut acc, &hostile);
    assert_eq!(acc.lacking().keys().collect::<Vec<_>>(), vec!["nosuchcol"]);
    assert!(q
        .column_warnings(&acc, 2, true)
        .unwrap_err()
        .0
        .contains("2 answering"));
}

#[test]
fn the_columns_table_lists_both_tables_on_every_host() {
    let mut hosts = sample();
    hosts[0].host.insert("role".into(), Value::str("web"));
    let q = Query::parse(
        "SELECT table_name, column_name, data_type, count(*) AS hosts FROM columns GROUP BY table_name, column_name, data_type ORDER BY table_name, column_name",
    )
    .unwrap();
    let t = through_tree(&q, &hosts, &[1]);
    let n = hosts.len() as i64;
    let row = |t: &str, c: &str, ty: &str, k: i64| {
        vec![Value::str(t), Value::str(c), Value::str(ty), Value::Int(k)]
    };
    assert!(
        t.rows.contains(&row("host", "role", "string", 1)),
        "{:?}",
        t.rows
    );
    assert!(t.rows.contains(&row("host", "cpu_utilization", "float", n)));
    assert!(t.rows.contains(&row("process", "rss_bytes", "int", n)));
    let process_rows = t
        .rows
        .iter()
        .filter(|r| r[0] == Value::str("process"))
        .count();
    assert_eq!(process_rows, PROCESS_COLUMNS.len());
    let all = Query::parse("SELECT * FROM columns WHERE column_name = 'role'").unwrap();
    let t = through_tree(&all, &hosts, &[0]);
    assert_eq!(t.columns, COLUMNS_COLUMNS);
    assert_eq!(t.rows.len(), 1);
}
