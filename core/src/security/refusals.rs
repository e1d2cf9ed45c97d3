//! `astrolabe_signature_refusals_total{kind,reason}`: signed things this
//! agent refused, shared between the places that check signatures and the
//! snapshot that `/metrics` renders (the exporter's
//! `security::refusals_family`). Atomic counters, touched only when
//! something is refused.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a refused signature was on: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedKind {
    /// An overlay command.
    Command,
    /// An aggregate certificate.
    Aggregate,
}

impl SignedKind {
    /// Every kind, in the order of its counter index.
    pub const ALL: [SignedKind; 2] = [SignedKind::Command, SignedKind::Aggregate];

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            SignedKind::Command => "command",
            SignedKind::Aggregate => "aggregate",
        }
    }
}

/// Why a signed thing was refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// No signature where trusted keys are configured.
    Unsigned,
    /// Signed by a key this agent does not trust.
    UntrustedKey,
    /// A trusted key, but the signature does not cover what arrived.
    BadSignature,
    /// Key or signature of the wrong length or form.
    Malformed,
    /// Issued too long ago (or too far ahead of this clock), or past its expiry.
    Expired,
    /// A command nonce seen before within the window.
    Replayed,
    /// Signed for a zone this agent is not in.
    WrongZone,
    /// A certificate whose SQL does not parse or plan.
    Unparsable,
    /// More certificates than the bounded set holds.
    Overflow,
    /// A removal that would expire before the install it removes: once it
    /// was gone, a peer still holding the install would bring it back.
    RemovalExpiresFirst,
}

impl RefusalReason {
    /// Every reason, in the order of its counter index.
    pub const ALL: [RefusalReason; 10] = [
        RefusalReason::Unsigned,
        RefusalReason::UntrustedKey,
        RefusalReason::BadSignature,
        RefusalReason::Malformed,
        RefusalReason::Expired,
        RefusalReason::Replayed,
        RefusalReason::WrongZone,
        RefusalReason::Unparsable,
        RefusalReason::Overflow,
        RefusalReason::RemovalExpiresFirst,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::Unsigned => "unsigned",
            RefusalReason::UntrustedKey => "untrusted-key",
            RefusalReason::BadSignature => "bad-signature",
            RefusalReason::Malformed => "malformed",
            RefusalReason::Expired => "expired",
            RefusalReason::Replayed => "replayed",
            RefusalReason::WrongZone => "wrong-zone",
            RefusalReason::Unparsable => "unparsable",
            RefusalReason::Overflow => "overflow",
            RefusalReason::RemovalExpiresFirst => "removal-expires-first",
        }
    }
}

impl From<super::SignatureError> for RefusalReason {
    fn from(e: super::SignatureError) -> RefusalReason {
        match e {
            super::SignatureError::UntrustedKey => RefusalReason::UntrustedKey,
            super::SignatureError::Malformed => RefusalReason::Malformed,
            super::SignatureError::BadSignature => RefusalReason::BadSignature,
        }
    }
}

const REASONS: usize = RefusalReason::ALL.len();

/// Refusals by kind and reason, shared across threads.
#[derive(Debug, Default)]
pub struct SignatureRefusals([[AtomicU64; REASONS]; 2]);

impl SignatureRefusals {
    /// Counts one refusal.
    pub fn count(&self, kind: SignedKind, reason: RefusalReason) {
        self.0[kind as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals of `kind` for `reason` so far.
    pub fn get(&self, kind: SignedKind, reason: RefusalReason) -> u64 {
        self.0[kind as usize][reason as usize].load(Ordering::Relaxed)
    }
}
