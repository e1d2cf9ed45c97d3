//! One table: the rows of the children of one ancestor zone.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::zone::{AgentId, Freshness, Hlc, Row, ZonePath};

use super::message::{freshness_check, DigestEntry, Name};

/// One row of a table and what the engine keeps beside it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The row as last received. A heartbeat (`Table::refresh`) moves only
    /// the inline freshness and issuer below, so its freshness may be older
    /// than theirs: read its body here, and take `current()` to send it.
    pub row: Arc<Row>,
    /// Local time the row was last replaced by a fresher one; expiry counts
    /// from here, so a peer's skewed clock cannot expire or keep rows alive.
    pub refreshed_ms: u64,
    /// Copies of the row's freshness, issuer and content fingerprint, kept
    /// inline: digests and freshness sums read them for every row of every
    /// exchange, and following `row` to its body for each was the main cost
    /// of a 10^5-agent simulation (cache misses).
    freshness: Freshness,
    issuer: AgentId,
    content: u64,
    /// `freshness_check` of the two above: every digest sent and every
    /// digest entry compared needs it, and it changes only with them.
    check: u32,
}

impl Entry {
    fn new(row: Arc<Row>, refreshed_ms: u64) -> Entry {
        Entry {
            freshness: row.freshness,
            issuer: row.issuer,
            content: row.body.fingerprint(),
            check: freshness_check(&row.freshness, row.issuer),
            row,
            refreshed_ms,
        }
    }

    /// `freshness_check(&self.freshness(), self.issuer())`, kept inline.
    pub fn check(&self) -> u32 {
        self.check
    }

    /// Low 32 bits of the content fingerprint (what digests carry).
    pub fn content(&self) -> u32 {
        self.content as u32
    }

    /// The row's latest freshness (heartbeats included).
    pub fn freshness(&self) -> Freshness {
        self.freshness
    }

    /// The row with its latest freshness: the row itself unless heartbeats
    /// moved the freshness since it came, then a new row sharing its body.
    pub fn current(&self) -> Arc<Row> {
        if self.row.freshness == self.freshness && self.row.issuer == self.issuer {
            return self.row.clone();
        }
        Arc::new(Row {
            zone: self.row.zone.clone(),
            freshness: self.freshness,
            issuer: self.issuer,
            body: self.row.body.clone(),
        })
    }

    /// The issuer of the latest freshness.
    pub fn issuer(&self) -> AgentId {
        self.issuer
    }
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
    Installed {
        /// Whether the body changed (false for a heartbeat).
        content_changed: bool,
    },
    /// Not fresher than what the table holds or remembers.
    Stale,
}

/// The first 8 bytes of a name, big-endian, zero-padded: comparing two of
/// these orders names as their bytes do (names never contain a zero byte),
/// and for names of at most 8 bytes equal keys mean equal names. Lookups
/// compare these integers, kept inline, instead of the strings behind
/// pointers.
fn name_key(name: &str) -> u64 {
    let mut buf = [0u8; 8];
    let n = name.len().min(8);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    u64::from_be_bytes(buf)
}

fn cmp_names(a_key: u64, a: &str, b_key: u64, b: &str) -> std::cmp::Ordering {
    a_key.cmp(&b_key).then_with(|| {
        if a.len() <= 8 && b.len() <= 8 {
            std::cmp::Ordering::Equal
        } else {
            a.as_bytes().cmp(b.as_bytes())
        }
    })
}

#[derive(Debug, Clone)]
struct Slot {
    key: u64,
    name: Name,
    entry: Entry,
}

/// The rows of the children of one ancestor zone, sorted by name, with the
/// names of dropped rows remembered until they may be forgotten.
#[derive(Debug, Clone)]
pub struct Table {
    /// The ancestor zone whose children the rows are.
    pub zone: ZonePath,
    /// Depth of that zone: 0 for the root's table.
    pub depth: usize,
    /// Name of the child this agent belongs to (its own row, or its
    /// ancestor's row, which it computes itself).
    pub own: Name,
    own_key: u64,
    /// Sorted by name: a table holds at most a few hundred children, so a
    /// sorted vector beats a tree (one contiguous block, binary search on
    /// inline keys, no allocation per row).
    rows: Vec<Slot>,
    dead: BTreeMap<Name, Dead>,
    /// Something changed since the parent row was last computed.
    pub dirty: bool,
    /// A row's content (not only its freshness) changed since then.
    pub content_dirty: bool,
    /// Some of that change came in a push (or is this agent's own), so the
    /// parent row it gives may be pushed on even if its shape changed.
    pub pushed_in: bool,
}

impl Table {
    /// An empty table of `zone` (at `depth`), where this agent's child is
    /// `own`; it starts dirty so the parent row is computed at once.
    pub fn new(zone: ZonePath, depth: usize, own: Name) -> Table {
        Table {
            zone,
            depth,
            own_key: name_key(&own),
            own,
            rows: Vec::new(),
            dead: BTreeMap::new(),
            dirty: true,
            content_dirty: true,
            pushed_in: false,
        }
    }

    /// Index of `name`, or where it would be inserted.
    pub fn find(&self, name: &str) -> Result<usize, usize> {
        let key = name_key(name);
        self.rows
            .binary_search_by(|s| cmp_names(s.key, &s.name, key, name))
    }

    /// Whether `name` is this agent's own child in the table.
    pub fn is_own(&self, name: &str) -> bool {
        cmp_names(self.own_key, &self.own, name_key(name), name).is_eq()
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.find(name).ok().map(|i| &self.rows[i].entry)
    }

    /// The entry at an index returned by `find`.
    pub fn at(&self, index: usize) -> &Entry {
        &self.rows[index].entry
    }

    /// This agent's own row (or its ancestor's) in this table.
    pub fn own_row(&self) -> Option<&Arc<Row>> {
        self.get(&self.own).map(|e| &e.row)
    }

    /// Every entry, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = (&Name, &Entry)> {
        self.rows.iter().map(|s| (&s.name, &s.entry))
    }

    /// Every row as last received (see `Entry::row`), sorted by name.
    pub fn rows(&self) -> impl Iterator<Item = &Arc<Row>> {
        self.rows.iter().map(|s| &s.entry.row)
    }

    /// Rows held, tombstones included.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Names of dropped rows remembered against resurrection (`limits`).
    pub fn remembered(&self) -> usize {
        self.dead.len()
    }

    /// Whether a dropped row of `name` is remembered.
    pub fn remembers(&self, name: &str) -> bool {
        self.dead.contains_key(name)
    }

    /// Rows other than this agent's own (or own ancestor's), not tombstones.
    pub fn live_siblings(&self) -> impl Iterator<Item = &Arc<Row>> {
        self.rows
            .iter()
            .filter(|s| {
                cmp_names(s.key, &s.name, self.own_key, &self.own).is_ne()
                    && !s.entry.row.is_tombstone()
            })
            .map(|s| &s.entry.row)
    }

    /// Whether a row with this freshness would be taken in.
    pub fn wants(&self, name: &str, freshness: Freshness, issuer: AgentId) -> bool {
        if let Some(e) = self.get(name) {
            return (freshness, issuer) > (e.freshness, e.issuer);
        }
        match self.dead.get(name) {
            Some(d) => (freshness, issuer) > (d.freshness, d.issuer),
            None => true,
        }
    }

    /// Offers a received row. `authoritative` skips the memory of dropped
    /// rows: the issuer itself says it is alive (a restart).
    pub fn offer(&mut self, name: &str, row: Arc<Row>, now_ms: u64, authoritative: bool) -> Offer {
        let found = self.find(name);
        let fresher = match found {
            Ok(i) => {
                let e = &self.rows[i].entry;
                (row.freshness, row.issuer) > (e.freshness, e.issuer)
            }
            Err(_) => {
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
        // Reuse the name already held, so a refresh allocates nothing.
        let key = match found {
            Ok(i) => self.rows[i].name.clone(),
            Err(_) => Name::new(name),
        };
        self.install(key, row, now_ms)
    }

    /// Applies a heartbeat: the row keeps its body and takes the new
    /// freshness, if the body is the one the sender meant and it is fresher.
    /// Only the inline copy moves (see `Entry::row`): a steady-state round
    /// brings every agent a heartbeat for most of its rows, and building a
    /// new shared row for each was a large part of the round.
    pub fn refresh(
        &mut self,
        name: &str,
        freshness: Freshness,
        issuer: AgentId,
        content: u32,
        now_ms: u64,
    ) -> bool {
        let Ok(i) = self.find(name) else {
            return false;
        };
        let e = &mut self.rows[i].entry;
        if e.content as u32 != content || (freshness, issuer) <= (e.freshness, e.issuer) {
            return false;
        }
        e.freshness = freshness;
        e.issuer = issuer;
        e.check = freshness_check(&freshness, issuer);
        e.refreshed_ms = now_ms;
        self.dirty = true;
        true
    }

    /// Installs a row unconditionally (this agent's own rows).
    pub fn install(&mut self, name: Name, row: Arc<Row>, now_ms: u64) -> Offer {
        let entry = Entry::new(row, now_ms);
        let content_changed = match self.find(&name) {
            Ok(i) => {
                let slot = &mut self.rows[i];
                let changed = slot.entry.content != entry.content;
                slot.entry = entry;
                changed
            }
            Err(i) => {
                if !self.dead.is_empty() {
                    self.dead.remove(&name);
                }
                let key = name_key(&name);
                self.rows.insert(i, Slot { key, name, entry });
                true
            }
        };
        self.dirty = true;
        self.content_dirty |= content_changed;
        Offer::Installed { content_changed }
    }

    /// Drops rows (never the agent's own) not refreshed within `expiry_ms`;
    /// forgets remembered ones past their time. Returns the dropped rows.
    pub fn expire(&mut self, now_ms: u64, expiry_ms: u64, forget_after_ms: u64) -> Vec<Arc<Row>> {
        let mut dropped = Vec::new();
        let (own_key, own) = (self.own_key, self.own.clone());
        let dead = &mut self.dead;
        self.rows.retain(|s| {
            let keep = cmp_names(s.key, &s.name, own_key, &own).is_eq()
                || now_ms.saturating_sub(s.entry.refreshed_ms) <= expiry_ms;
            if !keep {
                dead.insert(
                    s.name.clone(),
                    Dead {
                        freshness: s.entry.freshness,
                        issuer: s.entry.issuer,
                        forget_at_ms: now_ms + forget_after_ms,
                    },
                );
                dropped.push(s.entry.row.clone());
            }
            keep
        });
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
        for s in &self.rows {
            let issued = s.entry.freshness.issued;
            newest = newest.max(issued);
            sum = sum.saturating_add(issued.0 as u128);
        }
        Freshness {
            issued: newest,
            inputs: sum,
        }
    }

    /// The greatest `issued` of the rows; `Hlc::ZERO` when empty.
    pub fn newest(&self) -> Hlc {
        self.rows
            .iter()
            .map(|s| s.entry.freshness.issued)
            .max()
            .unwrap_or(Hlc::ZERO)
    }

    /// Digest entries, sorted by name.
    pub fn digest_entries(&self, newest: Hlc) -> Vec<DigestEntry> {
        self.rows
            .iter()
            .map(|s| DigestEntry {
                name: s.name.clone(),
                age: newest.0.saturating_sub(s.entry.freshness.issued.0),
                check: s.entry.check,
                content: s.entry.content as u32,
            })
            .collect()
    }

    /// Oldest refresh among rows other than the own one (for "age" gauges).
    pub fn oldest_refresh_ms(&self) -> Option<u64> {
        self.rows
            .iter()
            .filter(|s| cmp_names(s.key, &s.name, self.own_key, &self.own).is_ne())
            .map(|s| s.entry.refreshed_ms)
            .min()
    }
}
