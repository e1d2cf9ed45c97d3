//! The wire: UDP datagrams carrying one engine message each.
//!
//! A datagram is one version byte followed by the postcard encoding of an
//! `Envelope`. Anything else is dropped and counted by reason; the engine
//! never sees it.
//!
//! With a gossip key, every datagram is sealed whole (see `crypto`) before
//! it leaves and opened before anything reads its first byte.

pub mod crypto;

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::engine::Envelope;

/// Bumped on any incompatible change of the encoding.
pub const WIRE_VERSION: u8 = 1;

/// First byte of an on-demand overlay datagram (queries and commands,
/// `crate::overlay`), beside gossip's `WIRE_VERSION`: both share the socket.
pub const OVERLAY_FRAME: u8 = 2;

/// A decoded datagram of either kind.
#[derive(Debug)]
pub enum Frame {
    Gossip(Envelope),
    Overlay(crate::overlay::OverlayMessage),
}

/// Why a datagram was dropped; the label of `astrolabe_gossip_dropped_datagrams_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum DropReason {
    #[error("empty datagram")]
    Empty,
    #[error("unknown wire version")]
    Version,
    #[error("malformed message")]
    Malformed,
    #[error("datagram larger than the limit")]
    Oversized,
    #[error("plain datagram, but gossip is encrypted")]
    Unencrypted,
    #[error("sealed datagram, but no gossip key is configured")]
    NoKey,
    #[error("no key of the keyring opens it")]
    Decrypt,
    #[error("sender clock outside the replay window")]
    Stale,
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

impl DropReason {
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

pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(envelope.encoded_len() + 1);
    out.push(WIRE_VERSION);
    out.extend_from_slice(&envelope.encode());
    out
}

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

/// Seals an encoded datagram when gossip is encrypted.
pub fn seal(security: Option<&crypto::GossipSecurity>, wall_ms: u64, plain: Vec<u8>) -> Vec<u8> {
    match security {
        Some(sec) => sec.seal(wall_ms, &plain),
        None => plain,
    }
}

/// Opens a received datagram, whatever frame it carries: authentic, fresh
/// and never seen with a keyring; as it is without one.
pub fn unseal<'a>(
    security: Option<&crypto::GossipSecurity>,
    wall_ms: u64,
    datagram: &'a [u8],
    max_len: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, DropReason> {
    if datagram.len() > max_len {
        return Err(DropReason::Oversized);
    }
    match security {
        Some(sec) => Ok(sec.open(wall_ms, datagram)?.into()),
        None if datagram.first() == Some(&crypto::SEALED_MARKER) => Err(DropReason::NoKey),
        None => Ok(datagram.into()),
    }
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

/// The gossip socket could not be bound: the address and the system's reason.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for gossip on {addr}: {reason}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub reason: String,
    /// Kept out of the error chain: `reason` already says it, once.
    pub error: io::Error,
}

/// The system's words for an I/O error, without Rust's `(os error 98)`.
pub fn os_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// Binds the gossip socket with large buffers (a round's burst of
/// datagrams). Without address reuse: on Linux SO_REUSEADDR lets a second
/// UDP socket bind a port in use, and a second agent would then share the
/// first one's datagrams. A restart needs no reuse, as UDP has no TIME_WAIT.
pub fn bind(addr: SocketAddr) -> Result<tokio::net::UdpSocket, BindError> {
    let failed = |error: io::Error| BindError {
        addr,
        reason: os_reason(&error),
        error,
    };
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(failed)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    socket.set_recv_buffer_size(4 << 20).ok();
    socket.set_send_buffer_size(4 << 20).ok();
    socket.set_nonblocking(true).map_err(failed)?;
    socket.bind(&addr.into()).map_err(failed)?;
    tokio::net::UdpSocket::from_std(socket.into()).map_err(failed)
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

    #[tokio::test]
    async fn a_port_in_use_is_refused_in_plain_words() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let e = bind(addr).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot listen for gossip on {addr}: Address already in use")
        );
    }

    #[tokio::test]
    async fn binds_ipv4_and_ipv6_loopback() {
        let v4 = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(v4.local_addr().unwrap().is_ipv4());
        if let Ok(v6) = bind("[::1]:0".parse().unwrap()) {
            assert!(v6.local_addr().unwrap().is_ipv6());
        }
    }
}
