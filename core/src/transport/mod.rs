//! The wire: UDP datagrams carrying one engine message each.
//!
//! A datagram is one version byte followed by the postcard encoding of an
//! `Envelope`. Anything else is dropped and counted by reason; the engine
//! never sees it.
//!
//! With a gossip key, every datagram is sealed whole (see `crypto`) before
//! it leaves and opened before anything reads its first byte. Binding the
//! socket, and the keyring's file, are the exporter's `transport`.

pub mod crypto;

use crate::engine::Envelope;

/// Bumped on any incompatible change of the encoding.
pub const WIRE_VERSION: u8 = 1;

/// First byte of an on-demand overlay datagram (queries and commands,
/// `crate::overlay`), beside gossip's `WIRE_VERSION`: both share the socket.
pub const OVERLAY_FRAME: u8 = 2;

/// A decoded datagram of either kind.
#[derive(Debug)]
pub enum Frame {
    /// A gossip datagram: one engine message.
    Gossip(Envelope),
    /// An overlay datagram: an ask or a reply chunk.
    Overlay(crate::overlay::OverlayMessage),
}

/// Why a datagram was dropped; the label of `astrolabe_gossip_dropped_datagrams_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum DropReason {
    /// Zero bytes.
    #[error("empty datagram")]
    Empty,
    /// A first byte that names no frame this version knows.
    #[error("unknown wire version")]
    Version,
    /// The body did not decode.
    #[error("malformed message")]
    Malformed,
    /// Longer than the receiver's limit (`max_len`).
    #[error("datagram larger than the limit")]
    Oversized,
    /// A plain datagram where gossip is sealed.
    #[error("plain datagram, but gossip is encrypted")]
    Unencrypted,
    /// A sealed datagram where no gossip key is configured.
    #[error("sealed datagram, but no gossip key is configured")]
    NoKey,
    /// Sealed, but no key of the keyring opens it.
    #[error("no key of the keyring opens it")]
    Decrypt,
    /// Sealed with a sender clock outside the replay window.
    #[error("sender clock outside the replay window")]
    Stale,
    /// Opened before within the replay window.
    #[error("replayed datagram")]
    Replay,
}

impl From<crypto::OpenError> for DropReason {
    fn from(e: crypto::OpenError) -> DropReason {
        match e {
            crypto::OpenError::Unencrypted => DropReason::Unencrypted,
            crypto::OpenError::Encrypted => DropReason::NoKey,
            crypto::OpenError::Decrypt => DropReason::Decrypt,
            crypto::OpenError::Stale => DropReason::Stale,
            crypto::OpenError::Replay => DropReason::Replay,
        }
    }
}

/// Datagrams dropped before the engine saw them, by reason; shared with
/// the snapshot `/metrics` renders.
#[derive(Debug, Default)]
pub struct DropCounters([std::sync::atomic::AtomicU64; DropReason::ALL.len()]);

impl DropCounters {
    /// One more datagram dropped for `reason`.
    pub fn count(&self, reason: DropReason) {
        self.0[reason as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every reason with its count, in `DropReason::ALL` order.
    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| {
                (
                    *r,
                    self.0[*r as usize].load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }
}

impl DropReason {
    /// Every reason, in the order of its counter index.
    pub const ALL: [DropReason; 9] = [
        DropReason::Empty,
        DropReason::Version,
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::Unencrypted,
        DropReason::NoKey,
        DropReason::Decrypt,
        DropReason::Stale,
        DropReason::Replay,
    ];

    /// The `reason` label of `astrolabe_gossip_dropped_datagrams_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Empty => "empty",
            DropReason::Version => "version",
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::Unencrypted => "unencrypted",
            DropReason::NoKey => "no_key",
            DropReason::Decrypt => "decrypt",
            DropReason::Stale => "stale",
            DropReason::Replay => "replay",
        }
    }
}

/// A gossip datagram: `WIRE_VERSION`, then the envelope's postcard encoding.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(envelope.encoded_len() + 1);
    out.push(WIRE_VERSION);
    out.extend_from_slice(&envelope.encode());
    out
}

/// Reads a gossip datagram made by `encode`, refusing one longer than `max_len`
/// bytes.
pub fn decode(datagram: &[u8], max_len: usize) -> Result<Envelope, DropReason> {
    if datagram.len() > max_len {
        return Err(DropReason::Oversized);
    }
    let (version, body) = datagram.split_first().ok_or(DropReason::Empty)?;
    if *version != WIRE_VERSION {
        return Err(DropReason::Version);
    }
    Envelope::decode(body).map_err(|_| DropReason::Malformed)
}

/// An overlay message as a datagram: its frame byte, then the message.
pub fn encode_overlay(message: &crate::overlay::OverlayMessage) -> Vec<u8> {
    let body = message.encode();
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(OVERLAY_FRAME);
    out.extend_from_slice(&body);
    out
}

/// Either kind of datagram; gossip ones exactly as `decode`.
pub fn decode_frame(datagram: &[u8], max_len: usize) -> Result<Frame, DropReason> {
    match datagram.split_first() {
        Some((&OVERLAY_FRAME, body)) if datagram.len() <= max_len => {
            crate::overlay::OverlayMessage::decode(body)
                .map(Frame::Overlay)
                .map_err(|_| DropReason::Malformed)
        }
        _ => decode(datagram, max_len).map(Frame::Gossip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Message;
    use crate::zone::ZonePath;

    #[test]
    fn round_trip_and_refusals() {
        let env = Envelope {
            sender: 9,
            sender_zone: ZonePath::parse("/a/b").unwrap(),
            message: Message::Rows(vec![]),
        };
        let bytes = encode(&env);
        assert_eq!(bytes.len(), env.encoded_len() + 1);
        assert_eq!(decode(&bytes, 1400).unwrap().sender, 9);
        assert_eq!(decode(&[], 1400).unwrap_err(), DropReason::Empty);
        assert_eq!(decode(&[9, 1, 2], 1400).unwrap_err(), DropReason::Version);
        assert_eq!(
            decode(&[WIRE_VERSION, 0xff, 0xff], 1400).unwrap_err(),
            DropReason::Malformed
        );
        assert_eq!(
            decode(&vec![1; 2000], 1400).unwrap_err(),
            DropReason::Oversized
        );
        // A bad zone path inside is refused by the decoder, not later.
        let mut bad = bytes.clone();
        let at = bad.iter().position(|b| *b == b'/').unwrap();
        bad[at] = b'x';
        assert_eq!(decode(&bad, 1400).unwrap_err(), DropReason::Malformed);
    }

    #[test]
    fn overlay_frames_share_the_socket() {
        use crate::overlay::OverlayMessage;
        let m = OverlayMessage::Ask {
            qid: 5,
            zone: ZonePath::parse("/a").unwrap(),
            request: std::sync::Arc::new(crate::overlay::Request::Query {
                sql: "SELECT count(*) FROM host".into(),
            }),
            budget_ms: 100,
        };
        let bytes = encode_overlay(&m);
        assert!(matches!(
            decode_frame(&bytes, 1400),
            Ok(Frame::Overlay(OverlayMessage::Ask { qid: 5, .. }))
        ));
        assert_eq!(
            decode_frame(&[OVERLAY_FRAME, 0xff], 1400).unwrap_err(),
            DropReason::Malformed
        );
        let env = Envelope {
            sender: 1,
            sender_zone: ZonePath::parse("/a").unwrap(),
            message: Message::Rows(vec![]),
        };
        assert!(matches!(
            decode_frame(&encode(&env), 1400),
            Ok(Frame::Gossip(_))
        ));
    }
}
