//! The HTTP endpoint: `/metrics`, `/api/v1/zones`, the landing page and
//! health checks. Every handler reads the current snapshot only.

pub mod exposition;
pub mod keys;
pub mod landing;
pub mod limit;
pub mod names;
pub mod secure;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::view::{View, ViewCell};
use crate::zone::Value;

pub fn router(view: Arc<ViewCell>) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/metrics", get(metrics))
        .route("/api/v1/zones", get(zones))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(ready))
        .with_state(view)
}

pub async fn serve(
    listen: SocketAddr,
    view: Arc<ViewCell>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let counters = Arc::new(crate::engine::LimitCounters::default());
    let read_timeout = crate::engine::Limits::default().http_read_timeout;
    serve_router(listen, router(view), read_timeout, counters).await
}

/// Serves any router: the agent's, merged with optional APIs (keys, ...).
pub async fn serve_router(
    listen: SocketAddr,
    app: Router,
    read_timeout: Duration,
    counters: Arc<crate::engine::LimitCounters>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(serve_listener(listener, app, read_timeout, counters));
    Ok((bound, handle))
}

/// Serves HTTP/1.1 connections from `listener` (plain TCP, or TLS streams)
/// as axum would, but with a deadline on request headers: a client that
/// has not sent a request's whole head within `read_timeout` (slowloris,
/// or a keep-alive connection idle that long) is disconnected, and one
/// that was in the middle of a head is counted
/// (`astrolabe_limit_refusals_total{limit="http_read_timeout"}`).
/// axum::serve has no such setting; hyper's connection builder has.
/// Bodies get their deadline in [`limit::layer`].
pub async fn serve_listener<L>(
    mut listener: L,
    app: Router,
    read_timeout: Duration,
    counters: Arc<crate::engine::LimitCounters>,
) where
    L: axum::serve::Listener,
{
    loop {
        // axum's listeners retry failed accepts themselves.
        let (io, _peer) = listener.accept().await;
        let app = app.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let io = Started::new(io);
            let started = io.started.clone();
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(read_timeout);
            let served = builder
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                // An idle keep-alive connection closed at the deadline is
                // no slow client; one that had begun a request is.
                if e.is_timeout() && started.load(std::sync::atomic::Ordering::Relaxed) {
                    counters.count(crate::engine::Limit::HttpReadTimeout);
                }
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
}

/// A connection that notes whether bytes of a request head are pending:
/// set when bytes arrive, cleared when a response is written (the head
/// they began has been read).
struct Started<T> {
    inner: T,
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl<T> Started<T> {
    fn new(inner: T) -> Started<T> {
        Started {
            inner,
            started: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Started<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.started
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Started<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.started
            .store(false, std::sync::atomic::Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.started
            .store(false, std::sync::atomic::Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|e| e.trim().starts_with("gzip")))
}

async fn metrics(State(cell): State<Arc<ViewCell>>, headers: HeaderMap) -> Response {
    let view = cell.get();
    let openmetrics = wants_openmetrics(&headers);
    let body = exposition::render(&exposition::families(&view), openmetrics);
    let content_type = if openmetrics {
        exposition::OPENMETRICS_CONTENT_TYPE
    } else {
        exposition::TEXT_CONTENT_TYPE
    };
    if accepts_gzip(&headers) {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if enc.write_all(body.as_bytes()).is_ok() {
            if let Ok(gz) = enc.finish() {
                return (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    gz,
                )
                    .into_response();
            }
        }
    }
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn ready(State(cell): State<Arc<ViewCell>>) -> Response {
    let view = cell.get();
    if view.ready {
        (StatusCode::OK, "Ready.\n").into_response()
    } else if view.catching_up {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: still catching up with the zones after start.\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: no peer heard from yet.\n",
        )
            .into_response()
    }
}

#[derive(Serialize)]
pub struct ZoneJson {
    pub zone_path: String,
    pub members: u64,
    pub reporting: Option<i64>,
    pub age_seconds: f64,
    pub computed_here: bool,
    pub contacts: Vec<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
pub struct ZonesJson {
    pub agent_zone: String,
    /// A decimal string: ids are 64-bit, beyond what a JSON number keeps
    /// exactly in JavaScript (2^53).
    pub agent_id: String,
    pub zones: Vec<ZoneJson>,
}

pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Str(s) => s.to_string().into(),
        Value::List(l) => l.iter().map(to_json).collect(),
    }
}

/// An attribute as `/api/v1/zones` serves it: the agent id as a string,
/// like `agent_id`.
fn attribute_json(name: &str, v: &Value) -> serde_json::Value {
    match v {
        Value::Int(id) if name == crate::zone::ATTR_ID => id.to_string().into(),
        v => to_json(v),
    }
}

pub fn zones_json(view: &View) -> ZonesJson {
    let zones = view
        .zones
        .iter()
        .map(|z| ZoneJson {
            zone_path: z.row.zone.to_string(),
            members: z.row.members(),
            reporting: z
                .row
                .value(crate::zone::ATTR_REPORTING)
                .and_then(Value::as_i64),
            age_seconds: (z.age_seconds * 1000.0).round() / 1000.0,
            computed_here: z.computed,
            contacts: z.row.contacts().iter().map(|c| c.to_string()).collect(),
            attributes: z
                .row
                .values()
                .iter()
                .map(|(k, v)| (k.to_string(), attribute_json(k, v)))
                .collect(),
        })
        .collect();
    ZonesJson {
        agent_zone: view
            .agent_zone
            .as_ref()
            .map(|z| z.to_string())
            .unwrap_or_default(),
        agent_id: view.agent_id.to_string(),
        zones,
    }
}

async fn zones(State(cell): State<Arc<ViewCell>>) -> Json<ZonesJson> {
    Json(zones_json(&cell.get()))
}

async fn landing(State(cell): State<Arc<ViewCell>>) -> Html<String> {
    Html(landing::page(&cell.get()))
}
