//! `POST /api/v1/aggregates` (a signed install or removal certificate)
//! and `GET /api/v1/aggregates` (the certificates this agent holds).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::certificate::AggregateCertificate;
use super::{RefusalReason, SignatureRefusals, SignedKind};
use crate::engine::certs::CertError;
use crate::view::ViewCell;

/// A certificate for the engine, and where its verdict goes.
pub type CertCall = (AggregateCertificate, oneshot::Sender<Result<(), CertError>>);

#[derive(Clone)]
pub struct AggregatesHandle {
    pub calls: mpsc::Sender<CertCall>,
    pub view: Arc<ViewCell>,
    pub refusals: Arc<SignatureRefusals>,
}

pub fn router(handle: AggregatesHandle) -> Router {
    Router::new()
        .route("/api/v1/aggregates", get(list).post(install))
        .with_state(handle)
}

fn error(status: StatusCode, message: String, reason: Option<&str>) -> Response {
    (status, Json(json!({ "error": message, "reason": reason }))).into_response()
}

async fn install(State(handle): State<AggregatesHandle>, body: axum::body::Bytes) -> Response {
    let cert: AggregateCertificate = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            handle
                .refusals
                .count(SignedKind::Aggregate, RefusalReason::Malformed);
            return error(
                StatusCode::BAD_REQUEST,
                format!("not a certificate: {e}"),
                Some(RefusalReason::Malformed.label()),
            );
        }
    };
    let removal = cert.remove;
    let (tx, rx) = oneshot::channel();
    if handle.calls.send((cert, tx)).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".into(),
            None,
        );
    }
    match rx.await {
        Ok(Ok(())) => Json(json!({
            "status": if removal { "removed" } else { "installed" },
        }))
        .into_response(),
        Ok(Err(CertError::Refused(reason))) => error(
            StatusCode::FORBIDDEN,
            format!("certificate refused: {}", reason.label()),
            Some(reason.label()),
        ),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e.to_string(), None),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".into(),
            None,
        ),
    }
}

async fn list(State(handle): State<AggregatesHandle>) -> Response {
    let view = handle.view.get();
    Json(json!({ "certificates": view.certificates })).into_response()
}
