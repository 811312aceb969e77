//! A master's health: readiness (a leader exists and this master has
//! applied everything it knows to be committed: a linearizable read
//! barrier answers in time), liveness (Raft's core still runs), and etcd's
//! `/health` endpoint on the client port, as etcd tooling and load
//! balancers probe it: `{"health":"true","reason":""}`, or 503 with
//! `"false"` and why.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flotilla_telemetry::{Check, Health};

use crate::node::Master;

/// How long a readiness check waits for the read barrier.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// [`Health`] of one master.
pub struct MasterHealth(pub Master);

impl MasterHealth {
    async fn check(&self) -> Result<(), String> {
        if self.0.current_leader().is_none() {
            return Err("no leader".into());
        }
        match tokio::time::timeout(READY_WITHIN, self.0.linearize()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot confirm the commit index: {e}")),
            Err(_) => Err(format!(
                "has not applied the leader's commit index within {READY_WITHIN:?}"
            )),
        }
    }
}

impl Health for MasterHealth {
    fn live(&self) -> Check<'_> {
        let running = self.0.raft.metrics().borrow().running_state.clone();
        Box::pin(async move { running.map_err(|e| format!("raft stopped: {e}")) })
    }

    fn ready(&self) -> Check<'_> {
        Box::pin(self.check())
    }
}

/// etcd's `/health` (and `/metrics` of `registry`) for the client port.
pub(crate) fn client_port_router(master: Master) -> Router {
    let registry = master.cfg.metrics.clone();
    Router::new()
        .route(
            "/health",
            get(move || {
                let h = MasterHealth(master.clone());
                async move { etcd_health(h.check().await) }
            }),
        )
        .merge(flotilla_telemetry::http::metrics_router(registry))
}

fn etcd_health(r: Result<(), String>) -> Response {
    let (code, body) = match r {
        Ok(()) => (
            StatusCode::OK,
            r#"{"health":"true","reason":""}"#.to_string(),
        ),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                r#"{{"health":"false","reason":{}}}"#,
                serde_json::Value::String(why)
            ),
        ),
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
