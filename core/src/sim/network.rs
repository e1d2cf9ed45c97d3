//! The simulated network: addresses, per-link latency, loss and partitions.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::zone::ZonePath;

pub(crate) const GOSSIP_PORT: u16 = 7946;

/// Agent index -> a private IPv4 address (10.0.0.1 is agent 0). Never
/// contacted: the simulator only uses addresses as names.
pub fn addr_of(index: usize) -> SocketAddr {
    let n = index as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
        GOSSIP_PORT,
    ))
}

/// The agent index of an address made by `addr_of`; `None` for any other.
pub fn index_of(addr: &SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == GOSSIP_PORT => {
            let o = v4.ip().octets();
            if o[0] != 10 {
                return None;
            }
            let n = ((o[1] as u32) << 16) | ((o[2] as u32) << 8) | o[3] as u32;
            (n as usize).checked_sub(1)
        }
        _ => None,
    }
}

/// The simulated links: latency range, loss, and the seed of both.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Least one-way latency, in ms.
    pub latency_min_ms: u64,
    /// Greatest one-way latency, in ms.
    pub latency_max_ms: u64,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Seed of the per-link latencies.
    pub seed: u64,
}

/// A fixed latency per ordered link, drawn from the seed, so that a link
/// is consistently fast or slow as real ones are.
pub fn link_latency_ms(cfg: &NetworkConfig, from: usize, to: usize) -> u64 {
    let span = cfg.latency_max_ms.saturating_sub(cfg.latency_min_ms) + 1;
    let mut h = cfg.seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [from as u64, to as u64] {
        h ^= v.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = h.rotate_left(31).wrapping_mul(0x94d0_49bb_1331_11eb);
    }
    cfg.latency_min_ms + (h >> 11) % span
}

/// A cut between the agents inside `zone` and everyone else.
#[derive(Debug, Clone)]
pub struct Partition {
    /// The zone cut off.
    pub zone: ZonePath,
}

impl Partition {
    /// Whether a datagram between the two zones crosses the cut.
    pub fn separates(&self, a: &ZonePath, b: &ZonePath) -> bool {
        self.zone.contains(a) != self.zone.contains(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for i in [0usize, 1, 255, 256, 65_535, 99_999, 1 << 23] {
            assert_eq!(index_of(&addr_of(i)), Some(i));
        }
    }

    #[test]
    fn latency_stays_in_range_and_is_per_link() {
        let cfg = NetworkConfig {
            latency_min_ms: 1,
            latency_max_ms: 50,
            loss: 0.0,
            seed: 7,
        };
        let mut seen = std::collections::BTreeSet::new();
        for a in 0..50 {
            for b in 0..50 {
                let l = link_latency_ms(&cfg, a, b);
                assert!((1..=50).contains(&l));
                assert_eq!(l, link_latency_ms(&cfg, a, b));
                seen.insert(l);
            }
        }
        assert!(seen.len() > 40);
    }
}
