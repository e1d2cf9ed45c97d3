//! Operator signatures at the edge: the core's keys, commands, certificates
//! and refusal counters (`astrolabe_core::security`), plus the key files
//! and the HTTP API that reads the trusted keys.

pub use astrolabe_core::security::*;

pub mod api;
pub mod key_file;

use astrolabe_collectors::{Kind, MetricFamily};

/// `astrolabe_signature_refusals_total`, every series from the start, so
/// an alert on a rise has a base.
pub fn refusals_family(refusals: &SignatureRefusals) -> MetricFamily {
    let mut f = MetricFamily::new(
        "astrolabe_signature_refusals_total",
        "Commands and aggregate certificates refused for their operator signature, by reason.",
        Kind::Counter,
    );
    for kind in SignedKind::ALL {
        for reason in RefusalReason::ALL {
            f.push(
                &[("kind", kind.label()), ("reason", reason.label())],
                refusals.get(kind, reason) as f64,
            );
        }
    }
    f
}
