//! On-demand queries and commands (MON): a short-lived overlay along the
//! zone hierarchy for one request, with partial results and coverage.

pub mod command;
pub mod directory;
pub mod message;
mod node;
pub mod query;

pub use directory::{ChildZone, Directory, Tables};
pub use message::{Outcome, OverlayMessage, Reply, Request, RequestError};
pub use node::{Answer, Overlay, OverlayConfig, OverlayEffect, OverlayStats};
