//! The one place the edge reads the wall clock. The engine, overlay and
//! simulator never do: time comes into them as `Now` (sans-IO), and the
//! agent, the HTTP handlers and the CLI read it here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
