//! OTLP export: pushes what `/metrics` serves (host metrics, the agent's own
//! metrics and every zone row, each row a data point with a `zone_path`
//! attribute) to an OpenTelemetry endpoint over gRPC or HTTP/protobuf, on an
//! interval. Off unless an endpoint is configured.
//!
//! The numbers come from the same place as `/metrics`: the families that
//! [`crate::http::exposition::families`] builds from one immutable snapshot,
//! so all data points of one export describe the same moment. They are
//! turned into OTLP messages directly ([`convert`]), not through the SDK's
//! instruments: the SDK cannot carry summaries, drops NaN and names it
//! does not accept as instrument names, and its per-instrument aggregation
//! tables multiplied the agent's memory (BENCHMARKS.md, stop 18).

mod convert;
mod counters;
mod options;
mod send;
mod units;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub use convert::{otlp_name, LeftOut};
pub use counters::{DropReason, OtlpCounters};
pub use options::{OtlpOptions, Protocol};
pub use units::unit_of;

use crate::view::{View, ViewCell};
use convert::{attribute, Times};

/// Families already named in a warning: a family that keeps being left
/// out is logged once, not every interval. Bounded, so churning textfile
/// names cannot grow it without end.
const MAX_WARNED: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("--otlp.endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("--otlp.protocol {0:?}: use grpc or http/protobuf")]
    Protocol(String),
    #[error("OTLP export to {endpoint}: {reason}")]
    Export { endpoint: String, reason: String },
}

/// Who is reporting: becomes the OTLP resource.
#[derive(Debug, Clone)]
pub struct Identity {
    pub host_name: String,
    /// The agent's own leaf zone.
    pub zone_path: String,
    pub agent_id: u64,
}

impl Identity {
    /// The resource, with `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
    /// honoured as OpenTelemetry SDKs honour them (the agent's own
    /// attributes win over the variable's).
    fn resource(&self) -> Resource {
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "astrolabe".to_string());
        let own = [
            ("service.name", service),
            ("host.name", self.host_name.clone()),
            ("astrolabe.zone_path", self.zone_path.clone()),
            ("service.instance.id", self.agent_id.to_string()),
            ("service.version", env!("CARGO_PKG_VERSION").to_string()),
        ];
        let from_env = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        let mut attributes: Vec<KeyValue> = own.iter().map(|(k, v)| attribute(k, v)).collect();
        for pair in from_env.split(',').filter(|p| !p.trim().is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    let k = k.trim();
                    if !own.iter().any(|(o, _)| *o == k) {
                        attributes.push(attribute(k, v.trim()));
                    }
                }
                _ => tracing::warn!(
                    entry = pair,
                    "OTEL_RESOURCE_ATTRIBUTES: not key=value; left out"
                ),
            }
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// One OTLP pipeline: the snapshot's families to OTLP messages, and the
/// transport. `export` is called once per interval.
pub struct OtlpExporter {
    endpoint: String,
    timeout: Duration,
    resource: Resource,
    /// When cumulative points (counters, histograms) started counting.
    start_unix_nano: u64,
    sender: send::Sender,
    counters: Arc<OtlpCounters>,
    warned: HashSet<(String, DropReason)>,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl OtlpExporter {
    /// Builds the exporter; nothing is sent until [`OtlpExporter::export`].
    /// Must be called inside a tokio runtime (the gRPC channel needs one).
    pub fn new(opts: &OtlpOptions, identity: &Identity) -> Result<OtlpExporter, OtlpError> {
        let endpoint = opts.signal_endpoint()?;
        let sender = send::Sender::new(opts.protocol, &endpoint, opts.timeout)?;
        let counters = Arc::new(OtlpCounters::default());
        counters.enable();
        Ok(OtlpExporter {
            endpoint,
            timeout: opts.timeout,
            resource: identity.resource(),
            start_unix_nano: unix_nanos(SystemTime::now()),
            sender,
            counters,
            warned: HashSet::new(),
        })
    }

    /// Counts into `counters` (the agent's, served on its `/metrics`)
    /// instead of the exporter's own.
    pub fn with_counters(mut self, counters: Arc<OtlpCounters>) -> OtlpExporter {
        counters.enable();
        self.counters = counters;
        self
    }

    pub fn counters(&self) -> &Arc<OtlpCounters> {
        &self.counters
    }

    /// Where data points go (the signal URL, `/v1/metrics` added for HTTP).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One snapshot in OTLP form, and its number of data points; what is
    /// left out is counted and logged (once per family and reason).
    pub fn collect(&mut self, view: &View) -> (ExportMetricsServiceRequest, usize) {
        let families = crate::http::exposition::families(view);
        let times = Times {
            start_unix_nano: self.start_unix_nano,
            now_unix_nano: unix_nanos(SystemTime::now()),
        };
        let converted = convert::convert(&families, times);
        for left in &converted.left_out {
            self.counters.dropped(left.reason, left.points);
            let key = (left.family.clone(), left.reason);
            if self.warned.len() < MAX_WARNED && self.warned.insert(key) {
                tracing::warn!(
                    family = %left.family,
                    reason = left.reason.label(),
                    "OTLP export leaves out series of this family (counted in astrolabe_otlp_dropped_points_total)"
                );
            }
        }
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "astrolabe".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    metrics: converted.metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        (request, converted.points)
    }

    /// Collects one snapshot and sends it; returns the data points sent.
    pub async fn export(&mut self, view: &View) -> Result<usize, OtlpError> {
        let (request, points) = self.collect(view);
        self.send(request, points).await
    }

    /// Sends what [`OtlpExporter::collect`] made; returns the data points sent.
    pub async fn send(
        &mut self,
        request: ExportMetricsServiceRequest,
        points: usize,
    ) -> Result<usize, OtlpError> {
        let failed = |reason: String| OtlpError::Export {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let sent = tokio::time::timeout(self.timeout, self.sender.send(request)).await;
        let answer = match sent {
            Ok(Ok(answer)) => answer,
            Ok(Err(reason)) => {
                self.counters.dropped(DropReason::ExportFailed, points);
                return Err(failed(reason));
            }
            Err(_) => {
                self.counters.dropped(DropReason::ExportFailed, points);
                return Err(failed(format!("no answer within {:?}", self.timeout)));
            }
        };
        let rejected = answer.as_ref().map_or(0, |p| {
            p.rejected_data_points.clamp(0, points as i64) as usize
        });
        if rejected > 0 {
            self.counters.dropped(DropReason::Rejected, rejected);
            if self.warned.insert((String::new(), DropReason::Rejected)) {
                let message = answer.map(|p| p.error_message).unwrap_or_default();
                tracing::warn!(rejected, message, "the OTLP receiver rejected data points");
            }
        }
        self.counters.exported(points - rejected);
        Ok(points)
    }

    /// Nothing is buffered between exports, so there is nothing to flush:
    /// kept so callers can end an exporter explicitly.
    pub fn shutdown(self) {}
}

/// Runs the exporter on its interval from the agent's snapshot cell until
/// the task is aborted, counting into `counters`. Failures are logged once,
/// then again on recovery, so an absent collector does not flood the log.
pub fn spawn(
    opts: OtlpOptions,
    identity: Identity,
    cell: Arc<ViewCell>,
    counters: Arc<OtlpCounters>,
) -> Result<tokio::task::JoinHandle<()>, OtlpError> {
    let mut exporter = OtlpExporter::new(&opts, &identity)?.with_counters(counters);
    tracing::info!(endpoint = exporter.endpoint(), protocol = %opts.protocol, interval = ?opts.interval, "OTLP export on");
    Ok(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(opts.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; the first export waits one interval
        // so the agent has heard from its peers.
        ticker.tick().await;
        let mut failing = false;
        loop {
            ticker.tick().await;
            // The snapshot is let go before the send: a slow receiver
            // does not keep an old view alive.
            let (request, points) = exporter.collect(&cell.get());
            match exporter.send(request, points).await {
                Ok(points) => {
                    if failing {
                        tracing::info!(endpoint = exporter.endpoint(), "OTLP export recovered");
                    }
                    tracing::debug!(points, "OTLP export sent");
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "OTLP export failed; retrying every interval");
                    }
                    failing = true;
                }
            }
        }
    }))
}
