//! What overlay nodes say to each other: asks going down the zone tree and
//! replies (split into datagram-sized chunks) coming back up.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::command::Tally;
use super::query::Partial;
use crate::zone::ZonePath;

/// The longest a request may run (its `timeout_ms`, clamped), so a node
/// can bound how long it remembers one.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// Payload bytes of one reply chunk: with the header it stays well under
/// the 1400-byte datagram bound of the transport.
pub const CHUNK_BYTES: usize = 1150;
/// Chunks one reply may take; a bigger partial is cut (and flagged).
pub const MAX_CHUNKS: usize = 64;
/// Missing zones one reply names; the rest are only counted.
pub const MAX_MISSING: usize = 64;

/// What an on-demand request asks every host of a zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// An on-demand query (see `query`).
    Query {
        /// Its SQL text, at most `query::MAX_SQL_BYTES`.
        sql: String,
    },
    /// A named action each host runs, if configured.
    Command {
        /// The action's name.
        name: String,
        /// Its arguments.
        args: Vec<String>,
        /// The operator's signature; required where trusted keys are configured.
        seal: Option<crate::security::command::CommandSeal>,
    },
}

/// Why a request got no answer from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// The zone asked for is none this node knows.
    #[error("unknown zone {0}")]
    UnknownZone(String),
    /// The query did not parse or plan; the message says why.
    #[error("{0}")]
    BadQuery(String),
    /// The agent asked has just started and is still learning the zone
    /// tables it would answer from (its answer would leave hosts out
    /// without knowing it). The asker turns to the zone's next contact; an
    /// entry agent refuses the request (HTTP 503) until it has caught up.
    #[error("agent {0} has just started and is still catching up with its zones; ask another agent or try again in a few seconds")]
    NotReady(String),
    /// The agent holds `--limits.pending-queries` tasks already: said at
    /// once, to the API caller as a 503 and to an asking peer, which asks
    /// the zone's next contact instead of waiting. New variants go last,
    /// so that earlier ones keep their wire tags.
    #[error("this agent is answering {0} queries and commands already (--limits.pending-queries); retry")]
    Overloaded(u32),
}

/// What a reply carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// A query's partial result.
    Query(Partial),
    /// A command's counts and outputs.
    Command(Tally),
    /// The request failed where it was asked.
    Error(RequestError),
}

/// The answer of one subtree, as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// No better reply will follow from this sender.
    pub last: bool,
    /// Every part of the subtree that looks alive has answered: what is
    /// still missing is silent (dead, or lost and being asked again). The
    /// parent passes a settled reply up at once instead of at its flush
    /// gap, so dead hosts do not slow down the live coverage.
    pub settled: bool,
    /// The subtree's answer so far.
    pub outcome: Outcome,
    /// Hosts whose answer is in `outcome`.
    pub answered: u32,
    /// Hosts the subtree has, by the gossiped member counts.
    pub expected: u32,
    /// Live zones of the subtree without an answer yet, at most `MAX_MISSING`.
    pub missing: Vec<ZonePath>,
    /// Missing zones beyond `MAX_MISSING`.
    pub missing_more: u32,
    /// Of `missing`, the zones every contact of which refused the ask at
    /// its `--limits.pending-queries` (alive, but too busy to answer), at
    /// most `MAX_MISSING`. Last in the struct: a new field goes last so
    /// the earlier ones keep their place on the wire.
    pub refused: Vec<ZonePath>,
}

impl Reply {
    /// A reply that answers for no host yet and names no missing or
    /// refused zone: an acknowledgement, or the start of one; others are
    /// built from it with `..Reply::new(outcome)`.
    pub fn new(outcome: Outcome) -> Reply {
        Reply {
            last: false,
            settled: false,
            outcome,
            answered: 0,
            expected: 0,
            missing: Vec::new(),
            missing_more: 0,
            refused: Vec::new(),
        }
    }

    /// The last word of a task that answers for no host: an error found
    /// where it was asked, or a refusal.
    pub fn finished(outcome: Outcome) -> Reply {
        Reply {
            last: true,
            settled: true,
            ..Reply::new(outcome)
        }
    }
}

/// A datagram between overlay nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OverlayMessage {
    /// Answer for `zone` within `budget_ms`.
    Ask {
        /// The request's id, chosen by the agent that started it.
        qid: u64,
        /// The zone to answer for.
        zone: ZonePath,
        /// The request itself.
        request: Arc<Request>,
        /// Time the receiver has to answer, in ms.
        budget_ms: u32,
    },
    /// Part `index` of `count` of the encoded `Reply` number `version`
    /// for `zone`.
    Chunk {
        /// The request's id.
        qid: u64,
        /// The zone the reply answers for.
        zone: ZonePath,
        /// Which of the sender's replies for this task it is, counted up
        /// with each one sent (0: the acknowledgement); chunks of different
        /// versions are assembled apart.
        version: u32,
        /// This chunk's place, from 0.
        index: u16,
        /// Chunks the reply takes.
        count: u16,
        /// The chunk's share of the encoded `Reply`.
        bytes: Vec<u8>,
    },
}

impl OverlayMessage {
    /// The postcard encoding, without the transport's frame byte (see
    /// `transport::encode_overlay`).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a postcard encoding made by `encode`.
    pub fn decode(bytes: &[u8]) -> Result<OverlayMessage, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// A reply cut into chunks. A partial too big for `MAX_CHUNKS` loses its
/// tail rows or groups (and says so) rather than the whole answer.
pub fn chunk_reply(qid: u64, zone: &ZonePath, version: u32, reply: &Reply) -> Vec<OverlayMessage> {
    let mut reply = reply.clone();
    let mut bytes = postcard::to_allocvec(&reply).unwrap_or_default();
    while bytes.len() > CHUNK_BYTES * MAX_CHUNKS {
        let shrunk = match &mut reply.outcome {
            Outcome::Query(Partial::Rows {
                rows, truncated, ..
            }) if rows.len() > 1 => {
                rows.truncate(rows.len() / 2);
                *truncated = true;
                true
            }
            Outcome::Query(Partial::Groups {
                groups, truncated, ..
            }) if groups.len() > 1 => {
                groups.truncate(groups.len() / 2);
                *truncated = true;
                true
            }
            Outcome::Command(t) if !t.outputs.is_empty() => {
                t.outputs.truncate(t.outputs.len() / 2);
                true
            }
            _ => false,
        };
        if !shrunk {
            break;
        }
        bytes = postcard::to_allocvec(&reply).unwrap_or_default();
    }
    let parts: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
    let count = parts.len().max(1) as u16;
    if parts.is_empty() {
        return vec![OverlayMessage::Chunk {
            qid,
            zone: zone.clone(),
            version,
            index: 0,
            count,
            bytes: Vec::new(),
        }];
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| OverlayMessage::Chunk {
            qid,
            zone: zone.clone(),
            version,
            index: i as u16,
            count,
            bytes: part.to_vec(),
        })
        .collect()
}

/// Chunks of one reply being put back together.
#[derive(Debug)]
pub struct Assembly {
    /// The chunks received, by index; `None` until each arrives.
    pub parts: Vec<Option<Vec<u8>>>,
    /// When the first chunk came (ms): an assembly still incomplete 5 s later
    /// is dropped.
    pub started_ms: u64,
}

/// Key of an assembly: who sent it, and which reply.
pub type AssemblyKey = (SocketAddr, u64, ZonePath, u32);

impl Assembly {
    /// Room for `count` chunks, started at `now_ms`.
    pub fn new(count: u16, now_ms: u64) -> Assembly {
        Assembly {
            parts: vec![None; count as usize],
            started_ms: now_ms,
        }
    }

    /// Adds a part; the whole reply once every part is in.
    pub fn add(&mut self, index: u16, bytes: Vec<u8>) -> Option<Result<Reply, postcard::Error>> {
        let slot = self.parts.get_mut(index as usize)?;
        *slot = Some(bytes);
        if self.parts.iter().any(Option::is_none) {
            return None;
        }
        let all: Vec<u8> = self.parts.iter().flatten().flatten().copied().collect();
        Some(postcard::from_bytes(&all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::Value;

    #[test]
    fn big_replies_travel_in_bounded_chunks_and_come_back_whole() {
        let rows: Vec<Vec<Value>> = (0..400)
            .map(|i| vec![Value::Int(i), Value::str(&"x".repeat(40))])
            .collect();
        let reply = Reply {
            last: true,
            settled: true,
            outcome: Outcome::Query(Partial::Rows {
                rows,
                truncated: false,
                lacking: Default::default(),
            }),
            answered: 3,
            expected: 4,
            missing: vec![ZonePath::parse("/a/b").unwrap()],
            missing_more: 0,
            refused: Vec::new(),
        };
        let zone = ZonePath::parse("/a").unwrap();
        let chunks = chunk_reply(7, &zone, 1, &reply);
        assert!(chunks.len() > 1);
        let mut asm = None;
        let mut whole = None;
        // Out of order, as UDP may deliver them.
        for m in chunks.iter().rev() {
            let bytes = m.encode();
            assert!(bytes.len() <= 1300, "{}", bytes.len());
            let OverlayMessage::Chunk {
                index,
                count,
                bytes,
                ..
            } = OverlayMessage::decode(&bytes).unwrap()
            else {
                panic!("not a chunk")
            };
            let a = asm.get_or_insert_with(|| Assembly::new(count, 0));
            if let Some(r) = a.add(index, bytes) {
                whole = Some(r.unwrap());
            }
        }
        assert_eq!(whole, Some(reply));
    }

    #[test]
    fn oversized_partials_are_cut_and_flagged() {
        let rows: Vec<Vec<Value>> = (0..1000)
            .map(|i| vec![Value::Int(i), Value::str(&"y".repeat(200))])
            .collect();
        let reply = Reply {
            last: true,
            settled: true,
            outcome: Outcome::Query(Partial::Rows {
                rows,
                truncated: false,
                lacking: Default::default(),
            }),
            answered: 1,
            expected: 1,
            missing: vec![],
            missing_more: 0,
            refused: Vec::new(),
        };
        let chunks = chunk_reply(1, &ZonePath::root(), 1, &reply);
        assert!(chunks.len() <= MAX_CHUNKS);
        let mut a = Assembly::new(chunks.len() as u16, 0);
        let mut got = None;
        for c in chunks {
            if let OverlayMessage::Chunk { index, bytes, .. } = c {
                got = a.add(index, bytes);
            }
        }
        match got.unwrap().unwrap().outcome {
            Outcome::Query(Partial::Rows {
                rows, truncated, ..
            }) => {
                assert!(truncated);
                assert!(rows.len() < 1000 && !rows.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
