//! The HTTP endpoints, served on the tracing loop's runtime.

use std::sync::Arc;
use std::time::Duration;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::{metrics, snapshot::Shared};
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

/// Serve until the runtime stops; `interval` is the report interval.
pub async fn serve(listener: TcpListener, shared: Shared, interval: Duration) {
    let app = Arc::new(App {
        registry: metrics::registry(shared.clone()),
        shared,
        stale_after: interval * 3 + Duration::from_secs(5),
        started: std::time::Instant::now(),
    });
    let router = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health))
        .route("/report", get(report))
        .with_state(app);
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("timerwatch: the HTTP server stopped: {e}");
    }
}
