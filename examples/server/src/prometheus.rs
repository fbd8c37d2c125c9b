//! `/metrics`: the layer's counters (`tower_twilio::metrics`) in the Prometheus text format.
//!
//! The recorder is installed once per process, when the first server is built; every server in
//! the process (the tests start several) reports into it. Behind the admin token like the rest
//! of the admin surface.

use std::sync::OnceLock;

use axum::{http::header, response::IntoResponse};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's Prometheus recorder, installed on first use. If the application had already
/// installed another recorder, the counters go there and this one renders nothing.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed: /metrics stays empty");
        }
        handle
    })
}

/// `GET /metrics`.
pub async fn render() -> impl IntoResponse {
    let handle = handle();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}
