//! Astrolabe exporter: hierarchical gossip aggregation of host metrics.
//!
//! This crate is the edge: the agent's runtime, HTTP, OTLP, the CLI and
//! every file. The sans-IO core (zones, aggregates, the engine, the
//! overlay, the wire codec, signatures, the simulator) is the
//! `astrolabe-core` crate, re-exported here under the same paths.
//!
//! README.md describes the layout and use; docs/ALGORITHM.md the protocol
//! (gossip, overlay, signatures) that the code is checked against.

// Unsafe code only where a SAFETY comment says why it holds, each with a
// local allow: releasing file pages (agent/resident.rs) and one
// allocator tuning call (cmd/agent.rs).
#![deny(unsafe_code)]

pub mod agent;
pub mod cmd;
pub mod config;
pub mod http;
pub mod otel;
pub mod overlay;
pub mod security;
pub mod transport;
pub mod view;
pub mod wall_clock;

pub use astrolabe_core::{aggregate, engine, node, sim, zone};
