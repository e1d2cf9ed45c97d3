//! Astrolabe exporter: hierarchical gossip aggregation of host metrics.
//!
//! README.md describes the layout and use; docs/ALGORITHM.md the protocol
//! (gossip, overlay, signatures) that the code is checked against.

// Unsafe code only where a SAFETY comment says why it holds, each with a
// local allow: releasing file pages (agent/resident.rs) and one
// allocator tuning call (cmd/agent.rs).
#![deny(unsafe_code)]

pub mod agent;
pub mod aggregate;
pub mod cmd;
pub mod config;
pub mod engine;
pub mod http;
pub mod otel;
pub mod overlay;
pub mod security;
pub mod sim;
pub mod transport;
pub mod view;
pub mod wall_clock;
pub mod zone;
