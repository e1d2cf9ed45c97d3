//! What the OTLP exporter sent and what it left out, served on `/metrics`
//! (`astrolabe_otlp_*`) once an exporter runs, so nothing vanishes without
//! a word.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use astrolabe_collectors::{Kind, MetricFamily};

/// Why data points did not reach the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A summary or histogram without `_count`, which the Prometheus
    /// compatibility rules say to drop.
    MissingCount,
    /// A histogram whose buckets are not numbers or not cumulative, or a
    /// summary with a quantile label that is not a number.
    Malformed,
    /// The export failed (receiver down, timeout, refused request).
    ExportFailed,
    /// The receiver took the request but rejected some points
    /// (`partial_success`).
    Rejected,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::MissingCount,
        DropReason::Malformed,
        DropReason::ExportFailed,
        DropReason::Rejected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::MissingCount => "missing_count",
            DropReason::Malformed => "malformed",
            DropReason::ExportFailed => "export_failed",
            DropReason::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Default)]
pub struct OtlpCounters {
    /// Set by the exporter: an agent without OTLP serves no `astrolabe_otlp_*`.
    enabled: AtomicBool,
    exported: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl OtlpCounters {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn exported(&self, points: usize) {
        self.exported.fetch_add(points as u64, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason, points: usize) {
        self.dropped[reason as usize].fetch_add(points as u64, Ordering::Relaxed);
    }

    pub fn dropped_total(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// The two families, empty (so not served) while no exporter runs.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut exported = MetricFamily::new(
            "astrolabe_otlp_exported_points_total",
            "Data points the OTLP receiver accepted.",
            Kind::Counter,
        );
        let mut dropped = MetricFamily::new(
            "astrolabe_otlp_dropped_points_total",
            "Data points left out of the OTLP export or lost on the way, by reason.",
            Kind::Counter,
        );
        if self.enabled.load(Ordering::Relaxed) {
            exported.push(&[], self.exported.load(Ordering::Relaxed) as f64);
            for r in DropReason::ALL {
                dropped.push(&[("reason", r.label())], self.dropped_total(r) as f64);
            }
        }
        vec![exported, dropped]
    }
}
