//! What sealing costs per datagram: bytes added, and the time to seal and
//! to open a datagram of each size, against encoding alone.
//!   cargo run --release -p astrolabe-exporter --example seal_cost

use std::time::Instant;

use astrolabe::transport::keyring::{GossipSecurity, Key, Keyring, SEAL_OVERHEAD};

fn main() {
    let ring =
        Keyring::new(vec![Key::generate(&mut rand::rng())]).unwrap_or_else(|e| panic!("{e}"));
    // A keyring of three keys during a rotation: opening tries them in turn.
    let rotating = Keyring::new(vec![
        Key::generate(&mut rand::rng()),
        Key::generate(&mut rand::rng()),
        ring.primary().clone(),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    println!("overhead per datagram: {SEAL_OVERHEAD} bytes");
    println!("| plain bytes | seal µs | open µs (1 key) | open µs (sealed by the 3rd of 3 keys) |");
    println!("| --- | --- | --- | --- |");
    for size in [100usize, 500, 1336] {
        let plain = vec![7u8; size];
        let n = 20_000u64;
        let t = Instant::now();
        let mut sealed = Vec::new();
        for i in 0..n {
            sealed = ring.seal(i, rand::random(), &plain);
        }
        let seal = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(ring.open(&sealed).ok());
        }
        let open = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(rotating.open(&sealed).ok());
        }
        let open3 = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        println!("| {size} | {seal:.2} | {open:.2} | {open3:.2} |");
    }
    // With replay bookkeeping, as the agent opens gossip.
    let sec = GossipSecurity::new(ring.clone(), None, 60_000);
    let plain = vec![7u8; 1336];
    let n = 20_000u64;
    let batch: Vec<Vec<u8>> = (0..n)
        .map(|i| ring.seal(1_000_000 + i, rand::random(), &plain))
        .collect();
    let t = Instant::now();
    for d in &batch {
        std::hint::black_box(sec.open(1_000_000 + n, d).ok());
    }
    let full = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!("open + replay check, 1336 bytes: {full:.2} µs");
}
