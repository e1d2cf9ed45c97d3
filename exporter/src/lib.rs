//! Astrolabe exporter: hierarchical gossip aggregation of host metrics.
//!
//! See DESIGN.md (shared with the project owners) and docs/ALGORITHM.md.

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
pub mod zone;
