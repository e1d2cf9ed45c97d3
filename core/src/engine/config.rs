//! Engine parameters. Every duration is in milliseconds of the time the
//! engine is handed; the engine never reads a clock itself.

use std::net::SocketAddr;

use crate::zone::{AgentId, ZonePath};

/// Bytes reserved in every datagram for the transport's own framing: the
/// frame kind byte, and when gossip is sealed the seal's marker, 24-byte
/// nonce (whose first 8 bytes are the sender's clock, the replay check)
/// and 16-byte tag (`transport::crypto::SEAL_OVERHEAD`, 41 bytes), with
/// room to spare. The engine packs its messages into
/// `max_datagram_bytes - TRANSPORT_OVERHEAD_BYTES`.
pub const TRANSPORT_OVERHEAD_BYTES: usize = 64;

/// The parameters of one engine; `new` gives the defaults for an id, zone and
/// address.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The agent's id: contacts are the members with the lowest ids, and ties
    /// of freshness go to the higher.
    pub id: AgentId,
    /// The agent's leaf zone, e.g. `/eu/fra/host7`; at least one level deep.
    pub zone: ZonePath,
    /// The address peers reach this agent at (may differ from the bind address).
    pub advertise: SocketAddr,
    /// Agents to gossip with when this one knows no zone-mate, and now and then
    /// to heal a partition.
    pub seeds: Vec<SocketAddr>,
    /// One gossip round.
    pub interval_ms: u64,
    /// Largest datagram on the wire, transport framing included.
    pub max_datagram_bytes: usize,
    /// A leaf row not refreshed for this many rounds is dropped.
    pub expiry_rounds: u64,
    /// Each level above the leaves waits this many rounds longer, because a
    /// zone row's refreshes travel further than a leaf's.
    pub expiry_rounds_per_level: u64,
    /// Dropped rows are remembered this many times their expiry, so that a
    /// slower peer cannot bring them back.
    pub forget_after_expiries: u64,
    /// How many of a zone's contacts (the first of those its row lists)
    /// represent it in gossip: they gossip for it with sibling zones, and
    /// peers pick partners and relay targets among them.
    pub representatives: usize,
    /// How many of a zone's contacts push its changed row eagerly.
    pub pushers: usize,
    /// A zone row is pushed at most once per this many milliseconds by one
    /// agent; changes in between are coalesced into the next push.
    pub push_gap_ms: u64,
    /// Zone rows whose inputs changed content are recomputed at most once
    /// per this many milliseconds (the first change at once): a burst of
    /// changes, as at a cold start, costs one merge instead of one each.
    pub recompute_gap_ms: u64,
    /// A zone row whose membership grows (a cold start, a join, a healed
    /// partition) is recomputed by one agent at most once per this many
    /// milliseconds: while a zone fills, every member would otherwise issue
    /// a new version every round, and every agent of every sibling zone
    /// would pull each of them (see docs/ALGORITHM.md, "Aggregation").
    pub growth_gap_ms: u64,
    /// Representatives of top-level zones contact a seed once every this
    /// many rounds on average, so a partition whose rows expired heals.
    pub seed_every_rounds: u64,
    /// A started agent keeps its own zone rows to itself until its tables
    /// hold what its peers' digests list, or for at most this many rounds
    /// (see `catchup`).
    pub catchup_rounds: u64,
    /// Seed of the engine's random choices (peer selection, jitter).
    pub rng_seed: u64,
    /// Who may sign aggregate certificates, and where refusals are counted.
    pub certificates: super::certs::CertConfig,
    /// What a peer can make this agent hold (`limits`).
    pub limits: super::limits::Limits,
}

impl EngineConfig {
    /// The defaults: a 1 s round, 1400-byte datagrams, leaf rows expiring after
    /// 20 rounds (10 more per level), 3 representatives and 2 pushers per zone,
    /// and the RNG seeded with the id.
    pub fn new(id: AgentId, zone: ZonePath, advertise: SocketAddr) -> Self {
        EngineConfig {
            id,
            zone,
            advertise,
            seeds: Vec::new(),
            interval_ms: 1000,
            max_datagram_bytes: 1400,
            expiry_rounds: 20,
            expiry_rounds_per_level: 10,
            forget_after_expiries: 3,
            representatives: 3,
            pushers: 2,
            push_gap_ms: 1000,
            recompute_gap_ms: 1000,
            growth_gap_ms: 3000,
            seed_every_rounds: 10,
            catchup_rounds: 5,
            rng_seed: id,
            certificates: Default::default(),
            limits: super::limits::Limits::default(),
        }
    }

    /// Bytes the engine may put in one message.
    pub fn max_message_bytes(&self) -> usize {
        self.max_datagram_bytes
            .saturating_sub(TRANSPORT_OVERHEAD_BYTES)
            .max(256)
    }

    /// Expiry of rows in the table of the zone at `table_depth`, for an
    /// agent whose leaf is at `leaf_depth`.
    pub fn expiry_ms(&self, table_depth: usize, leaf_depth: usize) -> u64 {
        let levels_above_leaves = leaf_depth.saturating_sub(table_depth + 1) as u64;
        (self.expiry_rounds + self.expiry_rounds_per_level * levels_above_leaves) * self.interval_ms
    }
}
