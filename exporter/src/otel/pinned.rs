//! The bridge from one snapshot to the SDK's instruments: the exposition's
//! families are pinned, and one observable instrument per family name
//! reports that family's samples from the pin when the reader collects.
//!
//! Families come and go with the aggregates in force (SIGHUP) and the
//! textfiles present; an instrument is registered the first time its name
//! is seen and reports nothing while its family is absent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use astrolabe_collectors::Kind;
use opentelemetry::metrics::{Meter, ObservableCounter, ObservableGauge};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};

use crate::http::exposition;
use crate::view::View;

type Points = Vec<(Vec<KeyValue>, f64)>;
type Snapshot = Arc<HashMap<String, Points>>;

/// The OTLP name of a served family: counters lose `_total`, which
/// Prometheus-bound converters (the Collector's exporters) add back, so a
/// round trip through a Collector gives the names `/metrics` serves.
pub fn otlp_name(prometheus_name: &str, kind: Kind) -> &str {
    match kind {
        Kind::Counter => prometheus_name
            .strip_suffix("_total")
            .unwrap_or(prometheus_name),
        _ => prometheus_name,
    }
}

enum Instrument {
    // Held so the registration lives as long as the pipeline.
    #[allow(dead_code)]
    Counter(ObservableCounter<f64>),
    #[allow(dead_code)]
    Gauge(ObservableGauge<f64>),
}

pub struct Pinned {
    meter: Meter,
    current: Arc<Mutex<Option<Snapshot>>>,
    instruments: HashMap<String, Instrument>,
}

impl Pinned {
    pub fn new(meter: Meter) -> Pinned {
        Pinned {
            meter,
            current: Arc::new(Mutex::new(None)),
            instruments: HashMap::new(),
        }
    }

    /// Pins the families of `view` (exactly what `/metrics` would render:
    /// same merge of same-named families, same first-wins on a repeated
    /// label set) and registers instruments for names not seen before.
    pub fn pin(&mut self, view: &View) {
        let families = exposition::families(view);
        let mut points: HashMap<String, Points> = HashMap::new();
        let mut kinds: BTreeMap<String, (Kind, String)> = BTreeMap::new();
        let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
        for family in &families {
            // Histograms are served on /metrics only: OTLP gets no
            // observable histogram instrument to carry them.
            if family.kind == Kind::Histogram {
                continue;
            }
            kinds
                .entry(family.name.clone())
                .or_insert_with(|| (family.kind, family.help.clone()));
            for s in &family.samples {
                let labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                if !seen.insert((family.name.clone(), labels.clone())) {
                    continue;
                }
                points.entry(family.name.clone()).or_default().push((
                    labels
                        .into_iter()
                        .map(|(k, v)| KeyValue::new(k, v))
                        .collect(),
                    s.value,
                ));
            }
        }
        for (name, (kind, help)) in kinds {
            if !self.instruments.contains_key(&name) {
                let instrument = self.register(&name, kind, &help);
                self.instruments.insert(name, instrument);
            }
        }
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some(Arc::new(points));
        }
    }

    pub fn unpin(&mut self) {
        if let Ok(mut slot) = self.current.lock() {
            *slot = None;
        }
    }

    fn register(&self, name: &str, kind: Kind, help: &str) -> Instrument {
        let current = self.current.clone();
        let key = name.to_string();
        let report = move |observe: &dyn Fn(f64, &[KeyValue])| {
            let snapshot = current.lock().ok().and_then(|s| s.clone());
            if let Some(points) = snapshot.as_ref().and_then(|s| s.get(&key)) {
                for (attributes, value) in points {
                    observe(*value, attributes);
                }
            }
        };
        let otlp = otlp_name(name, kind).to_string();
        let help = help.to_string();
        match kind {
            Kind::Counter => Instrument::Counter(
                self.meter
                    .f64_observable_counter(otlp)
                    .with_description(help)
                    .with_callback(move |i| report(&|v, a| i.observe(v, a)))
                    .build(),
            ),
            // Gauges, untyped values and the zone quantiles (one gauge
            // point per quantile label, as served).
            _ => Instrument::Gauge(
                self.meter
                    .f64_observable_gauge(otlp)
                    .with_description(help)
                    .with_callback(move |i| report(&|v, a| i.observe(v, a)))
                    .build(),
            ),
        }
    }
}

/// Data points in a collection, for logs and tests.
pub fn count_points(rm: &ResourceMetrics) -> usize {
    rm.scope_metrics()
        .flat_map(|s| s.metrics())
        .map(|m| match m.data() {
            AggregatedMetrics::F64(MetricData::Gauge(g)) => g.data_points().count(),
            AggregatedMetrics::F64(MetricData::Sum(s)) => s.data_points().count(),
            _ => 0,
        })
        .sum()
}
