//! Metrics and health for every Flotilla role.
//!
//! Owns: the Prometheus registry each role instance fills (one per master,
//! agent, proxy or router, so that `flotilla up`, which runs several in one
//! process, keeps their series apart), the HTTP endpoints that expose it
//! (`/metrics` in the Prometheus text format, `/livez`, `/readyz`,
//! `/healthz`), and a tower layer that counts gRPC calls by service, method
//! and code under go-grpc-prometheus's names (`grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`), which
//! etcd's dashboards read; and the request ids of calls in the logs
//! ([`request`]).
//!
//! Depends on no other Flotilla crate: the roles register their own series
//! and say what "ready" means for them through [`Health`].

pub mod grpc;
pub mod http;
pub mod request;

use std::future::Future;
use std::pin::Pin;

pub use prometheus;
use prometheus::Registry;

/// A registry holding the process's own series (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, open fds...), which etcd tooling reads
/// (`etcdctl check datascale`), plus whatever the role registers.
pub fn registry() -> Registry {
    let r = Registry::new();
    let pc = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = r.register(Box::new(pc)) {
        tracing::debug!(error = %e, "process metrics not registered");
    }
    r
}

/// A health check's answer, computed asynchronously (a master's readiness
/// asks the leader for its commit index).
pub type Check<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What a role answers on `/livez` and `/readyz`.
pub trait Health: Send + Sync + 'static {
    /// Whether the process works at all (a failing liveness check asks to
    /// be restarted). By default: it answers, so it lives.
    fn live(&self) -> Check<'_> {
        Box::pin(async { Ok(()) })
    }
    /// Whether it can do its job now (a master: has a leader and has
    /// applied what it knows to be committed; an agent or a proxy:
    /// connected to the masters and synced once). `Err` says why not.
    fn ready(&self) -> Check<'_>;
}

/// A [`Health`] from a synchronous readiness closure.
pub struct ReadyFn<F>(pub F);

impl<F> Health for ReadyFn<F>
where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    fn ready(&self) -> Check<'_> {
        let r = (self.0)();
        Box::pin(async move { r })
    }
}

/// Register a collector, logging instead of failing when a series of the
/// same name is there already (a second instance of a role in one
/// process). Returns the collector, registered or not.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::warn!(error = %e, "metric not registered");
    }
    c
}
