//! Engine-level protocol tests that need its private steps.

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::aggregate::AggregateSet;
use crate::zone::{Attributes, Value, ZonePath};

const WALL: u64 = 1_800_000_000_000;

fn at(t: u64) -> Now {
    Now {
        mono_ms: t,
        wall_ms: WALL + t,
    }
}

fn engine(id: u64, zone: &str, addr: SocketAddr, seed: SocketAddr) -> Engine {
    let mut cfg = EngineConfig::new(id, ZonePath::parse(zone).unwrap(), addr);
    cfg.seeds = vec![seed];
    let aggregates = Arc::new(AggregateSet::with_defaults(&[] as &[&str]).unwrap());
    let mut attrs = Attributes::new();
    attrs.insert("load1".into(), Value::Float(id as f64));
    Engine::new(cfg, aggregates, attrs, at(0)).unwrap()
}

/// Delivers `effects` of engine `from` and everything they cause, lossless.
fn deliver(
    engines: &mut [Engine],
    addrs: &[SocketAddr],
    now: u64,
    from: usize,
    effects: Vec<Effect>,
) {
    let mut queue: Vec<(usize, Effect)> = effects.into_iter().map(|e| (from, e)).collect();
    while let Some((from, Effect::Send { to, envelope, .. })) = queue.pop() {
        let Some(i) = addrs.iter().position(|a| *a == to) else {
            continue;
        };
        let out = engines[i].handle(at(now), addrs[from], envelope);
        queue.extend(out.into_iter().map(|e| (i, e)));
    }
}

/// The digest of a zone-mate that holds an older copy of our own leaf row
/// is answered with our newer heartbeat: the owner is the one source of
/// its row that is never behind. (Before, the owner skipped its own entry,
/// so its heartbeat left only on its own digests, three datagrams each
/// way; at 20% loss a live row once went unrefreshed for 18 rounds and
/// expired, and its zone undercounted by one.)
#[test]
fn the_owner_answers_an_older_copy_of_its_own_row() {
    let addrs: Vec<SocketAddr> = ["127.0.0.1:7001", "127.0.0.1:7002"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let mut engines = vec![
        engine(1, "/eu/fra/h0", addrs[0], addrs[0]),
        engine(2, "/eu/fra/h1", addrs[1], addrs[0]),
    ];
    let mut now = 0;
    while now < 10_000 {
        now += 50;
        for i in 0..engines.len() {
            let effects = engines[i].tick(at(now));
            deliver(&mut engines, &addrs, now, i, effects);
        }
    }
    let leaf = engines[1].leaf_table();
    let copy_of_h0 = |e: &Engine| e.tables()[leaf].get("h0").unwrap().freshness().issued;
    let before = copy_of_h0(&engines[1]);
    // h0 goes on issuing heartbeats, none of which reach h1.
    while now < 15_000 {
        now += 50;
        let _lost = engines[0].tick(at(now));
    }
    let own = engines[0].own_row().unwrap().freshness.issued;
    assert!(own > before, "h0 issued no newer heartbeat");
    // h1's digest reaches h0; h0's answer carries its heartbeat.
    engines[1].send_digest(addrs[0], leaf);
    let digest = engines[1].finish(at(now));
    let mut answer = Vec::new();
    for Effect::Send { to, envelope, .. } in digest {
        assert_eq!(to, addrs[0]);
        answer.extend(engines[0].handle(at(now), addrs[1], envelope));
    }
    let carries_own = answer
        .iter()
        .any(|Effect::Send { envelope, .. }| match &envelope.message {
            Message::Refresh(items) => items.iter().any(|r| r.zone.as_str() == "/eu/fra/h0"),
            Message::Rows(rows) => rows.iter().any(|r| r.zone.as_str() == "/eu/fra/h0"),
            _ => false,
        });
    assert!(
        carries_own,
        "h0 did not answer the older copy of its own row"
    );
    for Effect::Send { envelope, .. } in answer {
        let _ = engines[1].handle(at(now), addrs[0], envelope);
    }
    assert_eq!(copy_of_h0(&engines[1]), own);
}
