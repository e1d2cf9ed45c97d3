//! The sans-IO gossip engine (Astrolabe's hierarchy, push-pull anti-entropy
//! with digests, and an eager push of changed rows along the zone tree).
//!
//! It owns the tables and the clock and is driven from outside: `handle`
//! for a received message and `tick` when `next_tick_ms` comes. Both return
//! the messages to send. It reads no socket and no system time, so the
//! agent runs it under tokio and the simulator runs 10^5 of them on a
//! virtual clock. The protocol is written down in docs/ALGORITHM.md.

mod catchup;
pub mod certs;
mod config;
pub mod limits;
mod message;
mod stats;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use config::{EngineConfig, TRANSPORT_OVERHEAD_BYTES};
pub use limits::{Limit, LimitCounters, Limits};
pub use message::{
    contacts_check, freshness_check, pack_rows, split_digest, DigestEntry, Envelope, Message, Name,
    Refresh, TableDigest, TableRequest, WireLen,
};
pub use stats::{Refusal, Stats};
pub use table::{Entry, Offer, Table};

use crate::aggregate::{AggregateSet, State, States};
use crate::zone::{
    AgentId, Attributes, Body, Freshness, HlcClock, Row, SharedBody, Value, ZonePath, ATTR_ADDR,
    ATTR_ID, ATTR_REPORTING,
};

/// Rows issued further ahead of the local wall clock than this are refused,
/// so that one broken clock cannot drag every hybrid clock into the future.
pub const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;

/// The engine's notion of now: a monotonic clock for timeouts and the wall
/// clock for the hybrid logical clock. Both in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds: rounds, expiry and push gaps count in these.
    pub mono_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch: what the hybrid clock and
    /// the future-row check read.
    pub wall_ms: u64,
}

/// What the engine asks its driver to do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Send `envelope` to `to` in one datagram.
    Send {
        /// The peer's gossip address.
        to: SocketAddr,
        /// The message, to be encoded by the transport.
        envelope: Envelope,
        /// `envelope.encoded_len()`, computed once for the size check.
        bytes: usize,
    },
}

/// Why an engine could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The root cannot be an agent's zone: an agent is a leaf with at least one
    /// ancestor to share tables under.
    #[error("an agent's zone must be below the root, like /local/host1 (got {0})")]
    RootZone(ZonePath),
}

/// The engine's state for one level of the tree besides its table (which
/// stays in `Engine::tables`, so that `tables()` can lend them as a slice).
#[derive(Debug, Clone, Default)]
struct Level {
    /// The table's own row changed and is to be pushed to the sibling zones.
    pending_push: bool,
    /// When the own row was last pushed: pushes are a push gap apart.
    last_push_ms: Option<u64>,
    /// When the table's parent row may next be recomputed for a growth of
    /// membership, and whether such a recomputation is waiting.
    growth_ready_ms: u64,
    growth_deferred: bool,
    /// Contacts of the table's zone (an ancestor of this agent) seen in
    /// received rows: where to look for zone-mates when the agent knows
    /// none yet.
    hints: Vec<SocketAddr>,
}

/// What a digest is answered with, gathered table by table.
#[derive(Default)]
struct DigestAnswer {
    send: Vec<Arc<Row>>,
    refresh: Vec<Refresh>,
    requests: Vec<TableRequest>,
    /// The peer holds a copy of our own leaf row as new as ours (from
    /// before a restart): ours is issued again, above it.
    bump_own: bool,
}

/// One agent's gossip state machine: its tables (one per ancestor zone), its
/// clock and its own rows, driven by `handle`, `tick` and `leave`.
pub struct Engine {
    cfg: EngineConfig,
    aggregates: Arc<AggregateSet>,
    /// The zones this agent's tables are about: `ancestors[k]` is at depth k.
    ancestors: Vec<ZonePath>,
    tables: Vec<Table>,
    root: Arc<Row>,
    clock: HlcClock,
    rng: ChaCha8Rng,
    body: Arc<SharedBody>,
    next_round_ms: u64,
    /// What each table's level keeps beside the table: `levels[k]` goes
    /// with `tables[k]`.
    levels: Vec<Level>,
    forward_queue: BTreeMap<ZonePath, Arc<Row>>,
    forward_from_level: Option<usize>,
    forward_skip: Option<SocketAddr>,
    last_forward_ms: Option<u64>,
    last_merge_ms: Option<u64>,
    /// Encoded size of an envelope's sender fields, the same in every message.
    header_len: usize,
    /// Agents of our own zones that others name as contacts but we do not
    /// know: gossiped with first, to merge split views of a zone.
    discover: Vec<SocketAddr>,
    outbox: Vec<Effect>,
    stats: Stats,
    left: bool,
    /// Aggregate certificates held and the per-table sets they make.
    certs: certs::CertState,
    /// Until done, this agent's own zone rows stay with it (`catchup`).
    catchup: catchup::Catchup,
    /// Caught up, and its own rows since recomputed from what it caught
    /// up with: they may leave it from now on.
    publishing: bool,
}

impl Engine {
    /// An engine for the leaf `cfg.zone` holding `attrs` as its row, with its
    /// own row issued and its ancestors' rows computed; it sends nothing until
    /// the first `tick`.
    pub fn new(
        cfg: EngineConfig,
        aggregates: Arc<AggregateSet>,
        attrs: Attributes,
        now: Now,
    ) -> Result<Engine, EngineError> {
        let depth = cfg.zone.depth();
        if depth == 0 {
            return Err(EngineError::RootZone(cfg.zone.clone()));
        }
        let ancestors = cfg.zone.ancestors();
        let tables = (0..depth)
            .map(|k| {
                let own = cfg.zone.ancestor(k + 1).unwrap_or_else(|| cfg.zone.clone());
                Table::new(ancestors[k].clone(), k, Name::new(own.name()))
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.rng_seed);
        // Start rounds at a random offset so agents started together do
        // not gossip in lockstep.
        let next_round_ms = now.mono_ms + rng.random_range(0..cfg.interval_ms.max(1));
        let placeholder = Arc::new(Row::new(
            ZonePath::root(),
            Freshness::default(),
            cfg.id,
            Body::Zone(States::new()),
        ));
        let mut engine = Engine {
            aggregates,
            ancestors,
            tables,
            root: placeholder,
            clock: HlcClock::new(),
            rng,
            body: SharedBody::new(Body::Tombstone),
            next_round_ms,
            levels: vec![Level::default(); depth],
            forward_queue: BTreeMap::new(),
            forward_from_level: None,
            forward_skip: None,
            last_forward_ms: None,
            last_merge_ms: None,
            header_len: 0,
            discover: Vec::new(),
            outbox: Vec::new(),
            stats: Stats::default(),
            left: false,
            certs: Default::default(),
            catchup: catchup::Catchup::new(
                depth,
                cfg.catchup_rounds,
                cfg.expiry_rounds + cfg.catchup_rounds,
            ),
            publishing: false,
            cfg,
        };
        engine.header_len = Envelope {
            sender: engine.cfg.id,
            sender_zone: engine.cfg.zone.clone(),
            message: Message::Rows(Vec::new()),
        }
        .encoded_len()
            - 2;
        engine.body = engine.leaf_body(attrs);
        engine.issue_own_row(now);
        engine.refresh_ancestors(now, true);
        engine.outbox.clear();
        Ok(engine)
    }

    /// The agent's id.
    pub fn id(&self) -> AgentId {
        self.cfg.id
    }

    /// The agent's leaf zone.
    pub fn zone(&self) -> &ZonePath {
        &self.cfg.zone
    }

    /// The parameters it was made with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The base aggregate set (certificates may add to it per table).
    pub fn aggregates(&self) -> &Arc<AggregateSet> {
        &self.aggregates
    }

    /// Its counters (`astrolabe_gossip_*`).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The root zone's row as this agent computes it.
    pub fn root(&self) -> &Arc<Row> {
        &self.root
    }

    /// Tables from the root's children (index 0) down to this agent's siblings.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Whether `leave` was called: the engine then sends and takes in nothing.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Still catching up after its start: its tables may lack rows its
    /// peers hold, so it publishes no zone row of its own yet and the
    /// overlay does not let it answer for a zone (`catchup`).
    pub fn is_catching_up(&self) -> bool {
        !self.publishing
    }

    /// Whether the own entry of table `k` may leave this agent: its leaf
    /// row always, its ancestors' rows once caught up and recomputed.
    fn publishes_own(&self, k: usize) -> bool {
        k == self.leaf_table() || self.publishing
    }

    /// The own leaf row.
    pub fn own_row(&self) -> Option<&Arc<Row>> {
        self.tables.last().and_then(Table::own_row)
    }

    /// When `tick` wants to be called next.
    pub fn next_tick_ms(&self) -> u64 {
        let mut next = self.next_round_ms;
        for (k, level) in self.levels.iter().enumerate() {
            // A push held back while catching up goes once publishing
            // starts, at the end of a handled message or tick.
            if level.pending_push && self.publishes_own(k) {
                let at = level.last_push_ms.map_or(0, |t| t + self.cfg.push_gap_ms);
                next = next.min(at);
            }
        }
        if self.forward_from_level.is_some() {
            let at = self.last_forward_ms.map_or(0, |t| t + self.cfg.push_gap_ms);
            next = next.min(at);
        }
        let merge_at = self
            .last_merge_ms
            .map_or(0, |t| t + self.cfg.recompute_gap_ms);
        for (table, level) in self.tables.iter().zip(&self.levels) {
            if table.content_dirty {
                let at = if level.growth_deferred {
                    merge_at.max(level.growth_ready_ms)
                } else {
                    merge_at
                };
                next = next.min(at);
            }
        }
        next
    }

    /// Replaces the agent's own attributes (from the collectors). A change
    /// of content is pushed to the zone at once.
    pub fn set_attributes(&mut self, now: Now, attrs: Attributes) -> Vec<Effect> {
        if self.left {
            return Vec::new();
        }
        let body = self.leaf_body(attrs);
        if *body.body() != *self.body.body() {
            self.body = body;
            self.issue_own_row(now);
        }
        self.finish(now)
    }

    /// Replaces the aggregate set; every zone row is recomputed.
    pub fn set_aggregates(&mut self, now: Now, aggregates: Arc<AggregateSet>) -> Vec<Effect> {
        self.aggregates = aggregates;
        self.rebuild_certificate_sets();
        for t in &mut self.tables {
            t.dirty = true;
            t.content_dirty = true;
        }
        self.finish(now)
    }

    /// Leaves cleanly: a tombstone goes to the zone-mates, so they drop this
    /// agent now instead of after the expiry, and nobody brings it back.
    pub fn leave(&mut self, now: Now) -> Vec<Effect> {
        if self.left {
            return Vec::new();
        }
        let leaf = self.leaf_table();
        let tomb = Arc::new(Row::new(
            self.cfg.zone.clone(),
            Freshness {
                issued: self.clock.tick(now.wall_ms),
                inputs: 0,
            },
            self.cfg.id,
            Body::Tombstone,
        ));
        let own = self.tables[leaf].own.clone();
        self.tables[leaf].install(own, tomb.clone(), now.mono_ms);
        let targets: Vec<SocketAddr> = self.tables[leaf]
            .live_siblings()
            .flat_map(|r| r.contacts().first().copied())
            .collect();
        for to in targets {
            self.send_push(to, vec![tomb.clone()]);
        }
        self.left = true;
        std::mem::take(&mut self.outbox)
    }

    /// Runs a gossip round if one is due (expiry, partner digests, pushes,
    /// seeds) and returns the messages to send.
    pub fn tick(&mut self, now: Now) -> Vec<Effect> {
        if self.left {
            return Vec::new();
        }
        if now.mono_ms >= self.next_round_ms {
            self.round(now);
            self.next_round_ms += self.cfg.interval_ms;
            if self.next_round_ms <= now.mono_ms {
                self.next_round_ms = now.mono_ms + self.cfg.interval_ms;
            }
        }
        self.finish(now)
    }

    /// Takes in one received message and returns the answers and relays it
    /// causes. Messages from itself or from an agent claiming its own zone are
    /// dropped.
    pub fn handle(&mut self, now: Now, from: SocketAddr, envelope: Envelope) -> Vec<Effect> {
        if self.left {
            return Vec::new();
        }
        self.stats.messages_received += 1;
        if envelope.sender == self.cfg.id {
            return Vec::new();
        }
        let leaf_depth = self.cfg.zone.depth();
        if envelope.sender_zone == self.cfg.zone {
            self.stats.refuse(Refusal::ZoneConflict);
            return Vec::new();
        }
        // Tables 0..=shared are common to both agents.
        let common = self.cfg.zone.common_depth(&envelope.sender_zone);
        let shared = common.min(leaf_depth - 1);
        match envelope.message {
            Message::Digest { lonely, tables } => {
                self.on_digest(now, from, &envelope.sender_zone, shared, lonely, tables)
            }
            Message::Request(requests) => self.on_request(from, shared, requests),
            Message::Rows(rows) => {
                self.on_rows(now, from, envelope.sender, common, shared, rows, false)
            }
            Message::Push(rows) => {
                self.on_rows(now, from, envelope.sender, common, shared, rows, true)
            }
            Message::Refresh(items) => self.on_refresh(now, shared, items),
            Message::CertDigest { depth, hash } => {
                self.on_certificate_digest(from, &envelope.sender_zone, depth, hash)
            }
            Message::Certs { answer, certs } => {
                self.on_certificates(now, from, &envelope.sender_zone, answer, certs)
            }
        }
        self.finish(now)
    }

    // ---- rounds -------------------------------------------------------

    fn round(&mut self, now: Now) {
        self.stats.rounds += 1;
        let tables = &self.tables;
        self.catchup
            .round(|k| tables[k].own_row().map_or(0, |r| r.members()));
        self.expire_certificates(now);
        self.issue_own_row(now);
        let leaf_depth = self.cfg.zone.depth();
        let forget = |e: u64| e * self.cfg.forget_after_expiries;
        for k in 0..self.tables.len() {
            let expiry = self.cfg.expiry_ms(k, leaf_depth);
            let dropped = self.tables[k].expire(now.mono_ms, expiry, forget(expiry));
            self.stats.rows_expired += dropped.len() as u64;
        }
        self.refresh_ancestors(now, true);
        self.gossip(now);
    }

    /// Picks this round's partners: a zone-mate at the leaf level, and a
    /// contact of a sibling zone at every level where this agent is one of
    /// its zone's contacts; seeds when alone or, now and then, to heal a
    /// partition whose rows have expired.
    fn gossip(&mut self, _now: Now) {
        let me = self.cfg.advertise;
        let mut partners: Vec<(SocketAddr, usize)> = Vec::new();
        for k in (0..self.tables.len()).rev() {
            let reps = self.cfg.representatives;
            let is_contact = self.tables[k]
                .own_row()
                .is_some_and(|r| representatives(r, reps).contains(&me));
            if !is_contact {
                continue;
            }
            let siblings: Vec<&Arc<Row>> = self.tables[k]
                .live_siblings()
                .filter(|r| representatives(r, reps).iter().any(|c| *c != me))
                .collect();
            if let Some(zone) = siblings.choose(&mut self.rng) {
                let choices: Vec<SocketAddr> = representatives(zone, reps)
                    .iter()
                    .copied()
                    .filter(|c| *c != me)
                    .collect();
                if let Some(to) = choices.choose(&mut self.rng) {
                    partners.push((*to, k));
                }
            }
        }
        let leaf = self.leaf_table();
        if let Some(to) = self.discover.pop() {
            partners.push((to, leaf));
        }
        let mut alone = self.tables[0].live_siblings().next().is_none();
        if self.is_lonely() {
            // Look for zone-mates through the deepest ancestor contact seen.
            let hint = self
                .levels
                .iter()
                .rev()
                .map(|l| {
                    l.hints
                        .iter()
                        .copied()
                        .filter(|c| *c != me)
                        .collect::<Vec<_>>()
                })
                .find(|h| !h.is_empty());
            match hint.as_ref().and_then(|h| h.choose(&mut self.rng)) {
                Some(to) => partners.push((*to, leaf)),
                None => alone = true,
            }
        }
        let top_contact = self.tables[0]
            .own_row()
            .is_some_and(|r| representatives(r, self.cfg.representatives).contains(&me));
        let seeds: Vec<SocketAddr> = self
            .cfg
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != me)
            .collect();
        let periodic = top_contact
            && self.cfg.seed_every_rounds > 0
            && self.rng.random_range(0..self.cfg.seed_every_rounds) == 0;
        if alone || periodic {
            if let Some(seed) = seeds.choose(&mut self.rng) {
                partners.push((*seed, leaf));
            }
        }
        for (to, level) in partners {
            self.send_digest(to, level);
            self.send_certificate_digest(to, level);
        }
    }

    /// Knows no live zone-mate in its own leaf zone.
    fn is_lonely(&self) -> bool {
        self.tables[self.leaf_table()]
            .live_siblings()
            .next()
            .is_none()
    }

    fn send_digest(&mut self, to: SocketAddr, up_to: usize) {
        let lonely = self.is_lonely();
        let budget = self.batch_budget();
        let mut parts = Vec::new();
        for k in 0..=up_to.min(self.tables.len() - 1) {
            let table = &self.tables[k];
            let newest = table.newest();
            let mut entries = table.digest_entries(newest);
            if !self.publishes_own(k) {
                entries.retain(|e| !table.is_own(&e.name));
            }
            let own = table.own_row().map_or(0, |r| contacts_check(r.contacts()));
            parts.extend(split_digest(&table.zone, newest, own, entries, budget));
        }
        self.send_batched(to, parts, |tables| Message::Digest { lonely, tables });
    }

    // ---- receiving ----------------------------------------------------

    fn table_index(&self, zone: &ZonePath, shared: usize) -> Option<usize> {
        let k = zone.depth();
        (k <= shared && self.ancestors.get(k) == Some(zone)).then_some(k)
    }

    /// The table a row of `zone` belongs in: the one of its parent, if that
    /// is a table we share with the sender. No allocation: this runs for
    /// every received row.
    fn table_of_row(&self, zone: &ZonePath, shared: usize) -> Option<usize> {
        let k = zone.depth().checked_sub(1)?;
        (k <= shared
            && self
                .ancestors
                .get(k)
                .is_some_and(|a| a.is_ancestor_of(zone)))
        .then_some(k)
    }

    fn on_digest(
        &mut self,
        now: Now,
        from: SocketAddr,
        sender_zone: &ZonePath,
        shared: usize,
        lonely: bool,
        parts: Vec<TableDigest>,
    ) {
        let mut answer = DigestAnswer::default();
        for part in parts {
            let Some(k) = self.table_index(&part.zone, shared) else {
                self.stats.refuse(Refusal::NotShared);
                continue;
            };
            self.answer_digest_part(now, k, sender_zone, lonely, &part, &mut answer);
        }
        if answer.bump_own {
            self.issue_own_row(now);
        }
        self.send_rows(from, answer.send);
        self.send_refresh(from, answer.refresh);
        self.send_requests(from, answer.requests);
    }

    /// Compares one table's part of a peer's digest with table `k`, entry
    /// by entry, and gathers the answer.
    fn answer_digest_part(
        &mut self,
        now: Now,
        k: usize,
        sender_zone: &ZonePath,
        lonely: bool,
        part: &TableDigest,
        answer: &mut DigestAnswer,
    ) {
        let leaf = self.leaf_table();
        // The peer computes its own ancestors' rows itself.
        let peers_own = sender_zone.ancestor(k + 1);
        let peers_own = peers_own.as_ref().map(|z| z.name()).unwrap_or("");
        let table = &self.tables[k];
        let mut wanted = Vec::new();
        // The peer lists a row we do not hold at all (`catchup`).
        let mut lacking = false;
        let publishes_own = self.publishes_own(k);
        // Which of our rows the peer listed, by index.
        let mut listed = vec![false; table.len()];
        let own_index = table.find(&table.own).ok();
        for entry in &part.entries {
            let issued = part.issued_of(entry);
            // One lookup per entry: the own child is recognised by its
            // index (or, when not held, by its name).
            let found = table.find(&entry.name);
            let is_own = match found {
                Ok(index) => Some(index) == own_index,
                Err(_) => table.is_own(&entry.name),
            };
            match found {
                _ if is_own => {
                    if let Ok(index) = found {
                        listed[index] = true;
                        // The peer holds an older copy of our own row (our
                        // leaf, or our zone seen from a sibling zone): we
                        // are its best source, so answer like for any row.
                        // Without this a leaf's heartbeats left it only on
                        // its own digests, three datagrams each way, and at
                        // 20% loss a live row could go unrefreshed for 18
                        // rounds and expire (seed 6, docs/ALGORITHM.md).
                        let peer_computes_it = k < leaf && *entry.name == *peers_own;
                        let mine = table.at(index);
                        if publishes_own
                            && !peer_computes_it
                            && compare_copies(mine, entry, issued).0
                        {
                            send_ours(mine, entry, answer);
                        }
                    }
                    if k == leaf
                        && table
                            .own_row()
                            .is_some_and(|r| issued >= r.freshness.issued)
                    {
                        // A copy of our own row from before a restart.
                        self.clock.observe(now.wall_ms, issued);
                        answer.bump_own = true;
                    }
                }
                Ok(index) => {
                    listed[index] = true;
                    if let Some(want) = answer_held_entry(table.at(index), entry, issued, answer) {
                        wanted.push(want);
                    }
                }
                Err(_) => {
                    if wants_unknown_entry(table, entry, issued) {
                        wanted.push((entry.name.clone(), 0));
                        lacking = true;
                    }
                }
            }
        }
        let peer_computes = (k < leaf).then_some(peers_own);
        send_unlisted(table, part, &listed, peer_computes, !publishes_own, answer);
        // The peer's own zone as others see it, if they see other
        // contacts: it may lead the peer to zone-mates it lacks.
        if k < leaf {
            if let Some(e) = table.get(peers_own) {
                if lonely || contacts_check(e.row.contacts()) != part.own_contacts {
                    answer.send.push(e.current());
                }
            }
        }
        if !wanted.is_empty() {
            answer.requests.push(TableRequest {
                zone: part.zone.clone(),
                wants: wanted,
            });
        }
        if !lacking {
            self.catchup.covered(k, part.lo.as_ref(), part.hi.as_ref());
        }
    }

    fn on_request(&mut self, from: SocketAddr, shared: usize, requests: Vec<TableRequest>) {
        let mut send = Vec::new();
        let mut refresh = Vec::new();
        for req in requests {
            let Some(k) = self.table_index(&req.zone, shared) else {
                self.stats.refuse(Refusal::NotShared);
                continue;
            };
            let publishes_own = self.publishes_own(k);
            for (name, content) in &req.wants {
                let Some(e) = self.tables[k].get(name) else {
                    continue;
                };
                if !publishes_own && self.tables[k].is_own(name) {
                    continue;
                }
                let mine = e.content();
                if *content != 0 && *content == mine {
                    refresh.push(Refresh {
                        zone: e.row.zone.clone(),
                        freshness: e.freshness(),
                        issuer: e.issuer(),
                        content: mine,
                    });
                } else {
                    send.push(e.current());
                }
            }
        }
        self.send_rows(from, send);
        self.send_refresh(from, refresh);
    }

    fn on_refresh(&mut self, now: Now, shared: usize, items: Vec<Refresh>) {
        for item in items {
            let Some(k) = self.table_of_row(&item.zone, shared) else {
                self.stats.refuse(Refusal::NotShared);
                continue;
            };
            if item.freshness.issued.millis() > now.wall_ms + MAX_CLOCK_AHEAD_MS {
                self.stats.refuse(Refusal::FromTheFuture);
                continue;
            }
            let name = item.zone.name();
            if self.tables[k].is_own(name) {
                continue;
            }
            self.clock.observe(now.wall_ms, item.freshness.issued);
            let fresh = self.tables[k].refresh(
                name,
                item.freshness,
                item.issuer,
                item.content,
                now.mono_ms,
            );
            if fresh {
                self.stats.rows_installed += 1;
            } else {
                self.stats.rows_stale += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    fn on_rows(
        &mut self,
        now: Now,
        from: SocketAddr,
        sender: AgentId,
        common: usize,
        shared: usize,
        rows: Vec<Arc<Row>>,
        relay: bool,
    ) {
        let leaf = self.leaf_table();
        let mut changed: Vec<Arc<Row>> = Vec::new();
        let mut bump_own = false;
        for row in rows {
            let Some(k) = self.table_of_row(&row.zone, shared) else {
                self.stats.refuse(Refusal::NotShared);
                continue;
            };
            let kind_ok = if k == leaf {
                row.is_leaf() || row.is_tombstone()
            } else {
                row.states().is_some()
            };
            if !kind_ok {
                self.stats.refuse(Refusal::WrongKind);
                continue;
            }
            if row.freshness.issued.millis() > now.wall_ms + MAX_CLOCK_AHEAD_MS {
                self.stats.refuse(Refusal::FromTheFuture);
                continue;
            }
            self.clock.observe(now.wall_ms, row.freshness.issued);
            let name = row.zone.name();
            if self.tables[k].is_own(name) {
                if k == leaf {
                    if row.issuer != self.cfg.id {
                        self.stats.refuse(Refusal::ZoneConflict);
                    } else if self.tables[k]
                        .own_row()
                        .is_some_and(|mine| !mine.is_fresher_than(&row))
                    {
                        bump_own = true;
                    }
                } else {
                    // Our own ancestor as someone else computed it: not
                    // taken in, but its contacts lead to zone-mates, and
                    // its count says how many we have yet to find.
                    self.levels[k + 1].hints = row.contacts().to_vec();
                    self.catchup.seen_elsewhere(k, row.members());
                    self.note_unknown_contacts(k, row.contacts());
                }
                continue;
            }
            if let Err(limit) = self.cfg.limits.admit(&self.tables[k], name) {
                self.stats.refuse_limit(limit);
                continue;
            }
            let authoritative = k == leaf && row.issuer == sender;
            // A change of values (same members, same contacts) learned by
            // pull is relayed like a pushed one: this agent may be the
            // first of its subtree to hear of it because the push that
            // should have brought it was lost, or came after the pull.
            let same_shape = self.tables[k].get(name).is_some_and(|e| {
                e.row.members() == row.members() && e.row.contacts() == row.contacts()
            });
            match self.tables[k].offer(name, row.clone(), now.mono_ms, authoritative) {
                Offer::Installed { content_changed } => {
                    self.stats.rows_installed += 1;
                    if content_changed {
                        self.tables[k].pushed_in |= relay;
                        if relay || same_shape {
                            changed.push(row);
                        }
                    }
                }
                Offer::Stale => self.stats.rows_stale += 1,
            }
        }
        if bump_own {
            self.issue_own_row(now);
        }
        if !changed.is_empty() {
            self.forward(from, common, changed);
        }
    }

    /// Queues newly learned rows for relay into this agent's part of the
    /// tree: the sender is outside our ancestor at depth `common + 1`, so we
    /// are the way in for everyone inside it who has not heard yet.
    fn forward(&mut self, from: SocketAddr, common: usize, rows: Vec<Arc<Row>>) {
        let from_level = common + 1;
        if from_level >= self.tables.len() {
            return;
        }
        for row in rows {
            self.forward_queue.insert(row.zone.clone(), row);
        }
        self.forward_from_level = Some(
            self.forward_from_level
                .map_or(from_level, |l| l.min(from_level)),
        );
        self.forward_skip = Some(from);
    }

    /// Sends the queued relay: one contact of each sibling zone at every
    /// level below the entry level takes it further down. At most once per
    /// push gap, so a burst of changes costs one relay, not one per change.
    fn flush_forwards(&mut self, now: Now) {
        let Some(from_level) = self.forward_from_level else {
            return;
        };
        if self
            .last_forward_ms
            .is_some_and(|t| now.mono_ms < t + self.cfg.push_gap_ms)
        {
            return;
        }
        self.last_forward_ms = Some(now.mono_ms);
        self.forward_from_level = None;
        let skip = self.forward_skip.take();
        let rows: Vec<Arc<Row>> = std::mem::take(&mut self.forward_queue)
            .into_values()
            .collect();
        let me = self.cfg.advertise;
        let mut bundles: BTreeMap<SocketAddr, Vec<Arc<Row>>> = BTreeMap::new();
        for m in from_level..self.tables.len() {
            for to in self.one_contact_per_sibling(m) {
                if Some(to) != skip && to != me {
                    // Only rows of tables the target shares with us.
                    let shared = rows.iter().filter(|r| r.zone.depth() <= m + 1).cloned();
                    bundles.entry(to).or_default().extend(shared);
                }
            }
        }
        for (to, rows) in bundles {
            self.stats.forwards += 1;
            self.send_push(to, rows);
        }
    }

    fn one_contact_per_sibling(&mut self, k: usize) -> Vec<SocketAddr> {
        let me = self.cfg.advertise;
        let reps = self.cfg.representatives;
        let zones: Vec<Vec<SocketAddr>> = self.tables[k]
            .live_siblings()
            .map(|r| {
                representatives(r, reps)
                    .iter()
                    .copied()
                    .filter(|c| *c != me)
                    .collect()
            })
            .collect();
        zones
            .iter()
            .filter_map(|contacts: &Vec<SocketAddr>| contacts.choose(&mut self.rng).copied())
            .collect()
    }

    /// Queues contacts of our own zones that no table of ours mentions.
    /// `level`: the table the contacts' zone (our ancestor) lives in. Its
    /// contacts are inside it, so in tables above `level` only our own
    /// entries can name them; the sibling rows there are not looked at.
    fn note_unknown_contacts(&mut self, level: usize, contacts: &[SocketAddr]) {
        const MAX_DISCOVER: usize = 8;
        if self.discover.len() >= MAX_DISCOVER {
            return;
        }
        let me = self.cfg.advertise;
        let unknown: Vec<SocketAddr> = contacts
            .iter()
            .copied()
            .filter(|c| *c != me && !self.discover.contains(c))
            .filter(|c| {
                !self.tables.iter().enumerate().any(|(j, t)| {
                    if j < level {
                        t.own_row().is_some_and(|r| r.contacts().contains(c))
                    } else {
                        t.rows().any(|r| r.contacts().contains(c))
                    }
                })
            })
            .collect();
        for c in unknown {
            if self.discover.len() < MAX_DISCOVER {
                self.discover.push(c);
            }
        }
    }

    // ---- own rows -----------------------------------------------------

    fn leaf_table(&self) -> usize {
        self.tables.len() - 1
    }

    fn leaf_body(&self, mut attrs: Attributes) -> Arc<SharedBody> {
        attrs.insert(ATTR_ID.into(), Value::Int(self.cfg.id as i64));
        attrs.insert(
            ATTR_ADDR.into(),
            Value::str(&self.cfg.advertise.to_string()),
        );
        SharedBody::new(Body::Leaf(attrs))
    }

    /// (Re)issues the own leaf row: a heartbeat, or new content.
    fn issue_own_row(&mut self, now: Now) {
        let row = Arc::new(Row {
            zone: self.cfg.zone.clone(),
            freshness: Freshness {
                issued: self.clock.tick(now.wall_ms),
                inputs: 0,
            },
            issuer: self.cfg.id,
            body: self.body.clone(),
        });
        let leaf = self.leaf_table();
        let own = self.tables[leaf].own.clone();
        if let Offer::Installed {
            content_changed: true,
        } = self.tables[leaf].install(own, row, now.mono_ms)
        {
            self.levels[leaf].pending_push = true;
        }
    }

    /// Recomputes the rows of the agent's ancestors, deepest first, from
    /// the tables that changed. A zone row's freshness comes from its
    /// inputs (see `Freshness`), and its body is reused when the content is
    /// the same, so a heartbeat costs no merge.
    ///
    /// A change of freshness alone (heartbeats) is taken up only when
    /// `with_freshness`, once per round just before gossiping: recomputing
    /// it after every message cost O(rows) per table per message, the
    /// largest item of a steady-state round, and a zone row one round
    /// behind in freshness loses nothing (expiry is tens of rounds).
    fn refresh_ancestors(&mut self, now: Now, with_freshness: bool) {
        let leaf = self.leaf_table();
        // Content changed: merged at most once per merge gap. A table whose
        // content is waiting keeps its parent row as it is (stamping old
        // content with new inputs would let it win), but every other table
        // still takes up its heartbeats: skipping them all while some
        // content waited left a zone with static content unrefreshed for
        // as long as changes kept coming elsewhere, until its row expired
        // at its peers (docs/ALGORITHM.md, "Aggregation").
        let mut merge_allowed = true;
        if self.tables.iter().any(|t| t.content_dirty) {
            merge_allowed = self
                .last_merge_ms
                .is_none_or(|t| now.mono_ms >= t + self.cfg.recompute_gap_ms);
            if merge_allowed {
                self.last_merge_ms = Some(now.mono_ms);
            }
        }
        for k in (0..self.tables.len()).rev() {
            let content = self.tables[k].content_dirty;
            if !self.tables[k].dirty || !(with_freshness || content) || (content && !merge_allowed)
            {
                continue;
            }
            let previous = if k > 0 {
                self.tables[k - 1].own_row().cloned()
            } else {
                Some(self.root.clone())
            };
            if k < leaf
                && self.tables[k].content_dirty
                && self.defer_growth(now, k, previous.as_deref())
            {
                continue;
            }
            self.tables[k].dirty = false;
            let freshness = self.tables[k].input_freshness();
            let mut pushed_in = false;
            let body = match &previous {
                Some(prev) if !self.tables[k].content_dirty => prev.body.clone(),
                _ => {
                    self.tables[k].content_dirty = false;
                    pushed_in = std::mem::take(&mut self.tables[k].pushed_in);
                    let mut states = self.merge_table(k, k == leaf);
                    // Not an aggregate over leaves: how many children the
                    // computing agent hears from, so readers see coverage.
                    let reporting = self.tables[k].rows().filter(|r| !r.is_tombstone()).count();
                    states.insert(ATTR_REPORTING.into(), State::Count(reporting as u64));
                    let body = SharedBody::new(Body::Zone(states));
                    match &previous {
                        Some(prev) if prev.body.fingerprint() == body.fingerprint() => {
                            prev.body.clone()
                        }
                        _ => body,
                    }
                }
            };
            let content_changed = previous
                .as_ref()
                .is_none_or(|p| !Arc::ptr_eq(&p.body, &body));
            let row = Arc::new(Row {
                zone: self.ancestors[k].clone(),
                freshness,
                issuer: self.cfg.id,
                body,
            });
            if k == 0 {
                self.root = row;
                continue;
            }
            let pushable = previous
                .as_ref()
                .is_some_and(|p| may_push(p, &row, pushed_in));
            let pushes = content_changed && pushable && {
                let me = self.cfg.advertise;
                let contacts = row.contacts();
                contacts[..contacts.len().min(self.cfg.pushers)].contains(&me)
            };
            let own = self.tables[k - 1].own.clone();
            self.tables[k - 1].install(own, row, now.mono_ms);
            if content_changed && pushed_in {
                self.tables[k - 1].pushed_in = true;
            }
            if pushes {
                self.levels[k - 1].pending_push = true;
            }
        }
    }

    /// Whether to put off recomputing table `k`'s parent row: its content
    /// changed by a growth of membership, and this agent already recomputed
    /// it for a growth in the current period of `growth_gap_ms` on its wall
    /// clock. The first growth after a quiet spell goes at once; later ones
    /// wait for the next period, so the members of a zone issue their
    /// versions at about the same time. A value change or a shrink (a
    /// leave, an expiry) is never put off, nor is the root, which no peer
    /// sees, nor a leaf zone's row: a leaf table grows when zone-mates find
    /// each other, and under loss when leaf rows expire and come back, and
    /// putting that off held back value changes (at 10^4 agents with 20%
    /// loss the slowest change took 28 rounds instead of 15).
    fn defer_growth(&mut self, now: Now, k: usize, previous: Option<&Row>) -> bool {
        // The root row goes to no peer: it is only this agent's view.
        let Some(previous) = previous.filter(|_| k > 0) else {
            return false;
        };
        let members: u64 = self.tables[k].rows().map(|r| r.members()).sum();
        if members <= previous.members() {
            self.levels[k].growth_deferred = false;
            return false;
        }
        if now.mono_ms < self.levels[k].growth_ready_ms {
            self.levels[k].growth_deferred = true;
            return true;
        }
        self.levels[k].growth_deferred = false;
        let gap = self.cfg.growth_gap_ms.max(1);
        let to_boundary = gap - now.wall_ms % gap;
        self.levels[k].growth_ready_ms = now.mono_ms + to_boundary;
        false
    }

    fn merge_table(&self, k: usize, leaves: bool) -> States {
        let table = &self.tables[k];
        let live = table.rows().filter(|r| !r.is_tombstone());
        if leaves {
            let set = self.table_aggregates(k);
            let states: Vec<_> = live.map(|r| r.body.leaf_states(set)).collect();
            set.merge(states.iter().map(|s| s.as_ref()))
        } else {
            self.table_aggregates(k)
                .merge(live.filter_map(|r| r.states()))
        }
    }

    /// Sends pending pushes whose gap has passed: the changed own row of a
    /// table goes to one contact of every sibling zone in it.
    fn flush_pushes(&mut self, now: Now) {
        for k in 0..self.tables.len() {
            let level = &self.levels[k];
            if !level.pending_push || !self.publishes_own(k) {
                continue;
            }
            if level
                .last_push_ms
                .is_some_and(|t| now.mono_ms < t + self.cfg.push_gap_ms)
            {
                continue;
            }
            self.levels[k].pending_push = false;
            self.levels[k].last_push_ms = Some(now.mono_ms);
            let Some(row) = self.tables[k].own_row().cloned() else {
                continue;
            };
            self.stats.pushes += 1;
            for to in self.one_contact_per_sibling(k) {
                self.send_push(to, vec![row.clone()]);
            }
        }
    }

    fn finish(&mut self, now: Now) -> Vec<Effect> {
        self.refresh_ancestors(now, false);
        // Rows computed from tables still being filled (or whose merge
        // waits for its gap) would say the zone is smaller than it is.
        if !self.publishing
            && self.catchup.is_done()
            && self.tables.iter().all(|t| !t.content_dirty)
        {
            self.publishing = true;
        }
        self.flush_pushes(now);
        self.flush_forwards(now);
        std::mem::take(&mut self.outbox)
    }

    // ---- sending ------------------------------------------------------

    fn header_len(&self) -> usize {
        self.header_len
    }

    fn send(&mut self, to: SocketAddr, message: Message) {
        let envelope = Envelope {
            sender: self.cfg.id,
            sender_zone: self.cfg.zone.clone(),
            message,
        };
        let len = envelope.encoded_len();
        self.send_envelope(to, envelope, len);
    }

    /// `send` for a message whose encoded envelope length is known.
    fn send_encoded(&mut self, to: SocketAddr, message: Message, len: usize) {
        let envelope = Envelope {
            sender: self.cfg.id,
            sender_zone: self.cfg.zone.clone(),
            message,
        };
        debug_assert_eq!(len, envelope.encoded_len());
        self.send_envelope(to, envelope, len);
    }

    fn send_envelope(&mut self, to: SocketAddr, envelope: Envelope, len: usize) {
        if len > self.cfg.max_message_bytes() {
            // Packing keeps every message under the limit; this is a bug
            // guard, counted rather than sent as a fragmented datagram.
            self.stats.refuse(Refusal::TooLarge);
            return;
        }
        self.stats.messages_sent += 1;
        match &envelope.message {
            Message::Digest { .. } => self.stats.sent_by_kind[0] += 1,
            Message::Request(_) => self.stats.sent_by_kind[1] += 1,
            Message::Rows(rows) | Message::Push(rows) => {
                self.stats.sent_by_kind[2] += 1;
                self.stats.rows_sent += rows.len() as u64;
            }
            Message::Refresh(items) => {
                self.stats.sent_by_kind[3] += 1;
                self.stats.refreshes_sent += items.len() as u64;
            }
            Message::CertDigest { .. } | Message::Certs { .. } => {}
        }
        self.stats.bytes_sent += len as u64;
        self.outbox.push(Effect::Send {
            to,
            envelope,
            bytes: len,
        });
    }

    fn send_rows(&mut self, to: SocketAddr, rows: Vec<Arc<Row>>) {
        self.send_rows_as(to, rows, false);
    }

    fn send_push(&mut self, to: SocketAddr, rows: Vec<Arc<Row>>) {
        self.send_rows_as(to, rows, true);
    }

    fn send_rows_as(&mut self, to: SocketAddr, rows: Vec<Arc<Row>>, push: bool) {
        if rows.is_empty() {
            return;
        }
        let (batches, too_large) = pack_rows(self.header_len(), self.cfg.max_message_bytes(), rows);
        for _ in &too_large {
            self.stats.refuse(Refusal::TooLarge);
        }
        for (batch, len) in batches {
            let message = if push {
                Message::Push(batch)
            } else {
                Message::Rows(batch)
            };
            self.send_encoded(to, message, len);
        }
    }

    fn send_refresh(&mut self, to: SocketAddr, items: Vec<Refresh>) {
        self.send_batched(to, items, Message::Refresh);
    }

    fn send_requests(&mut self, to: SocketAddr, requests: Vec<TableRequest>) {
        let budget = self.batch_budget();
        let requests = requests
            .into_iter()
            .map(|mut req| {
                // A request for more names than fit is cut; the rest are
                // asked for in the next exchange.
                while req.wants.len() > 1 && req.wire_len() > budget {
                    req.wants.truncate(req.wants.len() / 2);
                }
                req
            })
            .collect();
        self.send_batched(to, requests, Message::Request);
    }

    /// Bytes a message may spend on its items.
    fn batch_budget(&self) -> usize {
        self.cfg
            .max_message_bytes()
            .saturating_sub(self.header_len() + 3)
    }

    /// Sends items in as few messages as fit the datagram limit.
    fn send_batched<T: WireLen>(
        &mut self,
        to: SocketAddr,
        items: Vec<T>,
        wrap: impl Fn(Vec<T>) -> Message,
    ) {
        let budget = self.batch_budget();
        let mut batch: Vec<T> = Vec::new();
        let mut size = 0;
        for item in items {
            let len = item.wire_len();
            if !batch.is_empty() && size + len > budget {
                self.send(to, wrap(std::mem::take(&mut batch)));
                size = 0;
            }
            size += len;
            batch.push(item);
        }
        if !batch.is_empty() {
            self.send(to, wrap(batch));
        }
    }
}

/// How the peer's copy of a row (`issued`, as its digest entry says)
/// stands against ours: (ours is newer, the peer's is newer). At the same
/// age with another check the order is unknown, and both hold.
fn compare_copies(
    mine: &table::Entry,
    entry: &DigestEntry,
    issued: crate::zone::Hlc,
) -> (bool, bool) {
    let my_issued = mine.freshness().issued;
    let tie = issued == my_issued && entry.check != mine.check();
    (issued < my_issued || tie, issued > my_issued || tie)
}

/// Sends our copy for an older one: a heartbeat if the peer holds our
/// content, else the row.
fn send_ours(mine: &table::Entry, entry: &DigestEntry, answer: &mut DigestAnswer) {
    let my_content = mine.content();
    if entry.content == my_content {
        answer.refresh.push(Refresh {
            zone: mine.row.zone.clone(),
            freshness: mine.freshness(),
            issuer: mine.issuer(),
            content: my_content,
        });
    } else {
        answer.send.push(mine.current());
    }
}

/// Answers a digest entry for a row we hold that is not our own: ours if
/// the peer's copy is older, and it is what to ask for (with our content,
/// so an equal one comes back as a heartbeat) if the peer's copy is newer;
/// both when the order is unknown.
fn answer_held_entry(
    mine: &table::Entry,
    entry: &DigestEntry,
    issued: crate::zone::Hlc,
    answer: &mut DigestAnswer,
) -> Option<(Name, u32)> {
    let (ours_newer, theirs_newer) = compare_copies(mine, entry, issued);
    if ours_newer {
        send_ours(mine, entry, answer);
    }
    theirs_newer.then(|| (entry.name.clone(), mine.content()))
}

/// Whether to ask for a row the peer lists and we do not hold: unless it
/// is no newer than one we forgot (a tombstone or an expired row).
fn wants_unknown_entry(table: &Table, entry: &DigestEntry, issued: crate::zone::Hlc) -> bool {
    table.wants(
        &entry.name,
        Freshness {
            issued,
            inputs: u128::MAX,
        },
        AgentId::MAX,
    )
}

/// Sends the rows the peer did not list at all, where its digest part
/// covers them: not the peer's own zone (`peer_computes`), whose row it
/// computes itself, nor our own when it is `withheld`.
fn send_unlisted(
    table: &Table,
    part: &TableDigest,
    listed: &[bool],
    peer_computes: Option<&str>,
    withheld: bool,
    answer: &mut DigestAnswer,
) {
    for (index, (name, e)) in table.entries().enumerate() {
        if listed[index] {
            continue;
        }
        let is_peers_own = peer_computes.is_some_and(|p| **name == *p);
        let withheld = withheld && *name == table.own;
        if !is_peers_own && !withheld && part.covers(name) {
            answer.send.push(e.current());
        }
    }
}

/// The contacts that represent a zone in gossip: the first `k` of those
/// its row lists. The overlay may ask all of them (more doors into a zone
/// whose first contacts died), gossip uses these.
fn representatives(row: &Row, k: usize) -> &[SocketAddr] {
    let contacts = row.contacts();
    &contacts[..contacts.len().min(k)]
}

/// Whether a new version of a zone row may be pushed (and so relayed):
/// never while its membership grows, and a change of shape (members or
/// contacts) only when it follows a push. In a cold start every zone grows
/// every round; pushing each version, with every receiver relaying it down
/// its subtree, made every round a broadcast of every zone row (traffic grew
/// with N), so anti-entropy alone carries a forming zone. Under loss, rows
/// expire and come back at single agents, and pushing the shrunken versions
/// those agents compute spread a wrong count faster than anti-entropy
/// could repair it. A change of values is pushed at once, and so is a leave,
/// whose tombstone comes in a push.
fn may_push(previous: &Row, next: &Row, pushed_in: bool) -> bool {
    let same_shape = next.members() == previous.members() && next.contacts() == previous.contacts();
    next.members() <= previous.members() && (same_shape || pushed_in)
}
