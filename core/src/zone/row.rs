//! Rows (Astrolabe's MIBs): the attributes of one zone at one moment.
//!
//! A row is immutable once issued and shared behind `Arc`: tables, snapshots,
//! messages in the simulator and peers' tables all point at the same row.
//! Its body (the attributes or aggregate states) is shared separately, so
//! that a heartbeat, which only moves the timestamp, reuses the body and
//! costs neither a recomputation nor a copy.

use std::cmp::Ordering;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::{Attributes, Hlc, Value, ZonePath};
use crate::aggregate::{AggregateSet, State, States};

/// Identifies an agent across restarts (same id, same zone = same agent).
pub type AgentId = u64;

/// System attribute of every leaf: the agent id (ordering key for contacts).
pub const ATTR_ID: &str = "id";
/// System attribute of every leaf: the gossip address peers reach it at.
pub const ATTR_ADDR: &str = "addr";
/// System aggregate: number of live leaves below the zone.
pub const ATTR_MEMBERS: &str = "members";
/// System attribute of zone rows: children the computing agent hears from.
pub const ATTR_REPORTING: &str = "reporting";
/// System aggregate: the addresses of the zone's representatives.
pub const ATTR_CONTACTS: &str = "contacts";

/// How fresh a row is. Ordered lexicographically, then by issuer id.
///
/// For a leaf row `issued` is the issuer's HLC and `inputs` is zero. For a
/// computed (inner zone) row, both come from the children: `issued` is the
/// greatest child timestamp and `inputs` the sum of all child timestamps,
/// so a row built from inputs that are all at least as new, one of them
/// newer, always compares greater, whoever computed it and whenever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Freshness {
    /// The greatest HLC of the inputs: the issuer's own for a leaf.
    pub issued: Hlc,
    /// The sum of the children's timestamps for a computed row; zero for a
    /// leaf.
    pub inputs: u128,
}

impl PartialOrd for Freshness {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Freshness {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.issued, self.inputs).cmp(&(other.issued, other.inputs))
    }
}

/// What a row says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// A leaf (one agent): its attributes, including `id` and `addr`.
    Leaf(Attributes),
    /// An inner zone: the merged partial state of every aggregate column.
    Zone(States),
    /// A leaf that left cleanly; it keeps the leaf from being brought back
    /// by a peer that still holds an older row.
    Tombstone,
}

/// The shared body plus what is derived from it once and cached.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SharedBody {
    body: Body,
    #[serde(skip)]
    derived: OnceLock<Derived>,
    /// A leaf's aggregate states under one aggregate set (by its id):
    /// computed once per body, however many agents merge it.
    #[serde(skip)]
    leaf_states: OnceLock<(u64, States)>,
    /// The verdict of a shape check (the limits screen) under its
    /// parameters: a body is screened once however many agents receive
    /// the same one (the simulator's shared envelopes; a decoded body is
    /// new, so the agent screens every one it receives).
    #[serde(skip)]
    verdict: OnceLock<([u64; 3], u8)>,
}

#[derive(Debug)]
struct Derived {
    encoded_len: usize,
    fingerprint: u64,
    values: Attributes,
    members: u64,
    contacts: Vec<SocketAddr>,
}

impl SharedBody {
    /// Shares `body`, with nothing derived yet (that is computed on first use).
    pub fn new(body: Body) -> Arc<SharedBody> {
        Arc::new(SharedBody {
            body,
            derived: OnceLock::new(),
            leaf_states: OnceLock::new(),
            verdict: OnceLock::new(),
        })
    }

    /// What the row says.
    pub fn body(&self) -> &Body {
        &self.body
    }

    fn derived(&self) -> &Derived {
        self.derived.get_or_init(|| {
            let encoded = postcard::to_allocvec(&self.body).unwrap_or_default();
            let encoded_len = encoded.len();
            let fingerprint = super::fnv1a64(&encoded);
            let values = match &self.body {
                Body::Leaf(attrs) => attrs.clone(),
                Body::Zone(states) => states
                    .iter()
                    .map(|(name, state)| (name.clone(), state.finalize()))
                    .collect(),
                Body::Tombstone => Attributes::new(),
            };
            let members = match &self.body {
                Body::Leaf(_) => 1,
                Body::Tombstone => 0,
                Body::Zone(_) => values
                    .get(ATTR_MEMBERS)
                    .and_then(Value::as_i64)
                    .map(|m| m.max(0) as u64)
                    .unwrap_or(0),
            };
            let contacts = match &self.body {
                Body::Leaf(attrs) => attrs
                    .get(ATTR_ADDR)
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok())
                    .into_iter()
                    .collect(),
                Body::Zone(_) => values
                    .get(ATTR_CONTACTS)
                    .and_then(Value::as_list)
                    .map(|list| {
                        list.iter()
                            .filter_map(Value::as_str)
                            .filter_map(|a| a.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default(),
                Body::Tombstone => Vec::new(),
            };
            Derived {
                encoded_len,
                fingerprint,
                values,
                members,
                contacts,
            }
        })
    }

    /// Bytes this body takes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.derived().encoded_len
    }

    /// A 64-bit hash of the encoded body: equal content, equal fingerprint.
    /// Comparing it instead of the bodies keeps heartbeats cheap, and its
    /// low bits in digests let a peer send only a new timestamp.
    pub fn fingerprint(&self) -> u64 {
        self.derived().fingerprint
    }

    /// Leaf attributes, or the finalized aggregates of a zone.
    pub fn values(&self) -> &Attributes {
        &self.derived().values
    }

    /// Live leaves below the zone: 1 for a leaf, 0 for a tombstone, the
    /// `members` aggregate for a zone.
    pub fn members(&self) -> u64 {
        self.derived().members
    }

    /// The gossip addresses of the zone's representatives: a leaf's own `addr`,
    /// a zone's `contacts` aggregate.
    pub fn contacts(&self) -> &[SocketAddr] {
        &self.derived().contacts
    }

    /// The states this leaf contributes under `set`.
    pub fn leaf_states(&self, set: &AggregateSet) -> std::borrow::Cow<'_, States> {
        use std::borrow::Cow;
        if let Some((id, states)) = self.leaf_states.get() {
            if *id == set.id() {
                return Cow::Borrowed(states);
            }
            return Cow::Owned(set.leaf_states(self.values()));
        }
        let states = set.leaf_states(self.values());
        match self.leaf_states.set((set.id(), states)) {
            Ok(()) => match self.leaf_states.get() {
                Some((_, states)) => Cow::Borrowed(states),
                None => Cow::Owned(set.leaf_states(self.values())),
            },
            Err((_, states)) => Cow::Owned(states),
        }
    }

    /// `check`'s verdict on this body, a pure function of the body and
    /// `params`: computed on first use, then the cached one for the same
    /// `params` (another `params` is computed again, not cached).
    pub fn verdict(&self, params: [u64; 3], check: impl Fn(&Body) -> u8) -> u8 {
        let (cached_for, verdict) = self.verdict.get_or_init(|| (params, check(&self.body)));
        if *cached_for == params {
            *verdict
        } else {
            check(&self.body)
        }
    }

    /// Partial states for aggregation: a zone's own, none for a leaf (the
    /// aggregate set derives a leaf's states from its attributes).
    pub fn states(&self) -> Option<&States> {
        match &self.body {
            Body::Zone(states) => Some(states),
            _ => None,
        }
    }
}

impl PartialEq for SharedBody {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body
    }
}

/// Length of `n` as a postcard varint (any unsigned integer width).
pub fn varint_len(mut n: u128) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// One row of a table: the zone it describes, how fresh it is, who issued it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The zone the row describes.
    pub zone: ZonePath,
    /// How fresh the row is; the fresher row replaces the other.
    pub freshness: Freshness,
    /// The agent that issued (for a zone row: computed) the row; breaks ties of
    /// freshness.
    pub issuer: AgentId,
    /// What the row says, shared with every table and message that holds it.
    pub body: Arc<SharedBody>,
}

impl Row {
    /// A row around a fresh `SharedBody`.
    pub fn new(zone: ZonePath, freshness: Freshness, issuer: AgentId, body: Body) -> Row {
        Row {
            zone,
            freshness,
            issuer,
            body: SharedBody::new(body),
        }
    }

    /// Whether this is a clean leave's tombstone.
    pub fn is_tombstone(&self) -> bool {
        matches!(self.body.body(), Body::Tombstone)
    }

    /// Whether this row is one agent's own (a leaf's attributes).
    pub fn is_leaf(&self) -> bool {
        matches!(self.body.body(), Body::Leaf(_))
    }

    /// Strictly fresher: freshness first, issuer id to break exact ties.
    pub fn is_fresher_than(&self, other: &Row) -> bool {
        (self.freshness, self.issuer) > (other.freshness, other.issuer)
    }

    /// Whether the two rows say the same thing (a heartbeat changes only the freshness).
    pub fn same_content(&self, other: &Row) -> bool {
        Arc::ptr_eq(&self.body, &other.body) || self.body.fingerprint() == other.body.fingerprint()
    }

    /// Bytes the row takes on the wire (postcard encoding of `Row`).
    pub fn encoded_len(&self) -> usize {
        // Computed rather than encoded: this runs for every row of every
        // message the simulator sends.
        let zone = self.zone.as_str().len();
        let header = varint_len(zone as u128)
            + zone
            + varint_len(self.freshness.issued.0 as u128)
            + varint_len(self.freshness.inputs)
            + varint_len(self.issuer as u128);
        header + self.body.encoded_len()
    }

    /// Leaf attributes, or the finalized aggregates of a zone.
    pub fn values(&self) -> &Attributes {
        self.body.values()
    }

    /// One attribute or finalized aggregate by name.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.body.values().get(name)
    }

    /// Live leaves below the zone (see `SharedBody::members`).
    pub fn members(&self) -> u64 {
        self.body.members()
    }

    /// The gossip addresses of the zone's representatives (see
    /// `SharedBody::contacts`).
    pub fn contacts(&self) -> &[SocketAddr] {
        self.body.contacts()
    }

    /// A zone row's partial aggregate states; `None` for a leaf or a tombstone.
    pub fn states(&self) -> Option<&States> {
        self.body.states()
    }
}

/// A state by name, for tests and the HTTP layer.
pub fn state_of<'a>(row: &'a Row, name: &str) -> Option<&'a State> {
    row.states().and_then(|s| s.get(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(ts: u64, issuer: AgentId) -> Row {
        let mut attrs = Attributes::new();
        attrs.insert(ATTR_ID.into(), Value::Int(issuer as i64));
        attrs.insert(ATTR_ADDR.into(), Value::str("127.0.0.1:7946"));
        Row::new(
            ZonePath::parse("/eu/fra/h1").unwrap(),
            Freshness {
                issued: Hlc(ts),
                inputs: 0,
            },
            issuer,
            Body::Leaf(attrs),
        )
    }

    #[test]
    fn fresher_row_wins_and_ties_break_by_issuer() {
        assert!(leaf(2, 1).is_fresher_than(&leaf(1, 9)));
        assert!(leaf(1, 9).is_fresher_than(&leaf(1, 1)));
        assert!(!leaf(1, 1).is_fresher_than(&leaf(1, 1)));
    }

    #[test]
    fn computed_freshness_orders_by_inputs_after_max() {
        let a = Freshness {
            issued: Hlc(10),
            inputs: 15,
        };
        let b = Freshness {
            issued: Hlc(10),
            inputs: 17,
        };
        assert!(b > a);
        let c = Freshness {
            issued: Hlc(11),
            inputs: 0,
        };
        assert!(c > b);
    }

    #[test]
    fn encoded_len_matches_the_codec() {
        let row = leaf(123_456_789, 42);
        let bytes = postcard::to_allocvec(&row).unwrap();
        assert_eq!(bytes.len(), row.encoded_len());
        let back: Row = postcard::from_bytes(&bytes).unwrap();
        assert!(back.same_content(&row));
        assert_eq!(back.contacts(), &["127.0.0.1:7946".parse().unwrap()]);
        assert_eq!(back.members(), 1);
    }
}
