//! A hostile sender on loopback: random, truncated, oversized and
//! garbled datagrams (and, against an encrypted cluster, replayed and
//! tampered copies of real ones) for a bounded time. Every agent must keep
//! serving the exact aggregates, count what it dropped, and keep its
//! memory bounded.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

const AGGREGATE: &str = "SELECT sum(work_items) AS work_sum, count(work_items) AS work_count";

fn rss_kb(agent: &Agent) -> u64 {
    let pid = agent.pid().unwrap_or(0);
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn serves_truth(agents: &[Agent]) -> bool {
    agents.iter().all(|a| {
        a.get("/metrics").is_some_and(|m| {
            zone_value(&m, "astrolabe_zone_work_sum", "/") == Some(10.0)
                && zone_value(&m, "astrolabe_zone_work_count", "/") == Some(4.0)
        })
    })
}

fn hostile_run(name: &str, key: Option<&str>) {
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    capture
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let spy = capture.local_addr().unwrap().port();
    // Agent 0 is seeded with the spy, the others with agent 0.
    let mut cluster = Cluster::builder(name)
        .zones((0..4).map(|i| format!("/h/z{}/h{i}", i / 2)))
        .textfile(|i| format!("work_items {}\n", i + 1))
        .args(["--no-collector.host", "--aggregate", AGGREGATE])
        .each(move |i, agent| if i == 0 { agent.seed(spy) } else { agent });
    if let Some(k) = key {
        cluster = cluster.args(["--gossip.key", k]);
    }
    let agents = cluster.spawn();
    assert!(
        eventually(Duration::from_secs(40), || serves_truth(&agents)),
        "the cluster did not converge before the attack"
    );
    // Real datagrams, to truncate, garble and replay.
    let mut real = Vec::new();
    let mut buf = [0u8; 65536];
    while real.len() < 5 {
        let (n, _) = capture
            .recv_from(&mut buf)
            .expect("agent 0 gossips to its seed");
        real.push(buf[..n].to_vec());
    }
    let rss_before: Vec<u64> = agents.iter().map(rss_kb).collect();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(6) {
        let sample = &real[rng.random_range(0..real.len())];
        let datagram: Vec<u8> = match sent % 6 {
            0 => (0..rng.random_range(0..1500))
                .map(|_| rng.random())
                .collect(),
            1 => sample[..rng.random_range(0..sample.len())].to_vec(),
            2 => vec![rng.random(); 9000],
            3 => {
                let mut d = sample.clone();
                d[0] = rng.random();
                d
            }
            // Against an encrypted cluster: replays and bit flips of real
            // datagrams; in the clear these could carry valid rows, which
            // only a key can tell from forgeries, so they are skipped.
            4 if key.is_some() => sample.clone(),
            5 if key.is_some() => {
                let mut d = sample.clone();
                let at = rng.random_range(1..d.len());
                d[at] ^= 1 << rng.random_range(0..8);
                d
            }
            _ => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        };
        let to = &agents[rng.random_range(0..agents.len())];
        let _ = capture.send_to(&datagram, ("127.0.0.1", to.gossip));
        sent += 1;
        if sent % 64 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    eprintln!("sent {sent} datagrams");
    assert!(sent > 1000, "the hostile sender barely sent ({sent})");
    assert!(
        eventually(Duration::from_secs(30), || serves_truth(&agents)),
        "aggregates wrong after the attack"
    );
    for (a, before) in agents.iter().zip(rss_before) {
        let m = a.get("/metrics").unwrap_or_default();
        let total: f64 = [
            "empty",
            "version",
            "malformed",
            "oversized",
            "unencrypted",
            "no_key",
            "decrypt",
            "stale",
            "replay",
        ]
        .iter()
        .map(|r| dropped(&m, r))
        .sum();
        assert!(total > 100.0, "{}: only {total} drops counted", a.zone);
        assert!(dropped(&m, "oversized") > 0.0);
        if key.is_some() {
            assert!(dropped(&m, "decrypt") > 0.0 && dropped(&m, "unencrypted") > 0.0);
        } else {
            assert!(dropped(&m, "malformed") > 0.0 && dropped(&m, "version") > 0.0);
        }
        let after = rss_kb(a);
        assert!(
            after < before + 32 * 1024,
            "{}: resident memory grew from {before} kB to {after} kB",
            a.zone
        );
    }
    if key.is_some() {
        // Agent 0's datagrams were sent to the spy, so replays of them
        // reach the others as the first copy, then as replays.
        let replays: f64 = agents
            .iter()
            .map(|a| dropped(&a.get("/metrics").unwrap_or_default(), "replay"))
            .sum();
        assert!(replays > 0.0, "no replay detected");
    }
}

#[test]
fn a_hostile_sender_cannot_hurt_a_cluster_in_the_clear() {
    hostile_run("hostile-clear", None);
}

#[test]
fn a_hostile_sender_cannot_hurt_an_encrypted_cluster() {
    let key = astrolabe::transport::keyring::Key::generate(&mut rand::rng()).to_base64();
    hostile_run("hostile-sealed", Some(&key));
}

// ---- valid but absurd ------------------------------------------------

use std::sync::Arc;

use astrolabe::aggregate::ddsketch::{Bins, DdSketch};
use astrolabe::aggregate::State;
use astrolabe::engine::{Envelope, Message};
use astrolabe::zone::{Attributes, Body, Freshness, Hlc, Row, Value, ZonePath};

fn refused_rows(metrics: &str, reason: &str) -> f64 {
    common::labelled_sum(
        metrics,
        "astrolabe_gossip_refused_rows_total",
        "reason",
        reason,
    )
}

fn row(zone: &str, issued_ms: u64, body: Body) -> Arc<Row> {
    Arc::new(Row::new(
        ZonePath::parse(zone).unwrap(),
        Freshness {
            issued: Hlc::new(issued_ms, 0),
            inputs: 0,
        },
        4242,
        body,
    ))
}

/// Two-letter names: the most attributes that fit one datagram.
fn short_names(n: usize) -> impl Iterator<Item = Arc<str>> {
    (0..n).map(|i| {
        let (a, b) = (
            (b'a' + (i / 26) as u8) as char,
            (b'a' + (i % 26) as u8) as char,
        );
        Arc::from(format!("{a}{b}").as_str())
    })
}

/// Datagrams of a well-formed envelope from a sender claiming `/h/z0/evil`,
/// each at most `MAX` bytes; every row kind the test sends.
struct Forger {
    next_bogus: u64,
}

const MAX: usize = 1400;

impl Forger {
    fn datagram(rows: Vec<Arc<Row>>, push: bool) -> Vec<u8> {
        let message = if push {
            Message::Push(rows)
        } else {
            Message::Rows(rows)
        };
        astrolabe::transport::encode(&Envelope {
            sender: 4242,
            sender_zone: ZonePath::parse("/h/z0/evil").unwrap(),
            message,
        })
    }

    /// As many fresh rows of never-seen zones as fit: hosts of /h/z0
    /// (the leaf table of z0's agents) or zones under /h (everyone's).
    fn bogus_rows(&mut self, leaves: bool) -> Vec<u8> {
        let mut rows = Vec::new();
        let mut size = Self::datagram(Vec::new(), false).len() + 2;
        loop {
            self.next_bogus += 1;
            let r = if leaves {
                row(
                    &format!("/h/z0/b{}", self.next_bogus),
                    wall_ms(),
                    Body::Leaf(Attributes::new()),
                )
            } else {
                row(
                    &format!("/h/b{}", self.next_bogus),
                    wall_ms(),
                    Body::Zone(Default::default()),
                )
            };
            // Each row's own encoding adds up to the datagram's (plus the
            // length prefix, counted above with room to grow).
            size += Self::datagram(vec![r.clone()], false).len()
                - Self::datagram(Vec::new(), false).len();
            if size > MAX {
                let d = Self::datagram(rows, self.next_bogus % 2 == 0);
                assert!(d.len() <= MAX, "{} bytes", d.len());
                return d;
            }
            rows.push(r);
        }
    }

    fn absurd(&mut self, kind: u64) -> Vec<u8> {
        let now = wall_ms();
        let leaf = |attrs: Attributes| row("/h/z0/absurd", now, Body::Leaf(attrs));
        let rows = match kind {
            // 300 attributes (more would not fit a datagram).
            0 => vec![leaf(short_names(300).map(|n| (n, Value::Null)).collect())],
            // A 1100-byte string.
            1 => vec![leaf(
                [(Arc::from("s"), Value::str(&"x".repeat(1100)))]
                    .into_iter()
                    .collect(),
            )],
            // A 600-item list.
            2 => vec![leaf(
                [(Arc::from("l"), Value::List(vec![Value::Null; 600]))]
                    .into_iter()
                    .collect(),
            )],
            // A quantile sketch whose bins sit at the end of i32, with
            // counts that overflow: merged, it would allocate gigabytes.
            3 => {
                let sketch = DdSketch {
                    positive: Bins {
                        offset: i32::MAX - 2,
                        counts: vec![u64::MAX, u64::MAX],
                    },
                    negative: Bins {
                        offset: i32::MIN,
                        counts: vec![u64::MAX],
                    },
                    zeros: u64::MAX,
                };
                let states = [(Arc::from("p"), State::Quantile { q: 0.5, sketch })]
                    .into_iter()
                    .collect();
                vec![row("/h/forged", now, Body::Zone(states))]
            }
            // A day ahead, and from 1970.
            4 => vec![
                row(
                    "/h/z0/future",
                    now + 86_400_000,
                    Body::Leaf(Attributes::new()),
                ),
                row("/h/future", u64::MAX >> 17, Body::Zone(Default::default())),
                row("/h/z0/ancient", 1, Body::Leaf(Attributes::new())),
            ],
            // Zones no agent shares a table with the sender for.
            _ => vec![
                row("/h/z9/x", now, Body::Leaf(Attributes::new())),
                row("/elsewhere/a/b", now, Body::Leaf(Attributes::new())),
            ],
        };
        let d = Self::datagram(rows, kind % 2 == 1);
        assert!(d.len() <= MAX, "kind {kind}: {} bytes", d.len());
        d
    }
}

/// Well-formed envelopes carrying absurd rows (hundreds of attributes,
/// huge strings and lists, forged sketches, timestamps a day ahead or from
/// 1970, zones not shared) and thousands of rows of bogus zones into one
/// table, for a bounded time, at 4 real agents with default limits. Every
/// agent keeps serving the aggregates of the textfiles, keeps its memory
/// bounded, and counts what each limit refused.
#[test]
fn valid_but_absurd_rows_are_refused_by_limit_and_counted() {
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agents = Cluster::builder("hostile-absurd")
        .zones((0..4).map(|i| format!("/h/z{}/h{i}", i / 2)))
        .textfile(|i| format!("work_items {}\n", i + 1))
        .args(["--no-collector.host", "--aggregate", AGGREGATE])
        .spawn();
    // Ground truth from the textfiles: h0..h3 hold 1..4, z0 = h0 + h1.
    let truth = |a: &Agent| {
        a.get("/metrics").is_some_and(|m| {
            zone_value(&m, "astrolabe_zone_work_sum", "/") == Some(10.0)
                && zone_value(&m, "astrolabe_zone_work_count", "/") == Some(4.0)
                && zone_value(&m, "astrolabe_zone_work_sum", "/h/z0") == Some(3.0)
                && zone_value(&m, "astrolabe_zone_work_sum", "/h/z1") == Some(7.0)
        })
    };
    assert!(
        eventually(Duration::from_secs(40), || agents.iter().all(truth)),
        "the cluster did not converge before the attack"
    );
    let rss_before: Vec<u64> = agents.iter().map(rss_kb).collect();

    let mut forger = Forger { next_bogus: 0 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let mut right_during = vec![false; agents.len()];
    let start = Instant::now();
    let mut last_check = start;
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(8) {
        let to = rng.random_range(0..agents.len());
        let datagram = match sent % 4 {
            0 => forger.bogus_rows(true),
            1 => forger.bogus_rows(false),
            _ => forger.absurd(rng.random_range(0..6)),
        };
        let _ = attacker.send_to(&datagram, ("127.0.0.1", agents[to].gossip));
        sent += 1;
        if sent % 32 == 0 {
            std::thread::sleep(Duration::from_millis(4));
        }
        if last_check.elapsed() > Duration::from_secs(1) {
            for (i, a) in agents.iter().enumerate() {
                right_during[i] |= truth(a);
            }
            last_check = Instant::now();
        }
    }
    eprintln!("sent {sent} datagrams");
    assert!(sent > 1000, "the hostile sender barely sent ({sent})");
    for (a, right) in agents.iter().zip(&right_during) {
        assert!(right, "{}: wrong aggregates during the attack", a.zone);
    }
    assert!(
        eventually(Duration::from_secs(30), || agents.iter().all(truth)),
        "aggregates wrong after the attack"
    );
    for (i, (a, before)) in agents.iter().zip(rss_before).enumerate() {
        let m = a.get("/metrics").unwrap_or_default();
        for limit in [
            "rows_per_table",
            "attributes_per_row",
            "string_length",
            "list_length",
            "state_range",
        ] {
            assert!(
                limit_refusals(&m, limit) > 0.0,
                "{}: nothing refused by {limit}",
                a.zone
            );
        }
        assert!(refused_rows(&m, "from_the_future") > 0.0, "{}", a.zone);
        assert!(refused_rows(&m, "not_shared") > 0.0, "{}", a.zone);
        let after = rss_kb(a);
        assert!(
            after < before + 48 * 1024,
            "{}: resident memory grew from {before} kB to {after} kB",
            a.zone
        );
        eprintln!(
            "agent {i} {}: rss {before} -> {after} kB, refused rows_per_table {} zones_per_level {}",
            a.zone,
            limit_refusals(&m, "rows_per_table"),
            limit_refusals(&m, "zones_per_level")
        );
    }
}

/// `--web.max-requests 2`: two requests whose bodies never come hold both
/// slots; a third API request is answered 503 at once with its reason,
/// and the refusal is counted, while `/metrics` and the health checks,
/// served from their own budget, keep answering. `--web.read-timeout`
/// then cuts the two slow uploads (408), which is counted too.
#[test]
fn http_requests_beyond_the_limit_get_503_and_are_counted() {
    use std::io::{Read, Write};
    let dir = temp_dir("hostile-http");
    let agent = Agent::builder("/h/zh/h0")
        .dir(&dir)
        .args([
            "--no-collector.host",
            "--web.max-requests",
            "2",
            "--web.read-timeout",
            "3s",
        ])
        .spawn();
    assert!(
        eventually(Duration::from_secs(20), || agent.get("/metrics").is_some()),
        "agent never served"
    );
    // Requests whose handler waits for a body that never comes.
    let hold = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", agent.web)).unwrap();
        s.write_all(
            b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .unwrap();
        s
    };
    let held = [hold(), hold()];
    let shed = eventually(Duration::from_secs(10), || {
        http_get_with(agent.web, "/api/v1/zones", &[]).is_some_and(|(status, body)| {
            status == 503 && body.contains(r#""reason":"http_requests""#)
        })
    });
    assert!(shed, "a third request was served while two were in flight");
    for path in ["/metrics", "/-/healthy"] {
        let (status, _) = http_get_with(agent.web, path, &[]).expect("answer");
        assert_eq!(status, 200, "{path} while the API budget is used up");
    }
    // The slow uploads are cut at the read timeout.
    for mut s in held {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    let counted = eventually(Duration::from_secs(10), || {
        agent.get("/metrics").is_some_and(|m| {
            limit_refusals(&m, "http_requests") >= 1.0
                && limit_refusals(&m, "http_read_timeout") >= 2.0
        })
    });
    assert!(counted, "the 503 and the 408s were not counted");
    let _ = std::fs::remove_dir_all(dir);
}
