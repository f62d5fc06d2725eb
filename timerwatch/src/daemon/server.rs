//! The HTTP endpoints, served on the tracing loop's runtime through the hardened accept loop
//! of `connections`. `/metrics` and `/report` name processes and show their stacks, so with
//! `--auth-token-file` they answer only requests bearing that token; `/healthz` stays open for
//! the kubelet's probes.

use std::sync::Arc;
use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::{connections, metrics, snapshot::Shared};
use crate::output;

struct App {
    shared: Shared,
    registry: Registry,
    /// No report for this long means the tracing loop is stuck.
    stale_after: Duration,
    started: std::time::Instant,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics_handler(State(app): State<Arc<App>>) -> Response {
    let text = metrics::render(&app.registry);
    ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let last = app.shared.lock().last_tick.unwrap_or(app.started);
    let age = last.elapsed();
    if age <= app.stale_after {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let body = format!("stalled: no report for {:.0}s\n", age.as_secs_f64());
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn report(State(app): State<Arc<App>>) -> Response {
    let json = app.shared.lock().report.as_ref().map(output::json::render);
    match json {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json + "\n").into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no report yet: the first one comes one interval after start\n",
        )
            .into_response(),
    }
}

/// `Authorization: Bearer <token>`, compared in constant time so the answer's timing does not
/// tell how much of a guess was right.
fn bearer_matches(header: Option<&[u8]>, token: &[u8]) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn require_token(token: Arc<Vec<u8>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if bearer_matches(given, &token) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required (the daemon runs with --auth-token-file)\n",
        )
            .into_response()
    }
}

/// Serve until the runtime stops; `interval` is the report interval.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    interval: Duration,
    token: Option<Vec<u8>>,
) {
    let app = Arc::new(App {
        registry: metrics::registry(shared.clone()),
        shared,
        stale_after: interval * 3 + Duration::from_secs(5),
        started: std::time::Instant::now(),
    });
    let mut private = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/report", get(report));
    if let Some(token) = token {
        let token = Arc::new(token);
        private = private.layer(middleware::from_fn(move |req, next| {
            require_token(token.clone(), req, next)
        }));
    }
    let router = private.route("/healthz", get(health)).with_state(app);
    connections::serve(listener, router, connections::Limits::default()).await;
}

#[cfg(test)]
mod tests {
    use super::bearer_matches;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = b"s3cret";
        assert!(bearer_matches(Some(b"Bearer s3cret"), token));
        assert!(!bearer_matches(Some(b"Bearer s3cre"), token));
        assert!(!bearer_matches(Some(b"Bearer s3cretx"), token));
        assert!(!bearer_matches(Some(b"Basic s3cret"), token));
        assert!(!bearer_matches(Some(b"s3cret"), token));
        assert!(!bearer_matches(None, token));
    }
}
