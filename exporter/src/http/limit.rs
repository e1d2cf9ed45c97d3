//! Two budgets of requests served at once, and a deadline for request
//! bodies.
//!
//! `/metrics`, `/-/healthy` and `/-/ready` ([`SCRAPE_PATHS`]) are served
//! from `--web.max-scrapes` slots; everything else (the APIs, the landing
//! page) from `--web.max-requests`. A request beyond its budget is
//! answered 503 at once and counted
//! (`astrolabe_limit_refusals_total{limit="http_scrapes"}` or
//! `{limit="http_requests"}`) instead of queueing without bound behind a
//! slow query or a flood. Because the budgets are apart, no API client,
//! slow or hostile, can take the scrapes' slots: a Prometheus scrape is
//! what the agent exists for. Like tower's ConcurrencyLimit with LoadShed,
//! twice, plus the counts.
//!
//! A request's body must arrive whole within `--web.read-timeout` (the
//! headers' deadline is hyper's, see [`super::serve_listener`]); a slower
//! upload is answered 408, its connection closed, and counted
//! (`{limit="http_read_timeout"}`). The body is read while the request
//! holds its slot, so what slow uploads can make the agent hold is bounded
//! by the budget times [`MAX_BODY_BYTES`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::engine::{Limit, LimitCounters};

/// What a scraper and a health probe need; served from their own budget.
pub const SCRAPE_PATHS: [&str; 3] = ["/metrics", "/-/healthy", "/-/ready"];

/// The largest request body read (axum's own default limit): the APIs
/// take a few hundred bytes of JSON.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The budgets and the body deadline of one HTTP endpoint.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Requests other than scrapes served at once (`--web.max-requests`).
    pub max_requests: usize,
    /// Scrapes and health checks served at once (`--web.max-scrapes`).
    pub max_scrapes: usize,
    /// Longest a request's headers, and apart its body, may take to
    /// arrive (`--web.read-timeout`).
    pub read_timeout: Duration,
}

struct Slots {
    requests: Semaphore,
    scrapes: Semaphore,
    read_timeout: Duration,
    counters: Arc<LimitCounters>,
}

/// The 503 of a full budget: plain text for scrapers and probes, JSON
/// with the limit as `reason` for API clients (like the overlay's own
/// refusals).
fn unavailable(limit: Limit) -> Response {
    let retry = [(header::RETRY_AFTER, "1")];
    match limit {
        Limit::HttpScrapes => (
            StatusCode::SERVICE_UNAVAILABLE,
            retry,
            "Too many scrapes in flight (--web.max-scrapes); retry.\n",
        )
            .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            retry,
            axum::Json(serde_json::json!({
                "error": "too many requests in flight (--web.max-requests); retry",
                "reason": limit.label(),
            })),
        )
            .into_response(),
    }
}

async fn shed(State(slots): State<Arc<Slots>>, req: Request, next: Next) -> Response {
    let scrape = SCRAPE_PATHS.contains(&req.uri().path());
    let (free, limit) = if scrape {
        (&slots.scrapes, Limit::HttpScrapes)
    } else {
        (&slots.requests, Limit::HttpRequests)
    };
    let Ok(_slot) = free.try_acquire() else {
        slots.counters.count(limit);
        return unavailable(limit);
    };
    let (parts, body) = req.into_parts();
    let read = http_body_util::Limited::new(body, MAX_BODY_BYTES).collect();
    let body = match tokio::time::timeout(slots.read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONNECTION, "close")],
                format!("The request body is over {MAX_BODY_BYTES} bytes.\n"),
            )
                .into_response();
        }
        // The client went away or sent a broken body.
        Ok(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONNECTION, "close")],
                "The request body could not be read.\n",
            )
                .into_response();
        }
        Err(_) => {
            slots.counters.count(Limit::HttpReadTimeout);
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                format!(
                    "The request body did not arrive within {} ms (--web.read-timeout).\n",
                    slots.read_timeout.as_millis()
                ),
            )
                .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// `app` serving at most `limits.max_requests` requests and, apart,
/// `limits.max_scrapes` scrapes at once, each body read within the timeout.
pub fn layer(app: Router, limits: HttpLimits, counters: Arc<LimitCounters>) -> Router {
    let slots = Arc::new(Slots {
        requests: Semaphore::new(limits.max_requests.max(1)),
        scrapes: Semaphore::new(limits.max_scrapes.max(1)),
        read_timeout: limits.read_timeout,
        counters,
    });
    app.layer(axum::middleware::from_fn_with_state(slots, shed))
}
