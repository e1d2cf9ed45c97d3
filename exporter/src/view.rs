//! An immutable snapshot of everything an agent knows, taken after each
//! change and swapped in whole. HTTP handlers only read snapshots, so a
//! scrape never waits for gossip and gossip never waits for a scrape.

use std::sync::{Arc, RwLock};

use astrolabe_collectors::MetricFamily;

use crate::engine::{Engine, Stats};
use crate::transport::DropReason;
use crate::zone::{Row, ZonePath};

/// One zone row as served: the row, and how fresh and complete it is.
#[derive(Debug, Clone)]
pub struct ZoneView {
    pub row: Arc<Row>,
    /// Seconds since the oldest input was refreshed (for rows this agent
    /// computes), or since the row itself was (for rows it received).
    pub age_seconds: f64,
    /// Computed by this agent (one of its own ancestors).
    pub computed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct View {
    pub agent_zone: Option<ZonePath>,
    pub agent_id: u64,
    /// The root first, then every table from the top down.
    pub zones: Vec<ZoneView>,
    pub stats: Stats,
    pub dropped: Vec<(DropReason, u64)>,
    pub host: Arc<Vec<MetricFamily>>,
    /// Some peer heard from, and the catch-up after start is over: this
    /// agent's zone rows and answers count every host it can know of.
    pub ready: bool,
    /// Still learning its tables after start (`Engine::is_catching_up`).
    pub catching_up: bool,
    /// Live counters of on-demand queries, read at scrape time.
    pub queries: Arc<crate::overlay::metrics::QueryMetrics>,
    /// Commands and certificates refused for their operator signature.
    pub signatures: Arc<crate::security::SignatureRefusals>,
    /// Aggregate certificates held (installs and removals).
    pub certificates: Vec<Arc<crate::security::certificate::AggregateCertificate>>,
    /// Refusals counted outside the engine (`engine::limits`), read at scrape time.
    pub limits: Arc<crate::engine::LimitCounters>,
    /// Attributes not served because another one becomes the same metric.
    pub collisions: Arc<crate::http::names::NameCollisions>,
    /// The OTLP exporter's counts, read at scrape time (empty without one).
    pub otlp: Arc<crate::otel::OtlpCounters>,
}

impl View {
    pub fn capture(
        engine: &Engine,
        now_ms: u64,
        host: Arc<Vec<MetricFamily>>,
        dropped: Vec<(DropReason, u64)>,
    ) -> View {
        let age = |t: u64| now_ms.saturating_sub(t) as f64 / 1000.0;
        let tables = engine.tables();
        let mut zones = Vec::new();
        let root_age = tables
            .first()
            .and_then(|t| t.oldest_refresh_ms())
            .map_or(0.0, age);
        zones.push(ZoneView {
            row: engine.root().clone(),
            age_seconds: root_age,
            computed: true,
        });
        for (k, table) in tables.iter().enumerate() {
            for (name, entry) in table.entries() {
                if entry.row.is_tombstone() {
                    continue;
                }
                let own = *name == table.own;
                let age_seconds = if own {
                    // Our own ancestor (or leaf): as old as its oldest input.
                    tables
                        .get(k + 1)
                        .and_then(|t| t.oldest_refresh_ms())
                        .map_or(0.0, age)
                } else {
                    age(entry.refreshed_ms)
                };
                zones.push(ZoneView {
                    row: entry.current(),
                    age_seconds,
                    computed: own,
                });
            }
        }
        View {
            agent_zone: Some(engine.zone().clone()),
            agent_id: engine.id(),
            zones,
            stats: engine.stats().clone(),
            dropped,
            host,
            ready: !engine.is_catching_up()
                && tables.iter().any(|t| t.live_siblings().next().is_some()),
            catching_up: engine.is_catching_up(),
            queries: Arc::default(),
            signatures: Arc::default(),
            certificates: engine.certificates(),
            limits: Arc::default(),
            collisions: Arc::default(),
            otlp: Arc::default(),
        }
    }
}

/// Where the current snapshot lives: replaced whole, read by cloning the Arc.
#[derive(Debug, Default)]
pub struct ViewCell(RwLock<Arc<View>>);

impl ViewCell {
    pub fn get(&self) -> Arc<View> {
        self.0.read().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn set(&self, view: View) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Arc::new(view);
        }
    }
}
