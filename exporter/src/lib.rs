//! Astrolabe exporter: hierarchical gossip aggregation of host metrics.
//!
//! See DESIGN.md (shared with the project owners) and docs/ALGORITHM.md.

pub mod aggregate;
pub mod zone;
pub mod engine;
pub mod sim;
pub mod cmd;
