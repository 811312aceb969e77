//! The HTTP endpoints: `/metrics`, `/livez`, `/readyz` and `/healthz`, as
//! an axum router that a role serves on its `--metrics-addr` (and a master
//! also mounts on its client port, as etcd serves `/metrics` there).
//!
//! Health answers follow kube-apiserver's: `200 ok`, or `503` with
//! `[-]NAME failed: REASON`; `?verbose` lists the checks either way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Health;

#[derive(Clone)]
struct Endpoints {
    registry: Registry,
    health: Arc<dyn Health>,
}

/// `/metrics` for `registry`, `/livez`, `/readyz` and `/healthz` (the
/// readiness check, as kube-apiserver's legacy endpoint) for `health`.
pub fn router(registry: Registry, health: Arc<dyn Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(readyz))
        .with_state(Endpoints { registry, health })
}

/// Only `/metrics` (for a master's client port, where `/health` is etcd's).
pub fn metrics_router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let r = registry.clone();
            async move { encode(&r) }
        }),
    )
}

async fn metrics(State(e): State<Endpoints>) -> Response {
    encode(&e.registry)
}

/// The registry in the Prometheus text format.
pub fn encode(r: &Registry) -> Response {
    let enc = TextEncoder::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    match enc.encode(&r.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, enc.format_type().to_string())], buf).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

fn answer(check: &str, res: Result<(), String>, q: &HashMap<String, String>) -> Response {
    let verbose = q.contains_key("verbose");
    match res {
        Ok(()) if verbose => (
            StatusCode::OK,
            format!("[+]{check} ok\n{check} check passed\n"),
        )
            .into_response(),
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]{check} failed: {why}\n{check} check failed\n"),
        )
            .into_response(),
    }
}

async fn livez(State(e): State<Endpoints>, Query(q): Query<HashMap<String, String>>) -> Response {
    answer("live", e.health.live().await, &q)
}

async fn readyz(State(e): State<Endpoints>, Query(q): Query<HashMap<String, String>>) -> Response {
    answer("ready", e.health.ready().await, &q)
}

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding the metrics address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound metrics server: its address (useful with port 0).
pub struct Serving {
    pub addr: SocketAddr,
}

/// Bind `addr` and serve `router` (HTTP/1.1 and h2c) until `stop`.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    stop: CancellationToken,
) -> Result<Serving, ServeError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = l.local_addr().unwrap_or(addr);
    tokio::spawn(async move {
        let res = axum::serve(l, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, addr = %bound, "metrics server ended");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /livez and /readyz");
    Ok(Serving { addr: bound })
}
