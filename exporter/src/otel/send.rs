//! The two OTLP transports: gRPC (opentelemetry-proto's generated tonic
//! client) and HTTP/protobuf (a POST of the same message).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use super::{OtlpError, Protocol};

/// A receiver's answer is a few bytes; more is not an OTLP receiver.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub enum Sender {
    Grpc(MetricsServiceClient<tonic::transport::Channel>),
    Http {
        // Boxed: the pooled client is far larger than the gRPC handle.
        client: Box<Client<HttpConnector, Full<Bytes>>>,
        uri: http::Uri,
    },
}

impl Sender {
    /// Nothing connects until the first export. Must be called inside a
    /// tokio runtime (the gRPC channel spawns its worker).
    pub fn new(protocol: Protocol, endpoint: &str, timeout: Duration) -> Result<Sender, OtlpError> {
        let bad = |e: &dyn std::fmt::Display| OtlpError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        };
        Ok(match protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                    .map_err(|e| bad(&e))?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect_lazy();
                Sender::Grpc(MetricsServiceClient::new(channel))
            }
            Protocol::HttpProtobuf => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(timeout));
                Sender::Http {
                    client: Box::new(Client::builder(TokioExecutor::new()).build(connector)),
                    uri: endpoint.parse().map_err(|e| bad(&e))?,
                }
            }
        })
    }

    /// Sends one request; the receiver's `partial_success`, if any.
    pub async fn send(
        &mut self,
        request: ExportMetricsServiceRequest,
    ) -> Result<Option<ExportMetricsPartialSuccess>, String> {
        match self {
            Sender::Grpc(client) => client
                .export(request)
                .await
                .map(|r| r.into_inner().partial_success)
                .map_err(|status| format!("{}: {}", status.code(), status.message())),
            Sender::Http { client, uri } => {
                let post = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(Bytes::from(request.encode_to_vec())))
                    .map_err(|e| e.to_string())?;
                let response = client.request(post).await.map_err(|e| {
                    // The connector's own error says what failed (refused, timed out).
                    let cause = std::error::Error::source(&e).map(|s| format!(": {s}"));
                    format!("{e}{}", cause.unwrap_or_default())
                })?;
                let status = response.status();
                let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the response: {e}"))?
                    .to_bytes();
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                // An empty body is a full success.
                let answer = ExportMetricsServiceResponse::decode(body)
                    .map_err(|e| format!("the response is not an OTLP answer: {e}"))?;
                Ok(answer.partial_success)
            }
        }
    }
}
