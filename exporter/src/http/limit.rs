//! At most `http_requests` requests served at once (`--web.max-requests`):
//! the rest are answered 503 at once and counted
//! (`astrolabe_limit_refusals_total{limit="http_requests"}`), instead of
//! queueing without bound behind a slow query or a flood. Like tower's
//! ConcurrencyLimit with LoadShed, plus the count.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::Semaphore;

use crate::engine::{Limit, LimitCounters};

struct Slots {
    free: Semaphore,
    counters: Arc<LimitCounters>,
}

async fn shed(State(slots): State<Arc<Slots>>, req: Request, next: Next) -> Response {
    let Ok(_slot) = slots.free.try_acquire() else {
        slots.counters.count(Limit::HttpRequests);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            "Too many requests in flight; retry.\n",
        )
            .into_response();
    };
    next.run(req).await
}

/// `app` serving at most `max` requests at once.
pub fn layer(app: Router, max: usize, counters: Arc<LimitCounters>) -> Router {
    let slots = Arc::new(Slots {
        free: Semaphore::new(max.max(1)),
        counters,
    });
    app.layer(axum::middleware::from_fn_with_state(slots, shed))
}
