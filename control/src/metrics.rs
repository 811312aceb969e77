//! The object API's Prometheus series, under kube-apiserver's names:
//! `apiserver_request_total` and `apiserver_request_duration_seconds` by
//! verb (GET, LIST, WATCH, CREATE, UPDATE, PATCH, DELETE, APPLY), resource
//! and HTTP code (Kubernetes' code for each failure reason), and
//! `apiserver_registered_watchers`, the watches open now, by resource; and
//! the watch cache's: `apiserver_watch_cache_events_received_total` and
//! `apiserver_watch_cache_capacity` by resource, as kube-apiserver names
//! them, and Flotilla's `flotilla_watch_cache_events` (its size now) and
//! `flotilla_watch_cache_lag_revisions` (how far behind the store's
//! revision the cache is).

use std::sync::Weak;
use std::time::Instant;

use flotilla_objects::api::{Reason, REASON_HEADER};
use flotilla_telemetry::register;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::watch_cache::WatchCaches;
use tonic::{Code, Status};

/// The series of one API server.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    watchers: IntGaugeVec,
}

impl ApiMetrics {
    pub fn new(r: &Registry) -> Self {
        ApiMetrics {
            requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "apiserver_request_total",
                        "Counter of apiserver requests broken out for each verb, group, resource and HTTP response code.",
                    ),
                    &["verb", "group", "resource", "code"],
                )
                .expect("valid metric"),
            ),
            seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "apiserver_request_duration_seconds",
                        "Response latency distribution in seconds for each verb, group and resource.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0,
                        3.0, 4.0, 5.0, 10.0, 30.0, 60.0,
                    ]),
                    &["verb", "group", "resource"],
                )
                .expect("valid metric"),
            ),
            watchers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "apiserver_registered_watchers",
                        "Number of currently registered watchers for a given resource.",
                    ),
                    &["group", "resource"],
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Start timing a call of `verb` on `resource` (as the caller named it).
    pub(crate) fn start(&self, verb: &'static str, resource: &str) -> Timer {
        let (group, resource) = match crate::api::resolve(resource) {
            Ok(i) => (i.group, i.plural),
            Err(_) => ("", "unknown"),
        };
        Timer {
            m: self.clone(),
            verb,
            group,
            resource,
            start: Instant::now(),
        }
    }

    /// One more open watch on `resource`, until the guard drops.
    pub(crate) fn watching(&self, t: &Timer) -> WatchGuard {
        let g = self.watchers.with_label_values(&[t.group, t.resource]);
        g.inc();
        WatchGuard(g)
    }
}

pub(crate) struct Timer {
    m: ApiMetrics,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    start: Instant,
}

impl Timer {
    /// Count the call's outcome and pass it on.
    pub(crate) fn done<T>(self, r: Result<T, Status>) -> Result<T, Status> {
        let code = match &r {
            Ok(_) if self.verb == "CREATE" => 201,
            Ok(_) => 200,
            Err(s) => http_code(s),
        };
        self.m
            .requests
            .with_label_values(&[self.verb, self.group, self.resource, &code.to_string()])
            .inc();
        let elapsed = self.start.elapsed();
        self.m
            .seconds
            .with_label_values(&[self.verb, self.group, self.resource])
            .observe(elapsed.as_secs_f64());
        // The access log (kube-apiserver's httplog), inside the call's
        // request span: `RUST_LOG=flotilla_control=debug`.
        tracing::debug!(
            verb = self.verb,
            resource = self.resource,
            code,
            ms = elapsed.as_millis() as u64,
            "handled"
        );
        r
    }
}

/// Decrements the watch gauge when the watch ends.
pub(crate) struct WatchGuard(prometheus::IntGauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The HTTP code kube-apiserver answers a failure with.
fn http_code(s: &Status) -> u16 {
    let reason = s
        .metadata()
        .get(REASON_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Reason::parse);
    match reason {
        Some(Reason::NotFound) => 404,
        Some(Reason::AlreadyExists) | Some(Reason::Conflict) => 409,
        Some(Reason::Invalid) => 422,
        Some(Reason::Gone) => 410,
        Some(Reason::BadRequest) => 400,
        Some(Reason::Unauthorized) => 401,
        Some(Reason::Forbidden) => 403,
        Some(Reason::MethodNotAllowed) => 405,
        Some(Reason::Unavailable) => 503,
        Some(Reason::Internal) => 500,
        None => match s.code() {
            Code::DeadlineExceeded => 504,
            Code::Cancelled => 499,
            Code::ResourceExhausted => 429,
            Code::Unavailable => 503,
            _ => 500,
        },
    }
}

/// The watch caches' series, read on each scrape. Register it with
/// `registry.register(Box::new(api.watch_cache_collector()))`.
#[derive(Clone)]
pub struct WatchCacheCollector {
    caches: Weak<WatchCaches>,
    /// The families' descriptions (a registry tells collectors apart by them).
    descs: Vec<Desc>,
}

type CacheFamilies = (IntCounterVec, IntGaugeVec, IntGaugeVec, IntGaugeVec);

fn cache_families() -> CacheFamilies {
    let l = &["resource"];
    let gauge =
        |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), l).expect("valid metric");
    (
        IntCounterVec::new(
            Opts::new(
                "apiserver_watch_cache_events_received_total",
                "Counter of events received in watch cache broken by resource type.",
            ),
            l,
        )
        .expect("valid metric"),
        gauge(
            "apiserver_watch_cache_capacity",
            "Total capacity of watch cache broken by resource type.",
        ),
        gauge(
            "flotilla_watch_cache_events",
            "Events the watch cache holds now, by resource type.",
        ),
        gauge(
            "flotilla_watch_cache_lag_revisions",
            "Revisions the watch cache is behind this master's store, by resource type.",
        ),
    )
}

impl WatchCacheCollector {
    pub(crate) fn new(caches: Weak<WatchCaches>) -> Self {
        let (a, b, c, d) = cache_families();
        let descs = [a.desc(), b.desc(), c.desc(), d.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        WatchCacheCollector { caches, descs }
    }
}

impl Collector for WatchCacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(caches) = self.caches.upgrade() else {
            return Vec::new();
        };
        let (received, capacity, events, lag) = cache_families();
        for s in caches.stats() {
            let r = [s.resource];
            received.with_label_values(&r).inc_by(s.received);
            capacity.with_label_values(&r).set(s.capacity as i64);
            events.with_label_values(&r).set(s.events as i64);
            lag.with_label_values(&r).set(s.lag);
        }
        let mut out = received.collect();
        out.extend(capacity.collect());
        out.extend(events.collect());
        out.extend(lag.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use flotilla_objects::api::WatchParams;
    use flotilla_objects::registry;
    use serde_json::json;

    use super::*;
    use crate::api::{ApiConfig, ApiServer};
    use crate::memstore::MemStore;

    fn sample(all: &[MetricFamily], name: &str) -> Option<f64> {
        let f = all.iter().find(|f| f.name() == name)?;
        let m = f
            .get_metric()
            .iter()
            .find(|m| m.get_label().iter().any(|l| l.value() == "configmaps"))?;
        Some(if name.ends_with("_total") {
            m.get_counter().get_value()
        } else {
            m.get_gauge().get_value()
        })
    }

    /// A collector of families built on each scrape that describes none.
    #[derive(Clone)]
    struct NoDescs;

    impl Collector for NoDescs {
        fn desc(&self) -> Vec<&Desc> {
            Vec::new()
        }
        fn collect(&self) -> Vec<MetricFamily> {
            Vec::new()
        }
    }

    #[tokio::test]
    async fn the_collector_registers_beside_other_collectors() {
        // A registry refuses a second collector without descriptions: the
        // collector must describe its families.
        let r = Registry::new();
        let api = ApiServer::new(Arc::new(MemStore::new()), ApiConfig::default());
        r.register(Box::new(NoDescs)).expect("first");
        r.register(Box::new(api.watch_cache_collector()))
            .expect("the watch cache collector");
    }

    #[tokio::test]
    async fn the_watch_caches_size_intake_and_lag_are_collected() {
        let store = MemStore::new();
        let api = ApiServer::new(Arc::new(store), ApiConfig::default());
        api.ensure_namespaces().await.expect("namespaces");
        let collector = api.watch_cache_collector();
        assert_eq!(
            sample(&collector.collect(), "flotilla_watch_cache_events"),
            None,
            "no cache before a watch"
        );
        let cm = &registry::CONFIG_MAP;
        let _watch = api
            .watch(cm, "default", &WatchParams::default())
            .await
            .expect("watch");
        // The watch starts its kind's cache in the background.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sample(&collector.collect(), "flotilla_watch_cache_events").is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no cache started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 0..3 {
            let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("c{i}"), "namespace": "default"}});
            api.create(cm, "default", obj, false).await.expect("create");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let all = collector.collect();
            let got = (
                sample(&all, "apiserver_watch_cache_events_received_total"),
                sample(&all, "flotilla_watch_cache_events"),
                sample(&all, "flotilla_watch_cache_lag_revisions"),
            );
            if got == (Some(3.0), Some(3.0), Some(0.0)) {
                assert!(sample(&all, "apiserver_watch_cache_capacity").unwrap_or(0.0) >= 3.0);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cache never reported 3 events and no lag: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
