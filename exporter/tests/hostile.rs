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
    let pid = agent.child.as_ref().map(|c| c.id()).unwrap_or(0);
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
    let dir = temp_dir(name);
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    capture
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let spy = capture.local_addr().unwrap().port();
    let mut agents: Vec<Agent> = Vec::new();
    for i in 0..4u32 {
        let d = dir.join(format!("a{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("w.prom"), format!("work_items {}\n", i + 1)).unwrap();
        let mut extra = vec!["--no-collector.host", "--aggregate", AGGREGATE];
        if let Some(k) = key {
            extra.extend(["--gossip.key", k]);
        }
        let seeds = match agents.first() {
            Some(a) => vec![a.gossip],
            None => vec![spy],
        };
        agents.push(Agent::spawn(
            &format!("/h/z{}/h{i}", i / 2),
            &seeds,
            &d,
            &extra,
        ));
    }
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
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_hostile_sender_cannot_hurt_a_cluster_in_the_clear() {
    hostile_run("hostile-clear", None);
}

#[test]
fn a_hostile_sender_cannot_hurt_an_encrypted_cluster() {
    let key = astrolabe::transport::crypto::Key::generate().to_base64();
    hostile_run("hostile-sealed", Some(&key));
}
