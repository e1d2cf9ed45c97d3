//! Metrics of the queries and commands this agent answered as the entry
//! point: end-to-end latency, outcome and coverage. Shared between the HTTP
//! handlers (which observe) and the snapshot (which `/metrics` renders);
//! a small mutex-held struct, touched once per request, never by gossip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use astrolabe_collectors::{Kind, MetricFamily};

use super::Answer;
use super::Outcome;

/// Upper bounds of the latency buckets, in seconds: 5 ms .. 10 s.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Query,
    Command,
}

impl RequestKind {
    const ALL: [RequestKind; 2] = [RequestKind::Query, RequestKind::Command];

    pub fn label(self) -> &'static str {
        match self {
            RequestKind::Query => "query",
            RequestKind::Command => "command",
        }
    }
}

/// How a request ended: every expected host answered, some did not, or
/// it was refused or failed (bad request, unknown zone, no answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Complete,
    Partial,
    Error,
}

impl RequestOutcome {
    const ALL: [RequestOutcome; 3] = [
        RequestOutcome::Complete,
        RequestOutcome::Partial,
        RequestOutcome::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Complete => "complete",
            RequestOutcome::Partial => "partial",
            RequestOutcome::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Series {
    /// Per bucket, non-cumulative; the last slot is above the top bound.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
    outcomes: [u64; 3],
    /// answered/expected of the last answer; NaN before any.
    coverage: Option<f64>,
}

#[derive(Debug, Default)]
pub struct QueryMetrics {
    /// Indexed by `RequestKind as usize`.
    series: Mutex<[Series; 2]>,
    /// Overlay tasks in progress and lingering, and the most in progress
    /// at once: what `--limits.pending-queries` is measured against.
    tasks: [AtomicU64; 3],
}

impl QueryMetrics {
    /// The overlay's task counts, set by the agent's loop.
    pub fn set_tasks(&self, in_progress: usize, lingering: usize, peak: usize) {
        for (slot, n) in self.tasks.iter().zip([in_progress, lingering, peak]) {
            slot.store(n as u64, Ordering::Relaxed);
        }
    }

    pub fn record(
        &self,
        kind: RequestKind,
        elapsed: Duration,
        outcome: RequestOutcome,
        coverage: Option<f64>,
    ) {
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        if let Ok(mut all) = self.series.lock() {
            let s = &mut all[kind as usize];
            s.buckets[bucket] += 1;
            s.sum += secs;
            s.count += 1;
            s.outcomes[outcome as usize] += 1;
            if coverage.is_some() {
                s.coverage = coverage;
            }
        }
    }

    /// The families served on `/metrics`; every series exists from the
    /// start, so dashboards have data before the first query.
    pub fn families(&self) -> Vec<MetricFamily> {
        let all = match self.series.lock() {
            Ok(all) => all.clone(),
            Err(_) => Default::default(),
        };
        let mut duration = MetricFamily::new(
            "astrolabe_query_duration_seconds",
            "End-to-end time of queries and commands this agent answered as the entry point.",
            Kind::Histogram,
        );
        let mut total = MetricFamily::new(
            "astrolabe_queries_total",
            "Queries and commands this agent answered as the entry point, by outcome.",
            Kind::Counter,
        );
        let mut coverage = MetricFamily::new(
            "astrolabe_query_coverage_ratio",
            "Hosts answered over hosts expected in the last answer (NaN before any).",
            Kind::Gauge,
        );
        for kind in RequestKind::ALL {
            let s = &all[kind as usize];
            let k = kind.label();
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let le = bound.to_string();
                duration.push_suffixed("_bucket", &[("kind", k), ("le", &le)], cumulative as f64);
            }
            duration.push_suffixed("_bucket", &[("kind", k), ("le", "+Inf")], s.count as f64);
            duration.push_suffixed("_sum", &[("kind", k)], s.sum);
            duration.push_suffixed("_count", &[("kind", k)], s.count as f64);
            for outcome in RequestOutcome::ALL {
                total.push(
                    &[("kind", k), ("outcome", outcome.label())],
                    s.outcomes[outcome as usize] as f64,
                );
            }
            coverage.push(&[("kind", k)], s.coverage.unwrap_or(f64::NAN));
        }
        let mut tasks = MetricFamily::new(
            "astrolabe_overlay_tasks",
            "Overlay tasks (one per query and zone this agent works on) held now: in progress, which --limits.pending-queries bounds, and finished ones lingering for late duplicates.",
            Kind::Gauge,
        );
        let load = |i: usize| self.tasks[i].load(Ordering::Relaxed) as f64;
        tasks.push(&[("state", "in_progress")], load(0));
        tasks.push(&[("state", "lingering")], load(1));
        let peak = MetricFamily::gauge(
            "astrolabe_overlay_tasks_in_progress_peak",
            "The most overlay tasks in progress at once since the agent started.",
            load(2),
        );
        vec![duration, total, coverage, tasks, peak]
    }
}

/// One request being answered; recorded when dropped, so every way out of
/// a handler (answer, error, timeout, a client leaving a stream) counts.
pub struct Observation {
    metrics: std::sync::Arc<QueryMetrics>,
    kind: RequestKind,
    started: Instant,
    outcome: RequestOutcome,
    coverage: Option<f64>,
}

impl Observation {
    pub fn start(metrics: std::sync::Arc<QueryMetrics>, kind: RequestKind) -> Observation {
        Observation {
            metrics,
            kind,
            started: Instant::now(),
            outcome: RequestOutcome::Error,
            coverage: None,
        }
    }

    /// The latest answer; the last one seen decides the outcome.
    pub fn answer(&mut self, a: &Answer) {
        let r = &a.reply;
        if matches!(r.outcome, Outcome::Error(_)) {
            self.outcome = RequestOutcome::Error;
            return;
        }
        self.outcome = if r.answered >= r.expected {
            RequestOutcome::Complete
        } else {
            RequestOutcome::Partial
        };
        if r.expected > 0 {
            self.coverage = Some((r.answered as f64 / r.expected as f64).min(1.0));
        }
    }

    pub fn error(&mut self) {
        self.outcome = RequestOutcome::Error;
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.metrics.record(
            self.kind,
            self.started.elapsed(),
            self.outcome,
            self.coverage,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_series_exist_before_any_request() {
        let m = QueryMetrics::default();
        let fams = m.families();
        // 12 buckets + sum + count, per kind.
        assert_eq!(fams[0].samples.len(), 2 * 14);
        assert!(fams[0].samples.iter().all(|s| s.value == 0.0));
        m.record(
            RequestKind::Query,
            Duration::from_millis(30),
            RequestOutcome::Partial,
            Some(0.5),
        );
        m.record(
            RequestKind::Query,
            Duration::from_secs(20),
            RequestOutcome::Complete,
            None,
        );
        let fams = m.families();
        let get = |suffix: &str, le: Option<&str>| {
            fams[0]
                .samples
                .iter()
                .find(|s| {
                    s.suffix == suffix
                        && s.labels[0].1 == "query"
                        && le.is_none_or(|le| s.labels.get(1).is_some_and(|l| l.1 == le))
                })
                .map(|s| s.value)
        };
        assert_eq!(get("_bucket", Some("0.025")), Some(0.0));
        assert_eq!(get("_bucket", Some("0.05")), Some(1.0));
        assert_eq!(get("_bucket", Some("10")), Some(1.0));
        assert_eq!(get("_bucket", Some("+Inf")), Some(2.0));
        assert_eq!(get("_count", None), Some(2.0));
        // Coverage keeps the last known ratio.
        assert_eq!(fams[2].samples[0].value, 0.5);
        assert!(fams[2].samples[1].value.is_nan());
    }
}
