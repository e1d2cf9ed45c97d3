//! OTLP export: pushes what `/metrics` serves (host metrics, the agent's own
//! metrics and every zone row, each row a data point with a `zone_path`
//! attribute) to an OpenTelemetry endpoint over gRPC or HTTP/protobuf, on an
//! interval. Off unless an endpoint is configured.
//!
//! The numbers come from the same place as `/metrics`: the families that
//! [`crate::http::exposition::families`] builds from one immutable snapshot.
//! Each export pins one snapshot and every instrument's callback reads that
//! pin, so all data points of one export describe the same moment.
//!
//! The SDK is driven by hand (a manual reader, collected and exported from
//! our own task) rather than by its periodic reader, whose flush would
//! block a runtime thread on the exporter's own future.

mod options;
mod pinned;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Stream, Temporality,
};
use opentelemetry_sdk::Resource;

pub use options::{OtlpOptions, Protocol};
pub use pinned::{otlp_name, Pinned};

use crate::view::{View, ViewCell};

/// Data points one instrument may carry before the SDK folds the rest into
/// an overflow point: far above any table an agent holds.
const CARDINALITY_LIMIT: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("--otlp.endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("--otlp.protocol {0:?}: use grpc or http/protobuf")]
    Protocol(String),
    #[error("OTLP exporter: {0}")]
    Build(String),
    #[error("OTLP collection: {0}")]
    Collect(String),
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
    fn resource(&self) -> Resource {
        let mut builder = Resource::builder();
        // OTEL_SERVICE_NAME, when set, is the user's choice; keep it.
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            builder = builder.with_service_name("astrolabe");
        }
        builder
            .with_attributes([
                KeyValue::new("host.name", self.host_name.clone()),
                KeyValue::new("astrolabe.zone_path", self.zone_path.clone()),
                KeyValue::new("service.instance.id", self.agent_id.to_string()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build()
    }
}

/// The provider owns its readers; the exporter needs to collect from the
/// same one, hence a shared handle.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// One OTLP pipeline: instruments over the pinned snapshot, a reader and
/// the OTLP exporter. `export` is called once per interval.
pub struct OtlpExporter {
    endpoint: String,
    reader: SharedReader,
    provider: SdkMeterProvider,
    exporter: opentelemetry_otlp::MetricExporter,
    pinned: Pinned,
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
        let build_err = |e: opentelemetry_otlp::ExporterBuildError| OtlpError::Build(e.to_string());
        let exporter = match opts.protocol {
            Protocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(opts.timeout)
                .build()
                .map_err(build_err)?,
            Protocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint.clone())
                .with_timeout(opts.timeout)
                .with_headers(Default::default())
                .build()
                .map_err(build_err)?,
        };
        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder()
            .with_resource(identity.resource())
            .with_reader(reader.clone())
            .with_view(|_: &opentelemetry_sdk::metrics::Instrument| {
                Stream::builder()
                    .with_cardinality_limit(CARDINALITY_LIMIT)
                    .build()
                    .ok()
            })
            .build();
        let meter = opentelemetry::metrics::MeterProvider::meter(&provider, "astrolabe");
        Ok(OtlpExporter {
            endpoint,
            reader,
            provider,
            exporter,
            pinned: Pinned::new(meter),
        })
    }

    /// Where data points go (the signal URL, `/v1/metrics` added for HTTP).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Collects one snapshot into OTLP form without sending it.
    pub fn collect(&mut self, view: &View) -> Result<ResourceMetrics, OtlpError> {
        self.pinned.pin(view);
        let mut rm = ResourceMetrics::default();
        let collected = self.reader.collect(&mut rm);
        // Drop the pin: the snapshot is not kept alive between exports.
        self.pinned.unpin();
        collected.map_err(|e| OtlpError::Collect(e.to_string()))?;
        Ok(rm)
    }

    /// Collects one snapshot and sends it; returns the data points sent.
    pub async fn export(&mut self, view: &View) -> Result<usize, OtlpError> {
        let rm = self.collect(view)?;
        let points = pinned::count_points(&rm);
        self.exporter
            .export(&rm)
            .await
            .map_err(|e| OtlpError::Export {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?;
        Ok(points)
    }

    pub fn shutdown(self) {
        let _ = self.exporter.shutdown();
        let _ = self.provider.shutdown();
    }
}

/// Runs the exporter on its interval from the agent's snapshot cell until
/// the task is aborted. Failures are logged once, then again on recovery,
/// so an absent collector does not flood the log.
pub fn spawn(
    opts: OtlpOptions,
    identity: Identity,
    cell: Arc<ViewCell>,
) -> Result<tokio::task::JoinHandle<()>, OtlpError> {
    let mut exporter = OtlpExporter::new(&opts, &identity)?;
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
            let view = cell.get();
            match exporter.export(&view).await {
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
