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
    serve_router(listen, router(view)).await
}

/// Serves any router: the agent's, merged with optional APIs (keys, ...).
pub async fn serve_router(
    listen: SocketAddr,
    app: Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok((bound, handle))
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
