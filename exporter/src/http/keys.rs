//! `/api/v1/keys`: the gossip keyring of a running agent.
//!
//! `GET` lists key fingerprints (never keys). `POST` takes a key command
//! (`{"op":"install|use|remove","key":"<base64>"}`) sealed exactly like a
//! gossip datagram with a key this agent already holds, so only a holder
//! of a cluster key can change the keyring, the new key never crosses the
//! network in the clear (even over plain HTTP), and a captured request
//! cannot be replayed. `astrolabe keys` is the client.

use crate::wall_clock::wall_ms;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::transport::keyring::{CommandError, GossipSecurity, KeyError};

/// The answer to both methods.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeysJson {
    /// Fingerprints (8 bytes of SHA-256, hex), the sealing key first.
    pub keys: Vec<String>,
    pub primary: String,
}

/// What an agent without a keyring answers on `/api/v1/keys` (404).
pub const NO_KEYRING: &str =
    "this agent has no gossip keyring (started without --gossip.key/--gossip.keyring-file)";

/// `/api/v1/keys` of an agent that gossips in the clear: a 404 that says why.
pub fn no_keyring_router() -> Router {
    let missing = || async {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": NO_KEYRING })),
        )
    };
    Router::new().route("/api/v1/keys", get(missing).post(missing))
}

pub fn router(security: Arc<GossipSecurity>) -> Router {
    Router::new()
        .route("/api/v1/keys", get(list).post(change))
        .with_state(security)
}

fn answer(keys: Vec<String>) -> Json<KeysJson> {
    Json(KeysJson {
        primary: keys.first().cloned().unwrap_or_default(),
        keys,
    })
}

async fn list(State(sec): State<Arc<GossipSecurity>>) -> Json<KeysJson> {
    answer(sec.fingerprints())
}

async fn change(State(sec): State<Arc<GossipSecurity>>, body: Bytes) -> Response {
    match sec.apply_command(wall_ms(), &body) {
        Ok(keys) => answer(keys).into_response(),
        Err(e) => {
            let status = match &e {
                CommandError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                CommandError::Malformed(_) => StatusCode::BAD_REQUEST,
                CommandError::Refused(KeyError::File { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
                CommandError::Refused(_) => StatusCode::CONFLICT,
            };
            tracing::warn!(error = %e, "key command refused");
            (status, format!("{e}\n")).into_response()
        }
    }
}
