//! Lets a webhook's handling (verification, replay guard, handler, log) run to its end when
//! the client goes away first: Twilio closes the connection when its read timeout (`#rt=…`)
//! runs out and retries. Were the handling dropped with the connection, the replay guard would
//! release its claim and the retry would run the handler again, as slowly; run to its end,
//! the first attempt stores its answer and the waiting retry gets it.
//!
//! Bounded: at most as many such tasks at once as the concurrency limit, each cut at the
//! request timeout.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

/// The tasks webhooks run in: how many at once, and for how long.
#[derive(Clone, Debug)]
pub struct RunToEnd {
    permits: Arc<Semaphore>,
    /// How many permits there are.
    limit: usize,
    timeout: Duration,
}

impl RunToEnd {
    /// At most `limit` webhooks at once, each for at most `timeout`.
    pub fn new(limit: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            timeout,
        }
    }

    /// Waits until every webhook still running has ended (at most the request timeout).
    pub async fn wait_for_all(&self) {
        let all = u32::try_from(self.limit).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(self.timeout, self.permits.acquire_many(all)).await;
    }
}

/// The middleware: runs the rest of the webhook's handling in a task of its own.
pub async fn run_to_end(State(run): State<RunToEnd>, request: Request, next: Next) -> Response {
    let Ok(permit) = run.permits.acquire_owned().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let task = tokio::spawn(async move {
        let response = tokio::time::timeout(run.timeout, next.run(request)).await;
        drop(permit);
        response
    });
    match task.await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(error) => {
            tracing::error!(%error, "a webhook's handling panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
