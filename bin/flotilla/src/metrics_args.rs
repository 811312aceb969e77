//! `--metrics-addr`, shared by every role: where `/metrics`, `/livez`,
//! `/readyz` and `/healthz` are served over plain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use flotilla_telemetry::prometheus::Registry;
use flotilla_telemetry::Health;
use tokio_util::sync::CancellationToken;

#[derive(Args, Clone, Debug)]
pub struct MetricsArgs {
    /// Serve /metrics (Prometheus), /livez, /readyz and /healthz over plain
    /// HTTP on ADDR:PORT (port 0: any free port, logged). Give a loopback
    /// address unless a scraper elsewhere must reach it.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Serve `registry` and `health` on the address, if one was given,
    /// until `stop`.
    pub async fn serve(
        &self,
        registry: &Registry,
        health: Arc<dyn Health>,
        stop: CancellationToken,
    ) -> Result<()> {
        let Some(addr) = self.metrics_addr else {
            return Ok(());
        };
        let router = flotilla_telemetry::http::router(registry.clone(), health);
        flotilla_telemetry::http::serve(addr, router, stop)
            .await
            .context("--metrics-addr")?;
        Ok(())
    }
}
