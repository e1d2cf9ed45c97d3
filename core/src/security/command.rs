//! Signed overlay commands: what the operator's client signs, and the
//! check every agent makes before it runs anything.
//!
//! The signature covers the zone the operator addressed, the command, its
//! arguments, when it was issued and a random nonce. An agent with trusted
//! keys runs a command only if that signature is by a trusted key, its own
//! leaf lies in the signed zone, it was issued within the window of the
//! local clock, and its nonce has not been seen in that window. A holder of
//! the cluster gossip key alone can forward or replay datagrams, but cannot
//! produce any of these signatures.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::operator::{OperatorKey, TrustedKeys, COMMAND_DOMAIN};
use super::refusals::{RefusalReason, SignatureRefusals, SignedKind};
use crate::zone::ZonePath;

/// How far a command's issue time may be from the local clock.
pub const DEFAULT_COMMAND_WINDOW_MS: u64 = 60_000;
/// Nonces remembered at most; past it (a flood of valid signed commands
/// within one window) further commands are refused rather than memory grown.
pub const MAX_REMEMBERED_NONCES: usize = 65_536;

/// The operator's signature on one command, carried with it through the overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSeal {
    /// The zone the operator addressed, as signed.
    pub zone: String,
    /// Wall-clock milliseconds since the epoch at the client.
    pub issued_ms: u64,
    /// A random number drawn by the client: a second command with the same
    /// nonce within the window is a replay.
    pub nonce: u64,
    /// The operator's Ed25519 public key (32 bytes).
    pub key: Vec<u8>,
    /// Ed25519 signature (64 bytes).
    pub signature: Vec<u8>,
}

/// The signed body: its postcard encoding, after the domain, is what the
/// signature covers.
#[derive(Serialize)]
struct SignedCommand<'a> {
    zone: &'a str,
    name: &'a str,
    args: &'a [String],
    issued_ms: u64,
    nonce: u64,
}

/// Signs a command on the client side; the private key stays there.
pub fn seal_command(
    key: &OperatorKey,
    zone: &str,
    name: &str,
    args: &[String],
    issued_ms: u64,
    nonce: u64,
) -> CommandSeal {
    let body = SignedCommand {
        zone,
        name,
        args,
        issued_ms,
        nonce,
    };
    CommandSeal {
        zone: zone.to_string(),
        issued_ms,
        nonce,
        key: key.public_bytes().to_vec(),
        signature: key.sign(COMMAND_DOMAIN, &body),
    }
}

/// The check before a command runs here.
#[derive(Debug)]
pub struct CommandGuard {
    trusted: TrustedKeys,
    window_ms: u64,
    /// Nonce -> issue time, for the replay check.
    seen: HashMap<u64, u64>,
    refusals: Arc<SignatureRefusals>,
}

impl CommandGuard {
    /// A guard accepting commands signed by `trusted` and issued within
    /// `window_ms` of the local clock (at least 1 ms), counting refusals in
    /// `refusals`.
    pub fn new(trusted: TrustedKeys, window_ms: u64, refusals: Arc<SignatureRefusals>) -> Self {
        CommandGuard {
            trusted,
            window_ms: window_ms.max(1),
            seen: HashMap::new(),
            refusals,
        }
    }

    /// Replaces the trusted keys (SIGHUP). Nonces seen stay remembered, so
    /// a reload does not reopen the replay window.
    pub fn set_trusted(&mut self, trusted: TrustedKeys) {
        self.trusted = trusted;
    }

    /// Without trusted keys commands are not checked (the agent says so at start-up).
    pub fn enforcing(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// Whether the command may run on the agent at `leaf`; a refusal is counted.
    pub fn check(
        &mut self,
        leaf: &ZonePath,
        name: &str,
        args: &[String],
        seal: Option<&CommandSeal>,
        now_ms: u64,
    ) -> Result<(), RefusalReason> {
        let verdict = self.verdict(leaf, name, args, seal, now_ms);
        if let Err(reason) = verdict {
            self.refusals.count(SignedKind::Command, reason);
            tracing::warn!(
                command = name,
                reason = reason.label(),
                "command refused: operator signature"
            );
        }
        verdict
    }

    fn verdict(
        &mut self,
        leaf: &ZonePath,
        name: &str,
        args: &[String],
        seal: Option<&CommandSeal>,
        now_ms: u64,
    ) -> Result<(), RefusalReason> {
        if !self.enforcing() {
            return Ok(());
        }
        let seal = seal.ok_or(RefusalReason::Unsigned)?;
        let body = SignedCommand {
            zone: &seal.zone,
            name,
            args,
            issued_ms: seal.issued_ms,
            nonce: seal.nonce,
        };
        // The signature first: nothing unauthenticated reaches the nonce memory.
        self.trusted
            .verify(COMMAND_DOMAIN, &body, &seal.key, &seal.signature)?;
        let zone = ZonePath::parse(&seal.zone).map_err(|_| RefusalReason::WrongZone)?;
        if !zone.contains(leaf) {
            return Err(RefusalReason::WrongZone);
        }
        if now_ms.abs_diff(seal.issued_ms) > self.window_ms {
            return Err(RefusalReason::Expired);
        }
        let window = self.window_ms;
        self.seen
            .retain(|_, issued| now_ms.abs_diff(*issued) <= window);
        if self.seen.contains_key(&seal.nonce) {
            return Err(RefusalReason::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            return Err(RefusalReason::Overflow);
        }
        self.seen.insert(seal.nonce, seal.issued_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (OperatorKey, CommandGuard, Arc<SignatureRefusals>) {
        let key = crate::security::operator::test_key();
        let refusals = Arc::new(SignatureRefusals::default());
        let trusted = TrustedKeys::parse(&[key.public_base64()]).unwrap();
        let guard = CommandGuard::new(trusted, 60_000, refusals.clone());
        (key, guard, refusals)
    }

    #[test]
    fn a_signed_command_runs_once_and_everything_else_is_refused_and_counted() {
        let (key, mut guard, refusals) = setup();
        let leaf = ZonePath::parse("/eu/fra/h1").unwrap();
        let args = vec!["debug".to_string()];
        let now = 1_000_000_000;
        let seal = seal_command(&key, "/eu", "set-log-level", &args, now - 5_000, 42);
        assert_eq!(
            guard.check(&leaf, "set-log-level", &args, Some(&seal), now),
            Ok(())
        );
        let refused =
            |g: &mut CommandGuard, name: &str, args: &[String], s: Option<&CommandSeal>| {
                g.check(&leaf, name, args, s, now).unwrap_err()
            };
        assert_eq!(
            refused(&mut guard, "set-log-level", &args, Some(&seal)),
            RefusalReason::Replayed
        );
        assert_eq!(
            refused(&mut guard, "set-log-level", &args, None),
            RefusalReason::Unsigned
        );
        // The same signature on other arguments or another command.
        let other_args = vec!["trace".to_string()];
        assert_eq!(
            refused(&mut guard, "set-log-level", &other_args, Some(&seal)),
            RefusalReason::BadSignature
        );
        assert_eq!(
            refused(&mut guard, "collect", &args, Some(&seal)),
            RefusalReason::BadSignature
        );
        // Signed for a zone this host is not in.
        let us = seal_command(&key, "/us", "collect", &[], now, 43);
        assert_eq!(
            refused(&mut guard, "collect", &[], Some(&us)),
            RefusalReason::WrongZone
        );
        // Too old, or from too far ahead.
        let old = seal_command(&key, "/", "collect", &[], now - 61_000, 44);
        assert_eq!(
            refused(&mut guard, "collect", &[], Some(&old)),
            RefusalReason::Expired
        );
        let ahead = seal_command(&key, "/", "collect", &[], now + 61_000, 45);
        assert_eq!(
            refused(&mut guard, "collect", &[], Some(&ahead)),
            RefusalReason::Expired
        );
        // Another operator's key.
        let stranger = crate::security::operator::test_key();
        let forged = seal_command(&stranger, "/", "collect", &[], now, 46);
        assert_eq!(
            refused(&mut guard, "collect", &[], Some(&forged)),
            RefusalReason::UntrustedKey
        );
        let c = |r| refusals.get(SignedKind::Command, r);
        assert_eq!(c(RefusalReason::Replayed), 1);
        assert_eq!(c(RefusalReason::Unsigned), 1);
        assert_eq!(c(RefusalReason::BadSignature), 2);
        assert_eq!(c(RefusalReason::WrongZone), 1);
        assert_eq!(c(RefusalReason::Expired), 2);
        assert_eq!(c(RefusalReason::UntrustedKey), 1);
    }

    #[test]
    fn without_trusted_keys_commands_pass_unchecked() {
        let refusals = Arc::new(SignatureRefusals::default());
        let mut guard = CommandGuard::new(TrustedKeys::default(), 60_000, refusals.clone());
        let leaf = ZonePath::parse("/a/h").unwrap();
        assert!(!guard.enforcing());
        assert_eq!(guard.check(&leaf, "collect", &[], None, 5), Ok(()));
        assert_eq!(
            refusals.get(SignedKind::Command, RefusalReason::Unsigned),
            0
        );
    }
}
