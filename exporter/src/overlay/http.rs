//! `POST /api/v1/query` and `POST /api/v1/command`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use tokio::sync::mpsc;

use super::command::Tally;
use super::metrics::{Observation, RequestKind};
use super::query::Query;
use super::runtime::{Call, OverlayHandle};
use super::{Answer, Outcome, Request, RequestError};
use crate::http::to_json;
use crate::zone::ZonePath;

pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
pub use super::message::MAX_TIMEOUT_MS;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    #[serde(default = "root")]
    pub zone: String,
    pub sql: String,
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub stream: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    #[serde(default = "root")]
    pub zone: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    /// The operator signature (`astrolabe command --key`): all four or none.
    pub issued_ms: Option<u64>,
    pub nonce: Option<u64>,
    /// The operator's public key, base64.
    pub key: Option<String>,
    /// Ed25519 signature, base64.
    pub signature: Option<String>,
}

impl CommandBody {
    /// The seal to carry, None when unsigned; an error for a partial or
    /// undecodable signature (a client bug worth a 400, not a refusal later).
    pub fn seal(&self) -> Result<Option<crate::security::command::CommandSeal>, String> {
        let zone = &self.zone;
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        match (self.issued_ms, self.nonce, &self.key, &self.signature) {
            (None, None, None, None) => Ok(None),
            (Some(issued_ms), Some(nonce), Some(key), Some(signature)) => {
                let key = b64
                    .decode(key.trim())
                    .map_err(|e| format!("key is not base64: {e}"))?;
                let signature = b64
                    .decode(signature.trim())
                    .map_err(|e| format!("signature is not base64: {e}"))?;
                if key.len() != 32 || signature.len() != 64 {
                    return Err("key must be 32 bytes and signature 64 (Ed25519)".into());
                }
                Ok(Some(crate::security::command::CommandSeal {
                    zone: zone.to_string(),
                    issued_ms,
                    nonce,
                    key,
                    signature,
                }))
            }
            _ => Err("a signed command needs issued_ms, nonce, key and signature".into()),
        }
    }
}

fn root() -> String {
    "/".into()
}

pub fn router(handle: OverlayHandle) -> Router {
    Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/command", post(command))
        .with_state(handle)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {e}"),
        ))
    })
}

async fn query(State(handle): State<OverlayHandle>, body: axum::body::Bytes) -> Response {
    // Refused requests count too (as errors): they were answered here.
    let obs = Observation::start(handle.metrics.clone(), RequestKind::Query);
    let b: QueryBody = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let plan = match Query::parse(&b.sql) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.0),
    };
    let request = Request::Query { sql: b.sql.clone() };
    let render = move |a: &Answer| render_query(&plan, a);
    run(
        handle,
        obs,
        &b.zone,
        request,
        b.timeout_ms,
        b.stream,
        render,
    )
    .await
}

async fn command(State(handle): State<OverlayHandle>, body: axum::body::Bytes) -> Response {
    let obs = Observation::start(handle.metrics.clone(), RequestKind::Command);
    let b: CommandBody = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if b.command.is_empty() {
        return error(StatusCode::BAD_REQUEST, "command is empty");
    }
    let seal = match b.seal() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let request = Request::Command {
        name: b.command.clone(),
        args: b.args.clone(),
        seal,
    };
    run(
        handle,
        obs,
        &b.zone,
        request,
        b.timeout_ms,
        b.stream,
        render_command,
    )
    .await
}

fn coverage(a: &Answer) -> Json_ {
    let mut missing: Vec<String> = a.reply.missing.iter().map(|z| z.to_string()).collect();
    missing.sort();
    let mut refused: Vec<String> = a.reply.refused.iter().map(|z| z.to_string()).collect();
    refused.sort();
    refused.dedup();
    json!({
        "answered": a.reply.answered,
        "expected": a.reply.expected,
        "missing_zones": missing,
        "missing_zones_not_listed": a.reply.missing_more,
        "refused_zones": refused,
    })
}

fn render_query(plan: &Query, a: &Answer) -> Result<Json_, RequestError> {
    let empty = plan.empty();
    let partial = match &a.reply.outcome {
        Outcome::Query(p) => p,
        Outcome::Error(e) => return Err(e.clone()),
        Outcome::Command(_) => &empty,
    };
    // A column no answering host has is an error, not rows of NULL.
    let warnings = plan
        .column_warnings(partial, a.reply.answered, a.reply.last)
        .map_err(|e| RequestError::BadQuery(e.0))?;
    let table = plan.finish(partial);
    let rows: Vec<Json_> = table
        .rows
        .iter()
        .map(|r| Json_::Array(r.iter().map(to_json).collect()))
        .collect();
    Ok(json!({
        "columns": table.columns,
        "rows": rows,
        "truncated": table.truncated,
        "warnings": warnings,
        "coverage": coverage(a),
        "elapsed_ms": a.elapsed_ms,
        "done": a.reply.last,
    }))
}

fn render_command(a: &Answer) -> Result<Json_, RequestError> {
    let tally = match &a.reply.outcome {
        Outcome::Command(t) => t.clone(),
        Outcome::Error(e) => return Err(e.clone()),
        Outcome::Query(_) => Tally::default(),
    };
    let outputs: Vec<Json_> = tally
        .outputs
        .iter()
        .map(|o| json!({"host": o.host, "status": o.status.label(), "output": o.output}))
        .collect();
    Ok(json!({
        "ok": tally.ok,
        "failed": tally.failed,
        "not_configured": tally.not_configured,
        "refused": tally.refused,
        "outputs": outputs,
        "coverage": coverage(a),
        "elapsed_ms": a.elapsed_ms,
        "done": a.reply.last,
    }))
}

fn error_response(e: &RequestError) -> Response {
    match e {
        RequestError::UnknownZone(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        RequestError::BadQuery(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        RequestError::NotReady(_) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        // Refused at once, before anything was asked: the caller may retry
        // here later or ask another agent.
        RequestError::Overloaded(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "error": e.to_string(), "reason": "pending_queries" })),
        )
            .into_response(),
    }
}

async fn run(
    handle: OverlayHandle,
    mut obs: Observation,
    zone: &str,
    request: Request,
    timeout_ms: Option<u64>,
    stream: bool,
    render: impl Fn(&Answer) -> Result<Json_, RequestError> + Send + 'static,
) -> Response {
    let zone = match ZonePath::parse(zone) {
        Ok(z) => z,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("zone {zone:?}: {e}")),
    };
    let timeout_ms = timeout_ms
        .unwrap_or(DEFAULT_TIMEOUT_MS)
        .clamp(1, MAX_TIMEOUT_MS);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let call = Call {
        zone,
        request,
        timeout_ms,
        answers: tx,
    };
    if handle.calls.send(call).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
    }
    // The overlay answers by its deadline; this bound is only a backstop.
    let hard = tokio::time::Instant::now() + Duration::from_millis(timeout_ms + 1000);
    let first = match tokio::time::timeout_at(hard, rx.recv()).await {
        Ok(Some(Ok(a))) => {
            obs.answer(&a);
            a
        }
        Ok(Some(Err(e))) => return error_response(&e),
        _ => return error(StatusCode::GATEWAY_TIMEOUT, "no answer by the deadline"),
    };
    if stream {
        // NDJSON: one line per improvement, the last with "done": true.
        let first_line = render(&first);
        if let Err(e) = &first_line {
            return error_response(e);
        }
        // The observation rides along and is recorded when the stream ends
        // (or the client leaves), with the last answer sent.
        let lines = futures_util::stream::unfold(
            (Some(first_line), first.reply.last, rx, render, obs),
            move |(pending, finished, mut rx, render, mut obs)| async move {
                if let Some(line) = pending {
                    let text = match line {
                        Ok(v) => format!("{v}\n"),
                        Err(e) => format!("{}\n", json!({"error": e.to_string()})),
                    };
                    return Some((
                        Ok::<_, std::io::Error>(text),
                        (None, finished, rx, render, obs),
                    ));
                }
                if finished {
                    return None;
                }
                match tokio::time::timeout_at(hard, rx.recv()).await {
                    Ok(Some(Ok(a))) => {
                        obs.answer(&a);
                        let last = a.reply.last;
                        let line = render(&a);
                        let text = match line {
                            Ok(v) => format!("{v}\n"),
                            Err(e) => format!("{}\n", json!({"error": e.to_string()})),
                        };
                        Some((Ok(text), (None, last, rx, render, obs)))
                    }
                    _ => None,
                }
            },
        );
        return (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(lines),
        )
            .into_response();
    }
    let mut last = first;
    while !last.reply.last {
        match tokio::time::timeout_at(hard, rx.recv()).await {
            Ok(Some(Ok(a))) => {
                obs.answer(&a);
                last = a
            }
            Ok(Some(Err(e))) => {
                obs.error();
                return error_response(&e);
            }
            _ => break,
        }
    }
    match render(&last) {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => {
            obs.error();
            error_response(&e)
        }
    }
}
