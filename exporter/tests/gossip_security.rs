//! Encrypted gossip between real agent processes on loopback: agents with
//! different keys never merge, a captured datagram replayed is dropped, and
//! a key rotation across six agents loses no datagram.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

const AGGREGATE: &str = "SELECT sum(work_items) AS work_sum, count(work_items) AS work_count";

fn generate_key() -> String {
    let key = String::from_utf8(run_ok(&["keys", "generate"]))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(key.len(), 44, "{key}");
    key
}

/// An agent in `zone` whose textfile holds `work_items value`.
fn agent(zone: &str, value: u32) -> Launch {
    Agent::builder(zone)
        .textfile(format!("work_items {value}\n"))
        .args(["--no-collector.host", "--aggregate", AGGREGATE])
}

fn root_sum(a: &Agent) -> Option<f64> {
    zone_value(&a.get("/metrics")?, "astrolabe_zone_work_sum", "/")
}

#[test]
fn agents_with_different_keys_never_merge() {
    let (a, b) = (generate_key(), generate_key());
    let a1 = agent("/k/h1", 1).args(["--gossip.key", &a]).spawn();
    let a3 = agent("/k/h3", 3).seed(a1.gossip).args(["--gossip.key", &a]);
    let a3 = a3.spawn();
    let b2 = agent("/k/h2", 2).seed(a1.gossip).args(["--gossip.key", &b]);
    let b2 = b2.spawn();
    let plain = agent("/k/h4", 4).seed(a1.gossip).spawn();
    // The two agents with key A converge; the others are refused, counted.
    let merged = eventually(Duration::from_secs(30), || {
        let m = a1.get("/metrics").unwrap_or_default();
        root_sum(&a1) == Some(4.0)
            && root_sum(&a3) == Some(4.0)
            && dropped(&m, "decrypt") > 0.0
            && dropped(&m, "unencrypted") > 0.0
    });
    assert!(
        merged,
        "key-A agents did not converge or drops were not counted: {:?}",
        a1.get("/metrics")
            .map(|m| (dropped(&m, "decrypt"), dropped(&m, "unencrypted")))
    );
    // For many more rounds, nobody merges across keys.
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(root_sum(&a1), Some(4.0));
        assert_eq!(root_sum(&a3), Some(4.0));
        assert_eq!(root_sum(&b2), Some(2.0), "key-B agent merged state");
        assert_eq!(root_sum(&plain), Some(4.0), "unkeyed agent merged state");
    }
}

#[test]
fn a_replayed_captured_datagram_is_dropped() {
    let key = generate_key();
    // A socket posing as a seed captures what a real agent sends it.
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    capture
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let spy_port = capture.local_addr().unwrap().port();
    let sender = agent("/r/sender", 1)
        .seed(spy_port)
        .args(["--gossip.key", &key]);
    let sender = sender.spawn();
    let receiver = agent("/r/receiver", 2)
        .args(["--gossip.key", &key, "--gossip.replay-window", "3s"])
        .spawn();
    let mut buf = [0u8; 65536];
    let (len, _) = capture
        .recv_from(&mut buf)
        .expect("the agent gossips to its seed");
    let captured = buf[..len].to_vec();
    assert_eq!(captured[0], 0xA5, "datagrams leave sealed");
    let to = ("127.0.0.1", receiver.gossip);
    // The first copy is genuine; every later copy is a replay.
    for _ in 0..3 {
        capture.send_to(&captured, to).unwrap();
    }
    let replays = eventually(Duration::from_secs(20), || {
        receiver
            .get("/metrics")
            .is_some_and(|m| dropped(&m, "replay") >= 2.0)
    });
    assert!(
        replays,
        "replays not dropped: {:?}",
        receiver.get("/metrics")
    );
    // A tampered copy does not open.
    let mut tampered = captured.clone();
    tampered[len / 2] ^= 1;
    capture.send_to(&tampered, to).unwrap();
    // Once outside the window, a copy is refused as stale.
    let stale = eventually(Duration::from_secs(30), || {
        capture.send_to(&captured, to).unwrap();
        receiver
            .get("/metrics")
            .is_some_and(|m| dropped(&m, "stale") >= 1.0 && dropped(&m, "decrypt") >= 1.0)
    });
    assert!(
        stale,
        "old datagram not refused: {:?}",
        receiver.get("/metrics")
    );
    drop(sender);
}

#[test]
fn key_rotation_across_six_agents_loses_no_datagram() {
    let dir = temp_dir("keys-rotate");
    let (old, new) = (generate_key(), generate_key());
    let rings: Vec<PathBuf> = (0..6)
        .map(|i| {
            let ring = dir.join(format!("ring{i}.json"));
            std::fs::write(&ring, format!("[\"{old}\"]")).unwrap();
            ring
        })
        .collect();
    let ring_of = rings.clone();
    let agents = Cluster::builder("keys-rotate-agents")
        .zones((0..6).map(|i| format!("/rot/z{}/h{}", i % 2, i)))
        .textfile(|i| format!("work_items {}\n", i + 1))
        .args(["--no-collector.host", "--aggregate", AGGREGATE])
        .each(move |i, a| a.args(["--gossip.keyring-file", ring_of[i].to_str().unwrap()]))
        .spawn();
    let converged = eventually(Duration::from_secs(40), || {
        agents.iter().all(|a| root_sum(a) == Some(21.0))
    });
    assert!(
        converged,
        "the cluster did not converge before the rotation"
    );

    // Watch every agent through the whole rotation: no datagram may fail to
    // open, and nobody may lose anybody.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let webs: Vec<u16> = agents.iter().map(|a| a.web).collect();
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut problems = Vec::new();
            let mut polls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && polls < 2000 {
                polls += 1;
                for w in &webs {
                    let Some(m) = http_get(*w, "/metrics") else {
                        continue;
                    };
                    if dropped(&m, "decrypt") > 0.0 {
                        problems.push(format!("agent :{w} dropped a datagram it could not open"));
                    }
                    if zone_value(&m, "astrolabe_zone_work_count", "/").is_some_and(|c| c < 6.0) {
                        problems.push(format!("agent :{w} lost a member"));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (polls, problems)
        })
    };
    let servers = agents.iter().map(|a| a.url()).collect::<Vec<_>>().join(",");
    for (step, key, sealing) in [
        ("install", &new, &old),
        ("use", &new, &old),
        ("remove", &old, &new),
    ] {
        let out = run_cli(
            &["keys", step, key, "--server", &servers],
            &[("ASTROLABE_GOSSIP_KEY", sealing)],
        );
        assert!(out.ok, "keys {step}: {}{}", out.stdout, out.stderr);
        // Let several rounds run under each configuration.
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (polls, problems) = watcher.join().unwrap();
    assert!(polls > 10, "the watcher barely ran");
    assert!(problems.is_empty(), "{problems:?}");
    assert!(agents.iter().all(|a| root_sum(a) == Some(21.0)));

    // Every keyring file now holds the new key alone: a restart keeps it.
    for ring in &rings {
        let text = std::fs::read_to_string(ring).unwrap();
        assert!(text.contains(&new) && !text.contains(&old), "{text}");
    }
    let list = run_cli(&["keys", "list", "--server", &servers], &[]);
    assert!(list.ok);
    assert_eq!(
        list.stdout.matches(", ").count(),
        0,
        "an agent still holds two keys"
    );
    // The old key no longer gets in; a command sealed with it is refused.
    let outsider = agent("/rot/z9/old", 100)
        .seed(agents[0].gossip)
        .args(["--gossip.key", &old])
        .spawn();
    let refused = eventually(Duration::from_secs(20), || {
        agents[0]
            .get("/metrics")
            .is_some_and(|m| dropped(&m, "decrypt") > 0.0)
    });
    assert!(refused);
    assert_eq!(root_sum(&agents[0]), Some(21.0));
    let denied = run_cli(
        &["keys", "install", &old, "--server", &servers],
        &[("ASTROLABE_GOSSIP_KEY", &old)],
    );
    assert!(!denied.ok);
    assert!(denied.stdout.contains("401"));
    drop(outsider);
    let _ = std::fs::remove_dir_all(dir);
}
