//! `--metrics-addr`, shared by every role: where `/metrics`, `/livez`,
//! `/readyz` and `/healthz` are served over plain HTTP.
//!
//! Node roles serve them on loopback by default, on the ports operators
//! know from kubelet and kube-proxy; a master serves them on its client
//! port (as etcd does) and on a metrics address only when given one.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use flotilla_telemetry::prometheus::Registry;
use flotilla_telemetry::Health;
use tokio_util::sync::CancellationToken;

/// The agent's address when none is given (kubelet's read-only port, which
/// served its metrics).
pub const AGENT_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 10255);
/// The proxy's address when none is given (kube-proxy's metrics port).
pub const PROXY_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 10249);

/// What `--metrics-addr` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    At(SocketAddr),
    Off,
}

pub fn parse(s: &str) -> Result<MetricsAddr, String> {
    if s == "off" {
        return Ok(MetricsAddr::Off);
    }
    s.parse()
        .map(MetricsAddr::At)
        .map_err(|_| format!("{s:?} is neither ADDR:PORT (127.0.0.1:10249) nor \"off\""))
}

#[derive(Args, Clone, Debug)]
pub struct MetricsArgs {
    /// Serve /metrics (Prometheus), /livez, /readyz and /healthz over plain
    /// HTTP on ADDR:PORT (port 0: any free port, logged), or "off". Default:
    /// 127.0.0.1:10255 for an agent, 127.0.0.1:10249 for a proxy (a busy
    /// default port is logged and skipped: several agents may share a
    /// machine); none for a master, whose client port serves them. Give a
    /// loopback address unless a scraper elsewhere must reach it.
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = parse)]
    pub metrics_addr: Option<MetricsAddr>,
}

impl MetricsArgs {
    /// Serve `registry` and `health` on the address given, or on `default`
    /// when none was, until `stop`. A given address that cannot be bound is
    /// an error; a busy default is only logged.
    pub async fn serve(
        &self,
        default: Option<SocketAddr>,
        registry: &Registry,
        health: Arc<dyn Health>,
        stop: CancellationToken,
    ) -> Result<()> {
        let (addr, given) = match (self.metrics_addr, default) {
            (Some(MetricsAddr::Off), _) | (None, None) => return Ok(()),
            (Some(MetricsAddr::At(a)), _) => (a, true),
            (None, Some(a)) => (a, false),
        };
        let router = flotilla_telemetry::http::router(registry.clone(), health);
        match flotilla_telemetry::http::serve(addr, router, stop).await {
            Ok(_) => Ok(()),
            Err(e) if given => Err(e).context("--metrics-addr"),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "not serving /metrics on the default address (is another agent or proxy on this machine?); set --metrics-addr to another port, or off"
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_or_off_and_a_clear_error_otherwise() {
        assert_eq!(parse("off"), Ok(MetricsAddr::Off));
        assert_eq!(
            parse("127.0.0.1:9"),
            Ok(MetricsAddr::At("127.0.0.1:9".parse().expect("addr")))
        );
        let e = parse("localhost").expect_err("not an address");
        assert!(e.contains("\"localhost\"") && e.contains("off"), "{e}");
    }
}
