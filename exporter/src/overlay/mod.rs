//! On-demand queries and commands at the edge: the core's sans-IO overlay
//! (`astrolabe_core::overlay`), plus its tokio runtime, HTTP API, local
//! data sources, actions and metrics.

pub use astrolabe_core::overlay::*;

pub mod actions;
pub mod http;
pub mod local;
pub mod log_filter;
pub mod metrics;
pub mod runtime;
