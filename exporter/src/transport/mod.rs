//! The wire at the edge: the core's datagram codec
//! (`astrolabe_core::transport`), the gossip socket and the keyring that
//! seals and opens datagrams with OS randomness.

pub mod keyring;

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

pub use astrolabe_core::transport::*;

/// Seals an encoded datagram when gossip is encrypted.
pub fn seal(security: Option<&keyring::GossipSecurity>, wall_ms: u64, plain: Vec<u8>) -> Vec<u8> {
    match security {
        Some(sec) => sec.seal(wall_ms, &plain),
        None => plain,
    }
}

/// Opens a received datagram, whatever frame it carries: authentic, fresh
/// and never seen with a keyring; as it is without one.
pub fn unseal<'a>(
    security: Option<&keyring::GossipSecurity>,
    wall_ms: u64,
    datagram: &'a [u8],
    max_len: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, DropReason> {
    if datagram.len() > max_len {
        return Err(DropReason::Oversized);
    }
    match security {
        Some(sec) => Ok(sec.open(wall_ms, datagram)?.into()),
        None if datagram.first() == Some(&keyring::SEALED_MARKER) => Err(DropReason::NoKey),
        None => Ok(datagram.into()),
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
