//! The proxy's series, under kube-proxy's names:
//! `kubeproxy_sync_proxy_rules_duration_seconds` (every sync),
//! `kubeproxy_sync_full_proxy_rules_duration_seconds` and
//! `kubeproxy_sync_partial_proxy_rules_duration_seconds`,
//! `kubeproxy_sync_proxy_rules_last_timestamp_seconds`,
//! `kubeproxy_iptables_restore_failures_total`; and Flotilla's
//! `flotilla_proxy_services` and `flotilla_proxy_chains_written_total`.
//!
//! Readiness follows kube-proxy's healthz: ready once a sync succeeded,
//! and as long as the last success is recent (two resync intervals).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_telemetry::register;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

fn histogram(r: &Registry, name: &str, help: &str) -> Histogram {
    register(
        r,
        Histogram::with_opts(
            HistogramOpts::new(name, help)
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 15).unwrap_or_default()),
        )
        .expect("valid metric"),
    )
}

/// The series of one proxy, and when it last synced.
#[derive(Clone)]
pub struct ProxyMetrics {
    sync: Histogram,
    full: Histogram,
    partial: Histogram,
    last: Gauge,
    failures: IntCounter,
    services: IntGauge,
    chains: IntCounter,
    last_ok_ms: Arc<AtomicU64>,
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyMetrics")
    }
}

impl ProxyMetrics {
    pub fn new(r: &Registry) -> Self {
        ProxyMetrics {
            sync: histogram(
                r,
                "kubeproxy_sync_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds",
            ),
            full: histogram(
                r,
                "kubeproxy_sync_full_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for full resyncs",
            ),
            partial: histogram(
                r,
                "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for partial resyncs",
            ),
            last: register(
                r,
                Gauge::new(
                    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                    "The last time proxy rules were successfully synced",
                )
                .expect("valid metric"),
            ),
            failures: register(
                r,
                IntCounter::new(
                    "kubeproxy_iptables_restore_failures_total",
                    "Cumulative proxy iptables restore failures",
                )
                .expect("valid metric"),
            ),
            services: register(
                r,
                IntGauge::new("flotilla_proxy_services", "Service ports the proxy serves.")
                    .expect("valid metric"),
            ),
            chains: register(
                r,
                IntCounter::new(
                    "flotilla_proxy_chains_written_total",
                    "iptables chains written by syncs.",
                )
                .expect("valid metric"),
            ),
            last_ok_ms: Arc::default(),
        }
    }

    pub(crate) fn synced(&self, took: Duration, full: bool, chains: usize, services: usize) {
        let s = took.as_secs_f64();
        self.sync.observe(s);
        if full { &self.full } else { &self.partial }.observe(s);
        self.chains.inc_by(chains as u64);
        self.services.set(services as i64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last.set(now.as_secs_f64());
        self.last_ok_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failures.inc();
    }

    /// Ready: a sync succeeded within `within`.
    pub fn ready(&self, within: Duration) -> Result<(), String> {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Err("no sync has succeeded yet".into());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let age = Duration::from_millis(now.saturating_sub(last));
        if age > within {
            return Err(format!("the last successful sync was {age:?} ago"));
        }
        Ok(())
    }
}
