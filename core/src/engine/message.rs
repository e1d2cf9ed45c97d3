//! What agents say to each other. See docs/ALGORITHM.md for the exchange.
//!
//! Messages hold rows behind `Arc`, so the simulator passes them between
//! engines without copying, and their encoded size is computed from the
//! rows' cached sizes instead of encoding them again.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::zone::{varint_len, AgentId, Fnv1a32, Freshness, Hlc, Row, ZonePath};

/// A child's name in a table, as digests and requests carry it. Kept inline
/// (up to 24 bytes) rather than behind a shared pointer: a digest lists
/// every row of every shared table, and following a pointer for each name,
/// to hash, compare or count references, was a cache miss per row on both
/// the sending and the receiving side. The wire form is a plain string.
pub type Name = compact_str::CompactString;

/// Every message names its sender, so the receiver knows which tables the
/// two share (those of their common ancestors).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's agent id; a message from this agent's own id is dropped.
    pub sender: AgentId,
    /// The sender's leaf zone: the depth it shares with the receiver's says
    /// which tables the message may touch.
    pub sender_zone: ZonePath,
    /// What is said.
    pub message: Message,
}

/// One gossip message (see docs/ALGORITHM.md for the exchange).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Message {
    /// What the sender holds of some shared tables (push-pull step 1).
    /// `lonely`: the sender knows no zone-mate yet, so the answer should
    /// include the rows of the sender's own ancestors, whose contacts lead
    /// it to them.
    Digest {
        /// The sender knows no zone-mate yet.
        lonely: bool,
        /// One digest per shared table, or per part of a table too large for
        /// one datagram.
        tables: Vec<TableDigest>,
    },
    /// Rows the sender lacks or holds older versions of (step 2).
    Request(Vec<TableRequest>),
    /// Rows: the answer to a digest or request.
    Rows(Vec<Arc<Row>>),
    /// Rows with new content, pushed eagerly: the receiver relays them
    /// into its part of the tree (see `Engine::forward`).
    Push(Vec<Arc<Row>>),
    /// New freshness for rows whose content the receiver already holds (a
    /// heartbeat): a few dozen bytes instead of the whole row.
    Refresh(Vec<Refresh>),
    /// A hash of the sender's aggregate certificates for zones of depth
    /// up to `depth` (see `engine/certs.rs`); sent only by agents holding any.
    CertDigest {
        /// Depth of the deepest zones the hash covers.
        depth: u8,
        /// A 64-bit hash of those certificates.
        hash: u64,
    },
    /// Aggregate certificates for the zones both agents share; `answer`:
    /// the receiver should send back its own if they differ.
    Certs {
        /// The receiver should send its own back if they differ.
        answer: bool,
        /// The certificates, each verified by the receiver before use.
        certs: Vec<Arc<crate::security::certificate::AggregateCertificate>>,
    },
}

/// New freshness for a row the receiver holds with the same content: a
/// heartbeat without the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refresh {
    /// The row's zone.
    pub zone: ZonePath,
    /// Its new freshness.
    pub freshness: Freshness,
    /// Who issued it.
    pub issuer: AgentId,
    /// Low bits of the content fingerprint the receiver must hold.
    pub content: u32,
}

/// A summary of one table, or of the part of it with names in `[lo, hi)`
/// when the whole table does not fit one datagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDigest {
    /// The table's zone.
    pub zone: ZonePath,
    /// Greatest `issued` in `entries`; each entry stores its distance from
    /// it, which is small and so short as a varint.
    pub newest: Hlc,
    /// One entry per row of the table (or of the `[lo, hi)` part), sorted by
    /// name.
    pub entries: Vec<DigestEntry>,
    /// Hash of the contacts of the sender's own child in this table (see
    /// `contacts_check`): a receiver that knows that zone with other
    /// contacts sends its copy, so split groups of one zone find each other.
    pub own_contacts: u32,
    /// First name covered; `None` from the start.
    pub lo: Option<Name>,
    /// First name past the part covered; `None` to the end.
    pub hi: Option<Name>,
}

/// What a digest says of one row, in a few bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The child's name in the table.
    pub name: Name,
    /// `newest.issued - issued`: its distance from the digest's newest, small
    /// as a varint.
    pub age: u64,
    /// Hash of the rest of the freshness (inputs, issuer): equal `issued`
    /// with a different check means "different rows, order unknown".
    pub check: u32,
    /// Low bits of the row's content fingerprint.
    pub content: u32,
}

/// Rows one agent asks of a table after a digest (push-pull step 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRequest {
    /// The table's zone.
    pub zone: ZonePath,
    /// Names wanted, each with the content the requester holds (0 for
    /// none), so that the answer can be a `Refresh` when that is enough.
    pub wants: Vec<(Name, u32)>,
}

impl TableDigest {
    /// Whether `name` lies in the part `[lo, hi)` this digest covers.
    pub fn covers(&self, name: &str) -> bool {
        self.lo.as_deref().is_none_or(|lo| name >= lo)
            && self.hi.as_deref().is_none_or(|hi| name < hi)
    }

    /// The `issued` timestamp an entry stands for.
    pub fn issued_of(&self, entry: &DigestEntry) -> Hlc {
        Hlc(self.newest.0.saturating_sub(entry.age))
    }
}

/// A 32-bit FNV-1a of a contact list, as `TableDigest::own_contacts` carries
/// it.
pub fn contacts_check(contacts: &[std::net::SocketAddr]) -> u32 {
    use std::fmt::Write;
    // Each address's text, fed as it is formatted (no string per contact
    // in every digest), then a separator byte.
    let mut h = Fnv1a32::new();
    for c in contacts {
        let _ = write!(h, "{c}");
        h.write(&[0xff]);
    }
    h.finish()
}

/// A 32-bit FNV-1a of the freshness's `inputs` and the issuer, as
/// `DigestEntry::check` carries it.
pub fn freshness_check(freshness: &Freshness, issuer: AgentId) -> u32 {
    let mut h = Fnv1a32::new();
    h.write(&freshness.inputs.to_le_bytes());
    h.write(&issuer.to_le_bytes());
    h.finish()
}

/// Exact postcard length of a message item, computed rather than encoded:
/// digests and heartbeats are sized item by item for every message sent,
/// and walking them through serde for it was a visible share of a round.
/// `encoded_len_is_exact_for_every_variant` holds these to the encoder.
pub trait WireLen {
    /// Its exact postcard length, in bytes.
    fn wire_len(&self) -> usize;
}

fn str_len(s: &str) -> usize {
    varint_len(s.len() as u128) + s.len()
}

fn option_str_len(s: &Option<Name>) -> usize {
    1 + s.as_deref().map_or(0, str_len)
}

impl WireLen for DigestEntry {
    fn wire_len(&self) -> usize {
        str_len(&self.name)
            + varint_len(self.age as u128)
            + varint_len(self.check as u128)
            + varint_len(self.content as u128)
    }
}

impl WireLen for TableDigest {
    fn wire_len(&self) -> usize {
        str_len(self.zone.as_str())
            + varint_len(self.newest.0 as u128)
            + varint_len(self.entries.len() as u128)
            + self.entries.iter().map(WireLen::wire_len).sum::<usize>()
            + varint_len(self.own_contacts as u128)
            + option_str_len(&self.lo)
            + option_str_len(&self.hi)
    }
}

impl WireLen for Refresh {
    fn wire_len(&self) -> usize {
        str_len(self.zone.as_str())
            + varint_len(self.freshness.issued.0 as u128)
            + varint_len(self.freshness.inputs)
            + varint_len(self.issuer as u128)
            + varint_len(self.content as u128)
    }
}

impl WireLen for TableRequest {
    fn wire_len(&self) -> usize {
        str_len(self.zone.as_str())
            + varint_len(self.wants.len() as u128)
            + self
                .wants
                .iter()
                .map(|(name, content)| str_len(name) + varint_len(*content as u128))
                .sum::<usize>()
    }
}

impl WireLen for Arc<crate::security::certificate::AggregateCertificate> {
    fn wire_len(&self) -> usize {
        size_of(self)
    }
}

fn items_len<T: WireLen>(items: &[T]) -> usize {
    varint_len(items.len() as u128) + items.iter().map(WireLen::wire_len).sum::<usize>()
}

fn size_of<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX / 4)
}

impl Envelope {
    /// Exact postcard length, using the rows' cached sizes.
    pub fn encoded_len(&self) -> usize {
        let header = varint_len(self.sender as u128) + str_len(self.sender_zone.as_str());
        header + self.message.encoded_len()
    }

    /// The postcard encoding, without the transport's version byte (see
    /// `transport::encode`).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a postcard encoding made by `encode`.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl Message {
    /// Exact postcard length, using the rows' cached sizes.
    pub fn encoded_len(&self) -> usize {
        // One byte of variant tag precedes every variant's fields.
        1 + match self {
            Message::Digest { lonely, tables } => size_of(lonely) + items_len(tables),
            Message::Request(tables) => items_len(tables),
            Message::Refresh(items) => items_len(items),
            Message::Rows(rows) | Message::Push(rows) => {
                varint_len(rows.len() as u128) + rows.iter().map(|r| r.encoded_len()).sum::<usize>()
            }
            Message::CertDigest { depth, hash } => size_of(depth) + size_of(hash),
            Message::Certs { answer, certs } => size_of(answer) + size_of(certs),
        }
    }
}

/// Rows that fit one message, with the encoded length of its envelope.
pub(crate) type RowBatch = (Vec<Arc<Row>>, usize);

/// Packs rows into as few `Rows` messages as fit the size limit, each with
/// the encoded length of its envelope (so it is not summed again). A row
/// too large for any message is returned in `too_large` and never sent.
pub fn pack_rows(
    header_len: usize,
    limit: usize,
    rows: impl IntoIterator<Item = Arc<Row>>,
) -> (Vec<RowBatch>, Vec<Arc<Row>>) {
    let mut batches = Vec::new();
    let mut too_large = Vec::new();
    let mut current: Vec<Arc<Row>> = Vec::new();
    // tag + header + a varint count of up to 127 rows
    let base = header_len + 1 + 1;
    let mut size = base;
    for row in rows {
        let len = row.encoded_len();
        if base + len > limit {
            too_large.push(row);
            continue;
        }
        if size + len > limit || current.len() >= 127 {
            batches.push((std::mem::take(&mut current), size));
            size = base;
        }
        size += len;
        current.push(row);
    }
    if !current.is_empty() {
        batches.push((current, size));
    }
    (batches, too_large)
}

/// Splits a table's digest entries (sorted by name) into digests that each
/// fit the size limit, each covering a contiguous range of names.
pub fn split_digest(
    zone: &ZonePath,
    newest: Hlc,
    own_contacts: u32,
    entries: Vec<DigestEntry>,
    budget: usize,
) -> Vec<TableDigest> {
    // zone, newest, own_contacts, two `None` bounds and room for the
    // entry count's varint to grow.
    let fixed = str_len(zone.as_str())
        + varint_len(newest.0 as u128)
        + varint_len(own_contacts as u128)
        + 2
        + 4;
    let mut parts = Vec::new();
    let mut current: Vec<DigestEntry> = Vec::new();
    let mut size = fixed;
    let mut lo: Option<Name> = None;
    for entry in entries {
        let len = entry.wire_len() + 1;
        if !current.is_empty() && size + len + str_len(&entry.name) > budget {
            let hi = Some(entry.name.clone());
            parts.push(TableDigest {
                zone: zone.clone(),
                newest,
                entries: std::mem::take(&mut current),
                own_contacts,
                lo: lo.clone(),
                hi: hi.clone(),
            });
            lo = hi;
            size = fixed + option_str_len(&lo);
        }
        size += len;
        current.push(entry);
    }
    parts.push(TableDigest {
        zone: zone.clone(),
        newest,
        entries: current,
        own_contacts,
        lo,
        hi: None,
    });
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{Attributes, Body, Value};

    fn row(name: &str, ts: u64) -> Arc<Row> {
        let mut attrs = Attributes::new();
        attrs.insert("id".into(), Value::Int(7));
        attrs.insert("addr".into(), Value::str("10.0.0.7:7946"));
        attrs.insert("load".into(), Value::Float(0.25));
        Arc::new(Row::new(
            ZonePath::parse(&format!("/z0/z1/{name}")).unwrap(),
            Freshness {
                issued: Hlc(ts),
                inputs: 0,
            },
            7,
            Body::Leaf(attrs),
        ))
    }

    fn envelope(message: Message) -> Envelope {
        Envelope {
            sender: 12345,
            sender_zone: ZonePath::parse("/z0/z1/h7").unwrap(),
            message,
        }
    }

    #[test]
    fn encoded_len_is_exact_for_every_variant() {
        let rows = Message::Rows((0..40).map(|i| row(&format!("h{i}"), 1 << 50)).collect());
        let digest = Message::Digest {
            lonely: true,
            tables: split_digest(
                &ZonePath::parse("/z0").unwrap(),
                Hlc(1 << 57),
                12345,
                (0..5)
                    .map(|i| DigestEntry {
                        name: format!("z{i}").into(),
                        age: 1 << 20,
                        check: 99,
                        content: 5,
                    })
                    .collect(),
                1000,
            ),
        };
        let request = Message::Request(vec![TableRequest {
            zone: ZonePath::root(),
            wants: vec![("a".into(), 0), ("b".into(), 77)],
        }]);
        let refresh = Message::Refresh(vec![Refresh {
            zone: ZonePath::parse("/a/b").unwrap(),
            freshness: Freshness {
                issued: Hlc(1 << 57),
                inputs: 1 << 62,
            },
            issuer: 1234,
            content: 5678,
        }]);
        for m in [rows, digest, request, refresh] {
            let e = envelope(m);
            assert_eq!(e.encode().len(), e.encoded_len());
            let back = Envelope::decode(&e.encode()).unwrap();
            assert_eq!(back.encoded_len(), e.encoded_len());
        }
    }

    #[test]
    fn packed_rows_fit_the_limit() {
        let rows: Vec<_> = (0..200).map(|i| row(&format!("h{i}"), 1 << 55)).collect();
        let header = envelope(Message::Rows(vec![])).encoded_len() - 2;
        let (batches, too_large) = pack_rows(header, 1336, rows);
        assert!(too_large.is_empty());
        assert!(batches.len() > 1);
        let total: usize = batches.iter().map(|(b, _)| b.len()).sum();
        assert_eq!(total, 200);
        for (b, len) in batches {
            let e = envelope(Message::Rows(b));
            assert_eq!(e.encode().len(), len);
            assert!(len <= 1336, "{len}");
        }
    }

    #[test]
    fn split_digests_cover_every_name_exactly_once() {
        let zone = ZonePath::parse("/z0").unwrap();
        let entries: Vec<_> = (0..300)
            .map(|i| DigestEntry {
                name: format!("zone{i:04}").into(),
                age: 1 << 30,
                check: u32::MAX,
                content: 1,
            })
            .collect();
        let parts = split_digest(&zone, Hlc(1 << 57), 7, entries.clone(), 1200);
        assert!(parts.len() > 1);
        for e in &entries {
            let covering: Vec<_> = parts.iter().filter(|p| p.covers(&e.name)).collect();
            assert_eq!(covering.len(), 1);
            assert!(covering[0].entries.contains(e));
        }
        for p in parts {
            let env = envelope(Message::Digest {
                lonely: false,
                tables: vec![p],
            });
            assert!(env.encoded_len() <= 1200 + 40, "{}", env.encoded_len());
            // Parts with `lo` and `hi` bounds are sized exactly too.
            assert_eq!(env.encode().len(), env.encoded_len());
        }
    }

    #[test]
    fn computed_lengths_match_the_encoder_at_varint_boundaries() {
        for n in [0u64, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let request = Message::Request(vec![TableRequest {
                zone: ZonePath::parse("/z0/z1").unwrap(),
                wants: (0..(n % 300) as usize)
                    .map(|i| (Name::from(format!("h{i}")), n as u32))
                    .collect(),
            }]);
            let refresh = Message::Refresh(vec![Refresh {
                zone: ZonePath::parse("/z0/z1/h2").unwrap(),
                freshness: Freshness {
                    issued: Hlc(n),
                    inputs: n as u128 * 3,
                },
                issuer: n,
                content: n as u32,
            }]);
            let digest = Message::Digest {
                lonely: false,
                tables: vec![TableDigest {
                    zone: ZonePath::root(),
                    newest: Hlc(n),
                    entries: vec![DigestEntry {
                        name: "x".into(),
                        age: n,
                        check: n as u32,
                        content: (n >> 3) as u32,
                    }],
                    own_contacts: n as u32,
                    lo: Some("a".into()),
                    hi: None,
                }],
            };
            for m in [request, refresh, digest] {
                let e = Envelope {
                    sender: n,
                    sender_zone: ZonePath::parse("/z0/z1/h2").unwrap(),
                    message: m,
                };
                assert_eq!(e.encode().len(), e.encoded_len(), "{n}");
            }
        }
    }

    #[test]
    fn contacts_check_hashes_the_addresses_as_text() {
        // The value peers compare: FNV-1a over each address's text, with a
        // separator byte. Older agents computed it from `to_string()`.
        let contacts: Vec<std::net::SocketAddr> = vec![
            "10.0.0.1:7946".parse().unwrap(),
            "[2001:db8::7]:7946".parse().unwrap(),
        ];
        let mut want: u32 = 0x811c_9dc5;
        for c in &contacts {
            for b in c.to_string().bytes() {
                want ^= b as u32;
                want = want.wrapping_mul(0x0100_0193);
            }
            want ^= 0xff;
            want = want.wrapping_mul(0x0100_0193);
        }
        assert_eq!(contacts_check(&contacts), want);
        assert_ne!(contacts_check(&contacts[..1]), want);
    }
}
