//! One table: the rows of the children of one ancestor zone.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::zone::{AgentId, Freshness, Hlc, Row, ZonePath};

use super::message::{freshness_check, DigestEntry};

#[derive(Debug, Clone)]
pub struct Entry {
    pub row: Arc<Row>,
    /// Local time the row was last replaced by a fresher one; expiry counts
    /// from here, so a peer's skewed clock cannot expire or keep rows alive.
    pub refreshed_ms: u64,
}

/// What is remembered of a dropped row, so that an older copy still held
/// by a slower peer is not taken back in.
#[derive(Debug, Clone, Copy)]
struct Dead {
    freshness: Freshness,
    issuer: AgentId,
    forget_at_ms: u64,
}

/// Outcome of offering a row to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Installed; `content_changed` is false for a heartbeat.
    Installed { content_changed: bool },
    /// Not fresher than what the table holds or remembers.
    Stale,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub zone: ZonePath,
    pub depth: usize,
    /// Name of the child this agent belongs to (its own row, or its
    /// ancestor's row, which it computes itself).
    pub own: Arc<str>,
    rows: BTreeMap<Arc<str>, Entry>,
    dead: BTreeMap<Arc<str>, Dead>,
    /// Something changed since the parent row was last computed.
    pub dirty: bool,
    /// A row's content (not only its freshness) changed since then.
    pub content_dirty: bool,
}

impl Table {
    pub fn new(zone: ZonePath, depth: usize, own: Arc<str>) -> Table {
        Table {
            zone,
            depth,
            own,
            rows: BTreeMap::new(),
            dead: BTreeMap::new(),
            dirty: true,
            content_dirty: true,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.rows.get(name)
    }

    pub fn own_row(&self) -> Option<&Arc<Row>> {
        self.rows.get(&*self.own).map(|e| &e.row)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        self.rows.iter()
    }

    pub fn rows(&self) -> impl Iterator<Item = &Arc<Row>> {
        self.rows.values().map(|e| &e.row)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows other than this agent's own (or own ancestor's), not tombstones.
    pub fn live_siblings(&self) -> impl Iterator<Item = &Arc<Row>> {
        self.rows
            .iter()
            .filter(|(name, e)| **name != self.own && !e.row.is_tombstone())
            .map(|(_, e)| &e.row)
    }

    /// Whether a row with this freshness would be taken in.
    pub fn wants(&self, name: &str, freshness: Freshness, issuer: AgentId) -> bool {
        if let Some(e) = self.rows.get(name) {
            return (freshness, issuer) > (e.row.freshness, e.row.issuer);
        }
        match self.dead.get(name) {
            Some(d) => (freshness, issuer) > (d.freshness, d.issuer),
            None => true,
        }
    }

    /// Offers a received row. `authoritative` skips the memory of dropped
    /// rows: the issuer itself says it is alive (a restart).
    pub fn offer(&mut self, name: &str, row: Arc<Row>, now_ms: u64, authoritative: bool) -> Offer {
        let fresher = match self.rows.get(name) {
            Some(e) => row.is_fresher_than(&e.row),
            None => {
                authoritative
                    || self
                        .dead
                        .get(name)
                        .is_none_or(|d| (row.freshness, row.issuer) > (d.freshness, d.issuer))
            }
        };
        if !fresher {
            return Offer::Stale;
        }
        // Reuse the key already held, so a refresh allocates nothing.
        let key = match self.rows.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => Arc::from(name),
        };
        self.install(key, row, now_ms)
    }

    /// Applies a heartbeat: the row keeps its body and takes the new
    /// freshness, if the body is the one the sender meant and it is fresher.
    pub fn refresh(
        &mut self,
        name: &str,
        freshness: Freshness,
        issuer: AgentId,
        content: u32,
        now_ms: u64,
    ) -> bool {
        let Some(e) = self.rows.get_mut(name) else {
            return false;
        };
        if e.row.body.fingerprint() as u32 != content
            || (freshness, issuer) <= (e.row.freshness, e.row.issuer)
        {
            return false;
        }
        e.row = Arc::new(Row {
            zone: e.row.zone.clone(),
            freshness,
            issuer,
            body: e.row.body.clone(),
        });
        e.refreshed_ms = now_ms;
        self.dirty = true;
        true
    }

    /// Installs a row unconditionally (this agent's own rows).
    pub fn install(&mut self, name: Arc<str>, row: Arc<Row>, now_ms: u64) -> Offer {
        let content_changed = self
            .rows
            .get(&name)
            .is_none_or(|e| !e.row.same_content(&row));
        self.dead.remove(&name);
        self.rows.insert(
            name,
            Entry {
                row,
                refreshed_ms: now_ms,
            },
        );
        self.dirty = true;
        self.content_dirty |= content_changed;
        Offer::Installed { content_changed }
    }

    /// Drops rows (never the agent's own) not refreshed within `expiry_ms`;
    /// forgets remembered ones past their time. Returns the dropped rows.
    pub fn expire(&mut self, now_ms: u64, expiry_ms: u64, forget_after_ms: u64) -> Vec<Arc<Row>> {
        let own = self.own.clone();
        let expired: Vec<Arc<str>> = self
            .rows
            .iter()
            .filter(|(name, e)| **name != own && now_ms.saturating_sub(e.refreshed_ms) > expiry_ms)
            .map(|(name, _)| name.clone())
            .collect();
        let mut dropped = Vec::with_capacity(expired.len());
        for name in expired {
            if let Some(e) = self.rows.remove(&name) {
                self.dead.insert(
                    name,
                    Dead {
                        freshness: e.row.freshness,
                        issuer: e.row.issuer,
                        forget_at_ms: now_ms + forget_after_ms,
                    },
                );
                dropped.push(e.row);
            }
        }
        if !dropped.is_empty() {
            self.dirty = true;
            self.content_dirty = true;
        }
        self.dead.retain(|_, d| d.forget_at_ms > now_ms);
        dropped
    }

    /// Greatest and summed `issued` over all rows: the freshness of the
    /// row computed from this table (see `Freshness`).
    pub fn input_freshness(&self) -> Freshness {
        let mut newest = Hlc::ZERO;
        let mut sum: u128 = 0;
        for e in self.rows.values() {
            newest = newest.max(e.row.freshness.issued);
            sum = sum.saturating_add(e.row.freshness.issued.0 as u128);
        }
        Freshness {
            issued: newest,
            inputs: sum,
        }
    }

    pub fn newest(&self) -> Hlc {
        self.rows
            .values()
            .map(|e| e.row.freshness.issued)
            .max()
            .unwrap_or(Hlc::ZERO)
    }

    /// Digest entries, sorted by name.
    pub fn digest_entries(&self, newest: Hlc) -> Vec<DigestEntry> {
        self.rows
            .iter()
            .map(|(name, e)| DigestEntry {
                name: name.clone(),
                age: newest.0.saturating_sub(e.row.freshness.issued.0),
                check: freshness_check(&e.row.freshness, e.row.issuer),
                content: e.row.body.fingerprint() as u32,
            })
            .collect()
    }

    /// Oldest refresh among rows other than the own one (for "age" gauges).
    pub fn oldest_refresh_ms(&self) -> Option<u64> {
        self.rows
            .iter()
            .filter(|(name, _)| **name != self.own)
            .map(|(_, e)| e.refreshed_ms)
            .min()
    }
}
