//! The sans-IO core of the Astrolabe exporter: zones and their rows, the
//! aggregate functions, the gossip engine, the on-demand overlay, the
//! wire codec and its sealing, operator signatures and the simulator that
//! drives them all on a virtual clock.
//!
//! Nothing here opens a file or a socket, reads a clock or draws OS
//! randomness: time and random bytes come in as arguments, and bytes go
//! out as return values. The exporter crate (`astrolabe`) is the edge that
//! does the IO. `.ci/check-core-deps` keeps the dependencies so.
//!
//! docs/ALGORITHM.md describes the protocol this code is checked against.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(unreachable_pub)]

pub mod aggregate;
pub mod engine;
pub mod node;
pub mod overlay;
pub mod security;
pub mod sim;
pub mod transport;
pub mod zone;
