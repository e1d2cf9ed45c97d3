//! Operator signatures: keys, signed commands and signed aggregate
//! certificates, and the counters of what was refused.

pub mod certificate;
pub mod command;
pub mod operator;
pub mod refusals;

pub use operator::{OperatorKey, SignatureError, TrustedKeys};
pub use refusals::{RefusalReason, SignatureRefusals, SignedKind};
